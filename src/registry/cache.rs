//! The registry as a shared build cache (`--cache-to` / `--cache-from type=registry`).
//!
//! A cache lives in a reference of its own as an OCI manifest: its config blob
//! ([`CACHE_CONFIG`]) maps each step's cache key to what the step produced (the layer as
//! pushed, compressed, its diffID and creation time), and its layers are those compressed
//! blobs, so the registry keeps them alive and a plain `skopeo copy` carries the cache.
//! Importing reads only the config; a layer is downloaded when a step hits it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::client::{Body, Client};
use super::error::{RegistryError, Result};
use super::pull::{download_layer, fetch_manifest, fetch_small_blob};
use super::push::{blob_exists, mount_or_upload};
use super::RegistryOptions;
use crate::image::{media, Descriptor, Digest, Manifest, Reference};
use crate::layer::Compression;
use crate::progress::{Event, Reporter};
use crate::store::{CacheEntry, Store};

/// The manifest's `artifactType`.
pub const CACHE_ARTIFACT: &str = "application/vnd.kiln.build-cache.v1";
/// The media type of the cache's config blob: the key → layer map.
pub const CACHE_CONFIG: &str = "application/vnd.kiln.build-cache.config.v1+json";
/// Bump when the meaning of keys or entries changes (the build's keys are versioned too).
const FORMAT_VERSION: u32 = 1;

/// Which steps `--cache-to` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps whose layers are in the final image (and every layer-less step).
    #[default]
    Min,
    /// Every step of every stage.
    Max,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheDocument {
    version: u32,
    entries: BTreeMap<String, RemoteEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RemoteEntry {
    /// The layer as it is in the registry (compressed); absent for metadata-only steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    diff_id: Option<Digest>,
    /// RFC 3339: the step's time, which the image config's history carries, so a hit yields
    /// the very image ID the exporting build made.
    created: String,
}

/// A cache imported from a registry reference.
pub struct RegistryCache {
    client: Client,
    reference: Reference,
    entries: BTreeMap<String, RemoteEntry>,
    retries: u32,
}

impl std::fmt::Debug for RegistryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCache")
            .field("reference", &self.reference.to_string())
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl RegistryCache {
    /// Reads the cache `reference` names (its manifest and key map; no layer yet).
    pub fn import(reference: &Reference, opts: &RegistryOptions) -> Result<RegistryCache> {
        let client = Client::new(reference.registry(), reference.repository(), false, opts)?;
        let shown = reference.familiar();
        let tag_or_digest = match (reference.digest(), reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => crate::image::reference::DEFAULT_TAG.to_string(),
        };
        let fetched = fetch_manifest(&client, &tag_or_digest, &shown, reference.digest())?;
        let not_cache = |what: &str| RegistryError::UnsupportedManifest {
            reference: shown.clone(),
            media_type: format!("{what} (not a kiln build cache)"),
        };
        if !media::is_manifest(&fetched.media_type) {
            return Err(not_cache(&fetched.media_type));
        }
        let manifest: Manifest =
            serde_json::from_slice(&fetched.bytes).map_err(|e| RegistryError::Invalid {
                host: client.registry.clone(),
                message: format!("cache manifest of {shown}: {e}"),
            })?;
        if manifest.config.media_type != CACHE_CONFIG {
            return Err(not_cache(&format!("config {}", manifest.config.media_type)));
        }
        let bytes = fetch_small_blob(&client, &manifest.config, "cache config")?;
        let entries = parse_document(&bytes).map_err(|message| RegistryError::Invalid {
            host: client.registry.clone(),
            message: format!("cache config of {shown}: {message}"),
        })?;
        Ok(RegistryCache {
            client,
            reference: reference.clone(),
            entries,
            retries: opts.retries,
        })
    }

    /// How many steps the cache knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the cache knows of `key_hex` without fetching anything: the diffID of its layer
    /// (`None` for a step without one) and its time; `None` when the key is unknown.
    pub fn lookup(&self, key_hex: &str) -> Option<(Option<Digest>, String)> {
        let remote = self.entries.get(key_hex)?;
        Some((remote.diff_id.clone(), remote.created.clone()))
    }

    /// The layer of `key_hex` downloaded (verified against both digests) into `store` unless
    /// already there; returns its uncompressed size. Builds call this only for layers they
    /// read or export, so stages a `mode=max` cache holds cost nothing when they hit.
    pub fn fetch_layer(&self, store: &Store, key_hex: &str) -> Result<u64> {
        let Some(RemoteEntry {
            layer: Some(desc),
            diff_id: Some(diff_id),
            ..
        }) = self.entries.get(key_hex)
        else {
            return Err(RegistryError::Usage(format!(
                "the build cache has no layer for step {key_hex}"
            )));
        };
        if !store.has_blob(diff_id) {
            download_layer(
                &self.client,
                store,
                desc,
                diff_id,
                self.retries,
                &crate::progress::NullReporter,
            )?;
        }
        Ok(store.blob_size(diff_id)?)
    }
}

fn parse_document(bytes: &[u8]) -> std::result::Result<BTreeMap<String, RemoteEntry>, String> {
    let doc: CacheDocument = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if doc.version != FORMAT_VERSION {
        return Err(format!(
            "format version {} (this kiln reads {FORMAT_VERSION})",
            doc.version
        ));
    }
    for (key, e) in &doc.entries {
        let hex_ok = !key.is_empty()
            && key.len() <= 128
            && key
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(format!("invalid cache key {key:?}"));
        }
        match (&e.layer, &e.diff_id) {
            (None, None) => {}
            (Some(l), Some(_))
                if l.media_type == media::OCI_LAYER_TAR_GZIP
                    || l.media_type == media::OCI_LAYER_TAR_ZSTD => {}
            (Some(l), Some(_)) => {
                return Err(format!(
                    "entry {key}: unsupported layer media type {:?}",
                    l.media_type
                ))
            }
            _ => return Err(format!("entry {key}: a layer needs both digests")),
        }
    }
    Ok(doc.entries)
}

/// What `export_cache` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExported {
    pub reference: Reference,
    /// The cache manifest's digest.
    pub digest: Digest,
    pub entries: usize,
    pub layers: usize,
    /// Blobs uploaded (the rest the registry had).
    pub uploaded: usize,
}

/// Writes the cache of a build to `reference`: the `steps` (cache key, entry) the `mode`
/// selects (`final_layers`: the diffIDs of the built image), their layers gzip-compressed as
/// `kiln push` sends them (so image and cache share blobs), then the key map and manifest.
pub fn export_cache(
    store: &Store,
    reference: &Reference,
    steps: &[(String, CacheEntry)],
    final_layers: &[Digest],
    mode: CacheMode,
    opts: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<CacheExported> {
    let in_final: BTreeSet<&Digest> = final_layers.iter().collect();
    let chosen: Vec<&(String, CacheEntry)> = steps
        .iter()
        .filter(|(_, e)| match (&e.layer, mode) {
            (None, _) | (Some(_), CacheMode::Max) => true,
            (Some(l), CacheMode::Min) => in_final.contains(&l.digest),
        })
        .collect();
    let diff_ids = chosen
        .iter()
        .filter_map(|(_, e)| e.layer.as_ref().map(|l| l.digest.clone()));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (compressed, _) = store.compress_layers::<RegistryError>(
        diff_ids,
        Compression::Gzip { level: 6 },
        threads,
    )?;
    let mut entries = BTreeMap::new();
    for (key, e) in &chosen {
        let (layer, diff_id) = match &e.layer {
            Some(l) => {
                let c = compressed.get(&l.digest).ok_or_else(|| {
                    RegistryError::Usage(format!("layer {} was not compressed", l.digest))
                })?;
                (Some(c.clone()), Some(l.digest.clone()))
            }
            None => (None, None),
        };
        entries.insert(
            key.clone(),
            RemoteEntry {
                layer,
                diff_id,
                created: e.created.clone(),
            },
        );
    }
    let doc = CacheDocument {
        version: FORMAT_VERSION,
        entries,
    };
    let doc_bytes = serde_json::to_vec(&doc).map_err(|e| RegistryError::Usage(e.to_string()))?;
    let config = store.put_bytes(CACHE_CONFIG, &doc_bytes)?;
    let layers: Vec<Descriptor> = compressed.values().cloned().collect();
    let mut manifest = Manifest::new(config.clone(), layers.clone());
    manifest.artifact_type = Some(CACHE_ARTIFACT.to_string());
    let bytes = manifest
        .to_json()
        .map_err(|e| RegistryError::Usage(e.to_string()))?;
    let digest = Digest::sha256_of(&bytes);

    let client = Client::new(reference.registry(), reference.repository(), true, opts)?;
    let op = format!("exporting the build cache to {}", reference.familiar());
    let blobs: Vec<&Descriptor> = layers.iter().chain(std::iter::once(&config)).collect();
    let uploaded = std::sync::atomic::AtomicUsize::new(0);
    super::pull::run_parallel(opts.threads, &blobs, |desc| {
        if !blob_exists(&client, desc, &op)? {
            mount_or_upload(&client, store, desc, &op)?;
            uploaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    })?;
    let tag = match (reference.tag(), reference.digest()) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => crate::image::reference::DEFAULT_TAG.to_string(),
    };
    let resp = client.request(
        "PUT",
        &client.url(&format!("manifests/{tag}")),
        &[("Content-Type", media::OCI_MANIFEST)],
        &Body::Bytes(&bytes),
        &op,
    )?;
    if resp.status() != 201 && resp.status() != 200 {
        return Err(client.http_error(&format!("{op}: uploading the manifest"), resp));
    }
    reporter.event(Event::Message(&format!(
        "exported the build cache ({} steps, {} layers) to {}: {digest}",
        doc.entries.len(),
        layers.len(),
        reference.familiar()
    )));
    Ok(CacheExported {
        reference: reference.clone(),
        digest,
        entries: doc.entries.len(),
        layers: layers.len(),
        uploaded: uploaded.into_inner(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    #[test]
    fn documents_round_trip_and_bad_ones_are_refused() {
        let mut entries = BTreeMap::new();
        entries.insert(
            "ab12".to_string(),
            RemoteEntry {
                layer: Some(Descriptor::new(media::OCI_LAYER_TAR_GZIP, d('a'), 10)),
                diff_id: Some(d('b')),
                created: "2024-01-01T00:00:00Z".into(),
            },
        );
        entries.insert(
            "cd".to_string(),
            RemoteEntry {
                layer: None,
                diff_id: None,
                created: "2024-01-01T00:00:00Z".into(),
            },
        );
        let doc = CacheDocument {
            version: FORMAT_VERSION,
            entries: entries.clone(),
        };
        let bytes = serde_json::to_vec(&doc).unwrap();
        assert_eq!(parse_document(&bytes).unwrap(), entries);

        let bad = |doc: &CacheDocument| parse_document(&serde_json::to_vec(doc).unwrap());
        let mut v2 = doc.clone();
        v2.version = 2;
        assert!(bad(&v2).unwrap_err().contains("version 2"));
        let mut key = doc.clone();
        key.entries.insert("../x".into(), entries["cd"].clone());
        assert!(bad(&key).unwrap_err().contains("invalid cache key"));
        let mut half = doc.clone();
        half.entries.get_mut("ab12").unwrap().diff_id = None;
        assert!(bad(&half).unwrap_err().contains("both digests"));
        let mut plain = doc;
        plain
            .entries
            .get_mut("ab12")
            .unwrap()
            .layer
            .as_mut()
            .unwrap()
            .media_type = media::OCI_LAYER_TAR.into();
        assert!(bad(&plain).unwrap_err().contains("media type"));
        assert!(parse_document(b"{").is_err());
    }
}
