//! What the store's space is spent on (`system df`), and pruning the build cache by age and
//! by a byte cap, least recently used first (`builder prune`, the automatic gc policy).
//!
//! Build-cache bytes are the bytes only the cache keeps alive: a cached layer that an image
//! also uses costs the cache nothing, since removing the entry would not free it. The last
//! use of an entry is the modification time of its file, refreshed on every cache hit.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::error::{io_err, Result};
use super::lock::FileLock;
use super::{fsutil, GcOptions, GcReport, Store};
use crate::image::Digest;

/// One row of `system df`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageRow {
    pub total: usize,
    pub active: usize,
    pub size: u64,
    pub reclaimable: u64,
}

/// `system df`: images, build cache, volumes, containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Active: images a container (`containers/`) uses; there is no such record yet, so 0.
    pub images: UsageRow,
    /// Active: entries whose layer an image uses too (they cost nothing to keep).
    pub build_cache: UsageRow,
    /// `volumes/<name>`; active: held under a lock by a live process.
    pub volumes: UsageRow,
    /// `containers/<id>`; active: held under a lock by a live process.
    pub containers: UsageRow,
}

/// Which build-cache entries `prune_cache` removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachePruneOptions {
    /// Every entry, not only those whose layer no image uses.
    pub all: bool,
    /// Only entries not used for at least this long.
    pub unused_for: Option<Duration>,
    /// Stop once the cache holds at most this many bytes (least recently used go first).
    pub keep_storage: Option<u64>,
}

/// What `prune_cache` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachePruneReport {
    pub removed_entries: usize,
    /// Cache bytes before and after (as `system df` counts them).
    pub cache_bytes_before: u64,
    pub cache_bytes_after: u64,
    /// The gc that followed.
    pub collected: GcReport,
}

/// A cache entry with what it alone keeps alive.
struct CacheItem {
    key: String,
    last_used: SystemTime,
    /// Cache-only layers (diffIDs) and blobs it references.
    owns: Vec<Digest>,
}

/// The cache as the accounting sees it.
struct CacheView {
    items: Vec<CacheItem>,
    /// Bytes of each cache-only object, and how many entries reference it.
    cost: BTreeMap<Digest, (u64, usize)>,
    /// Entries none of whose objects are cache-only.
    shared_with_images: usize,
}

impl CacheView {
    fn bytes(&self) -> u64 {
        self.cost
            .values()
            .filter(|(_, refs)| *refs > 0)
            .map(|(b, _)| *b)
            .fold(0, u64::saturating_add)
    }
}

impl Store {
    fn cache_view(&self) -> Result<CacheView> {
        let image_marks = self.mark(&self.read_index()?, false)?;
        let mut view = CacheView {
            items: Vec::new(),
            cost: BTreeMap::new(),
            shared_with_images: 0,
        };
        for (key, entry) in self.cache_entries()? {
            let path = self.cache_path(&key);
            let last_used = fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut owns = Vec::new();
            if let Some(layer) = &entry.layer {
                if !image_marks.layers.contains(&layer.digest) {
                    owns.push(layer.digest.clone());
                }
            }
            if let Some(config) = &entry.config {
                if !image_marks.blobs.contains(config) {
                    owns.push(config.clone());
                }
            }
            if owns.is_empty() && entry.layer.is_some() {
                view.shared_with_images += 1;
            }
            for d in &owns {
                if let Some(c) = view.cost.get_mut(d) {
                    c.1 += 1;
                } else {
                    let bytes = self.object_bytes(d)?;
                    view.cost.insert(d.clone(), (bytes, 1));
                }
            }
            view.items.push(CacheItem {
                key,
                last_used,
                owns,
            });
        }
        Ok(view)
    }

    /// Bytes of a blob plus, for a layer, its snapshot and compressed variants.
    fn object_bytes(&self, digest: &Digest) -> Result<u64> {
        let mut bytes = self.blob_size(digest).unwrap_or(0);
        bytes = bytes.saturating_add(fsutil::tree_size(&self.snapshot_dir(digest)));
        for (_, desc) in self.compressed_variants(digest.hex())? {
            bytes = bytes.saturating_add(self.blob_size(&desc.digest).unwrap_or(0));
        }
        Ok(bytes)
    }

    /// Removes build-cache entries as `opts` says, then collects what they alone kept
    /// (blobs younger than the gc grace period stay, as always).
    pub fn prune_cache(&self, opts: &CachePruneOptions) -> Result<CachePruneReport> {
        let mut view = self.cache_view()?;
        let before = view.bytes();
        let now = SystemTime::now();
        let mut items = std::mem::take(&mut view.items);
        items.sort_by_key(|i| i.last_used);
        let mut removed = 0;
        for item in items {
            if let Some(cap) = opts.keep_storage {
                if view.bytes() <= cap {
                    break;
                }
            }
            if !opts.all && item.owns.is_empty() {
                continue;
            }
            if let Some(min) = opts.unused_for {
                let idle = now.duration_since(item.last_used).unwrap_or(Duration::ZERO);
                if idle < min {
                    continue;
                }
            }
            if self.cache_remove(&item.key)? {
                removed += 1;
            }
            for d in &item.owns {
                if let Some(c) = view.cost.get_mut(d) {
                    c.1 = c.1.saturating_sub(1);
                }
            }
        }
        let collected = self.gc(GcOptions {
            keep_cache: true,
            ..GcOptions::default()
        })?;
        let after = self.cache_view()?.bytes();
        Ok(CachePruneReport {
            removed_entries: removed,
            cache_bytes_before: before,
            cache_bytes_after: after,
            collected,
        })
    }

    /// `system df`.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let index = self.read_index()?;
        let marks = self.mark(&index, false)?;
        let mut image_bytes = 0u64;
        for blob in &marks.blobs {
            image_bytes = image_bytes.saturating_add(self.blob_size(blob).unwrap_or(0));
        }
        for layer in &marks.layers {
            image_bytes = image_bytes.saturating_add(fsutil::tree_size(&self.snapshot_dir(layer)));
        }
        let images = UsageRow {
            total: self.list()?.len(),
            active: 0,
            size: image_bytes,
            reclaimable: image_bytes,
        };
        let view = self.cache_view()?;
        let cache_bytes = view.bytes();
        let build_cache = UsageRow {
            total: view.items.len(),
            active: view.shared_with_images,
            size: cache_bytes,
            reclaimable: cache_bytes,
        };
        Ok(DiskUsage {
            images,
            build_cache,
            volumes: locked_dirs_usage(&self.volumes_dir())?,
            containers: locked_dirs_usage(&self.root().join("containers"))?,
        })
    }

    /// Where volumes live: `volumes/<name>` (the runtime's `volumes` module owns them; the
    /// store only measures them here).
    pub fn volumes_dir(&self) -> std::path::PathBuf {
        self.root().join("volumes")
    }
}

/// An exclusive lock on a directory entry if nobody holds one; a vanished entry is `None`.
fn try_lock_entry(path: &Path) -> Result<Option<FileLock>> {
    match File::open(path) {
        Ok(f) => FileLock::try_from_file(f, path.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("opening", path)(e)),
    }
}

fn locked_dirs_usage(dir: &Path) -> Result<UsageRow> {
    let mut row = UsageRow::default();
    for name in fsutil::list_names(dir)? {
        let path = dir.join(&name);
        let size = fsutil::tree_size(&path);
        row.total += 1;
        row.size = row.size.saturating_add(size);
        if try_lock_entry(&path)?.is_some() {
            row.reclaimable = row.reclaimable.saturating_add(size);
        } else {
            row.active += 1;
        }
    }
    Ok(row)
}
