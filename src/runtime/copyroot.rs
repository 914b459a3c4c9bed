//! The root filesystem when overlayfs cannot be mounted: which mode a run uses
//! ([`RootfsMode`], `KILN_ROOTFS`), the copy of the snapshots that makes `merged` a real
//! directory ([`populate`]), the record of what that copy held ([`record`]), and the layer of
//! the command's changes made by comparing `merged` with that record ([`diff_copy`]); also
//! the clean-up that makes a fuse-overlayfs upper dir read like a kernel overlay one
//! ([`normalize_fuse_upper`]).
//!
//! The comparison is buildah's vfs one, without content: an entry changed when its type,
//! inode (number and birth time), permission bits, owner, size (not for directories), mtime to the nanosecond,
//! link target, device number or xattrs differ. ctime is not used: a new hard link to a
//! file changes it without changing the file. A rewrite that keeps size and mtime to the
//! nanosecond is not seen (the copy sets every mtime to the layer's, so a write during the
//! run cannot match one). The layer is written in the order, and with the entries, that the
//! overlay upper dir would have held: changed entries, their ancestors, `.wh.` entries for
//! what the run removed, and a replaced directory as a new opaque one.

use super::rootfs::{is_whiteout, OPAQUE_XATTR};
use super::RuntimeError;
use crate::layer::{BuildOptions, Digested, LayerBuilder, LayerError, TreeOptions};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How the container's root is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsMode {
    /// The kernel's overlayfs, mounted inside the user namespace (Linux 5.11 or later).
    Native,
    /// fuse-overlayfs (needs the binary and a usable /dev/fuse).
    Fuse,
    /// A copy of the snapshots: works everywhere, costs the image's size and time.
    Copy,
}

impl RootfsMode {
    pub fn name(self) -> &'static str {
        match self {
            RootfsMode::Native => "native",
            RootfsMode::Fuse => "fuse",
            RootfsMode::Copy => "copy",
        }
    }
}

/// The mode `KILN_ROOTFS` forces, if any.
pub fn forced_mode() -> Result<Option<RootfsMode>, RuntimeError> {
    match std::env::var("KILN_ROOTFS") {
        Err(_) => Ok(None),
        Ok(v) => parse_mode(&v).map_err(RuntimeError::Rootfs),
    }
}

fn parse_mode(v: &str) -> Result<Option<RootfsMode>, String> {
    match v {
        "" | "auto" => Ok(None),
        "native" => Ok(Some(RootfsMode::Native)),
        "fuse" => Ok(Some(RootfsMode::Fuse)),
        "copy" => Ok(Some(RootfsMode::Copy)),
        other => Err(format!(
            "KILN_ROOTFS={other:?} is not a root filesystem mode: use native, fuse or copy"
        )),
    }
}

/// Is an overlay mount error one where another mode may work (the kernel or a policy
/// refuses overlayfs here), rather than a fault of ours?
pub fn overlay_unavailable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EPERM) | Some(libc::ENODEV) | Some(libc::EACCES)
    )
}

/// What a non-native mode tells the user (once per run); `why` is empty when the mode was
/// forced by `KILN_ROOTFS`.
pub fn warning(mode: RootfsMode, why: &str) -> String {
    let how = match mode {
        RootfsMode::Native => return String::new(),
        RootfsMode::Fuse => "using fuse-overlayfs",
        RootfsMode::Copy => "using a copy of the image (slower)",
    };
    if why.is_empty() {
        format!("warning: KILN_ROOTFS={}: {how}", mode.name())
    } else {
        format!("warning: overlayfs is not available in a user namespace here ({why}): {how}")
    }
}

fn io(path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::io(path, e)
}

/// Remove whatever is at `path` (nothing there is fine).
fn remove_any(path: &Path) -> Result<(), RuntimeError> {
    match fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(md) if md.is_dir() => fs::remove_dir_all(path).map_err(|e| io(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| io(path, e)),
    }
}

/// Copy the snapshots `lowers` (topmost first, as overlayfs takes them) onto the empty
/// directory `merged`, bottom layer first: a 0/0 character device removes what is below,
/// a directory marked opaque starts empty, and each entry keeps its owner (as far as the
/// caller may set it), mode, times and xattrs. Files hard-linked within a snapshot stay
/// linked in the copy.
pub fn populate(lowers: &[PathBuf], merged: &Path) -> Result<(), RuntimeError> {
    for lower in lowers.iter().rev() {
        let mut links = HashMap::new();
        copy_dir(lower, merged, &mut links)?;
        let md = fs::symlink_metadata(lower).map_err(|e| io(lower, e))?;
        set_meta(lower, merged, &md)?;
    }
    Ok(())
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), RuntimeError> {
    for ent in fs::read_dir(src).map_err(|e| io(src, e))? {
        let name = ent.map_err(|e| io(src, e))?.file_name();
        let s = src.join(&name);
        let d = dst.join(&name);
        let md = fs::symlink_metadata(&s).map_err(|e| io(&s, e))?;
        let ft = md.file_type();
        if is_whiteout(&s, &md) {
            remove_any(&d)?;
            continue;
        }
        if ft.is_dir() {
            let opaque = xattr::get(&s, OPAQUE_XATTR).is_ok_and(|v| v.as_deref() == Some(b"y"));
            match fs::symlink_metadata(&d) {
                Ok(old) if old.is_dir() && !opaque => {}
                Ok(_) => {
                    remove_any(&d)?;
                    fs::create_dir(&d).map_err(|e| io(&d, e))?;
                }
                Err(_) => fs::create_dir(&d).map_err(|e| io(&d, e))?,
            }
            copy_dir(&s, &d, links)?;
            // After the children: adding them changed the directory's mtime.
            set_meta(&s, &d, &md)?;
            continue;
        }
        remove_any(&d)?;
        if ft.is_file() {
            let key = (md.dev(), md.ino());
            if md.nlink() > 1 {
                if let Some(first) = links.get(&key) {
                    fs::hard_link(first, &d).map_err(|e| io(&d, e))?;
                    continue;
                }
                links.insert(key, d.clone());
            }
            // copy_file_range inside the kernel (a reflink where the filesystem has them).
            fs::copy(&s, &d).map_err(|e| io(&d, e))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&s).map_err(|e| io(&s, e))?;
            std::os::unix::fs::symlink(&target, &d).map_err(|e| io(&d, e))?;
        } else {
            let kind = if ft.is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else if ft.is_block_device() {
                nix::sys::stat::SFlag::S_IFBLK
            } else if ft.is_fifo() {
                nix::sys::stat::SFlag::S_IFIFO
            } else {
                continue;
            };
            // Devices cannot be made in a user namespace; the image's /dev is replaced by
            // the runtime's anyway.
            if nix::sys::stat::mknod(
                &d,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                md.rdev(),
            )
            .is_err()
            {
                continue;
            }
        }
        set_meta(&s, &d, &md)?;
    }
    Ok(())
}

/// Owner, mode, xattrs and times of `src` onto `dst` (not followed if a symlink).
fn set_meta(src: &Path, dst: &Path, md: &fs::Metadata) -> Result<(), RuntimeError> {
    let symlink = md.file_type().is_symlink();
    // Ids outside the namespace's map cannot be set: such entries stay the caller's.
    let _ = std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()));
    if !symlink {
        // After chown, which clears setuid bits.
        fs::set_permissions(
            dst,
            std::os::unix::fs::PermissionsExt::from_mode(md.mode() & 0o7777),
        )
        .map_err(|e| io(dst, e))?;
    }
    if let Ok(names) = xattr::list(src) {
        for n in names {
            let key = n.to_string_lossy();
            if key.starts_with("user.overlay.") || key.starts_with("trusted.overlay.") {
                continue;
            }
            if let Ok(Some(v)) = xattr::get(src, &n) {
                let _ = xattr::set(dst, &n, &v);
            }
        }
    }
    let ts = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &ts(md.atime(), md.atime_nsec()),
        &ts(md.mtime(), md.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io(dst, e.into()))
}

/// What one entry of the copy was before the command ran.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    fmt: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ino: u64,
    /// Birth time where the filesystem keeps one: a directory removed and made again may
    /// get the same inode number back (ext4 reuses them at once).
    born: Option<std::time::SystemTime>,
    rdev: u64,
    target: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// A directory's entries.
    children: Vec<OsString>,
}

/// The state of a copied root before the command ran, by path relative to the root.
#[derive(Debug, Default)]
pub struct Record {
    entries: HashMap<PathBuf, Rec>,
}

fn rec_of(host: &Path, md: &fs::Metadata) -> Result<Rec, RuntimeError> {
    Ok(Rec {
        fmt: md.mode() & libc::S_IFMT,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if md.is_dir() { 0 } else { md.size() },
        mtime: (md.mtime(), md.mtime_nsec()),
        ino: md.ino(),
        born: md.created().ok(),
        rdev: md.rdev(),
        target: if md.file_type().is_symlink() {
            Some(fs::read_link(host).map_err(|e| io(host, e))?)
        } else {
            None
        },
        xattrs: portable_xattrs(host),
        children: Vec::new(),
    })
}

fn portable_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Ok(names) = xattr::list(path) {
        for n in names {
            let key = n.to_string_lossy().into_owned();
            if key == "security.selinux"
                || key.starts_with("user.overlay.")
                || key.starts_with("trusted.overlay.")
            {
                continue;
            }
            if let Ok(Some(v)) = xattr::get(path, &n) {
                out.insert(key, v);
            }
        }
    }
    out
}

fn child_names(dir: &Path) -> Result<Vec<OsString>, RuntimeError> {
    let mut names = Vec::new();
    for ent in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        names.push(ent.map_err(|e| io(dir, e))?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Record every entry under `root` (see [`diff_copy`]).
pub fn record(root: &Path) -> Result<Record, RuntimeError> {
    let mut r = Record::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let host = root.join(&rel);
        let md = fs::symlink_metadata(&host).map_err(|e| io(&host, e))?;
        let mut rec = rec_of(&host, &md)?;
        if md.is_dir() {
            rec.children = child_names(&host)?;
            stack.extend(rec.children.iter().map(|n| rel.join(n)));
        }
        r.entries.insert(rel, rec);
    }
    Ok(r)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    Entry,
    Opaque,
    Whiteout,
}

struct Differ<'a> {
    root: &'a Path,
    before: &'a Record,
    settled: &'a HashSet<PathBuf>,
    emits: BTreeMap<PathBuf, Emit>,
    /// Inodes of regular files that are new at some path.
    new_inodes: HashSet<u64>,
}

impl Differ<'_> {
    fn compare_dir(&mut self, rel: &Path, before: &Rec) -> Result<(), RuntimeError> {
        let now = child_names(&self.root.join(rel))?;
        let now_set: HashSet<&OsString> = now.iter().collect();
        for gone in before.children.iter().filter(|n| !now_set.contains(n)) {
            self.emits.insert(rel.join(gone), Emit::Whiteout);
        }
        for name in &now {
            let path = rel.join(name);
            let host = self.root.join(&path);
            let md = fs::symlink_metadata(&host).map_err(|e| io(&host, e))?;
            let Some(old) = self.before.entries.get(&path) else {
                self.add_subtree(&path, &md, Emit::Entry)?;
                continue;
            };
            if old.fmt != md.mode() & libc::S_IFMT
                || old.ino != md.ino()
                || old.born != md.created().ok()
            {
                // Replaced: overlayfs makes a directory created over a removed entry opaque.
                let how = if md.is_dir() {
                    Emit::Opaque
                } else {
                    Emit::Entry
                };
                self.add_subtree(&path, &md, how)?;
                continue;
            }
            let mut cur = rec_of(&host, &md)?;
            if md.is_dir() && self.settled.contains(&path) {
                // Only kiln's own mount points came and went here.
                cur.mtime = old.mtime;
            }
            cur.children.clone_from(&old.children);
            if &cur != old {
                self.emits.insert(path.clone(), Emit::Entry);
            }
            if md.is_dir() {
                self.compare_dir(&path, old)?;
            }
        }
        Ok(())
    }

    fn add_subtree(
        &mut self,
        rel: &Path,
        md: &fs::Metadata,
        how: Emit,
    ) -> Result<(), RuntimeError> {
        self.emits.insert(rel.to_path_buf(), how);
        if md.is_file() && md.nlink() > 1 {
            self.new_inodes.insert(md.ino());
        }
        if md.is_dir() {
            let host = self.root.join(rel);
            for name in child_names(&host)? {
                let path = rel.join(&name);
                let h = self.root.join(&path);
                let cmd = fs::symlink_metadata(&h).map_err(|e| io(&h, e))?;
                self.add_subtree(&path, &cmd, Emit::Entry)?;
            }
        }
        Ok(())
    }
}

/// The layer of the changes under `root` since `before` was recorded, written as the
/// overlay upper dir of the same run would be (see the module doc). `settled` holds
/// directories where kiln made and removed mount points: their mtime alone is no change.
pub fn diff_copy<W: Write>(
    root: &Path,
    before: &Record,
    settled: &HashSet<PathBuf>,
    out: W,
    build: BuildOptions,
) -> Result<(W, Digested), RuntimeError> {
    let mut d = Differ {
        root,
        before,
        settled,
        emits: BTreeMap::new(),
        new_inodes: HashSet::new(),
    };
    let top = before
        .entries
        .get(Path::new(""))
        .ok_or_else(|| RuntimeError::Rootfs("no record of the copied root".into()))?;
    d.compare_dir(Path::new(""), top)?;
    // A new link to a file that was there before: overlayfs copies the old name up too.
    if !d.new_inodes.is_empty() {
        for (path, rec) in &before.entries {
            if rec.fmt == libc::S_IFREG
                && d.new_inodes.contains(&rec.ino)
                && !d.emits.contains_key(path)
                && fs::symlink_metadata(root.join(path)).is_ok_and(|m| m.ino() == rec.ino)
            {
                d.emits.insert(path.clone(), Emit::Entry);
            }
        }
    }
    let mut ancestors = Vec::new();
    for path in d.emits.keys() {
        ancestors.extend(
            path.ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .map(Path::to_path_buf),
        );
    }
    for a in ancestors {
        d.emits.entry(a).or_insert(Emit::Entry);
    }
    let layer = |e: LayerError| RuntimeError::Rootfs(format!("writing the layer: {e}"));
    let mut b = LayerBuilder::new(out, build);
    // Path order is component-wise: a directory's subtree comes before its next sibling, as
    // in a depth-first walk with sorted names.
    for (path, how) in &d.emits {
        match how {
            Emit::Whiteout => b.append_whiteout(path).map_err(layer)?,
            Emit::Entry | Emit::Opaque => {
                b.append_host_entry(path, &root.join(path), TreeOptions::default())
                    .map_err(layer)?;
                if *how == Emit::Opaque {
                    b.append_opaque(path).map_err(layer)?;
                }
            }
        }
    }
    b.finish().map_err(layer)
}

const FUSE_XATTR_PREFIX: &str = "user.fuseoverlayfs.";

/// fuse-overlayfs marks an opaque directory with `.wh..wh..opq` (a file) and `.wh..opq` (a
/// whiteout) as well as an xattr (`trusted.overlay.opaque`, or `user.fuseoverlayfs.opaque`
/// in a user namespace), marks every new directory opaque, records copy-ups in
/// `user.fuseoverlayfs.origin`, leaves a whiteout for a removed entry even where the
/// layers below have nothing, and writes whiteouts as `.wh.NAME` files where it cannot make
/// devices. Make `upper` read as the kernel's would: its own xattrs and
/// markers go, and the opaque mark stays only where some lower shows an entry at that path.
pub fn normalize_fuse_upper(upper: &Path, lowers: &[PathBuf]) -> Result<(), RuntimeError> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        let mut opaque = false;
        for name in child_names(&dir)? {
            let path = dir.join(&name);
            if name == ".wh..wh..opq" || name == ".wh..opq" {
                fs::remove_file(&path).map_err(|e| io(&path, e))?;
                opaque = true;
                continue;
            }
            let md = fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") {
                // Where it cannot make 0/0 devices (an upper dir on overlayfs), it writes
                // OCI-style `.wh.NAME` files: they become xattr whiteouts, which the layer
                // writer reads as the devices.
                let hidden = std::ffi::OsStr::from_bytes(hidden);
                let target = dir.join(hidden);
                if md.is_file()
                    && visible_in_lowers(&rel.join(hidden), lowers)
                    && fs::symlink_metadata(&target).is_err()
                {
                    fs::rename(&path, &target).map_err(|e| io(&target, e))?;
                    xattr::set(&target, "user.overlay.whiteout", b"y")
                        .map_err(|e| io(&target, e))?;
                } else {
                    fs::remove_file(&path).map_err(|e| io(&path, e))?;
                }
                continue;
            }
            if is_whiteout(&path, &md) && !visible_in_lowers(&rel.join(&name), lowers) {
                fs::remove_file(&path).map_err(|e| io(&path, e))?;
                continue;
            }
            if md.is_dir() {
                stack.push(rel.join(&name));
            } else {
                drop_fuse_xattrs(&path)?;
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        opaque |= drop_fuse_xattrs(&dir)?;
        opaque |= xattr::get(&dir, "trusted.overlay.opaque").is_ok_and(|v| v.is_some());
        let _ = xattr::remove(&dir, "trusted.overlay.opaque");
        if opaque && visible_in_lowers(&rel, lowers) {
            xattr::set(&dir, OPAQUE_XATTR, b"y").map_err(|e| io(&dir, e))?;
        }
    }
    Ok(())
}

/// Remove fuse-overlayfs' own xattrs from `path`; true when it was marked opaque.
fn drop_fuse_xattrs(path: &Path) -> Result<bool, RuntimeError> {
    let mut opaque = false;
    let Ok(names) = xattr::list(path) else {
        return Ok(false);
    };
    for n in names {
        if !n.as_bytes().starts_with(FUSE_XATTR_PREFIX.as_bytes()) {
            continue;
        }
        if n.as_bytes().ends_with(b".opaque") {
            opaque |= xattr::get(path, &n).is_ok_and(|v| v.as_deref() == Some(b"y"));
        }
        xattr::remove(path, &n).map_err(|e| io(path, e))?;
    }
    Ok(opaque)
}

/// Does the topmost lower holding `rel` hold an entry rather than a whiteout? (Opaque
/// directories above it are not considered.)
fn visible_in_lowers(rel: &Path, lowers: &[PathBuf]) -> bool {
    for l in lowers {
        let path = l.join(rel);
        if let Ok(md) = fs::symlink_metadata(&path) {
            return !is_whiteout(&path, &md);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_names(bytes: &[u8]) -> Vec<String> {
        let mut ar = tar::Archive::new(bytes);
        ar.entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn modes_parse_and_bad_ones_are_named() {
        assert_eq!(parse_mode("copy").unwrap(), Some(RootfsMode::Copy));
        assert_eq!(parse_mode("").unwrap(), None);
        let e = parse_mode("vfs").unwrap_err();
        assert!(e.contains("KILN_ROOTFS=\"vfs\""), "{e}");
    }

    #[test]
    fn copy_applies_whiteouts_and_the_diff_has_the_upper_dir_entries() {
        let t = tempfile::tempdir().unwrap();
        let (lo, hi, m) = (t.path().join("lo"), t.path().join("hi"), t.path().join("m"));
        for d in [&lo, &hi, &m] {
            fs::create_dir(d).unwrap();
        }
        fs::create_dir_all(lo.join("a/deep")).unwrap();
        fs::write(lo.join("a/deep/f"), b"1").unwrap();
        fs::write(lo.join("a/keep"), b"k").unwrap();
        fs::write(lo.join("a/gone"), b"g").unwrap();
        fs::create_dir_all(lo.join("d/sub")).unwrap();
        fs::write(lo.join("d/sub/x"), b"x").unwrap();
        fs::write(lo.join("file"), b"f").unwrap();
        fs::write(lo.join("link1"), b"l").unwrap();
        fs::create_dir(hi.join("a")).unwrap();
        nix::sys::stat::mknod(
            &hi.join("a/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        populate(&[hi.clone(), lo.clone()], &m).unwrap();
        assert!(!m.join("a/gone").exists());
        assert_eq!(fs::read(m.join("a/deep/f")).unwrap(), b"1");

        let before = record(&m).unwrap();
        // Nothing changed: an empty layer.
        let (bytes, _) = diff_copy(
            &m,
            &before,
            &HashSet::new(),
            Vec::new(),
            BuildOptions::default(),
        )
        .unwrap();
        assert!(layer_names(&bytes).is_empty());

        fs::write(m.join("a/deep/new"), b"n").unwrap();
        fs::remove_file(m.join("a/keep")).unwrap();
        fs::remove_dir_all(m.join("d")).unwrap();
        fs::create_dir(m.join("d")).unwrap();
        fs::write(m.join("d/y"), b"y").unwrap();
        fs::remove_file(m.join("file")).unwrap();
        fs::create_dir(m.join("file")).unwrap();
        fs::hard_link(m.join("link1"), m.join("link2")).unwrap();
        let (bytes, _) = diff_copy(
            &m,
            &before,
            &HashSet::new(),
            Vec::new(),
            BuildOptions::default(),
        )
        .unwrap();
        assert_eq!(
            layer_names(&bytes),
            [
                "a/",
                "a/deep/",
                "a/deep/new",
                "a/.wh.keep",
                "d/",
                "d/.wh..wh..opq",
                "d/y",
                "file/",
                "file/.wh..wh..opq",
                "link1",
                "link2",
            ]
        );
        // link2 is a hard link to link1, as overlayfs' copy-up of the old name gives.
        let mut ar = tar::Archive::new(&bytes[..]);
        let kinds: Vec<u8> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().entry_type().as_byte())
            .collect();
        assert_eq!(kinds.last(), Some(&b'1'));
    }

    #[test]
    fn settled_dirs_ignore_their_own_mtime() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        fs::create_dir(m.join("etc")).unwrap();
        fs::write(m.join("etc/passwd"), b"root").unwrap();
        let before = record(m).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(m.join("etc/hosts"), b"").unwrap();
        fs::remove_file(m.join("etc/hosts")).unwrap();
        let settled: HashSet<PathBuf> = [PathBuf::from("etc")].into();
        let (bytes, _) =
            diff_copy(m, &before, &settled, Vec::new(), BuildOptions::default()).unwrap();
        assert!(layer_names(&bytes).is_empty());
        let (bytes, _) = diff_copy(
            m,
            &before,
            &HashSet::new(),
            Vec::new(),
            BuildOptions::default(),
        )
        .unwrap();
        assert_eq!(layer_names(&bytes), ["etc/"]);
    }
}
