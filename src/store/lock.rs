//! Advisory file locks (`flock(2)`), shared or exclusive, one lock file per object.
//!
//! flock locks belong to the open file description, so two `FileLock`s on the same path
//! exclude each other even inside one process (threads of a build serialise correctly), and the
//! kernel drops the lock when the process dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::error::{io_err, Result};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Blocks until an exclusive lock on `path` (created if missing) is held.
    pub fn exclusive(path: impl AsRef<Path>) -> Result<Self> {
        let (file, path) = open(path.as_ref())?;
        file.lock()
            .map_err(io_err("taking exclusive lock", &path))?;
        Ok(FileLock { file, path })
    }

    /// Blocks until a shared lock on `path` (created if missing) is held.
    pub fn shared(path: impl AsRef<Path>) -> Result<Self> {
        let (file, path) = open(path.as_ref())?;
        file.lock_shared()
            .map_err(io_err("taking shared lock", &path))?;
        Ok(FileLock { file, path })
    }

    /// An exclusive lock if nobody holds any lock on `path` right now, else `None`.
    pub fn try_exclusive(path: impl AsRef<Path>) -> Result<Option<Self>> {
        let (file, path) = open(path.as_ref())?;
        Self::try_from_file(file, path)
    }

    /// Locks an already open file or directory (used for staging entries under `tmp/`, so gc
    /// can tell live ones from crash leftovers).
    pub(crate) fn try_from_file(file: File, path: PathBuf) -> Result<Option<Self>> {
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { file, path })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(io_err("taking exclusive lock", path)(e)),
        }
    }

    pub(crate) fn exclusive_on(file: File, path: PathBuf) -> Result<Self> {
        file.lock()
            .map_err(io_err("taking exclusive lock", &path))?;
        Ok(FileLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Unlock explicitly: a forked child may share the descriptor and would keep the lock.
        let _ = self.file.unlock();
    }
}

fn open(path: &Path) -> Result<(File, PathBuf)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("opening lock file", path))?;
    Ok((file, path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_within_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let held = FileLock::exclusive(&p).unwrap();
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_exclusive(&p).unwrap().is_some());
    }

    #[test]
    fn shared_locks_coexist_but_block_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let a = FileLock::shared(&p).unwrap();
        let b = FileLock::shared(&p).unwrap();
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop((a, b));
        assert!(FileLock::try_exclusive(&p).unwrap().is_some());
    }
}
