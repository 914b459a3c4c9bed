//! The local store: content-addressed blobs in OCI image-layout form, tags, snapshots, the
//! cache index, locks, garbage collection.
//!
//! # Layout under the root
//!
//! ```text
//! root/oci-layout                {"imageLayoutVersion":"1.0.0"}
//! root/index.json                OCI index: one manifest descriptor per tag, annotated with
//!                                org.opencontainers.image.ref.name = the full reference
//!                                (docker.io/library/busybox:latest); untagged images kept by
//!                                `keep_untagged` have no annotation. The root is therefore a
//!                                valid OCI image layout: `skopeo inspect oci:ROOT:REF` and
//!                                `umoci ls --layout ROOT` read it directly.
//! root/blobs/sha256/<hex>        configs, manifests, layers. Layers built or unpacked by kiln are
//!                                uncompressed tars (application/vnd.oci.image.layer.v1.tar, so
//!                                digest = diffID); compressed variants made for push/save live
//!                                here too.
//! root/snapshots/<diffid-hex>/   unpacked layers (overlay lower dirs, rootfs assembly); a
//!                                directory here is always complete.
//! root/cache/<key-hex>.json      build cache index: cache key (blake3, hex) → CacheEntry
//! root/compressed/<diffid-hex>/<algo>.json
//!                                (diffID, algorithm) → descriptor of the compressed blob
//! root/snapshot-records/<diffid-hex>
//!                                what each snapshot held when it was published (treesum), for
//!                                `system check`
//! root/tmp/                      staging: every write is prepared here and renamed into place
//! root/locks/index.lock          guards read-modify-write of index.json, and gc
//! root/locks/snapshot-<hex>.lock one per snapshot being made
//! root/locks/lease-<id>.{lock,json}  live leases: what a running build or container pins
//! root/volumes/<name>/           named volumes; a user holds a shared flock on the directory,
//!                                and only `prune --volumes` removes one nobody holds
//! root/containers/<id>/          the runtime's container state (counted by `system df`)
//! ```
//!
//! # Consistency rules
//!
//! - Every file appears by rename of a fully written, fsynced temp file (then the directory is
//!   fsynced); a blob is verified against its digest before it becomes visible. A crash leaves
//!   only junk in `tmp/`, which gc removes once no live process holds its lock.
//! - `index.json` changes under the exclusive index lock; readers never lock and never see a
//!   partial file. A tag is only written when every blob it needs is present.
//! - gc holds the exclusive index lock while it marks and sweeps; writers that must not race it
//!   (tags, cache and compressed records, lease pins) take the index lock, shared or exclusive,
//!   and check their blobs exist under it. Blobs and snapshots younger than the gc grace period
//!   are never swept, which covers work in progress between "blob written" and "blob recorded".
//! - No lock is held across a build: locks are per object and short.

mod blobs;
mod cache;
mod check;
mod error;
mod fsutil;
pub mod gc;
mod images;
mod lease;
mod lock;
mod meta;
mod snapshots;
mod treesum;
mod usage;
mod variants;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use blobs::{BlobInfo, BlobWriter};
pub use cache::CacheEntry;
pub use check::{CheckOptions, CheckProgress, CheckReport, Issue, IssueKind};
pub use error::{Result, StoreError};
pub use fsutil::set_foreign_tree_remover;
pub use gc::{GcOptions, GcReport, RemoveReport};
pub use images::ImageRecord;
pub use lease::Lease;
pub use lock::FileLock;
pub use usage::{CachePruneOptions, CachePruneReport, DiskUsage, UsageRow};
pub use variants::{compressed_layer_media_type, compression_name};

use crate::image::{Digest, Index};
use error::io_err;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The store rooted at one directory. Cheap to clone; every method works from the files on
/// disk, so several `Store`s (in one process or many) can share a root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating the layout if needed.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref();
        // Absolute, so paths handed to other tools (overlay, skopeo) do not depend on our cwd.
        let root = std::path::absolute(root).map_err(io_err("resolving store root", root))?;
        let store = Store { root };
        for dir in [
            store.blobs_dir(),
            store.root.join("snapshots"),
            store.root.join("cache"),
            store.root.join("compressed"),
            store.tmp_dir(),
            store.locks_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(io_err("creating store directory", &dir))?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            fsutil::atomic_write(&store.tmp_dir(), &layout, OCI_LAYOUT, "writing")?;
        }
        let index = store.index_path();
        if !index.exists() {
            let _lock = store.lock_index_exclusive()?;
            if !index.exists() {
                store.write_index(&Index::default())?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub(crate) fn compressed_dir(&self) -> PathBuf {
        self.root.join("compressed")
    }

    pub(crate) fn snapshot_dir(&self, diff_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(diff_id.hex())
    }

    pub(crate) fn lock_index_exclusive(&self) -> Result<FileLock> {
        FileLock::exclusive(self.locks_dir().join("index.lock"))
    }

    pub(crate) fn lock_index_shared(&self) -> Result<FileLock> {
        FileLock::shared(self.locks_dir().join("index.lock"))
    }
}

/// The store root when no `--root` is given: `$KILN_ROOT`, else `$XDG_DATA_HOME/kiln`, else
/// `~/.local/share/kiln`.
pub fn default_root() -> PathBuf {
    root_from_env(|k| std::env::var_os(k), std::env::home_dir())
}

fn root_from_env(
    var: impl Fn(&str) -> Option<OsString>,
    home_fallback: Option<PathBuf>,
) -> PathBuf {
    let non_empty = |k: &str| var(k).filter(|v| !v.is_empty());
    if let Some(root) = non_empty("KILN_ROOT") {
        return PathBuf::from(root);
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(data) = non_empty("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return data.join("kiln");
    }
    let home = non_empty("HOME").map(PathBuf::from).or(home_fallback);
    match home {
        Some(home) => home.join(".local").join("share").join("kiln"),
        None => std::env::temp_dir().join("kiln"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn root_with(vars: &[(&str, &str)], home: Option<&str>) -> PathBuf {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        root_from_env(|k| map.get(k).cloned(), home.map(PathBuf::from))
    }

    #[test]
    fn default_root_fallbacks() {
        let all = [
            ("KILN_ROOT", "/k"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(root_with(&all, None), PathBuf::from("/k"));
        assert_eq!(root_with(&all[1..], None), PathBuf::from("/xdg/kiln"));
        assert_eq!(
            root_with(&all[2..], None),
            PathBuf::from("/home/u/.local/share/kiln")
        );
        assert_eq!(
            root_with(
                &[("KILN_ROOT", ""), ("XDG_DATA_HOME", "rel"), ("HOME", "/h")],
                None
            ),
            PathBuf::from("/h/.local/share/kiln")
        );
        assert_eq!(
            root_with(&[], Some("/pw")),
            PathBuf::from("/pw/.local/share/kiln")
        );
        assert_eq!(root_with(&[], None), std::env::temp_dir().join("kiln"));
    }

    #[test]
    fn open_creates_a_valid_layout_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("root")).unwrap();
        let root = store.root().to_path_buf();
        assert_eq!(std::fs::read(root.join("oci-layout")).unwrap(), OCI_LAYOUT);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["manifests"], serde_json::json!([]));
        for d in [
            "blobs/sha256",
            "snapshots",
            "cache",
            "compressed",
            "tmp",
            "locks",
        ] {
            assert!(root.join(d).is_dir(), "{d}");
        }
        Store::open(&root).unwrap();
    }

    #[test]
    fn open_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&file).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.starts_with("creating store directory"), "{err}");
    }
}
