//! Garbage collection: mark what tags, untagged images, cache entries and leases reach; sweep
//! the rest, plus crash leftovers in `tmp/`. Also `remove_image` (docker's `rmi`), and the
//! automatic policy: a byte cap on the build cache from the user's config, applied after
//! builds ([`apply_policy`]).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{io_err, Result, StoreError};
use super::images::group_by_manifest;
use super::lock::FileLock;
use super::{fsutil, Store};
use crate::image::{Digest, ImageConfig, Index, Manifest, Reference};

/// How much gc may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Keep the build cache (its entries and the layers they name). When false, every cache
    /// entry is dropped first and only images keep blobs alive.
    pub keep_cache: bool,
    /// Blobs, snapshots and records younger than this are kept even if unreachable: they may
    /// belong to a build that has written them but not yet recorded them. Temp files are
    /// always given at least a minute.
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        // $KILN_GC_GRACE_SECONDS shortens the grace period (tests; stores no running
        // build shares).
        let grace = std::env::var("KILN_GC_GRACE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10 * 60);
        GcOptions {
            keep_cache: true,
            grace: Duration::from_secs(grace),
        }
    }
}

/// What a gc or `remove_image` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: usize,
    pub removed_snapshots: usize,
    pub removed_cache_entries: usize,
    pub removed_compressed_records: usize,
    pub removed_tmp: usize,
    /// Bytes of file content freed.
    pub bytes: u64,
}

/// What `remove_image` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveReport {
    /// The tags removed (empty when an untagged image was removed by ID).
    pub untagged: Vec<String>,
    /// The manifest the removed entries pointed at.
    pub manifest: Digest,
    /// True when no tag points at the manifest any more, so its blobs were collected.
    pub deleted: bool,
    pub collected: GcReport,
}

/// Blobs and layers (diffIDs: snapshots and compressed variants) that must stay.
#[derive(Default)]
pub(crate) struct Marks {
    pub(crate) blobs: HashSet<Digest>,
    pub(crate) layers: HashSet<Digest>,
}

// Temp entries are locked by their writer right after creation (or not at all, by commands
// that stage outside the store's helpers); this minimum age, applied whatever the grace,
// bridges that.
use super::check::MIN_TMP_AGE;

/// Manifests and indexes are small; anything bigger reached from the index is not parsed.
const MAX_JSON_BLOB: u64 = 16 * 1024 * 1024;

impl Store {
    /// Removes everything not reachable from `index.json` (and from the cache when
    /// `keep_cache`, and from live leases). Holds the exclusive index lock throughout, so no tag
    /// can point at something being swept.
    pub fn gc(&self, opts: GcOptions) -> Result<GcReport> {
        let _lock = self.lock_index_exclusive()?;
        let mut report = GcReport::default();
        if !opts.keep_cache {
            for (key, _) in self.cache_entries_raw()? {
                if self.cache_remove(&key)? {
                    report.removed_cache_entries += 1;
                }
            }
        }
        let marks = self.mark(&self.read_index()?, opts.keep_cache)?;

        let mut doomed_blobs = HashSet::new();
        for name in fsutil::list_names(&self.blobs_dir())? {
            // Files kiln did not name (not 64 hex) are not ours to judge.
            let Ok(digest) = Digest::from_sha256_hex(&name) else {
                continue;
            };
            if !marks.blobs.contains(&digest)
                && self.older_than(&self.blob_path(&digest), opts.grace)?
            {
                doomed_blobs.insert(digest);
            }
        }
        // Records go before the blobs they name: a gc killed in between then leaves an
        // unnamed blob (swept next time), never a record naming a missing blob.
        for name in fsutil::list_names(&self.compressed_dir())? {
            let Ok(diff_id) = Digest::from_sha256_hex(&name) else {
                continue;
            };
            self.sweep_compressed(
                &diff_id,
                |store, path, blob| {
                    Ok(!store.has_blob(blob)
                        || doomed_blobs.contains(blob)
                        || (!marks.layers.contains(&diff_id)
                            && store.older_than(path, opts.grace)?))
                },
                &mut report,
            )?;
        }
        for digest in &doomed_blobs {
            self.remove_blob(digest, &mut report)?;
        }
        for name in fsutil::list_names(&self.snapshots_dir())? {
            let Ok(diff_id) = Digest::from_sha256_hex(&name) else {
                continue;
            };
            if !marks.layers.contains(&diff_id)
                && self.older_than(&self.snapshot_dir(&diff_id), opts.grace)?
            {
                self.remove_snapshot(&diff_id, &mut report)?;
            }
        }
        // Entries whose layer was swept (or was already gone) can never hit again.
        for (key, entry) in self.cache_entries_raw()? {
            let dangling = match entry {
                Some(e) => e
                    .layer
                    .iter()
                    .map(|l| &l.digest)
                    .chain(e.config.as_ref())
                    .any(|d| !self.has_blob(d)),
                None => self.older_than(&self.cache_path(&key), opts.grace)?,
            };
            if dangling && self.cache_remove(&key)? {
                report.removed_cache_entries += 1;
            }
        }
        self.sweep_tmp(opts.grace, &mut report)?;
        self.sweep_snapshot_leftovers(opts.grace)?;
        Ok(report)
    }

    /// Snapshot records and lock files whose snapshot does not exist, left by a maker that
    /// was killed (or failed) before publishing it, once nobody holds the lock.
    fn sweep_snapshot_leftovers(&self, grace: Duration) -> Result<()> {
        let records = self.root().join("snapshot-records");
        for name in fsutil::list_names(&records)? {
            let Ok(id) = Digest::from_sha256_hex(&name) else {
                continue;
            };
            let path = records.join(&name);
            if self.snapshot_dir(&id).exists() || !self.older_than(&path, grace)? {
                continue;
            }
            if let Some(_lock) = FileLock::try_exclusive(self.snapshot_lock_path(&id))? {
                if !self.snapshot_dir(&id).exists() {
                    fsutil::remove_tree(&path)?;
                }
            }
        }
        for name in fsutil::list_names(&self.locks_dir())? {
            let Some(id) = name
                .strip_prefix("snapshot-")
                .and_then(|n| n.strip_suffix(".lock"))
                .and_then(|h| Digest::from_sha256_hex(h).ok())
            else {
                continue;
            };
            let path = self.locks_dir().join(&name);
            if self.snapshot_dir(&id).exists() || !self.older_than(&path, grace)? {
                continue;
            }
            if let Some(_lock) = FileLock::try_exclusive(&path)? {
                if !self.snapshot_dir(&id).exists() {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    /// docker's `rmi`: `query` as for [`Store::resolve`]. By name, removes that tag only; by ID
    /// or digest, removes every tag of the image (refused with several tags unless `force`).
    /// When nothing points at the manifest any more, the blobs and snapshots only it used are
    /// deleted right away (the build cache and leases still keep theirs).
    pub fn remove_image(&self, query: &str, force: bool) -> Result<RemoveReport> {
        let _lock = self.lock_index_exclusive()?;
        let mut index = self.read_index()?;
        let by_name = Reference::parse(query)
            .ok()
            .filter(|r| r.digest().is_none())
            .map(|r| r.to_string())
            .filter(|name| {
                index
                    .manifests
                    .iter()
                    .any(|d| d.ref_name() == Some(name.as_str()))
            });

        let (manifest, untagged) = match by_name {
            Some(name) => {
                let digest = index
                    .manifests
                    .iter()
                    .find(|d| d.ref_name() == Some(name.as_str()))
                    .map(|d| d.digest.clone())
                    .ok_or_else(|| StoreError::ImageNotFound(query.to_string()))?;
                index
                    .manifests
                    .retain(|d| d.ref_name() != Some(name.as_str()));
                (digest, vec![name])
            }
            None => {
                let record = self.resolve(query)?;
                if record.references.len() > 1 && !force {
                    return Err(StoreError::MultipleTags {
                        query: query.to_string(),
                        refs: record.references,
                    });
                }
                let digest = record.manifest.digest;
                index.manifests.retain(|d| d.digest != digest);
                (digest, record.references)
            }
        };
        self.write_index(&index)?;

        let mut report = RemoveReport {
            untagged,
            deleted: false,
            collected: GcReport::default(),
            manifest: manifest.clone(),
        };
        if index.manifests.iter().any(|d| d.digest == manifest) {
            return Ok(report);
        }
        report.deleted = true;

        let mut candidates = Marks::default();
        self.mark_tree(&manifest, &mut candidates)?;
        let keep = self.mark(&index, true)?;
        let collected = &mut report.collected;
        // Records before the blobs they name, as in gc: a kill in between leaves only
        // unnamed blobs.
        for diff_id in candidates.layers.difference(&keep.layers) {
            self.sweep_compressed(diff_id, |_, _, _| Ok(true), collected)?;
        }
        for blob in candidates.blobs.difference(&keep.blobs) {
            if self.has_blob(blob) {
                self.remove_blob(blob, collected)?;
            }
        }
        for diff_id in candidates.layers.difference(&keep.layers) {
            if self.snapshot_path(diff_id).is_some() {
                self.remove_snapshot(diff_id, collected)?;
            }
        }
        Ok(report)
    }

    pub(crate) fn mark(&self, index: &Index, keep_cache: bool) -> Result<Marks> {
        let mut marks = Marks::default();
        for (digest, _) in group_by_manifest(index) {
            self.mark_tree(&digest, &mut marks)?;
        }
        if keep_cache {
            for (_, entry) in self.cache_entries_raw()? {
                let Some(entry) = entry else { continue };
                if let Some(layer) = &entry.layer {
                    self.mark_layer(&layer.digest, &mut marks)?;
                }
                if let Some(config) = &entry.config {
                    self.mark_config(config, &mut marks)?;
                }
            }
        }
        for pin in self.live_lease_pins()? {
            // A pin may name a manifest, a config or a layer: mark it as all of them.
            self.mark_tree(&pin, &mut marks)?;
            self.mark_layer(&pin, &mut marks)?;
        }
        Ok(marks)
    }

    /// Marks a manifest or index blob and everything it references.
    fn mark_tree(&self, digest: &Digest, marks: &mut Marks) -> Result<()> {
        if !marks.blobs.insert(digest.clone()) {
            return Ok(());
        }
        let Some(bytes) = self.read_json_blob(digest)? else {
            return Ok(());
        };
        if let Ok(manifest) = Manifest::from_json(&bytes) {
            self.mark_config(&manifest.config.digest, marks)?;
            for layer in &manifest.layers {
                // Uncompressed layers' digests are diffIDs; for compressed ones this finds
                // nothing extra, and the config's diff_ids cover their snapshots.
                self.mark_layer(&layer.digest, marks)?;
            }
            if let Some(subject) = &manifest.subject {
                marks.blobs.insert(subject.digest.clone());
            }
        } else if let Ok(index) = Index::from_json(&bytes) {
            for child in &index.manifests {
                self.mark_tree(&child.digest, marks)?;
            }
        }
        Ok(())
    }

    fn mark_config(&self, digest: &Digest, marks: &mut Marks) -> Result<()> {
        if !marks.blobs.insert(digest.clone()) {
            return Ok(());
        }
        let Some(bytes) = self.read_json_blob(digest)? else {
            return Ok(());
        };
        if let Ok(config) = ImageConfig::from_json(&bytes) {
            for diff_id in &config.rootfs.diff_ids {
                self.mark_layer(diff_id, marks)?;
            }
        }
        Ok(())
    }

    /// Marks a layer by diffID: its blob, snapshot and compressed variants.
    fn mark_layer(&self, diff_id: &Digest, marks: &mut Marks) -> Result<()> {
        marks.blobs.insert(diff_id.clone());
        if marks.layers.insert(diff_id.clone()) {
            for (_, desc) in self.compressed_variants(diff_id.hex())? {
                marks.blobs.insert(desc.digest);
            }
        }
        Ok(())
    }

    /// The bytes of a small blob; `None` when it is missing, too big or corrupt (then there is
    /// nothing to follow). Other I/O errors abort gc rather than under-mark.
    fn read_json_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        match self.blob_size(digest) {
            Ok(size) if size <= MAX_JSON_BLOB => {}
            Ok(_) | Err(StoreError::MissingBlob(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        match self.read_blob(digest) {
            Ok(b) => Ok(Some(b)),
            Err(StoreError::MissingBlob(_) | StoreError::DigestMismatch { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Cache entries by key, `None` for files that do not parse.
    fn cache_entries_raw(&self) -> Result<Vec<(String, Option<super::CacheEntry>)>> {
        let mut out = Vec::new();
        for name in fsutil::list_names(&self.cache_dir())? {
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            if super::cache::check_key(key).is_err() {
                continue;
            }
            let path = self.cache_path(key);
            let entry = match fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("reading cache entry", path)(e)),
            };
            out.push((key.to_string(), entry));
        }
        Ok(out)
    }

    fn older_than(&self, path: &std::path::Path, grace: Duration) -> Result<bool> {
        Ok(fsutil::age(path)?.is_some_and(|age| age >= grace))
    }

    fn remove_blob(&self, digest: &Digest, report: &mut GcReport) -> Result<()> {
        let path = self.blob_path(digest);
        let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                report.removed_blobs += 1;
                report.bytes = report.bytes.saturating_add(size);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing blob", path)(e)),
        }
    }

    /// Removes a snapshot unless someone is making it right now. It is first renamed into
    /// `tmp/`, so it disappears atomically even if deleting the tree fails half way.
    pub(crate) fn remove_snapshot(&self, diff_id: &Digest, report: &mut GcReport) -> Result<()> {
        let Some(_lock) = FileLock::try_exclusive(self.snapshot_lock_path(diff_id))? else {
            return Ok(());
        };
        let dir = self.snapshot_dir(diff_id);
        let doomed = tempfile::Builder::new()
            .prefix(&format!("gc-snapshot-{}-", diff_id.short()))
            .tempdir_in(self.tmp_dir())
            .map_err(io_err("creating temp directory in", self.tmp_dir()))?
            .keep();
        let target = doomed.join("s");
        match fs::rename(&dir, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = fs::remove_dir(&doomed);
                return Ok(());
            }
            Err(e) => {
                let _ = fs::remove_dir(&doomed);
                return Err(io_err("removing snapshot", dir)(e));
            }
        }
        let size = fsutil::tree_size(&target);
        fsutil::remove_tree(&doomed)?;
        fsutil::remove_tree(&self.snapshot_record_path(diff_id))?;
        report.removed_snapshots += 1;
        report.bytes = report.bytes.saturating_add(size);
        let _ = fs::remove_file(self.snapshot_lock_path(diff_id));
        Ok(())
    }

    /// Removes the compressed-variant records of `diff_id` for which `doomed` says so (given the
    /// record path and the compressed blob), then the directory if it is empty.
    fn sweep_compressed(
        &self,
        diff_id: &Digest,
        doomed: impl Fn(&Store, &std::path::Path, &Digest) -> Result<bool>,
        report: &mut GcReport,
    ) -> Result<()> {
        let dir = self.compressed_dir().join(diff_id.hex());
        for name in fsutil::list_names(&dir)? {
            let path = dir.join(&name);
            let blob = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::image::Descriptor>(&b).ok())
                .map(|d| d.digest);
            let remove = match &blob {
                Some(blob) => doomed(self, &path, blob)?,
                None => true,
            };
            // Only the record goes here; the compressed blob is swept (or kept) as a blob.
            if remove {
                fsutil::remove_tree(&path)?;
                report.removed_compressed_records += 1;
            }
        }
        // Fails harmlessly when a record remains or one was just added.
        let _ = fs::remove_dir(&dir);
        Ok(())
    }

    /// Removes temp entries older than `grace` that no live process holds locked.
    fn sweep_tmp(&self, grace: Duration, report: &mut GcReport) -> Result<()> {
        let tmp = self.tmp_dir();
        for name in fsutil::list_names(&tmp)? {
            let path = tmp.join(&name);
            if !self.older_than(&path, grace.max(MIN_TMP_AGE))? {
                continue;
            }
            let file = match fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // Unreadable (e.g. a mode-000 dir left by a failed unpack): locks are moot.
                Err(_) => {
                    let size = fsutil::tree_size(&path);
                    fsutil::remove_tree(&path)?;
                    report.removed_tmp += 1;
                    report.bytes = report.bytes.saturating_add(size);
                    continue;
                }
            };
            let Some(_held) = FileLock::try_from_file(file, path.clone())? else {
                continue;
            };
            let size = fsutil::tree_size(&path);
            fsutil::remove_tree(&path)?;
            report.removed_tmp += 1;
            report.bytes = report.bytes.saturating_add(size);
        }
        Ok(())
    }
}

/// The automatic gc policy: when the config sets `[gc] keep-storage`, prunes the build cache
/// down to that many bytes, least recently used first. `Ok(None)` when no cap is set.
pub fn apply_policy(store: &Store) -> Result<Option<super::CachePruneReport>> {
    let Some(cap) = keep_storage_from_config()? else {
        return Ok(None);
    };
    store
        .prune_cache(&super::CachePruneOptions {
            all: true,
            unused_for: None,
            keep_storage: Some(cap),
        })
        .map(Some)
}

/// kiln's config file: `$XDG_CONFIG_HOME/kiln/config.toml`, else `~/.config/kiln/config.toml`.
pub fn config_path() -> Option<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Some(dir.join("kiln").join("config.toml"));
    }
    non_empty("HOME")
        .map(PathBuf::from)
        .or_else(std::env::home_dir)
        .map(|h| h.join(".config").join("kiln").join("config.toml"))
}

/// `gc.keep-storage` of the config file, if the file and the key exist.
pub fn keep_storage_from_config() -> Result<Option<u64>> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading config", path)(e)),
    };
    keep_storage_from_toml(&text).map_err(|(line, message)| StoreError::Config {
        path,
        line,
        message,
    })
}

/// Reads the one key kiln takes from its config: `keep-storage` of table `[gc]` (or the
/// dotted `gc.keep-storage` at top level), a size string (`"10GB"`) or a byte count. Other
/// tables and keys are left alone. Errors carry the 1-based line.
fn keep_storage_from_toml(text: &str) -> std::result::Result<Option<u64>, (usize, String)> {
    let mut table = String::new();
    let mut found = None;
    for (n, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            table = rest
                .trim_end_matches(']')
                .trim()
                .trim_matches('[')
                .to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().trim_matches('"');
        let full = if table.is_empty() {
            key.to_string()
        } else {
            format!("{table}.{key}")
        };
        if full != "gc.keep-storage" {
            continue;
        }
        let value = value.trim();
        let size = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(s) => parse_size(s),
            None => value.replace('_', "").parse::<u64>().ok(),
        };
        match size {
            Some(s) => found = Some(s),
            None => {
                return Err((
                    n + 1,
                    format!(
                        "gc.keep-storage = {value}: expected a size such as \"10GB\", \"512MiB\" or a number of bytes"
                    ),
                ))
            }
        }
    }
    Ok(found)
}

/// The line without a `#` comment (a `#` inside a quoted string stays).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return line.get(..i).unwrap_or(line),
            _ => {}
        }
    }
    line
}

/// A size as docker's flags take it: `10GB`, `1.5g`, `512MiB`, `100kb`, `2048` (bytes).
/// Decimal units are powers of 1000, `i` units powers of 1024.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    if !num.is_finite() || num < 0.0 {
        return None;
    }
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = (num * mult).round();
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// A duration as docker's `until` filter takes it: Go syntax (`24h`, `1h30m`, `90s`,
/// `500ms`), plus `d` for days.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(split);
        let num: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        total += num * secs;
        rest = tail;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{media, Descriptor};

    fn now() -> GcOptions {
        GcOptions {
            keep_cache: true,
            grace: Duration::ZERO,
        }
    }

    #[test]
    fn marks_through_nested_indexes_written_by_other_tools() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let layer = s.put_bytes(media::OCI_LAYER_TAR, b"layer").unwrap();
        let mut config = ImageConfig::default();
        config.rootfs.diff_ids.push(layer.digest.clone());
        let (manifest, config_digest) = s.put_image(&config, std::slice::from_ref(&layer)).unwrap();
        let inner = Index {
            manifests: vec![manifest.clone()],
            ..Index::default()
        };
        let inner_desc = s
            .put_bytes(media::OCI_INDEX, &inner.to_json().unwrap())
            .unwrap();
        // An index entry kiln itself would not write (tag() refuses indexes), as skopeo might.
        {
            let _l = s.lock_index_exclusive().unwrap();
            let mut idx = s.read_index().unwrap();
            idx.manifests.push(inner_desc.clone());
            s.write_index(&idx).unwrap();
        }
        let junk = s.put_bytes("x", b"junk").unwrap();
        let report = s.gc(now()).unwrap();
        assert_eq!(report.removed_blobs, 1);
        for d in [
            &inner_desc.digest,
            &manifest.digest,
            &config_digest,
            &layer.digest,
        ] {
            assert!(s.has_blob(d), "{d} must be kept");
        }
        assert!(!s.has_blob(&junk.digest));
        // Listing skips the index entry instead of failing.
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn sizes_durations_and_config() {
        assert_eq!(parse_size("10GB"), Some(10_000_000_000));
        assert_eq!(parse_size("1.5g"), Some(1_500_000_000));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("2048"), Some(2048));
        assert_eq!(parse_size("10 XB"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172800)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
        let toml = "# kiln\n[other]\nkeep-storage = 1\n[gc]\nkeep-storage = \"10GB\" # cap\n";
        assert_eq!(keep_storage_from_toml(toml), Ok(Some(10_000_000_000)));
        assert_eq!(
            keep_storage_from_toml("gc.keep-storage = 5_000\n"),
            Ok(Some(5000))
        );
        assert_eq!(keep_storage_from_toml("[gc]\n"), Ok(None));
        let err = keep_storage_from_toml("\n[gc]\nkeep-storage = \"lots\"\n").unwrap_err();
        assert_eq!(err.0, 3);
        assert!(err.1.contains("lots"), "{}", err.1);
    }

    #[test]
    fn gc_removes_what_a_killed_snapshot_maker_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let id = Digest::sha256_of(b"never published");
        let record = s.snapshot_record_path(&id);
        fs::create_dir_all(record.parent().unwrap()).unwrap();
        fs::write(&record, b"f 644 0 0 1 x f\n").unwrap();
        fs::write(s.snapshot_lock_path(&id), b"").unwrap();
        let kept = Digest::sha256_of(b"published");
        s.ensure_snapshot(&kept, |d| fs::write(d.join("f"), b"x"))
            .unwrap();
        let lease = s.lease().unwrap();
        lease.pin(&kept).unwrap();
        s.gc(now()).unwrap();
        assert!(!record.exists());
        assert!(!s.snapshot_lock_path(&id).exists());
        assert!(s.snapshot_record_path(&kept).exists());
        assert!(s.snapshot_path(&kept).is_some());
    }

    #[test]
    fn corrupt_manifest_does_not_abort_gc() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let m = Descriptor::of_bytes(media::OCI_MANIFEST, b"{\"config\":1}");
        {
            let _l = s.lock_index_exclusive().unwrap();
            let mut idx = s.read_index().unwrap();
            idx.manifests.push(m);
            s.write_index(&idx).unwrap();
        }
        assert_eq!(s.gc(now()).unwrap(), GcReport::default());
    }
}
