//! Layer snapshots as overlayfs lower dirs. A snapshot holds one layer unpacked on its own;
//! its OCI whiteouts become overlayfs ones so the overlay hides what the layer deleted:
//! `.wh.NAME` is a character device 0/0 named NAME (which any user may create since Linux
//! 5.8; where the filesystem refuses it, as overlayfs does, an empty file with the xattr
//! `user.overlay.whiteout`), and `.wh..wh..opq` is the xattr `user.overlay.opaque=y` on its
//! directory (the form overlayfs reads when mounted with `userxattr`, as it is inside a user
//! namespace).

use super::{IdPlan, RuntimeError};
use crate::image::Digest;
use crate::layer::{apply_layer, ApplyOptions, Policy};
use crate::store::Store;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const WH: &str = ".wh.";
const OPQ: &str = ".wh..wh..opq";
pub(crate) const OPAQUE_XATTR: &str = "user.overlay.opaque";
const WHITEOUT_XATTR: &str = "user.overlay.whiteout";
/// On a directory: some of its entries are xattr whiteouts (Linux 6.7's format).
const WHITEOUTS_XATTR: &str = "user.overlay.whiteouts";

/// Is this entry of a snapshot (or an upper dir) a whiteout: a 0/0 character device, or a
/// file marked with the `overlay.whiteout` xattr?
pub(crate) fn is_whiteout(path: &Path, md: &fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    (md.file_type().is_char_device() && md.rdev() == 0)
        || (md.is_file()
            && md.len() == 0
            && ["user.overlay.whiteout", "trusted.overlay.whiteout"]
                .iter()
                .any(|k| xattr::get(path, k).is_ok_and(|v| v.is_some())))
}

/// The snapshot of the layer `diff_id` (uncompressed tar at `tar`), made if missing. Without
/// root but with subordinate ids, it is unpacked inside a user namespace mapped as the
/// containers are, so the layer's owners are kept; with the caller's id alone, everything is
/// the caller's (container root's).
pub fn ensure_lower(
    store: &Store,
    ids: &IdPlan,
    diff_id: &Digest,
    tar: &Path,
) -> Result<PathBuf, RuntimeError> {
    let root = nix::unistd::geteuid().is_root();
    let fill = |dir: &Path, ownership: Policy| -> Result<(), String> {
        let f = fs::File::open(tar).map_err(|e| format!("{}: {e}", tar.display()))?;
        let opts = ApplyOptions {
            whiteouts: false,
            ownership,
            xattrs: Policy::BestEffort,
            devices: Policy::BestEffort,
            ..ApplyOptions::default()
        };
        apply_layer(std::io::BufReader::new(f), dir, &opts)
            .map_err(|e| format!("unpacking {diff_id}: {e}"))?;
        to_overlay_whiteouts(dir).map_err(|e| e.to_string())
    };
    store
        .ensure_snapshot(diff_id, |dir| -> Result<(), RuntimeError> {
            if root {
                fill(dir, Policy::Apply).map_err(RuntimeError::Rootfs)
            } else if ids.helpers {
                // Ids beyond the mapped range cannot be kept: those files stay root's.
                super::in_user_namespace(ids, &mut || fill(dir, Policy::BestEffort))
            } else {
                fill(dir, Policy::Skip).map_err(RuntimeError::Rootfs)
            }
        })
        .map_err(|e| RuntimeError::Rootfs(e.to_string()))
}

/// Turn the OCI whiteouts under `dir` (left as plain files) into overlayfs ones.
pub fn to_overlay_whiteouts(dir: &Path) -> Result<(), RuntimeError> {
    let mut names: Vec<OsString> = Vec::new();
    for ent in fs::read_dir(dir).map_err(|e| RuntimeError::io(dir, e))? {
        names.push(ent.map_err(|e| RuntimeError::io(dir, e))?.file_name());
    }
    for name in names {
        let path = dir.join(&name);
        let bytes = name.as_bytes();
        if bytes == OPQ.as_bytes() {
            fs::remove_file(&path).map_err(|e| RuntimeError::io(&path, e))?;
            xattr::set(dir, OPAQUE_XATTR, b"y").map_err(|e| RuntimeError::io(dir, e))?;
        } else if let Some(hidden) = bytes.strip_prefix(WH.as_bytes()) {
            fs::remove_file(&path).map_err(|e| RuntimeError::io(&path, e))?;
            let target = dir.join(std::ffi::OsStr::from_bytes(hidden));
            if let Err(e) = nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            ) {
                if e != nix::errno::Errno::EPERM {
                    return Err(RuntimeError::io(&target, e.into()));
                }
                // overlayfs refuses 0/0 devices on itself (a store inside a docker
                // container): an empty file marked by xattr, as Linux 6.7 reads them.
                fs::write(&target, b"").map_err(|e| RuntimeError::io(&target, e))?;
                xattr::set(&target, WHITEOUT_XATTR, b"y")
                    .map_err(|e| RuntimeError::io(&target, e))?;
                xattr::set(dir, WHITEOUTS_XATTR, b"y").map_err(|e| RuntimeError::io(dir, e))?;
            }
        } else {
            let md = fs::symlink_metadata(&path).map_err(|e| RuntimeError::io(&path, e))?;
            if md.is_dir() {
                to_overlay_whiteouts(&path)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    #[test]
    fn whiteouts_are_devices_or_marked_empty_files() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, b"").unwrap();
        assert!(!is_whiteout(&f, &fs::symlink_metadata(&f).unwrap()));
        // tmpfs in some sandboxes refuses user xattrs.
        if xattr::set(&f, WHITEOUT_XATTR, b"y").is_ok() {
            assert!(is_whiteout(&f, &fs::symlink_metadata(&f).unwrap()));
            fs::write(&f, b"data").unwrap();
            assert!(!is_whiteout(&f, &fs::symlink_metadata(&f).unwrap()));
        }
    }

    #[test]
    fn whiteouts_become_overlay_ones() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::create_dir_all(d.join("etc/opq")).unwrap();
        fs::write(d.join("etc/.wh.gone"), b"").unwrap();
        fs::write(d.join("etc/opq/.wh..wh..opq"), b"").unwrap();
        fs::write(d.join("etc/keep"), b"x").unwrap();
        to_overlay_whiteouts(d).unwrap();
        let md = fs::symlink_metadata(d.join("etc/gone")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!(md.rdev(), 0);
        assert!(!d.join("etc/.wh.gone").exists());
        assert!(!d.join("etc/opq/.wh..wh..opq").exists());
        // tmpfs in some sandboxes refuses user xattrs; the device part is checked above.
        if let Ok(v) = xattr::get(d.join("etc/opq"), OPAQUE_XATTR) {
            assert_eq!(v.as_deref(), Some(&b"y"[..]));
        }
        assert_eq!(fs::read(d.join("etc/keep")).unwrap(), b"x");
    }
}
