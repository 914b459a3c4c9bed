//! Leases: a running build or container pins the blobs and snapshots it uses so a concurrent
//! gc keeps them, without holding any store-wide lock for its duration.
//!
//! A lease is `locks/lease-<id>.lock`, held under an exclusive flock for the lease's life, plus
//! `locks/lease-<id>.json`, the pinned digests. gc reads the pins of every lease whose lock is
//! held and deletes the files of leases whose owner died (the kernel released their lock).

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use super::error::{io_err, json_err, Result, StoreError};
use super::lock::FileLock;
use super::{fsutil, Store};
use crate::image::Digest;

/// Pins held until dropped.
pub struct Lease {
    store: Store,
    pins_path: PathBuf,
    lock_path: PathBuf,
    pins: Mutex<BTreeSet<Digest>>,
    // Dropped last (fields drop in order), after the files are removed.
    _lock: FileLock,
}

impl Store {
    /// Starts a lease with no pins.
    pub fn lease(&self) -> Result<Lease> {
        let tmp_dir = self.tmp_dir();
        // Made and locked under tmp/, then renamed: gc never sees an unlocked live lease.
        let tmp = tempfile::Builder::new()
            .prefix("lease-")
            .tempfile_in(&tmp_dir)
            .map_err(io_err("creating lease in", &tmp_dir))?;
        let name = tmp
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .unwrap_or_else(|| "lease-unnamed".to_string());
        let lock_path = self.locks_dir().join(format!("{name}.lock"));
        let pins_path = self.locks_dir().join(format!("{name}.json"));
        let handle = tmp.reopen().map_err(io_err("opening lease", tmp.path()))?;
        let lock = FileLock::exclusive_on(handle, lock_path.clone())?;
        tmp.persist(&lock_path)
            .map_err(|e| io_err("creating lease", &lock_path)(e.error))?;
        Ok(Lease {
            store: self.clone(),
            pins_path,
            lock_path,
            pins: Mutex::new(BTreeSet::new()),
            _lock: lock,
        })
    }

    /// Digests pinned by live leases; stale lease files (owner gone) are removed on the way.
    /// The caller holds the exclusive index lock.
    pub(crate) fn live_lease_pins(&self) -> Result<BTreeSet<Digest>> {
        let dir = self.locks_dir();
        let mut pins = BTreeSet::new();
        for name in fsutil::list_names(&dir)? {
            let Some(stem) = name
                .strip_prefix("lease-")
                .and_then(|n| n.strip_suffix(".lock"))
            else {
                continue;
            };
            let lock_path = dir.join(&name);
            let pins_path = dir.join(format!("lease-{stem}.json"));
            let file = match fs::File::open(&lock_path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("opening lease", &lock_path)(e)),
            };
            match FileLock::try_from_file(file, lock_path.clone())? {
                Some(_stale) => {
                    fsutil::remove_tree(&pins_path)?;
                    fsutil::remove_tree(&lock_path)?;
                }
                None => {
                    let bytes = match fs::read(&pins_path) {
                        Ok(b) => b,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_err("reading lease", &pins_path)(e)),
                    };
                    let list: Vec<Digest> = serde_json::from_slice(&bytes)
                        .map_err(json_err("parsing lease", &pins_path))?;
                    pins.extend(list);
                }
            }
        }
        Ok(pins)
    }
}

impl Lease {
    /// Pins a blob, or a layer by diffID (its blob, snapshot and compressed variants). It must
    /// exist now: the check runs under the index lock, so gc cannot remove it in between.
    pub fn pin(&self, digest: &Digest) -> Result<()> {
        let _index = self.store.lock_index_shared()?;
        if !self.store.has_blob(digest) && self.store.snapshot_path(digest).is_none() {
            return Err(StoreError::MissingBlob(digest.clone()));
        }
        let mut pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
        if !pins.insert(digest.clone()) {
            return Ok(());
        }
        let list: Vec<&Digest> = pins.iter().collect();
        let bytes =
            serde_json::to_vec(&list).map_err(json_err("serializing lease", &self.pins_path))?;
        fsutil::atomic_write(
            &self.store.tmp_dir(),
            &self.pins_path,
            &bytes,
            "writing lease",
        )
    }

    /// What this lease pins.
    pub fn pins(&self) -> Vec<Digest> {
        self.pins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Best effort: if this fails, gc removes the files once the lock is released.
        let _ = fs::remove_file(&self.pins_path);
        let _ = fs::remove_file(&self.lock_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media;

    #[test]
    fn pins_are_visible_while_alive_and_cleaned_after() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let blob = s.put_bytes(media::OCI_LAYER_TAR, b"x").unwrap();
        let lease = s.lease().unwrap();
        lease.pin(&blob.digest).unwrap();
        lease.pin(&blob.digest).unwrap();
        assert_eq!(lease.pins(), vec![blob.digest.clone()]);
        assert!(matches!(
            lease.pin(&Digest::sha256_of(b"ghost")),
            Err(StoreError::MissingBlob(_))
        ));
        {
            let _l = s.lock_index_exclusive().unwrap();
            assert_eq!(
                s.live_lease_pins().unwrap().into_iter().collect::<Vec<_>>(),
                vec![blob.digest.clone()]
            );
        }
        drop(lease);
        assert!(s.live_lease_pins().unwrap().is_empty());
        assert!(fsutil::list_names(&s.locks_dir())
            .unwrap()
            .iter()
            .all(|n| !n.starts_with("lease-")));
        assert!(fsutil::list_names(&s.tmp_dir()).unwrap().is_empty());
    }

    #[test]
    fn stale_lease_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // A lease whose owner died: files present, nobody holds the lock.
        fs::write(s.locks_dir().join("lease-dead.lock"), b"").unwrap();
        fs::write(s.locks_dir().join("lease-dead.json"), b"[]").unwrap();
        assert!(s.live_lease_pins().unwrap().is_empty());
        assert!(!s.locks_dir().join("lease-dead.lock").exists());
        assert!(!s.locks_dir().join("lease-dead.json").exists());
    }
}
