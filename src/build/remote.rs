//! The hook through which a shared build cache (a registry, for CI machines that start
//! empty) answers the steps the local cache misses. The build engine only asks and records;
//! where the entries live and how layers travel is the implementer's business.

use crate::store::{CacheEntry, Store};

/// A cache consulted after the local one misses.
pub trait RemoteCache: Send + Sync + std::fmt::Debug {
    /// The entry for `key_hex`, with its layer (uncompressed, under its diffID) already in
    /// `store`, or `None` when the remote cache does not know the key.
    fn fetch(&self, store: &Store, key_hex: &str) -> Result<Option<CacheEntry>, String>;
}

/// One step of a finished build: its cache key and what it produced, for exporting the
/// build's cache.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub key_hex: String,
    pub entry: CacheEntry,
}
