//! `system check`: verifies the whole store (blobs against their digests, tags and manifests
//! against the blobs they name, snapshots against the record made when they were unpacked,
//! cache and compressed-variant records against their blobs) and finds what crashed
//! processes left behind. With `repair`, removes what is broken and nothing that is sound.
//!
//! Two kinds of finding. A *problem* is damage: a blob whose bytes do not hash to its name, a
//! tag whose image lost a blob, a snapshot whose files changed, a record naming a missing
//! blob. A *leftover* is what a killed process leaves and the store's rules make harmless:
//! an unlocked temp entry older than a minute, a lease or snapshot lock whose owner is gone,
//! a snapshot record without its snapshot. A store with leftovers only is sound; gc and
//! `--repair` remove them. Temp entries a live process holds locked, or younger than a
//! minute (commands that stage without a lock), are counted as work in progress.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rayon::prelude::*;

use super::error::{io_err, Result};
use super::lock::FileLock;
use super::{fsutil, treesum, GcReport, Store};
use crate::image::{media, Descriptor, Digest, Index, Manifest, Sha256Hasher};

/// Temp entries younger than this may belong to a command that is still running.
pub(crate) const MIN_TMP_AGE: Duration = Duration::from_secs(60);

/// What a check does besides looking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Remove what is broken and what crashed processes left.
    pub repair: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// Damage: the store is not sound until it is repaired.
    Problem,
    /// Left by a killed process; harmless, removed by gc or repair.
    Leftover,
}

/// One finding of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub kind: IssueKind,
    /// The object: a path, a tag, a blob digest.
    pub what: String,
    /// What is wrong with it.
    pub detail: String,
    /// What repair did about it (`None` without repair, or when repair cannot help).
    pub repaired: Option<String>,
}

/// Progress of the long phases: `done` of `total` items of `stage` ("blobs", "snapshots").
#[derive(Debug, Clone, Copy)]
pub struct CheckProgress {
    pub stage: &'static str,
    pub done: usize,
    pub total: usize,
    pub bytes: u64,
}

/// The result of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub blobs: usize,
    pub blob_bytes: u64,
    pub index_entries: usize,
    pub cache_entries: usize,
    pub compressed_records: usize,
    pub snapshots: usize,
    /// Snapshots without a content record (made by an older kiln, or not walkable by the
    /// store's owner): they were checked for presence only.
    pub snapshots_unrecorded: usize,
    /// Temp entries a live process holds, or too young to judge.
    pub in_progress: usize,
    pub issues: Vec<Issue>,
}

impl CheckReport {
    pub fn problems(&self) -> impl Iterator<Item = &Issue> {
        self.issues.iter().filter(|i| i.kind == IssueKind::Problem)
    }

    pub fn leftovers(&self) -> impl Iterator<Item = &Issue> {
        self.issues.iter().filter(|i| i.kind == IssueKind::Leftover)
    }

    /// No damage left: no problems, or every problem repaired.
    pub fn is_sound(&self) -> bool {
        self.problems().all(|i| i.repaired.is_some())
    }
}

enum BlobState {
    Sound(u64),
    Vanished,
    Corrupt(Digest),
    Unreadable(String),
}

impl Store {
    /// Checks the store; see the module doc. `progress` is called from worker threads.
    pub fn check(
        &self,
        opts: CheckOptions,
        progress: &(dyn Fn(CheckProgress) + Sync),
    ) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let corrupt = self.check_blobs(opts, progress, &mut report)?;
        self.check_records(opts, &corrupt, &mut report)?;
        self.check_snapshots(opts, progress, &mut report)?;
        self.check_tmp(opts, &mut report)?;
        self.check_locks(opts, &mut report)?;
        self.check_mounts(&mut report);
        Ok(report)
    }

    /// Hashes every blob (in parallel); returns the digests that are no longer sound.
    fn check_blobs(
        &self,
        opts: CheckOptions,
        progress: &(dyn Fn(CheckProgress) + Sync),
        report: &mut CheckReport,
    ) -> Result<HashSet<Digest>> {
        let digests: Vec<Digest> = fsutil::list_names(&self.blobs_dir())?
            .iter()
            .filter_map(|n| Digest::from_sha256_hex(n).ok())
            .collect();
        let total = digests.len();
        let done = AtomicUsize::new(0);
        let bytes = AtomicU64::new(0);
        let states: Vec<(Digest, BlobState)> = digests
            .into_par_iter()
            .map(|d| {
                let state = hash_blob(&self.blob_path(&d), &d);
                if let BlobState::Sound(n) = state {
                    bytes.fetch_add(n, Ordering::Relaxed);
                }
                progress(CheckProgress {
                    stage: "blobs",
                    done: done.fetch_add(1, Ordering::Relaxed) + 1,
                    total,
                    bytes: bytes.load(Ordering::Relaxed),
                });
                (d, state)
            })
            .collect();
        let mut bad = HashSet::new();
        for (digest, state) in states {
            let path = self.blob_path(&digest);
            let detail = match state {
                BlobState::Sound(n) => {
                    report.blobs += 1;
                    report.blob_bytes = report.blob_bytes.saturating_add(n);
                    continue;
                }
                BlobState::Vanished => continue,
                BlobState::Corrupt(actual) => format!("content hashes to {actual}"),
                BlobState::Unreadable(e) => format!("cannot be read: {e}"),
            };
            report.blobs += 1;
            let repaired = if opts.repair {
                match fs::remove_file(&path) {
                    Ok(()) => Some("removed".to_string()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Some("removed".into()),
                    Err(e) => return Err(io_err("removing corrupt blob", path)(e)),
                }
            } else {
                None
            };
            report.issues.push(Issue {
                kind: IssueKind::Problem,
                what: format!("blob {digest} ({})", path.display()),
                detail,
                repaired,
            });
            bad.insert(digest);
        }
        Ok(bad)
    }

    /// index.json, the cache index and the compressed-variant records, under the index lock
    /// (exclusive when repairing) so neither gc nor a tag write moves things meanwhile.
    fn check_records(
        &self,
        opts: CheckOptions,
        corrupt: &HashSet<Digest>,
        report: &mut CheckReport,
    ) -> Result<()> {
        let _lock = if opts.repair {
            self.lock_index_exclusive()?
        } else {
            self.lock_index_shared()?
        };
        let present = |d: &Digest| !corrupt.contains(d) && self.has_blob(d);

        match self.read_index() {
            Err(e) => report.issues.push(Issue {
                kind: IssueKind::Problem,
                what: self.index_path().display().to_string(),
                detail: format!(
                    "{e} (the tag list is unreadable; fix or restore the file by hand: \
                     repair does not guess tags)"
                ),
                repaired: None,
            }),
            Ok(index) => {
                report.index_entries = index.manifests.len();
                let mut broken: Vec<(Descriptor, String)> = Vec::new();
                for entry in &index.manifests {
                    if let Some(why) = self.image_problem(entry, &present, 0) {
                        broken.push((entry.clone(), why));
                    }
                }
                if opts.repair && !broken.is_empty() {
                    let mut fixed = index.clone();
                    fixed
                        .manifests
                        .retain(|d| !broken.iter().any(|(b, _)| b == d));
                    self.write_index(&fixed)?;
                }
                for (entry, why) in broken {
                    let what = match entry.ref_name() {
                        Some(name) => format!("tag {name}"),
                        None => format!("untagged image {}", entry.digest),
                    };
                    report.issues.push(Issue {
                        kind: IssueKind::Problem,
                        what,
                        detail: why,
                        repaired: opts.repair.then(|| "removed from index.json".to_string()),
                    });
                }
            }
        }

        for name in fsutil::list_names(&self.cache_dir())? {
            let path = self.cache_dir().join(&name);
            let Some(key) = name
                .strip_suffix(".json")
                .filter(|k| super::cache::check_key(k).is_ok())
            else {
                continue;
            };
            report.cache_entries += 1;
            let why = match fs::read(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("reading cache entry", path)(e)),
                Ok(bytes) => match serde_json::from_slice::<super::CacheEntry>(&bytes) {
                    Err(e) => Some(format!("not a cache entry: {e}")),
                    Ok(entry) => entry
                        .layer
                        .iter()
                        .map(|l| &l.digest)
                        .chain(entry.config.as_ref())
                        .find(|d| !present(d))
                        .map(|d| format!("names blob {d}, which is missing or corrupt")),
                },
            };
            if let Some(detail) = why {
                let repaired = removed_if(opts.repair, || {
                    self.cache_remove(key)?;
                    Ok(())
                })?;
                report.issues.push(Issue {
                    kind: IssueKind::Problem,
                    what: format!("cache entry {}", path.display()),
                    detail,
                    repaired,
                });
            }
        }

        for layer in fsutil::list_names(&self.compressed_dir())? {
            let dir = self.compressed_dir().join(&layer);
            if !dir.is_dir() {
                continue;
            }
            for name in fsutil::list_names(&dir)? {
                let path = dir.join(&name);
                report.compressed_records += 1;
                let desc = fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Descriptor>(&b).ok());
                let detail = match desc {
                    None => "not a descriptor".to_string(),
                    Some(d) if !present(&d.digest) => {
                        format!("names blob {}, which is missing or corrupt", d.digest)
                    }
                    Some(_) => continue,
                };
                let repaired = removed_if(opts.repair, || {
                    fsutil::remove_tree(&path)?;
                    Ok(())
                })?;
                report.issues.push(Issue {
                    kind: IssueKind::Problem,
                    what: format!("compressed-variant record {}", path.display()),
                    detail,
                    repaired,
                });
            }
        }
        Ok(())
    }

    /// Why the image (or index) `desc` is not whole, if it is not.
    fn image_problem(
        &self,
        desc: &Descriptor,
        present: &dyn Fn(&Digest) -> bool,
        depth: usize,
    ) -> Option<String> {
        // Indexes nest; a cycle or absurd depth is damage, not a reason to recurse forever.
        if depth > 8 {
            return Some(format!("{} nests indexes too deeply", desc.digest));
        }
        if !present(&desc.digest) {
            return Some(format!("manifest {} is missing or corrupt", desc.digest));
        }
        match self.blob_size(&desc.digest) {
            Ok(size) if size == desc.size => {}
            Ok(size) => {
                return Some(format!(
                    "manifest {} has {size} bytes, its descriptor says {}",
                    desc.digest, desc.size
                ))
            }
            Err(e) => return Some(e.to_string()),
        }
        let bytes = match self.read_blob(&desc.digest) {
            Ok(b) => b,
            Err(e) => return Some(e.to_string()),
        };
        if media::is_index(&desc.media_type) {
            return match Index::from_json(&bytes) {
                Err(e) => Some(format!("index {} does not parse: {e}", desc.digest)),
                Ok(index) => index
                    .manifests
                    .iter()
                    .find_map(|child| self.image_problem(child, present, depth + 1)),
            };
        }
        let manifest = match Manifest::from_json(&bytes) {
            Ok(m) => m,
            Err(e) => return Some(format!("manifest {} does not parse: {e}", desc.digest)),
        };
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !present(&blob.digest) {
                let what = if blob == &manifest.config {
                    "config"
                } else {
                    "layer"
                };
                return Some(format!("{what} {} is missing or corrupt", blob.digest));
            }
        }
        None
    }

    /// Compares every recorded snapshot with its record (in parallel).
    fn check_snapshots(
        &self,
        opts: CheckOptions,
        progress: &(dyn Fn(CheckProgress) + Sync),
        report: &mut CheckReport,
    ) -> Result<()> {
        let ids: Vec<Digest> = fsutil::list_names(&self.snapshots_dir())?
            .iter()
            .filter_map(|n| Digest::from_sha256_hex(n).ok())
            .collect();
        let total = ids.len();
        let done = AtomicUsize::new(0);
        let results: Vec<(Digest, Option<Option<String>>)> = ids
            .into_par_iter()
            .map(|id| {
                let r = self.snapshot_problem(&id);
                progress(CheckProgress {
                    stage: "snapshots",
                    done: done.fetch_add(1, Ordering::Relaxed) + 1,
                    total,
                    bytes: 0,
                });
                (id, r)
            })
            .collect();
        for (id, result) in results {
            let problem = match result {
                // Vanished while checked (gc).
                None => continue,
                Some(p) => p,
            };
            report.snapshots += 1;
            let Some(detail) = problem else { continue };
            if detail == UNRECORDED {
                report.snapshots_unrecorded += 1;
                continue;
            }
            let repaired = if opts.repair {
                let mut gc = GcReport::default();
                self.remove_snapshot(&id, &mut gc)?;
                Some("removed (it is unpacked again from its layer when next needed)".into())
            } else {
                None
            };
            report.issues.push(Issue {
                kind: IssueKind::Problem,
                what: format!("snapshot {}", self.snapshot_dir(&id).display()),
                detail,
                repaired,
            });
        }
        // Records without a snapshot: a maker killed between the two renames.
        let records = self.root().join("snapshot-records");
        for name in fsutil::list_names(&records)? {
            let Ok(id) = Digest::from_sha256_hex(&name) else {
                continue;
            };
            if self.snapshot_dir(&id).exists() || lock_is_held(&self.snapshot_lock_path(&id))? {
                continue;
            }
            let path = records.join(&name);
            let repaired = removed_if(opts.repair, || {
                fsutil::remove_tree(&path)?;
                Ok(())
            })?;
            report.issues.push(Issue {
                kind: IssueKind::Leftover,
                what: path.display().to_string(),
                detail: "record of a snapshot that was never published".into(),
                repaired,
            });
        }
        Ok(())
    }

    /// `None` if the snapshot vanished, `Some(None)` if it matches its record.
    fn snapshot_problem(&self, id: &Digest) -> Option<Option<String>> {
        let dir = self.snapshot_dir(id);
        let md = match fs::symlink_metadata(&dir) {
            Ok(md) => md,
            Err(_) => return None,
        };
        if !md.is_dir() {
            return Some(Some("is not a directory".into()));
        }
        let recorded = match fs::read_to_string(self.snapshot_record_path(id)) {
            Ok(r) => r,
            Err(_) => return Some(Some(UNRECORDED.into())),
        };
        match treesum::tree_record(&dir) {
            Ok(actual) => Some(treesum::first_difference(&recorded, &actual)),
            Err(_) if !dir.exists() => None,
            Err(e) => Some(Some(format!("cannot be read: {e}"))),
        }
    }

    fn check_tmp(&self, opts: CheckOptions, report: &mut CheckReport) -> Result<()> {
        let tmp = self.tmp_dir();
        for name in fsutil::list_names(&tmp)? {
            let path = tmp.join(&name);
            match fsutil::age(&path)? {
                None => continue,
                Some(age) if age < MIN_TMP_AGE => {
                    report.in_progress += 1;
                    continue;
                }
                Some(_) => {}
            }
            // Unopenable (a mode-000 dir left by a failed unpack): nobody can hold it locked.
            let held = match File::open(&path) {
                Ok(f) => FileLock::try_from_file(f, path.clone())?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => None,
            };
            if held.is_none() && File::open(&path).is_ok() {
                report.in_progress += 1;
                continue;
            }
            let repaired = removed_if(opts.repair, || {
                fsutil::remove_tree(&path)?;
                Ok(())
            })?;
            drop(held);
            report.issues.push(Issue {
                kind: IssueKind::Leftover,
                what: path.display().to_string(),
                detail: "temp entry of a process that is gone".into(),
                repaired,
            });
        }
        Ok(())
    }

    fn check_locks(&self, opts: CheckOptions, report: &mut CheckReport) -> Result<()> {
        let dir = self.locks_dir();
        for name in fsutil::list_names(&dir)? {
            let path = dir.join(&name);
            let (detail, also): (&str, Option<PathBuf>) = if let Some(stem) = name
                .strip_prefix("lease-")
                .and_then(|n| n.strip_suffix(".lock"))
            {
                if lock_is_held(&path)? {
                    continue;
                }
                (
                    "lease whose owner is gone",
                    Some(dir.join(format!("lease-{stem}.json"))),
                )
            } else if let Some(stem) = name
                .strip_prefix("lease-")
                .and_then(|n| n.strip_suffix(".json"))
            {
                if dir.join(format!("lease-{stem}.lock")).exists() {
                    continue;
                }
                ("lease pins without a lease", None)
            } else if let Some(hex) = name
                .strip_prefix("snapshot-")
                .and_then(|n| n.strip_suffix(".lock"))
            {
                let Ok(id) = Digest::from_sha256_hex(hex) else {
                    continue;
                };
                if self.snapshot_dir(&id).exists() || lock_is_held(&path)? {
                    continue;
                }
                ("lock of a snapshot that was never made", None)
            } else {
                continue;
            };
            let repaired = removed_if(opts.repair, || {
                fsutil::remove_tree(&path)?;
                if let Some(p) = &also {
                    fsutil::remove_tree(p)?;
                }
                Ok(())
            })?;
            report.issues.push(Issue {
                kind: IssueKind::Leftover,
                what: path.display().to_string(),
                detail: detail.to_string(),
                repaired,
            });
        }
        Ok(())
    }

    /// Mounts under the store left in this mount namespace (rootless runs mount inside
    /// their own namespace, which dies with them).
    fn check_mounts(&self, report: &mut CheckReport) {
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        for line in info.lines() {
            let Some(point) = line.split(' ').nth(4) else {
                continue;
            };
            let point = unescape_mount_path(point);
            if Path::new(&point).starts_with(self.root()) {
                report.issues.push(Issue {
                    kind: IssueKind::Problem,
                    what: point.clone(),
                    detail: format!("still mounted (unmount it: umount {point})"),
                    repaired: None,
                });
            }
        }
    }
}

const UNRECORDED: &str = "\0unrecorded";

/// Whether a live process holds a lock on `path`; a missing file is not held.
fn lock_is_held(path: &Path) -> Result<bool> {
    match File::open(path) {
        Ok(f) => Ok(FileLock::try_from_file(f, path.to_path_buf())?.is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("opening lock file", path)(e)),
    }
}

fn hash_blob(path: &Path, want: &Digest) -> BlobState {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return BlobState::Vanished,
        Err(e) => return BlobState::Unreadable(e.to_string()),
    };
    let mut hasher = Sha256Hasher::new();
    if let Err(e) = io::copy(&mut file, &mut hasher) {
        return BlobState::Unreadable(e.to_string());
    }
    let size = hasher.len();
    let actual = hasher.finish();
    if actual == *want {
        BlobState::Sound(size)
    } else {
        BlobState::Corrupt(actual)
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes.get(i) == Some(&b'\\') {
            if let Some(oct) = bytes.get(i + 1..i + 4) {
                if let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(oct), 8) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        if let Some(b) = bytes.get(i) {
            out.push(*b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// With `repair`, run `remove` and say so (what an issue's `repaired` holds).
fn removed_if(repair: bool, remove: impl FnOnce() -> Result<()>) -> Result<Option<String>> {
    if !repair {
        return Ok(None);
    }
    remove()?;
    Ok(Some("removed".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageConfig;
    use crate::image::Reference;

    fn quiet(_: CheckProgress) {}

    fn tagged(s: &Store) -> (Descriptor, Descriptor) {
        let layer = s.put_bytes(media::OCI_LAYER_TAR, b"layer").unwrap();
        let mut config = ImageConfig::default();
        config.rootfs.diff_ids.push(layer.digest.clone());
        let (m, _) = s.put_image(&config, std::slice::from_ref(&layer)).unwrap();
        s.tag(&Reference::parse("app").unwrap(), &m).unwrap();
        (m, layer)
    }

    #[test]
    fn sound_store_has_no_issues() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let (_, layer) = tagged(&s);
        s.ensure_snapshot(&layer.digest, |dir| fs::write(dir.join("f"), b"x"))
            .unwrap();
        let r = s.check(CheckOptions::default(), &quiet).unwrap();
        assert!(r.issues.is_empty(), "{:?}", r.issues);
        assert_eq!((r.blobs, r.index_entries, r.snapshots), (3, 1, 1));
        assert_eq!(r.snapshots_unrecorded, 0);
    }

    #[test]
    fn corrupt_layer_breaks_its_tag_and_repair_removes_both() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let (_, layer) = tagged(&s);
        fs::write(s.blob_path(&layer.digest), b"layeR").unwrap();
        let r = s.check(CheckOptions::default(), &quiet).unwrap();
        assert!(!r.is_sound());
        assert_eq!(r.problems().count(), 2, "{:?}", r.issues);
        let r = s.check(CheckOptions { repair: true }, &quiet).unwrap();
        assert!(r.is_sound());
        assert!(!s.has_blob(&layer.digest));
        assert!(s.read_index().unwrap().manifests.is_empty());
        assert!(s
            .check(CheckOptions::default(), &quiet)
            .unwrap()
            .issues
            .is_empty());
    }

    #[test]
    fn changed_snapshot_is_named() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let id = Digest::sha256_of(b"l");
        let p = s
            .ensure_snapshot(&id, |dir| fs::write(dir.join("f"), b"x"))
            .unwrap();
        fs::write(p.join("f"), b"y").unwrap();
        let r = s.check(CheckOptions::default(), &quiet).unwrap();
        let issue = r.problems().next().unwrap();
        assert_eq!(issue.detail, "f changed");
        s.check(CheckOptions { repair: true }, &quiet).unwrap();
        assert_eq!(s.snapshot_path(&id), None);
        assert!(s
            .check(CheckOptions::default(), &quiet)
            .unwrap()
            .issues
            .is_empty());
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b\\"), r"/a b\\");
    }
}
