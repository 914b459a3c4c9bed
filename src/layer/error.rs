//! The one error type of the layer module; every variant names the path it concerns.

use std::io;
use std::path::PathBuf;

/// What went wrong while writing, applying or compressing a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A filesystem or stream operation failed on `path` (an entry path inside the layer, or a
    /// host path for sources and destinations).
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The tar stream itself could not be read (truncated, corrupt header, bad compression).
    #[error("reading layer: {source}")]
    Read {
        #[source]
        source: io::Error,
    },
    /// The content or PAX records of the entry at `path` could not be read.
    #[error("{}: reading layer entry: {source}", .path.display())]
    ReadEntry {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A path that cannot be represented, or that a layer must never contain.
    #[error("{}: invalid path in layer: {reason}", .path.display())]
    InvalidPath { path: PathBuf, reason: &'static str },
    /// Applying the entry would write outside the destination directory.
    #[error("{}: refusing to write outside the destination: {reason}", .path.display())]
    Escape { path: PathBuf, reason: &'static str },
    /// A hard link whose target lies above the destination.
    #[error("{}: hard link target {} is outside the destination", .path.display(), .target.display())]
    LinkEscape { path: PathBuf, target: PathBuf },
    /// A tar entry type that a layer cannot carry (or that we do not know).
    #[error("{}: unsupported tar entry type {kind:?}", .path.display())]
    UnsupportedEntry { path: PathBuf, kind: char },
    /// A file's content did not have the length its header promised (the file changed while
    /// being archived, or the caller's reader was short).
    #[error("{}: expected {expected} bytes of content, got {actual}", .path.display())]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// A host file was modified while its content was being copied into a layer.
    #[error("{}: the file changed while it was being copied (run the build again)", .path.display())]
    Changed { path: PathBuf },
    /// Ownership could not be applied (typically an id not mapped in this user namespace).
    #[error("{}: cannot change owner to {uid}:{gid}: {source}", .path.display())]
    Chown {
        path: PathBuf,
        uid: u64,
        gid: u64,
        #[source]
        source: io::Error,
    },
    /// An extended attribute could not be read or written.
    #[error("{}: extended attribute {name}: {source}", .path.display())]
    Xattr {
        path: PathBuf,
        name: String,
        #[source]
        source: io::Error,
    },
    /// Compression or decompression of a blob failed.
    #[error("compression: {source}")]
    Compress {
        #[source]
        source: io::Error,
    },
}

impl LayerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LayerError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn errno(path: impl Into<PathBuf>, errno: nix::errno::Errno) -> Self {
        LayerError::io(path, io::Error::from(errno))
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = LayerError> = std::result::Result<T, E>;
