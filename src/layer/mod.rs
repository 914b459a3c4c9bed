//! Filesystem diffs as layers: deterministic tar (with OCI whiteouts), safe extraction,
//! and compression.

pub mod index;
