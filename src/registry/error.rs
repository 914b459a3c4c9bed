//! The registry module's error type: every variant names the registry host, reference or blob
//! concerned, and the ones a user can act on say what to do.

use std::io;
use std::path::PathBuf;

use crate::image::{Digest, ReferenceError};
use crate::layer::LayerError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No connection could be made (after the bounded retries).
    #[error("registry {host} is unreachable ({attempts} attempts): {message}")]
    Unreachable {
        host: String,
        attempts: u32,
        message: String,
    },
    /// The registry refused the credentials (or their absence).
    #[error("{operation} on {host}: {status} {}: {tried}; run `kiln login {login}` with an account that may do this",
        if *status == 403 { "Forbidden" } else { "Unauthorized" })]
    Unauthorized {
        host: String,
        /// The server name to give `kiln login`.
        login: String,
        operation: String,
        status: u16,
        /// Which credentials were sent, and where they came from.
        tried: String,
    },
    /// `kiln login` with a wrong user name or password.
    #[error("login to {host} failed: {message}")]
    LoginFailed { host: String, message: String },
    /// The tag, digest or repository does not exist on the registry.
    #[error("{what} not found on {host}")]
    NotFound { host: String, what: String },
    /// Any other unexpected answer.
    #[error("{operation} on {host}: HTTP {status}: {message}")]
    Http {
        host: String,
        operation: String,
        status: u16,
        message: String,
    },
    /// A manifest kind kiln does not pull (docker schema 1, artifacts).
    #[error("{reference}: unsupported manifest media type {media_type:?}")]
    UnsupportedManifest {
        reference: String,
        media_type: String,
    },
    /// The index has no manifest for the wanted platform.
    #[error("{reference}: no image for platform {platform} (available: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    /// Content did not hash to the digest it was promised to have; nothing was stored.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    /// JSON or headers from the registry that do not make sense.
    #[error("invalid response from {host}: {message}")]
    Invalid { host: String, message: String },
    /// A bad argument (platform string, server name).
    #[error("{0}")]
    Usage(String),
    /// The docker config file could not be read or written.
    #[error("{op} {}: {message}", path.display())]
    Config {
        op: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] LayerError),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// `map_err` adapter for filesystem calls.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> RegistryError {
    let path = path.into();
    move |source| RegistryError::Io { op, path, source }
}
