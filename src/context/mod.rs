//! Which files are in the build context, and their content hashes.
//!
//! [`ignore`] is Docker's `.dockerignore` matcher; [`walk`] lists the context with those
//! rules (symlinks listed as links, never followed); [`hash`] computes blake3 content
//! hashes of exactly the files a step reads, in parallel, reusing a stat cache so that a
//! rebuild rereads only the files that changed.

pub mod hash;
pub mod ignore;
pub mod walk;

use std::path::PathBuf;

/// An error while reading the build context; every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("reading build context {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("build context {0}: not a directory")]
    NotADirectory(PathBuf),
    /// kiln keeps context paths as UTF-8: such a name could only be copied renamed.
    #[error(
        "build context: {}: the name is not valid UTF-8, which kiln does not support \
         (exclude it in .dockerignore)",
        .0.display()
    )]
    NonUtf8Name(PathBuf),
    #[error(".dockerignore: {0}")]
    Ignore(#[from] ignore::IgnoreError),
    #[error("stat cache {path}: {message}")]
    StatCache { path: PathBuf, message: String },
}

impl ContextError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ContextError::Io {
            path: path.into(),
            source,
        }
    }
}
