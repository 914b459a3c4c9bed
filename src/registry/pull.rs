//! `kiln pull`: a manifest (or the chosen platform's manifest of an index), its config and its
//! layers into the store. Every blob is hashed as it arrives and checked against its digest,
//! and every layer, decompressed on the fly, against the config's diffID, before anything
//! becomes visible; the tag is written last.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::client::{read_limited, Body, Client, MAX_JSON, MAX_MANIFEST};
use super::error::{RegistryError, Result};
use super::{host_platform, RegistryOptions};
use crate::image::{
    media, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference, Sha256Hasher,
};
use crate::layer::{decompressing_reader, DetectedCompression};
use crate::progress::{Event, Reporter};
use crate::store::{BlobWriter, Store, StoreError};

/// What `pull` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub reference: Reference,
    /// The digest the registry gives the reference (the index's, for multi-platform images).
    pub remote_digest: Digest,
    /// The manifest as stored (uncompressed layers).
    pub manifest: Descriptor,
    /// The config digest (image ID), as on the registry.
    pub id: Digest,
    /// Layers downloaded, and layers the store already had.
    pub downloaded: usize,
    pub present: usize,
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

const KNOWN_LAYERS: &[&str] = &[
    media::OCI_LAYER_TAR,
    media::OCI_LAYER_TAR_GZIP,
    media::OCI_LAYER_TAR_ZSTD,
    media::DOCKER_LAYER_GZIP,
    media::DOCKER_FOREIGN_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Pulls `reference` for `platform` (default: the host's) and tags it in the store.
pub fn pull(
    store: &Store,
    reference: &Reference,
    platform: Option<&Platform>,
    opts: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<Pulled> {
    let client = Client::new(reference.registry(), reference.repository(), false, opts)?;
    let wanted = platform.cloned().unwrap_or_else(host_platform);
    let shown = reference.familiar();
    let tag_or_digest = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => crate::image::reference::DEFAULT_TAG.to_string(),
    };
    reporter.event(Event::Message(&format!(
        "{}: Pulling from {}",
        reference.tag().unwrap_or(&tag_or_digest),
        reference.familiar_name()
    )));

    let top = fetch_manifest(&client, &tag_or_digest, &shown, reference.digest())?;
    let remote_digest = top.digest.clone();
    let from_index = media::is_index(&top.media_type);
    let manifest_doc = if from_index {
        let index: Index =
            serde_json::from_slice(&top.bytes).map_err(|e| RegistryError::Invalid {
                host: client.registry.clone(),
                message: format!("index of {shown}: {e}"),
            })?;
        let chosen = choose_platform(&index, &wanted, &shown)?;
        let m = fetch_manifest(
            &client,
            chosen.digest.as_str(),
            &shown,
            Some(&chosen.digest),
        )?;
        if !media::is_manifest(&m.media_type) {
            return Err(RegistryError::UnsupportedManifest {
                reference: shown,
                media_type: m.media_type,
            });
        }
        m
    } else {
        top
    };
    let manifest: Manifest =
        serde_json::from_slice(&manifest_doc.bytes).map_err(|e| RegistryError::Invalid {
            host: client.registry.clone(),
            message: format!("manifest of {shown}: {e}"),
        })?;
    let config_type = manifest.config.media_type.as_str();
    if config_type != media::OCI_CONFIG && config_type != media::DOCKER_CONFIG {
        return Err(RegistryError::UnsupportedManifest {
            reference: shown,
            media_type: format!("{} (config {config_type})", manifest_doc.media_type),
        });
    }
    if let Some(l) = manifest
        .layers
        .iter()
        .find(|l| !KNOWN_LAYERS.contains(&l.media_type.as_str()))
    {
        return Err(RegistryError::UnsupportedManifest {
            reference: shown,
            media_type: format!("{} (layer {})", manifest_doc.media_type, l.media_type),
        });
    }

    let config_bytes = fetch_small_blob(&client, &manifest.config, "config")?;
    let config = ImageConfig::from_json(&config_bytes).map_err(|e| RegistryError::Invalid {
        host: client.registry.clone(),
        message: format!("config of {shown}: {e}"),
    })?;
    // A single-platform image must be the platform asked for (docker's rule); without
    // --platform it is taken whatever it is.
    if let (false, Some(p)) = (from_index, platform) {
        let have = config.platform();
        if have.os != p.os
            || have.architecture != p.architecture
            || (p.variant.is_some() && have.variant != p.variant)
        {
            return Err(RegistryError::NoPlatform {
                reference: shown,
                platform: p.to_string(),
                available: have.to_string(),
            });
        }
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RegistryError::Invalid {
            host: client.registry.clone(),
            message: format!(
                "{shown}: the config lists {} diff_ids but the manifest {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }

    let pairs: Vec<(&Descriptor, &Digest)> = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .collect();
    let mut jobs: Vec<(&Descriptor, &Digest)> = Vec::new();
    let mut present = 0;
    for (desc, diff_id) in &pairs {
        if store.has_blob(diff_id) {
            present += 1;
            super::sources::record(store, &desc.digest, &client.registry, &client.repository);
            reporter.event(Event::Layer {
                id: desc.digest.short(),
                status: "Already exists",
            });
        } else if !jobs.iter().any(|(_, d)| d == diff_id) {
            jobs.push((desc, diff_id));
        }
    }
    let downloaded = jobs.len();
    for (desc, _) in &jobs {
        reporter.event(Event::Layer {
            id: desc.digest.short(),
            status: "Pulling fs layer",
        });
        reporter.event(Event::LayerBytes {
            id: desc.digest.short(),
            done: 0,
            total: Some(desc.size),
        });
    }
    run_parallel(opts.threads, &jobs, |(desc, diff_id)| {
        download_layer(&client, store, desc, diff_id, opts.retries, reporter)?;
        reporter.event(Event::Layer {
            id: desc.digest.short(),
            status: "Pull complete",
        });
        Ok(())
    })?;

    // The config keeps its bytes (and so the image ID the registry shows).
    let config_desc = store.put_bytes(&manifest.config.media_type, &config_bytes)?;
    super::sources::record(
        store,
        &config_desc.digest,
        &client.registry,
        &client.repository,
    );
    let mut layers = Vec::new();
    for (_, diff_id) in &pairs {
        let size = store.blob_size(diff_id)?;
        layers.push(Descriptor::new(
            media::OCI_LAYER_TAR,
            (*diff_id).clone(),
            size,
        ));
    }
    let mut local = Manifest::new(config_desc.clone(), layers);
    local.annotations = manifest.annotations.clone();
    let manifest_desc = store.put_manifest(&local)?;
    store.tag(reference, &manifest_desc)?;
    reporter.event(Event::Message(&format!("Digest: {remote_digest}")));
    reporter.event(Event::Message(&format!(
        "Status: {} for {shown}",
        if downloaded == 0 {
            "Image is up to date"
        } else {
            "Downloaded newer image"
        }
    )));
    Ok(Pulled {
        reference: reference.clone(),
        remote_digest,
        manifest: manifest_desc,
        id: config_desc.digest,
        downloaded,
        present,
    })
}

/// Runs `job` over `items` on up to `threads` scoped threads; the first error wins.
pub(crate) fn run_parallel<T: Sync>(
    threads: usize,
    items: &[T],
    job: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    let failed = || first_error.lock().map(|e| e.is_some()).unwrap_or(true);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                if failed() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else {
                    return;
                };
                if let Err(e) = job(item) {
                    if let Ok(mut slot) = first_error.lock() {
                        slot.get_or_insert(e);
                    }
                    return;
                }
            });
        }
    });
    match first_error.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

pub(super) struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

pub(super) fn fetch_manifest(
    client: &Client,
    tag_or_digest: &str,
    shown: &str,
    expected: Option<&Digest>,
) -> Result<Fetched> {
    let op = format!("pulling manifest of {shown}");
    let resp = client.request(
        "GET",
        &client.url(&format!("manifests/{tag_or_digest}")),
        &[("Accept", ACCEPT)],
        &Body::Empty,
        &op,
    )?;
    match resp.status() {
        200 => {}
        404 => {
            let what = if super::client::error_message(resp).contains("NAME_UNKNOWN") {
                format!("repository {}", client.repository)
            } else {
                format!("manifest for {shown}")
            };
            return Err(RegistryError::NotFound {
                host: client.registry.clone(),
                what,
            });
        }
        _ => return Err(client.http_error(&op, resp)),
    }
    let header_type = resp
        .header("Content-Type")
        .map(|t| t.split(';').next().unwrap_or_default().trim().to_string())
        .unwrap_or_default();
    // An announced size over the limit is refused before a byte of the body is read.
    if let Some(len) = resp
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|len| *len > MAX_MANIFEST)
    {
        return Err(RegistryError::Invalid {
            host: client.registry.clone(),
            message: format!(
                "manifest of {shown} is {len} bytes, more than the {MAX_MANIFEST} bytes kiln accepts"
            ),
        });
    }
    let bytes = read_limited(resp, MAX_MANIFEST).map_err(|message| RegistryError::Invalid {
        host: client.registry.clone(),
        message: format!("manifest of {shown}: {message}"),
    })?;
    let digest = Digest::sha256_of(&bytes);
    if let Some(expected) = expected {
        if *expected != digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {tag_or_digest} of {shown}"),
                expected: expected.clone(),
                actual: digest,
            });
        }
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "schemaVersion", default)]
        schema_version: u32,
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
        host: client.registry.clone(),
        message: format!("manifest of {shown}: {e}"),
    })?;
    let media_type = match probe.media_type {
        Some(t) if !t.is_empty() => t,
        // OCI documents may omit mediaType; the header, else the shape, tells.
        _ if !header_type.is_empty() && header_type != "application/json" => header_type,
        _ if probe.manifests.is_some() => media::OCI_INDEX.to_string(),
        _ => media::OCI_MANIFEST.to_string(),
    };
    if probe.schema_version != 2
        || !(media::is_manifest(&media_type) || media::is_index(&media_type))
    {
        return Err(RegistryError::UnsupportedManifest {
            reference: shown.to_string(),
            media_type: if probe.schema_version == 1 {
                format!("{media_type} (docker schema 1)")
            } else {
                media_type
            },
        });
    }
    Ok(Fetched {
        bytes,
        media_type,
        digest,
    })
}

fn choose_platform<'a>(index: &'a Index, wanted: &Platform, shown: &str) -> Result<&'a Descriptor> {
    let usable = || {
        index.manifests.iter().filter(|d| {
            media::is_manifest(&d.media_type)
                // BuildKit's attestations: platform unknown/unknown and this annotation.
                && !d.annotations.contains_key("vnd.docker.reference.type")
        })
    };
    let matches = |p: &Platform| {
        p.os == wanted.os
            && p.architecture == wanted.architecture
            && (wanted.variant.is_none() || p.variant == wanted.variant)
    };
    usable()
        .find(|d| d.platform.as_ref().is_some_and(matches))
        .ok_or_else(|| RegistryError::NoPlatform {
            reference: shown.to_string(),
            platform: wanted.to_string(),
            available: usable()
                .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// GET a blob; a 404 names the blob as `what` (config, layer) and the repository.
fn get_blob(client: &Client, desc: &Descriptor, what: &str) -> Result<ureq::Response> {
    let op = format!("pulling {what} {}", desc.digest);
    let resp = client.request(
        "GET",
        &client.url(&format!("blobs/{}", desc.digest)),
        &[],
        &Body::Empty,
        &op,
    )?;
    match resp.status() {
        200 => Ok(resp),
        404 => Err(RegistryError::NotFound {
            host: client.registry.clone(),
            what: format!("{what} blob {} of {}", desc.digest, client.repository),
        }),
        _ => Err(client.http_error(&op, resp)),
    }
}

/// A config (or other small JSON blob), verified against its digest.
pub(super) fn fetch_small_blob(client: &Client, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let resp = get_blob(client, desc, what)?;
    let bytes = read_limited(resp, MAX_JSON).map_err(|message| RegistryError::Invalid {
        host: client.registry.clone(),
        message: format!("{what} {}: {message}", desc.digest),
    })?;
    let actual = Digest::sha256_of(&bytes);
    if actual != desc.digest {
        return Err(RegistryError::DigestMismatch {
            what: format!("{what} blob from {}", client.registry),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// Writes what it reads into `out` (the layer's uncompressed blob) as a checker reads it.
struct CopyingReader<'a, R> {
    inner: R,
    out: &'a mut BlobWriter,
}

impl<R: Read> Read for CopyingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        io::Write::write_all(self.out, &buf[..n])?;
        Ok(n)
    }
}

/// Hashes what it reads, copies it into a pending blob when there is one, and reports the
/// bytes read.
struct TeeReader<'a, R> {
    inner: R,
    copy: Option<&'a mut BlobWriter>,
    hasher: Sha256Hasher,
    /// Whether reading the network failed (worth a retry), as opposed to decompressing.
    read_failed: bool,
    progress: LayerProgress<'a>,
}

/// Byte counts of one layer's transfer, reported every [`LayerProgress::STEP`] bytes so a
/// fast link does not turn into a flood of events.
pub(super) struct LayerProgress<'a> {
    pub reporter: &'a dyn Reporter,
    pub id: &'a str,
    pub total: Option<u64>,
    pub done: u64,
    pub reported: u64,
}

impl LayerProgress<'_> {
    const STEP: u64 = 512 << 10;

    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.done - self.reported >= Self::STEP || Some(self.done) == self.total {
            self.reported = self.done;
            self.reporter.event(Event::LayerBytes {
                id: self.id,
                done: self.done,
                total: self.total,
            });
        }
    }
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .inspect_err(|_| self.read_failed = true)?;
        let got = buf.get(..n).unwrap_or_default();
        self.hasher.update(got);
        if let Some(w) = self.copy.as_mut() {
            io::Write::write_all(w, got)?;
        }
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// Downloads one layer, retrying a broken transfer from the start (bounded).
pub(super) fn download_layer(
    client: &Client,
    store: &Store,
    desc: &Descriptor,
    diff_id: &Digest,
    retries: u32,
    reporter: &dyn Reporter,
) -> Result<()> {
    let mut attempt = 0;
    loop {
        match download_layer_once(client, store, desc, diff_id, reporter) {
            Err(RegistryError::Io {
                op: "downloading", ..
            }) if attempt < retries => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(200 << attempt.min(4)));
            }
            other => return other,
        }
    }
}

fn download_layer_once(
    client: &Client,
    store: &Store,
    desc: &Descriptor,
    diff_id: &Digest,
    reporter: &dyn Reporter,
) -> Result<()> {
    let resp = get_blob(client, desc, "layer")?;
    let io_failure = |source: io::Error| RegistryError::Io {
        op: "downloading",
        path: format!("{}/{}", client.registry, desc.digest).into(),
        source,
    };
    // The compressed blob is kept too: a later push or save reuses it as is, with the
    // registry's digest, instead of compressing again.
    let keep_compressed =
        !media::is_uncompressed_layer(&desc.media_type) && !store.has_blob(&desc.digest);
    let mut compressed = if keep_compressed {
        Some(store.blob_writer()?)
    } else {
        None
    };
    let mut uncompressed = store.blob_writer()?;
    let mut tee = TeeReader {
        inner: io::BufReader::with_capacity(1 << 20, resp.into_reader()),
        copy: compressed.as_mut(),
        hasher: Sha256Hasher::new(),
        read_failed: false,
        progress: LayerProgress {
            reporter,
            id: desc.digest.short(),
            total: Some(desc.size),
            done: 0,
            reported: 0,
        },
    };
    // The tar is checked as it streams into the store (one pass): names or links that leave
    // the root, unknown entry types, a stream ending inside an entry are refused, as `load`
    // refuses them.
    let decoded = decompressing_reader(&mut tee).and_then(|(kind, plain)| {
        let mut copying = CopyingReader {
            inner: plain,
            out: &mut uncompressed,
        };
        let checked = crate::layer::check_layer(&mut copying);
        io::copy(&mut copying, &mut io::sink())?;
        Ok((kind, checked))
    });
    if tee.read_failed {
        return Err(io_failure(
            decoded
                .err()
                .unwrap_or_else(|| io::Error::other("read failed")),
        ));
    }
    // Whatever follows the end of the compressed stream is part of the blob's digest; after
    // a decompression error the rest is read too, so corrupt content is reported as such.
    io::copy(&mut tee, &mut io::sink()).map_err(io_failure)?;
    let size = tee.hasher.len();
    let actual = tee.hasher.finish();
    let mismatch = actual != desc.digest || size != desc.size;
    let (kind, checked) = match decoded {
        Ok(done) => done,
        Err(e) if !mismatch => {
            return Err(RegistryError::Invalid {
                host: client.registry.clone(),
                message: format!("layer {} does not decompress: {e}", desc.digest),
            })
        }
        Err(_) => (DetectedCompression::None, Ok(0)),
    };
    if mismatch {
        return Err(RegistryError::DigestMismatch {
            what: format!(
                "layer {} from {} ({size} bytes, {} announced)",
                desc.digest, client.registry, desc.size
            ),
            expected: desc.digest.clone(),
            actual,
        });
    }
    if let Err(e) = checked {
        return Err(RegistryError::Invalid {
            host: client.registry.clone(),
            message: format!("layer {} is refused: {e}", desc.digest),
        });
    }
    reporter.event(Event::Layer {
        id: desc.digest.short(),
        status: "Download complete",
    });
    match uncompressed.commit(Some(diff_id)) {
        Ok(_) => {}
        Err(StoreError::DigestMismatch { actual, .. }) => {
            return Err(RegistryError::DigestMismatch {
                what: format!("layer {} uncompressed (the config's diff_id)", desc.digest),
                expected: diff_id.clone(),
                actual,
            })
        }
        Err(e) => return Err(e.into()),
    }
    let algo = match kind {
        DetectedCompression::Gzip => Some(("gzip", media::OCI_LAYER_TAR_GZIP)),
        DetectedCompression::Zstd => Some(("zstd", media::OCI_LAYER_TAR_ZSTD)),
        _ => None,
    };
    super::sources::record(store, &desc.digest, &client.registry, &client.repository);
    if let Some(w) = compressed {
        let info = w.commit(Some(&desc.digest))?;
        if let Some((algo, media_type)) = algo {
            store.compressed_put(diff_id, algo, &info.descriptor(media_type))?;
        }
    }
    Ok(())
}
