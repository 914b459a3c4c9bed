//! Unpacking a layer tar onto a directory: OCI whiteouts, ownership, modes, xattrs, links,
//! times, and the guarantee that nothing is written outside the destination.

use super::decompress::decompressing_reader;
use super::error::{LayerError, Result};
use super::resolve::{PathResolution, Root};
use super::walk::OVERLAY_XATTR_PREFIXES;
use super::writer::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmodat, fstatat, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to do about one kind of metadata that the host may refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Apply it; a refusal is an error.
    Apply,
    /// Try it; a refusal for lack of privilege or support (EPERM, EINVAL for ids not mapped in
    /// this user namespace, ENOTSUP) is counted in [`ApplyStats::ignored`] and skipped.
    BestEffort,
    /// Do not try.
    Skip,
}

/// How [`apply_layer`] treats what it unpacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Honour `.wh.` files and opaque markers (layers); off, they are ordinary files (a tar
    /// given to ADD).
    pub whiteouts: bool,
    /// uid/gid from the tar. Rootless builds outside a user namespace want
    /// [`Policy::BestEffort`] (or [`Policy::Skip`]); inside one, ids the namespace does not map
    /// fail with EINVAL and the caller decides.
    pub ownership: Policy,
    /// Extended attributes from PAX records.
    pub xattrs: Policy,
    /// Character and block devices (creating them needs CAP_MKNOD in the initial namespace).
    pub devices: Policy,
    pub path_resolution: PathResolution,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: true,
            ownership: Policy::Apply,
            xattrs: Policy::Apply,
            devices: Policy::Apply,
            path_resolution: PathResolution::Auto,
        }
    }
}

/// Counts of what [`apply_layer`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub entries: u64,
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
    pub whiteouts: u64,
    pub opaques: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Ownership, xattr or device operations refused and ignored under [`Policy::BestEffort`],
    /// or left out under [`Policy::Skip`].
    pub ignored: u64,
}

/// Unpacks a layer tar (plain, gzip, zstd, bzip2 or xz; detected from its first bytes) onto
/// `dest`. Entry names are cleaned as docker does (`a/../b` is `b`, `/etc` is `etc`); a name
/// or hard-link target that climbs above `dest` is an error, and symlinks met on the way are
/// resolved as if `dest` were `/`. The input is read to its end, so a caller hashing it sees
/// every byte.
pub fn apply_layer(reader: impl Read, dest: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    let (_, stream) = decompressing_reader(reader).map_err(|source| LayerError::Read { source })?;
    let root = Root::open(dest, opts.path_resolution).map_err(|e| LayerError::errno(dest, e))?;
    let mut state = Applier {
        root,
        opts: *opts,
        stats: ApplyStats::default(),
        created: HashSet::new(),
        dirs: Vec::new(),
        buf: vec![0u8; 256 * 1024],
    };
    let mut archive = tar::Archive::new(stream);
    let entries = archive
        .entries()
        .map_err(|source| LayerError::Read { source })?;
    for entry in entries {
        let entry = entry.map_err(|source| LayerError::Read { source })?;
        state.entry(entry)?;
    }
    state.finish_dirs()?;
    // Drain what follows the end-of-archive blocks: decompressors verify their checksums at
    // the end, and hashing readers must see the whole blob.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| LayerError::Read { source })?;
    Ok(state.stats)
}

/// Header fields of one entry, PAX records applied.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Applier {
    root: Root,
    opts: ApplyOptions,
    stats: ApplyStats,
    /// Paths this layer wrote: whiteouts and opaque markers only hide the layers below.
    created: HashSet<Vec<u8>>,
    /// Directories whose mode and mtime are set at the end, once their contents are written.
    dirs: Vec<(Vec<OsString>, u32, TimeSpec)>,
    buf: Vec<u8>,
}

impl Applier {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = PathBuf::from(OsStr::from_bytes(&raw));
        let comps = clean_path(&raw).ok_or_else(|| LayerError::Escape {
            path: shown.clone(),
            reason: "the path climbs above the root with `..`",
        })?;
        let mut kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        // Pre-POSIX tars mark directories only by a trailing slash on a regular entry.
        if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous)
            && raw.last() == Some(&b'/')
        {
            kind = tar::EntryType::Directory;
        }
        self.stats.entries += 1;
        let Some((base, parent)) = comps.split_last() else {
            // The root itself ("./"): its metadata belongs to whoever made `dest`.
            return Ok(());
        };

        if self.opts.whiteouts {
            let name = base.as_bytes();
            if name == OPAQUE_MARKER.as_bytes() {
                return self.opaque(&shown, parent);
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                return self.whiteout(&shown, parent, hidden);
            }
        }

        let meta = read_meta(&mut entry, &shown)?;
        let pfd = self
            .root
            .open_dir(parent, true)
            .map_err(|e| LayerError::errno(&shown, e))?;
        let is_dir = kind.is_dir();
        // Whatever is in the way goes, except a directory that a directory entry updates.
        match fstatat(&pfd, base.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let existing_dir = file_kind(st.st_mode) == SFlag::S_IFDIR;
                if !(existing_dir && is_dir) {
                    remove_all(&pfd, base).map_err(|e| LayerError::errno(&shown, e))?;
                }
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(LayerError::errno(&shown, e)),
        }

        let dev = || -> Result<u64> {
            let major = entry_dev(entry.header().device_major(), &shown)?;
            let minor = entry_dev(entry.header().device_minor(), &shown)?;
            Ok(libc::makedev(major, minor))
        };
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match mkdirat(&pfd, base.as_os_str(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(LayerError::errno(&shown, e)),
                }
                self.set_owner(&pfd, base, &meta, &shown)?;
                self.set_xattrs_at(&pfd, base, &meta, &shown)?;
                self.dirs.push((comps.clone(), meta.mode, meta.mtime));
                self.stats.dirs += 1;
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let fd = openat(
                    &pfd,
                    base.as_os_str(),
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| LayerError::errno(&shown, e))?;
                let mut file = File::from(fd);
                let expected = entry.size();
                let copied = self.copy(&mut entry, &mut file, &shown)?;
                // The tar reader reports a stream cut inside an entry as a short entry; sparse
                // entries legitimately expand beyond their stored size.
                if copied < expected && kind != T::GNUSparse {
                    return Err(LayerError::SizeMismatch {
                        path: shown,
                        expected,
                        actual: copied,
                    });
                }
                self.set_owner(&pfd, base, &meta, &shown)?;
                // After chown, which clears setuid/setgid.
                nix::sys::stat::fchmod(&file, mode_bits(meta.mode))
                    .map_err(|e| LayerError::errno(&shown, e))?;
                self.set_xattrs_fd(&file, &meta, &shown)?;
                nix::sys::stat::futimens(&file, &meta.mtime, &meta.mtime)
                    .map_err(|e| LayerError::errno(&shown, e))?;
                self.stats.files += 1;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::InvalidPath {
                        path: shown.clone(),
                        reason: "symlink without a target",
                    })?
                    .into_owned();
                nix::unistd::symlinkat(OsStr::from_bytes(&target), &pfd, base.as_os_str())
                    .map_err(|e| LayerError::errno(&shown, e))?;
                self.set_owner(&pfd, base, &meta, &shown)?;
                self.set_xattrs_at(&pfd, base, &meta, &shown)?;
                self.set_times(&pfd, base, meta.mtime, &shown)?;
                self.stats.symlinks += 1;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::InvalidPath {
                        path: shown.clone(),
                        reason: "hard link without a target",
                    })?
                    .into_owned();
                let tcomps = clean_path(&target).ok_or_else(|| LayerError::LinkEscape {
                    path: shown.clone(),
                    target: PathBuf::from(OsStr::from_bytes(&target)),
                })?;
                let Some((tbase, tparent)) = tcomps.split_last() else {
                    return Err(LayerError::Escape {
                        path: shown,
                        reason: "hard link to the root",
                    });
                };
                let tfd = self
                    .root
                    .open_dir(tparent, false)
                    .map_err(|e| LayerError::errno(&shown, e))?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself, which
                // lies inside the root whatever it points to.
                nix::unistd::linkat(
                    &tfd,
                    tbase.as_os_str(),
                    &pfd,
                    base.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| LayerError::errno(&shown, e))?;
                self.stats.hardlinks += 1;
            }
            T::Char | T::Block | T::Fifo => {
                let (sflag, dev) = match kind {
                    T::Char => (SFlag::S_IFCHR, dev()?),
                    T::Block => (SFlag::S_IFBLK, dev()?),
                    _ => (SFlag::S_IFIFO, 0),
                };
                let is_device = sflag != SFlag::S_IFIFO;
                if is_device && self.opts.devices == Policy::Skip {
                    self.stats.ignored += 1;
                    return Ok(());
                }
                match mknodat(
                    &pfd,
                    base.as_os_str(),
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    dev,
                ) {
                    Ok(()) => {}
                    Err(e)
                        if is_device && self.opts.devices == Policy::BestEffort && refused(e) =>
                    {
                        self.stats.ignored += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(LayerError::errno(&shown, e)),
                }
                self.set_owner(&pfd, base, &meta, &shown)?;
                fchmodat(
                    &pfd,
                    base.as_os_str(),
                    mode_bits(meta.mode),
                    FchmodatFlags::FollowSymlink,
                )
                .map_err(|e| LayerError::errno(&shown, e))?;
                self.set_xattrs_at(&pfd, base, &meta, &shown)?;
                self.set_times(&pfd, base, meta.mtime, &shown)?;
                if is_device {
                    self.stats.devices += 1;
                } else {
                    self.stats.fifos += 1;
                }
            }
            other => {
                return Err(LayerError::UnsupportedEntry {
                    path: shown,
                    kind: char::from(other.as_byte()),
                })
            }
        }
        if self.opts.whiteouts {
            self.created.insert(join(&comps));
        }
        Ok(())
    }

    fn whiteout(&mut self, shown: &Path, parent: &[OsString], hidden: &[u8]) -> Result<()> {
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
            return Err(LayerError::InvalidPath {
                path: shown.to_path_buf(),
                reason: "whiteout of an invalid name",
            });
        }
        self.stats.whiteouts += 1;
        let mut target = parent.to_vec();
        target.push(OsStr::from_bytes(hidden).to_os_string());
        if self.created.contains(&join(&target)) {
            return Ok(());
        }
        let pfd = match self.root.open_dir(parent, false) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(()),
            Err(e) => return Err(LayerError::errno(shown, e)),
        };
        match remove_all(&pfd, OsStr::from_bytes(hidden)) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(LayerError::errno(shown, e)),
        }
    }

    fn opaque(&mut self, shown: &Path, parent: &[OsString]) -> Result<()> {
        self.stats.opaques += 1;
        let pfd = self
            .root
            .open_dir(parent, true)
            .map_err(|e| LayerError::errno(shown, e))?;
        let names = list_dir(&pfd).map_err(|e| LayerError::errno(shown, e))?;
        for name in names {
            let mut child = parent.to_vec();
            child.push(name.clone());
            if self.created.contains(&join(&child)) {
                continue;
            }
            match remove_all(&pfd, &name) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(LayerError::errno(shown, e)),
            }
        }
        Ok(())
    }

    /// Streams an entry's content into `to`; returns the number of bytes copied.
    fn copy<R: Read>(&mut self, from: &mut R, to: &mut File, shown: &Path) -> Result<u64> {
        let mut copied = 0u64;
        loop {
            let n = match from.read(&mut self.buf) {
                Ok(0) => return Ok(copied),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LayerError::ReadEntry {
                        path: shown.to_path_buf(),
                        source,
                    })
                }
            };
            to.write_all(self.buf.get(..n).unwrap_or_default())
                .map_err(|e| LayerError::io(shown, e))?;
            self.stats.bytes += n as u64;
            copied += n as u64;
        }
    }

    fn set_owner(&mut self, pfd: &OwnedFd, base: &OsStr, meta: &Meta, shown: &Path) -> Result<()> {
        if self.opts.ownership == Policy::Skip {
            return Ok(());
        }
        let ids = (u32::try_from(meta.uid), u32::try_from(meta.gid));
        let res = match ids {
            (Ok(uid), Ok(gid)) => nix::unistd::fchownat(
                pfd,
                base,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ),
            _ => Err(Errno::EINVAL),
        };
        match res {
            Ok(()) => Ok(()),
            Err(e) if self.opts.ownership == Policy::BestEffort && refused(e) => {
                self.stats.ignored += 1;
                Ok(())
            }
            Err(e) => Err(LayerError::Chown {
                path: shown.to_path_buf(),
                uid: meta.uid,
                gid: meta.gid,
                source: io::Error::from(e),
            }),
        }
    }

    fn set_xattrs_fd(&mut self, file: &File, meta: &Meta, shown: &Path) -> Result<()> {
        use xattr::FileExt;
        for (name, value) in &meta.xattrs {
            let res = if self.opts.xattrs == Policy::Skip {
                self.stats.ignored += 1;
                continue;
            } else {
                file.set_xattr(name, value)
            };
            self.xattr_result(res, name, shown)?;
        }
        Ok(())
    }

    /// Sets xattrs on `base` in `pfd` without following it. Linux has no fd-relative
    /// lsetxattr before 6.13, so the parent is named through /proc/self/fd.
    fn set_xattrs_at(
        &mut self,
        pfd: &OwnedFd,
        base: &OsStr,
        meta: &Meta,
        shown: &Path,
    ) -> Result<()> {
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        let mut path = PathBuf::from(format!("/proc/self/fd/{}", pfd.as_fd().as_raw_fd()));
        path.push(base);
        for (name, value) in &meta.xattrs {
            if self.opts.xattrs == Policy::Skip {
                self.stats.ignored += 1;
                continue;
            }
            let res = xattr::set(&path, name, value);
            self.xattr_result(res, name, shown)?;
        }
        Ok(())
    }

    fn xattr_result(&mut self, res: io::Result<()>, name: &OsStr, shown: &Path) -> Result<()> {
        match res {
            Ok(()) => Ok(()),
            Err(e)
                if self.opts.xattrs == Policy::BestEffort
                    && e.raw_os_error().map(Errno::from_raw).is_some_and(refused) =>
            {
                self.stats.ignored += 1;
                Ok(())
            }
            Err(source) => Err(LayerError::Xattr {
                path: shown.to_path_buf(),
                name: name.to_string_lossy().into_owned(),
                source,
            }),
        }
    }

    fn set_times(&self, pfd: &OwnedFd, base: &OsStr, mtime: TimeSpec, shown: &Path) -> Result<()> {
        nix::sys::stat::utimensat(
            pfd,
            base,
            &mtime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| LayerError::errno(shown, e))
    }

    /// Modes and mtimes of directories, deepest last-written first, so that writing children
    /// neither changes a finished mtime nor hits a directory already made read-only.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (comps, mode, mtime) in dirs.into_iter().rev() {
            let shown = PathBuf::from(OsStr::from_bytes(&join(&comps)));
            let Some((base, parent)) = comps.split_last() else {
                continue;
            };
            let pfd = match self.root.open_dir(parent, false) {
                Ok(fd) => fd,
                // Replaced later in the same layer: nothing left to finish.
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => continue,
                Err(e) => return Err(LayerError::errno(&shown, e)),
            };
            match fstatat(&pfd, base.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if file_kind(st.st_mode) == SFlag::S_IFDIR => {}
                Ok(_) | Err(Errno::ENOENT) => continue,
                Err(e) => return Err(LayerError::errno(&shown, e)),
            }
            fchmodat(
                &pfd,
                base.as_os_str(),
                mode_bits(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| LayerError::errno(&shown, e))?;
            self.set_times(&pfd, base, mtime, &shown)?;
        }
        Ok(())
    }
}

/// Lexically cleans a tar name into components below the root: `.` and empty parts vanish,
/// a leading `/` is dropped, `..` removes the previous part. `None` when `..` would climb
/// above the root.
pub(crate) fn clean_path(raw: &[u8]) -> Option<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            p => out.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Some(out)
}

pub(crate) fn join(comps: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_bytes());
    }
    out
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &Path) -> Result<Meta> {
    let bad = |what: &'static str| LayerError::InvalidPath {
        path: shown.to_path_buf(),
        reason: what,
    };
    let h = entry.header();
    let mode = h.mode().map_err(|_| bad("unreadable mode field"))?;
    let mut uid = h.uid().map_err(|_| bad("unreadable uid field"))?;
    let mut gid = h.gid().map_err(|_| bad("unreadable gid field"))?;
    let mtime_secs = h.mtime().map_err(|_| bad("unreadable mtime field"))?;
    let mut mtime = TimeSpec::new(i64::try_from(mtime_secs).unwrap_or(i64::MAX), 0);
    let mut xattrs = Vec::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|source| LayerError::ReadEntry {
            path: shown.to_path_buf(),
            source,
        })?
    {
        for ext in pax {
            let ext = ext.map_err(|source| LayerError::ReadEntry {
                path: shown.to_path_buf(),
                source,
            })?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            match key {
                "uid" => uid = parse_pax_int(value).ok_or_else(|| bad("bad PAX uid"))?,
                "gid" => gid = parse_pax_int(value).ok_or_else(|| bad("bad PAX gid"))?,
                "mtime" => mtime = parse_pax_time(value).ok_or_else(|| bad("bad PAX mtime"))?,
                k => {
                    // overlayfs' own attributes would let a layer steer the overlay mount that
                    // uses the unpacked snapshot as a lower dir (redirects, opaque flags).
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        if !OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
                            xattrs.push((OsString::from(name), value.to_vec()));
                        }
                    }
                }
            }
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

fn parse_pax_int(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction, possibly negative.
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let mut nanos: i64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    if int.starts_with('-') && nanos > 0 {
        nanos = -nanos;
    }
    let d = Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.unsigned_abs());
    let total = TimeSpec::from_duration(d);
    Some(if secs < 0 || nanos < 0 { -total } else { total })
}

fn entry_dev(v: io::Result<Option<u32>>, shown: &Path) -> Result<u32> {
    v.map(|d| d.unwrap_or(0))
        .map_err(|_| LayerError::InvalidPath {
            path: shown.to_path_buf(),
            reason: "unreadable device number",
        })
}

fn mode_bits(mode: u32) -> Mode {
    Mode::from_bits_truncate((mode & 0o7777) as libc::mode_t)
}

fn file_kind(st_mode: libc::mode_t) -> SFlag {
    SFlag::from_bits_truncate(st_mode) & SFlag::S_IFMT
}

/// Refusals that [`Policy::BestEffort`] forgives: no privilege, an id this namespace cannot
/// map, or a filesystem without the feature.
fn refused(e: Errno) -> bool {
    matches!(
        e,
        Errno::EPERM | Errno::EINVAL | Errno::ENOTSUP | Errno::EACCES
    )
}

/// Names in the directory `dir` (an `O_PATH` fd), without `.` and `..`.
fn list_dir(dir: &OwnedFd) -> nix::Result<Vec<OsString>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for ent in d.iter() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Removes `name` in `parent` and, for a directory, all it holds; symlinks are removed,
/// never followed.
fn remove_all(parent: &OwnedFd, name: &OsStr) -> nix::Result<()> {
    match nix::unistd::unlinkat(parent, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    // A directory: empty it through an fd opened without following, then remove it.
    let dir = openat(
        parent,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // Lower layers may hold directories we cannot list or enter; as root this is moot, and
    // without root such a tree could not be removed anyway.
    for child in list_dir(&dir)? {
        remove_all(&dir, &child)?;
    }
    nix::unistd::unlinkat(parent, name, nix::unistd::UnlinkatFlags::RemoveDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_like_docker() {
        let s = |v: &str| clean_path(v.as_bytes()).map(|c| String::from_utf8(join(&c)).unwrap());
        assert_eq!(s("./a/b/").as_deref(), Some("a/b"));
        assert_eq!(s("/etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(s("a/../b").as_deref(), Some("b"));
        assert_eq!(s("./").as_deref(), Some(""));
        assert_eq!(s("../x"), None);
        assert_eq!(s("a/../../x"), None);
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(
            parse_pax_time(b"12.5"),
            Some(TimeSpec::new(12, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"-1"), Some(TimeSpec::new(-1, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
