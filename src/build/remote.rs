//! The hook through which a shared build cache (a registry, for CI machines that start
//! empty) answers the steps the local cache misses. The build engine only asks and records;
//! where the entries live and how layers travel is the implementer's business.

use crate::image::Digest;
use crate::store::{CacheEntry, Store};

/// A cache consulted after the local one misses.
pub trait RemoteCache: Send + Sync + std::fmt::Debug {
    /// What the remote cache knows of `key_hex`, without fetching its layer; `None` when it
    /// does not know the key.
    fn lookup(&self, key_hex: &str) -> Option<RemoteStep>;
    /// Bring the layer of `key_hex` into `store`, uncompressed under its diffID; returns its
    /// size. Called only when the build reads or exports that layer.
    fn fetch_layer(&self, store: &Store, key_hex: &str) -> Result<u64, String>;
}

/// A step the remote cache knows.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteStep {
    /// The diffID of the step's layer; `None` for a step that makes no layer.
    pub diff_id: Option<Digest>,
    /// The step's time (RFC 3339), kept so a hit yields the very image the exporter made.
    pub created: String,
}

/// One step of a finished build: its cache key and what it produced, for exporting the
/// build's cache.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub key_hex: String,
    pub entry: CacheEntry,
}
