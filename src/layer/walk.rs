//! Layers made from directories on disk: a whole tree in sorted order, or an overlayfs upper
//! directory whose whiteouts and opaque markers become OCI ones.

use super::digest::Digested;
use super::error::{LayerError, Result};
use super::writer::{BuildOptions, DeviceKind, EntryMeta, LayerBuilder};
use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Which xattrs of the walked files go into the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrMode {
    /// None at all.
    Skip,
    /// All but overlayfs' own (`trusted.overlay.*`, `user.overlay.*`) and `security.selinux`
    /// (a label of the build host, which would make the layer differ from host to host).
    Portable,
}

/// How [`LayerBuilder::append_tree`] reads the host tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeOptions {
    pub xattrs: XattrMode,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            xattrs: XattrMode::Portable,
        }
    }
}

pub(crate) const OVERLAY_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];
const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
const WHITEOUT_XATTRS: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    OverlayUpper,
}

impl<W: Write> LayerBuilder<W> {
    /// Adds everything under `root` (not `root` itself), with paths relative to `root`,
    /// depth-first with each directory's entries sorted by the bytes of their names (the
    /// order of Go's `filepath.Walk`, which docker and BuildKit use). Files with several links
    /// inside the tree become one file and hard links to it. Sockets are skipped: a tar cannot
    /// carry them.
    pub fn append_tree(&mut self, root: &Path, opts: TreeOptions) -> Result<()> {
        self.walk(root, opts, Mode::Plain)
    }

    /// Adds one object of the host filesystem (not followed if it is a symlink) under the
    /// archive path `path`. Directories are added alone, without their contents.
    pub fn append_host_entry(&mut self, path: &Path, host: &Path, opts: TreeOptions) -> Result<()> {
        let md = fs::symlink_metadata(host).map_err(|e| LayerError::io(host, e))?;
        let xattrs = read_xattrs(host, opts.xattrs)?;
        self.append_from_metadata(path, host, &md, xattrs)
    }

    /// Adds an overlayfs upper directory as a layer diff: whiteouts (0/0 character devices, or
    /// files with an `overlay.whiteout` xattr) become `.wh.` entries, directories marked
    /// `overlay.opaque=y` get an opaque marker, and overlay xattrs are dropped. The upper
    /// directory must come from a mount without `metacopy` and `redirect_dir`, whose
    /// records a tar cannot express.
    pub fn append_overlay_upper(&mut self, upper: &Path, opts: TreeOptions) -> Result<()> {
        self.walk(upper, opts, Mode::OverlayUpper)
    }

    fn walk(&mut self, root: &Path, opts: TreeOptions, mode: Mode) -> Result<()> {
        // An explicit stack instead of recursion: layer trees can be arbitrarily deep.
        let mut stack: Vec<PathBuf> = sorted_children(root, Path::new(""))?;
        stack.reverse();
        while let Some(rel) = stack.pop() {
            let host = root.join(&rel);
            let md = fs::symlink_metadata(&host).map_err(|e| LayerError::io(&host, e))?;
            let ft = md.file_type();
            // Overlay mode reads every xattr so that its markers are seen; they are filtered
            // out before anything is written.
            let mut all = match mode {
                Mode::OverlayUpper => read_all_xattrs(&host)?,
                Mode::Plain => read_xattrs(&host, opts.xattrs)?,
            };
            if mode == Mode::OverlayUpper {
                let is_whiteout = (ft.is_char_device() && md.rdev() == 0)
                    || WHITEOUT_XATTRS.iter().any(|k| all.contains_key(*k));
                if is_whiteout {
                    self.append_whiteout(&rel)?;
                    continue;
                }
                let opaque = ft.is_dir()
                    && OPAQUE_XATTRS
                        .iter()
                        .any(|k| all.get(*k).map(|v| v.as_slice()) == Some(b"y"));
                all = filter_xattrs(all, opts.xattrs);
                self.append_from_metadata(&rel, &host, &md, all)?;
                if opaque {
                    self.append_opaque(&rel)?;
                }
            } else {
                self.append_from_metadata(&rel, &host, &md, all)?;
            }
            if ft.is_dir() {
                let mut children = sorted_children(root, &rel)?;
                children.reverse();
                stack.extend(children);
            }
        }
        Ok(())
    }

    fn append_from_metadata(
        &mut self,
        path: &Path,
        host: &Path,
        md: &Metadata,
        xattrs: BTreeMap<String, Vec<u8>>,
    ) -> Result<()> {
        let meta = EntryMeta {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
            xattrs,
        };
        let ft = md.file_type();
        if ft.is_dir() {
            self.append_dir(path, &meta)
        } else if ft.is_symlink() {
            let target = fs::read_link(host).map_err(|e| LayerError::io(host, e))?;
            self.append_symlink(path, &meta, &target)
        } else if ft.is_file() {
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = self.links.get(&key).cloned() {
                    return self.append_hardlink(path, &meta, &first);
                }
                self.links.insert(key, path.to_path_buf());
            }
            self.append_file_from_path(path, &meta, host)
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                DeviceKind::Char
            } else {
                DeviceKind::Block
            };
            let rdev = md.rdev();
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            self.append_device(path, &meta, kind, major, minor)
        } else if ft.is_fifo() {
            self.append_fifo(path, &meta)
        } else {
            // Sockets: docker and BuildKit leave them out of layers too.
            Ok(())
        }
    }
}

/// Makes a whole layer from an overlayfs upper directory; see
/// [`LayerBuilder::append_overlay_upper`].
pub fn diff_overlay_upper<W: Write>(
    upper: &Path,
    out: W,
    build: BuildOptions,
    tree: TreeOptions,
) -> Result<(W, Digested)> {
    let mut b = LayerBuilder::new(out, build);
    b.append_overlay_upper(upper, tree)?;
    b.finish()
}

/// Relative paths of the entries of `root/rel`, sorted by name bytes.
fn sorted_children(root: &Path, rel: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join(rel);
    let mut names = Vec::new();
    for ent in fs::read_dir(&dir).map_err(|e| LayerError::io(&dir, e))? {
        let ent = ent.map_err(|e| LayerError::io(&dir, e))?;
        names.push(ent.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter().map(|n| rel.join(n)).collect())
}

fn read_xattrs(path: &Path, mode: XattrMode) -> Result<BTreeMap<String, Vec<u8>>> {
    match mode {
        XattrMode::Skip => Ok(BTreeMap::new()),
        XattrMode::Portable => Ok(filter_xattrs(read_all_xattrs(path)?, mode)),
    }
}

fn filter_xattrs(all: BTreeMap<String, Vec<u8>>, mode: XattrMode) -> BTreeMap<String, Vec<u8>> {
    match mode {
        XattrMode::Skip => BTreeMap::new(),
        XattrMode::Portable => all
            .into_iter()
            .filter(|(k, _)| {
                k != "security.selinux" && !OVERLAY_XATTR_PREFIXES.iter().any(|p| k.starts_with(p))
            })
            .collect(),
    }
}

/// Every xattr of `path` (not following symlinks). A filesystem without xattr support has none.
fn read_all_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if is_unsupported(&e) => return Ok(out),
        Err(e) => {
            return Err(LayerError::Xattr {
                path: path.to_path_buf(),
                name: "<list>".into(),
                source: e,
            })
        }
    };
    for name in names {
        let key = name.to_string_lossy().into_owned();
        let value = match xattr::get(path, &name) {
            Ok(Some(v)) => v,
            // Gone between list and get, or not readable by us: nothing to carry.
            Ok(None) => continue,
            Err(e) if is_unsupported(&e) || e.raw_os_error() == Some(libc::EPERM) => continue,
            Err(e) => {
                return Err(LayerError::Xattr {
                    path: path.to_path_buf(),
                    name: key,
                    source: e,
                })
            }
        };
        out.insert(key, value);
    }
    Ok(out)
}

fn is_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}
