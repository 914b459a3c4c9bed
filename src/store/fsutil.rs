//! Filesystem helpers that make every store write atomic and durable.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::error::{io_err, Result};

/// Mode of files the store publishes: readable by other tools (skopeo, umoci) run by anyone.
pub(crate) const FILE_MODE: u32 = 0o644;

/// Writes `bytes` to `target` atomically: a temp file in `tmp_dir` (same filesystem), fsync,
/// rename over `target`, fsync of `target`'s directory. Readers see the old or the new file.
pub(crate) fn atomic_write(
    tmp_dir: &Path,
    target: &Path,
    bytes: &[u8],
    op: &'static str,
) -> Result<()> {
    let tmp = staged(tmp_dir, bytes, op)?;
    tmp.as_file().sync_all().map_err(io_err(op, tmp.path()))?;
    tmp.persist(target)
        .map_err(|e| io_err(op, target)(e.error))?;
    fsync_parent(target)
}

/// Writes `bytes` to `target` by rename of a temp file, without fsync: for records that only
/// save or explain work (cache entries, stat caches). After a crash such a record may be
/// missing or empty, never half of another one; readers treat both as a miss.
pub(crate) fn replace_unsynced(
    tmp_dir: &Path,
    target: &Path,
    bytes: &[u8],
    op: &'static str,
) -> Result<()> {
    staged(tmp_dir, bytes, op)?
        .persist(target)
        .map_err(|e| io_err(op, target)(e.error))?;
    Ok(())
}

/// `bytes` in a new temp file of `tmp_dir`, with the mode the store publishes files with,
/// locked so gc's tmp sweep sees it as live until it is persisted or dropped.
fn staged(tmp_dir: &Path, bytes: &[u8], op: &'static str) -> Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix("write-")
        .tempfile_in(tmp_dir)
        .map_err(io_err("creating temp file in", tmp_dir))?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io_err("setting mode of", tmp.path()))?;
    tmp.as_file()
        .lock()
        .map_err(io_err("locking", tmp.path()))?;
    tmp.write_all(bytes).map_err(io_err(op, tmp.path()))?;
    Ok(tmp)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

pub(crate) fn fsync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => fsync_dir(parent),
        None => Ok(()),
    }
}

/// Sets the modification time of a file or directory to now, so gc's grace period starts over.
pub(crate) fn touch(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .map_err(io_err("updating modification time of", path))
}

/// [`touch`], but `Ok(false)` when `path` does not exist (or was just removed by gc).
pub(crate) fn touch_if_exists(path: &Path) -> Result<bool> {
    match File::open(path).and_then(|f| f.set_modified(SystemTime::now())) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("updating modification time of", path)(e)),
    }
}

/// How long ago `path` was modified; `None` if it vanished. Future mtimes count as "just now".
pub(crate) fn age(path: &Path) -> Result<Option<Duration>> {
    match fs::symlink_metadata(path) {
        Ok(md) => {
            let modified = md
                .modified()
                .map_err(io_err("reading modification time of", path))?;
            Ok(Some(
                SystemTime::now()
                    .duration_since(modified)
                    .unwrap_or(Duration::ZERO),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("inspecting", path)(e)),
    }
}

/// Removes a file or a whole tree. Unpacked layers may contain read-only directories, which
/// block deleting their entries for a non-root owner, so those are made writable first.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspecting", path)(e)),
    };
    if !md.is_dir() {
        return ignore_not_found(fs::remove_file(path)).map_err(io_err("removing", path));
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    let writable = make_dirs_writable(path);
    if writable.is_ok() && ignore_not_found(fs::remove_dir_all(path)).is_ok() {
        return Ok(());
    }
    // Directories owned by other ids of the caller's user namespace (left by rootless
    // containers) need the namespace to be removed.
    if let Some(remove) = FOREIGN_TREE_REMOVER.get() {
        return ignore_not_found(remove(path)).map_err(io_err("removing", path));
    }
    writable?;
    ignore_not_found(fs::remove_dir_all(path)).map_err(io_err("removing", path))
}

/// How to remove a tree the caller cannot remove alone: files owned by the subordinate ids
/// of a rootless user's containers. The binary sets it once, at start, to remove the tree
/// inside a user namespace mapped as its containers are (the store cannot import the
/// runtime that knows how).
static FOREIGN_TREE_REMOVER: std::sync::OnceLock<fn(&Path) -> io::Result<()>> =
    std::sync::OnceLock::new();

/// Register the remover for trees owned by a rootless user's subordinate ids.
pub fn set_foreign_tree_remover(remove: fn(&Path) -> io::Result<()>) {
    let _ = FOREIGN_TREE_REMOVER.set(remove);
}

fn make_dirs_writable(dir: &Path) -> Result<()> {
    let md = fs::symlink_metadata(dir).map_err(io_err("inspecting", dir))?;
    if !md.is_dir() {
        return Ok(());
    }
    let mode = md.permissions().mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(dir, Permissions::from_mode(mode | 0o700))
            .map_err(io_err("making writable", dir))?;
    }
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        if entry
            .file_type()
            .map_err(io_err("inspecting", entry.path()))?
            .is_dir()
        {
            make_dirs_writable(&entry.path())?;
        }
    }
    Ok(())
}

fn ignore_not_found(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Size in bytes of a file or tree (symlinks are not followed).
pub(crate) fn tree_size(path: &Path) -> u64 {
    let Ok(md) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !md.is_dir() {
        return md.len();
    }
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| tree_size(&e.path()))
        .fold(0u64, u64::saturating_add)
}

/// Lists the names of the entries of `dir` that are valid UTF-8; a missing dir is empty.
pub(crate) fn list_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        atomic_write(dir.path(), &target, b"one", "writing").unwrap();
        atomic_write(dir.path(), &target, b"two", "writing").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(list_names(dir.path()).unwrap(), vec!["f".to_string()]);
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            FILE_MODE
        );
    }

    #[test]
    fn remove_tree_handles_read_only_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        fs::create_dir_all(t.join("ro/sub")).unwrap();
        fs::write(t.join("ro/sub/file"), b"x").unwrap();
        fs::set_permissions(t.join("ro/sub"), Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(t.join("ro"), Permissions::from_mode(0o555)).unwrap();
        assert_eq!(tree_size(&t), 1);
        remove_tree(&t).unwrap();
        assert!(!t.exists());
        remove_tree(&t).unwrap();
    }
}
