//! Compressed variants of the store's uncompressed layers, made on demand (for push and
//! save) and recorded so the next push or save reuses them.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use super::error::StoreError;
use super::Store;
use crate::image::{media, Descriptor, Digest};
use crate::layer::{compress_file, Compression, LayerError};

/// The store's name of a compression algorithm, as compressed-variant records use it.
pub fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip { .. } => "gzip",
        Compression::Zstd { .. } => "zstd",
    }
}

/// The OCI layer media type of a compression.
pub fn compressed_layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip { .. } => media::OCI_LAYER_TAR_GZIP,
        Compression::Zstd { .. } => media::OCI_LAYER_TAR_ZSTD,
    }
}

impl Store {
    /// The `compression` variant of each uncompressed layer in `diff_ids`: reused when one is
    /// recorded, else made (layers side by side, `threads` shared among them), verified,
    /// stored and recorded. Returns the descriptor by diffID, and how many were made.
    pub fn compress_layers<E>(
        &self,
        diff_ids: impl IntoIterator<Item = Digest>,
        compression: Compression,
        threads: usize,
    ) -> Result<(BTreeMap<Digest, Descriptor>, usize), E>
    where
        E: From<StoreError> + From<LayerError> + Send,
    {
        let algo = compression_name(compression);
        let media_type = compressed_layer_media_type(compression);
        let wanted: BTreeSet<Digest> = diff_ids.into_iter().collect();
        let mut done = BTreeMap::new();
        let mut todo = Vec::new();
        for diff_id in wanted {
            match self.compressed_get(&diff_id, algo)? {
                Some(d) => {
                    done.insert(diff_id, Descriptor::new(media_type, d.digest, d.size));
                }
                None => todo.push(diff_id),
            }
        }
        let made = todo.len();
        // Layers compress side by side; each also splits its own work when there are few.
        let per_layer = (threads.max(1) / made.max(1)).max(1);
        let results: Vec<Result<(Digest, Descriptor), E>> = todo
            .into_par_iter()
            .map(|diff_id| {
                let writer = self.blob_writer()?;
                let (writer, digested) =
                    compress_file(&self.blob_path(&diff_id), compression, per_layer, writer)?;
                let digest = Digest::from_sha256_bytes(&digested.digest.0);
                let info = writer.commit(Some(&digest))?;
                let desc = Descriptor::new(media_type, info.digest, info.size);
                self.compressed_put(&diff_id, algo, &desc)?;
                Ok((diff_id, desc))
            })
            .collect();
        for r in results {
            let (diff_id, desc) = r?;
            done.insert(diff_id, desc);
        }
        Ok((done, made))
    }
}
