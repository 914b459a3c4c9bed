//! The archive module's error type: each variant names the file, entry or blob concerned.

use std::io;
use std::path::PathBuf;

use crate::image::Digest;
use crate::layer::LayerError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A filesystem or stream call failed; `op` says what was being done.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The tar stream could not be read (truncated, corrupt header, bad compression).
    #[error("reading archive: {0}")]
    Read(#[source] io::Error),
    /// An entry of a rootfs tarball that cannot go into a layer.
    #[error("entry {path:?}: {reason}")]
    Entry { path: String, reason: &'static str },
    /// The archive is neither an OCI layout nor a docker-archive, or its JSON is inconsistent.
    #[error("invalid archive: {0}")]
    Invalid(String),
    /// A JSON file of the archive did not parse.
    #[error("parsing {what} of the archive: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    /// A blob or layer the archive's JSON names is not in the archive.
    #[error("the archive lacks {what}")]
    Missing { what: String },
    /// Content did not hash to the digest the archive's JSON gives it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] LayerError),
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// `map_err` adapter for filesystem calls.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.into();
    move |source| ArchiveError::Io { op, path, source }
}
