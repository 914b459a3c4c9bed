//! Filesystem diffs as layers: deterministic tar (with OCI whiteouts), safe extraction,
//! and compression.
//!
//! - [`LayerBuilder`] writes a tar entry by entry (or a whole tree, or an overlayfs upper
//!   directory) and returns its diffID: the sha256 of the uncompressed tar.
//! - [`apply_layer`] unpacks a layer (plain or gzip/zstd/bzip2/xz compressed) onto a
//!   directory, honouring whiteouts and never writing outside it.
//! - [`check_layer`] reads a layer tar to its end and refuses what [`apply_layer`] would
//!   refuse (names or hard links leaving the root, unknown entry types, names no
//!   filesystem takes, a stream ending inside an entry), so `load` can refuse it up front.
//! - [`compress`] makes the blobs pushed to registries: pigz-style parallel gzip or zstd,
//!   byte-identical whatever the number of threads.

mod apply;
mod check;
mod compress;
mod decompress;
mod digest;
mod error;
pub mod index;
pub(crate) mod resolve;
mod walk;
mod writer;

pub use apply::{apply_layer, ApplyOptions, ApplyStats, Policy};
pub use check::{check_layer, name_problem, NAME_MAX};
pub use compress::{compress, compress_file, Compression, GZIP_CHUNK};
pub use decompress::{decompressing_reader, detect_compression, DetectedCompression};
pub use digest::{Digested, HashingWriter, Sha256Digest};
pub use error::{LayerError, Result};
pub use resolve::PathResolution;
pub use walk::{diff_overlay_upper, TreeOptions, XattrMode};
pub use writer::{
    BuildOptions, DeviceKind, EntryMeta, LayerBuilder, OPAQUE_MARKER, WHITEOUT_PREFIX,
};
