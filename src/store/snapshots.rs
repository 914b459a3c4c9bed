//! Unpacked layers under `snapshots/<diffid-hex>/`, made once per diffID and published by an
//! atomic rename of a staging directory, so a snapshot directory is always complete.

use std::fs::{self, File, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::{io_err, Result, StoreError};
use super::lock::FileLock;
use super::{fsutil, treesum, Store};
use crate::image::Digest;

impl Store {
    /// The snapshot of `diff_id` if it exists (and so is complete).
    pub fn snapshot_path(&self, diff_id: &Digest) -> Option<PathBuf> {
        let dir = self.snapshot_dir(diff_id);
        dir.is_dir().then_some(dir)
    }

    /// Returns the snapshot of `diff_id`, making it first if needed: `fill` receives an empty
    /// staging directory under `tmp/` to unpack the layer into; on success it is renamed into
    /// `snapshots/`. Concurrent callers for one diffID (threads or processes) are serialised by
    /// `locks/snapshot-<hex>.lock`: one fills, the others get its result. If `fill` fails
    /// nothing becomes visible. To keep a snapshot from gc while using it, pin it with a
    /// [`super::Lease`].
    pub fn ensure_snapshot<E>(
        &self,
        diff_id: &Digest,
        fill: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        if let Some(p) = self.snapshot_path(diff_id) {
            return Ok(p);
        }
        let _lock = FileLock::exclusive(self.snapshot_lock_path(diff_id))?;
        if let Some(p) = self.snapshot_path(diff_id) {
            return Ok(p);
        }

        let tmp_dir = self.tmp_dir();
        let staging = tempfile::Builder::new()
            .prefix(&format!("snapshot-{}-", diff_id.short()))
            .tempdir_in(&tmp_dir)
            .map_err(io_err("creating snapshot staging directory in", &tmp_dir))?;
        // The rootfs of a container must be traversable; the layer may still set its own mode.
        fs::set_permissions(staging.path(), Permissions::from_mode(0o755))
            .map_err(io_err("setting mode of", staging.path()))?;
        let handle = File::open(staging.path()).map_err(io_err("opening", staging.path()))?;
        let _staging_lock = FileLock::exclusive_on(handle, staging.path().to_path_buf())?;

        if let Err(e) = fill(staging.path()) {
            // Best effort: a tree gc can remove later is no reason to hide the fill error.
            let path = staging.keep();
            let _ = fsutil::remove_tree(&path);
            return Err(StoreError::SnapshotFill {
                diff_id: diff_id.clone(),
                source: e.into(),
            });
        }

        // Recorded before the snapshot appears, so every published snapshot made by this
        // version has a record `system check` can compare it against. A tree the store cannot
        // walk (ids of a rootless user's containers) stays unrecorded: check says so.
        if let Ok(record) = treesum::tree_record(staging.path()) {
            let path = self.snapshot_record_path(diff_id);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io_err("creating directory", dir))?;
            }
            fsutil::atomic_write(
                &tmp_dir,
                &path,
                record.as_bytes(),
                "writing snapshot record",
            )?;
        }

        let staged = staging.keep();
        let dest = self.snapshot_dir(diff_id);
        if let Err(e) = fs::rename(&staged, &dest) {
            let _ = fsutil::remove_tree(&staged);
            // gc unlinks lock files of removed snapshots, so in a rare race two makers hold
            // "the" lock at once; the loser finds the winner's complete snapshot here.
            if dest.is_dir() {
                return Ok(dest);
            }
            return Err(io_err("publishing snapshot", dest)(e));
        }
        fsutil::fsync_dir(&self.snapshots_dir())?;
        // The staging dir's mtime may be old after a long fill; gc's grace counts from now.
        fsutil::touch(&dest)?;
        Ok(dest)
    }

    /// Where the content record of a snapshot lives (see `treesum`).
    pub(crate) fn snapshot_record_path(&self, diff_id: &Digest) -> PathBuf {
        self.root().join("snapshot-records").join(diff_id.hex())
    }

    pub(crate) fn snapshot_lock_path(&self, diff_id: &Digest) -> PathBuf {
        self.locks_dir()
            .join(format!("snapshot-{}.lock", diff_id.hex()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn fill_once_then_reuse() {
        let (_d, s) = store();
        let id = Digest::sha256_of(b"layer");
        assert_eq!(s.snapshot_path(&id), None);
        let p = s
            .ensure_snapshot(&id, |dir| fs::write(dir.join("hello"), b"hi"))
            .unwrap();
        assert_eq!(fs::read(p.join("hello")).unwrap(), b"hi");
        assert_eq!(s.snapshot_path(&id), Some(p.clone()));
        let again = s
            .ensure_snapshot(&id, |_| {
                Err::<(), _>(std::io::Error::other("must not be called"))
            })
            .unwrap();
        assert_eq!(again, p);
        assert!(fsutil::list_names(&s.tmp_dir()).unwrap().is_empty());
    }

    #[test]
    fn failed_fill_leaves_nothing() {
        let (_d, s) = store();
        let id = Digest::sha256_of(b"layer");
        let err = s
            .ensure_snapshot(&id, |dir| {
                fs::create_dir(dir.join("ro"))?;
                fs::write(dir.join("ro/f"), b"x")?;
                fs::set_permissions(dir.join("ro"), Permissions::from_mode(0o555))?;
                Err(std::io::Error::other("tar stream truncated"))
            })
            .unwrap_err();
        assert!(err.to_string().contains("tar stream truncated"), "{err}");
        assert_eq!(s.snapshot_path(&id), None);
        assert!(fsutil::list_names(&s.tmp_dir()).unwrap().is_empty());
    }

    #[test]
    fn concurrent_callers_fill_once() {
        let (_d, s) = store();
        let id = Digest::sha256_of(b"layer");
        let fills = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (s, id, fills, barrier) =
                    (s.clone(), id.clone(), fills.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    s.ensure_snapshot(&id, |dir| {
                        fills.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        fs::write(dir.join("f"), b"x")
                    })
                    .unwrap()
                })
            })
            .collect();
        let paths: Vec<PathBuf> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(fills.load(Ordering::SeqCst), 1);
        assert!(paths.iter().all(|p| *p == paths[0]));
    }
}
