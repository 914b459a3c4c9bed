//! The store's error type: every variant names the path or object and the operation.

use std::io;
use std::path::PathBuf;

use crate::image::{Digest, ReferenceError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem call failed; `op` says what the store was doing ("writing blob").
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A JSON file of the store (or a blob that should be JSON) did not parse or serialize.
    #[error("{op} {}: {source}", path.display())]
    Json {
        op: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Content did not hash to the digest it was supposed to have.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    #[error("no such image: {0}")]
    ImageNotFound(String),
    #[error("{query:?} is ambiguous: it matches {}", candidates.join(", "))]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
    /// `remove_image` by ID on an image with several tags, without `force` (docker's rule).
    #[error("image {query} is referenced by several tags ({}): remove them by name, or force", refs.join(", "))]
    MultipleTags { query: String, refs: Vec<String> },
    /// A cache key, compression name or similar was not a safe file name.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// An image that the store refuses to write or tag (e.g. layer count mismatch).
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The caller's fill function of `ensure_snapshot` failed; nothing was made visible.
    #[error("filling snapshot {diff_id}: {source}")]
    SnapshotFill {
        diff_id: Digest,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// kiln's config file has a value kiln cannot use.
    #[error("{}:{line}: {message}", path.display())]
    Config {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// `map_err` adapter for filesystem calls.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}

pub(crate) fn json_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(serde_json::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Json { op, path, source }
}
