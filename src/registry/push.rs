//! `kiln push`: an image of the store to a registry. Layers go up gzip-compressed (the
//! compressed variants are cached in the store); each blob is HEADed first and only uploaded
//! when missing; the manifest goes last. When the registry's tag already names the exact
//! manifest, the push is a single HEAD.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::Mutex;

use super::client::{Body, Client};
use super::error::{io_err, RegistryError, Result};
use super::pull::run_parallel;
use super::sources::{self, mount_candidates};
use super::RegistryOptions;
use crate::image::{media, Descriptor, Digest, Manifest, Reference};
use crate::layer::{compress, Compression};
use crate::progress::{Event, Reporter};
use crate::store::{compressed_layer_media_type, compression_name, BlobWriter, Store};

/// Blobs up to this size go in one PUT; bigger ones in PATCH chunks of this size.
pub(crate) const CHUNK: u64 = 64 << 20;

/// What `push` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub reference: Reference,
    /// The digest and size of the manifest as the registry holds it.
    pub digest: Digest,
    pub size: u64,
    /// Blobs uploaded, and blobs the registry already had.
    pub uploaded: usize,
    pub skipped: usize,
}

/// Pushes the image `source` names (as for [`Store::resolve`]) to `dest`, or to `source`
/// itself when it is a name, with gzip layers.
pub fn push(
    store: &Store,
    source: &str,
    dest: Option<&Reference>,
    opts: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    push_with(
        store,
        source,
        dest,
        Compression::Gzip { level: 6 },
        opts,
        reporter,
    )
}

/// [`push`] with the layers compressed as `compression` says (zstd is much faster to make,
/// and read by containerd, podman and docker ≥ 23, but not by older clients).
pub fn push_with(
    store: &Store,
    source: &str,
    dest: Option<&Reference>,
    compression: Compression,
    opts: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    let record = store.resolve(source)?;
    let dest = match dest {
        Some(d) => d.clone(),
        None => Reference::parse(source).map_err(|e| {
            RegistryError::Usage(format!(
                "{source:?} is not a name to push to ({e}); give a destination: kiln push {source} REGISTRY/NAME[:TAG]"
            ))
        })?,
    };
    let stored = store.read_manifest(&record.manifest.digest)?;
    let client = Client::new(dest.registry(), dest.repository(), true, opts)?;
    reporter.event(Event::Message(&format!(
        "The push refers to repository [{}]",
        dest.name()
    )));
    let op = format!("pushing {}", dest.familiar());
    // Layers never compressed this way before go up while they are compressed (their digest
    // is only known at the end, so there is nothing to HEAD first). A push by digest needs
    // the manifest's digest before sending anything, so it compresses first.
    let streamed: BTreeSet<Digest> = if dest.digest().is_none() {
        let cold = cold_layers(store, &stored, compression)?;
        let per_layer = (std::thread::available_parallelism().map_or(1, |n| n.get())
            / cold.len().clamp(1, opts.threads.max(1)))
        .max(1);
        let done = Mutex::new(BTreeSet::new());
        run_parallel(opts.threads, &cold, |diff_id| {
            let desc = stream_layer(&client, store, diff_id, compression, per_layer, &op)?;
            reporter.event(Event::Layer {
                id: desc.digest.short(),
                status: "Pushed",
            });
            if let Ok(mut d) = done.lock() {
                d.insert(desc.digest);
            }
            Ok(())
        })?;
        done.into_inner().unwrap_or_default()
    } else {
        BTreeSet::new()
    };
    let manifest = remote_manifest(store, &stored, compression)?;
    let bytes = manifest
        .to_json()
        .map_err(|e| RegistryError::Usage(e.to_string()))?;
    let digest = Digest::sha256_of(&bytes);
    let size = bytes.len() as u64;
    let reference_in_registry = match (dest.tag(), dest.digest()) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => {
            if *d != digest {
                return Err(RegistryError::Usage(format!(
                    "{dest}: the image's manifest would have digest {digest}, not the one named"
                )));
            }
            d.to_string()
        }
        (None, None) => crate::image::reference::DEFAULT_TAG.to_string(),
    };
    let done = |uploaded, skipped| {
        reporter.event(Event::Message(&format!(
            "{reference_in_registry}: digest: {digest} size: {size}"
        )));
        Ok(Pushed {
            reference: dest.clone(),
            digest: digest.clone(),
            size,
            uploaded,
            skipped,
        })
    };

    // The registry may already hold this very manifest under the tag: nothing to send.
    let head = client.request(
        "HEAD",
        &client.url(&format!("manifests/{reference_in_registry}")),
        &[("Accept", manifest_media_type(&manifest))],
        &Body::Empty,
        &op,
    )?;
    if head.status() == 200 && head.header("Docker-Content-Digest") == Some(digest.as_str()) {
        for l in manifest
            .layers
            .iter()
            .filter(|l| !streamed.contains(&l.digest))
        {
            reporter.event(Event::Layer {
                id: l.digest.short(),
                status: "Layer already exists",
            });
        }
        let n = manifest.layers.len() + 1;
        return done(streamed.len(), n - streamed.len());
    }

    let blobs: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .chain(std::iter::once(&manifest.config))
        .filter(|d| !streamed.contains(&d.digest))
        .collect();
    let uploaded = std::sync::atomic::AtomicUsize::new(streamed.len());
    // Docker shows layers only; the config goes up without a line.
    let report = |desc: &Descriptor, status: &str| {
        if desc.digest != manifest.config.digest {
            reporter.event(Event::Layer {
                id: desc.digest.short(),
                status,
            });
        }
    };
    run_parallel(opts.threads, &blobs, |desc| {
        if blob_exists(&client, desc, &op)? {
            sources::record(store, &desc.digest, &client.registry, &client.repository);
            report(desc, "Layer already exists");
            return Ok(());
        }
        let mounted = mount_or_upload(&client, store, desc, &op)?;
        uploaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let status = match mounted {
            Some(from) => format!("Mounted from {from}"),
            None => "Pushed".to_string(),
        };
        report(desc, &status);
        Ok(())
    })?;
    let uploaded = uploaded.into_inner();

    let resp = client.request(
        "PUT",
        &client.url(&format!("manifests/{reference_in_registry}")),
        &[("Content-Type", manifest_media_type(&manifest))],
        &Body::Bytes(&bytes),
        &op,
    )?;
    if resp.status() != 201 && resp.status() != 200 {
        return Err(client.http_error(&format!("{op}: uploading the manifest"), resp));
    }
    if let Some(got) = resp.header("Docker-Content-Digest") {
        if got != digest.as_str() {
            return Err(RegistryError::Invalid {
                host: client.registry.clone(),
                message: format!("the registry stored the manifest as {got}, kiln sent {digest}"),
            });
        }
    }
    done(uploaded, blobs.len() + streamed.len() - uploaded)
}

/// The uncompressed layers of `stored` that have no `compression` variant yet, each once.
fn cold_layers(store: &Store, stored: &Manifest, compression: Compression) -> Result<Vec<Digest>> {
    let algo = compression_name(compression);
    let mut cold = BTreeSet::new();
    for l in &stored.layers {
        if media::is_uncompressed_layer(&l.media_type)
            && store.compressed_get(&l.digest, algo)?.is_none()
        {
            cold.insert(l.digest.clone());
        }
    }
    Ok(cold.into_iter().collect())
}

/// Bytes handed to the upload at once.
const STREAM_PIECE: usize = 1 << 20;

/// Compresses the layer `diff_id` into the store and into one streamed PATCH at the same
/// time (as docker pushes), then commits it with the digest the compression yields; the
/// variant is recorded as `compress_layers` records it, so the next push just HEADs it.
fn stream_layer(
    client: &Client,
    store: &Store,
    diff_id: &Digest,
    compression: Compression,
    threads: usize,
    op: &str,
) -> Result<Descriptor> {
    let what = format!("{op}: uploading layer {diff_id}");
    let location = start_upload(client, &what, op)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    std::thread::scope(|s| {
        let upload = s.spawn(|| -> Result<String> {
            let reader: Box<dyn Read + Send> = Box::new(ChannelReader {
                rx,
                piece: Vec::new(),
                at: 0,
            });
            let body = Mutex::new(Some(reader));
            let resp = client.request(
                "PATCH",
                &location,
                &[("Content-Type", "application/octet-stream")],
                &Body::Stream(&body),
                op,
            )?;
            if resp.status() != 202 {
                return Err(client.http_error(&what, resp));
            }
            location_of(client, &resp)
        });
        let tee = Tee {
            blob: store.blob_writer()?,
            tx,
            piece: Vec::with_capacity(STREAM_PIECE),
        };
        let path = store.blob_path(diff_id);
        // A big read buffer: the compressor otherwise reads the layer 8 KiB at a time, one
        // system call each (a second of system time per GiB here).
        let input = std::fs::File::open(&path)
            .map(|f| std::io::BufReader::with_capacity(STREAM_PIECE, f))
            .map_err(io_err("opening", &path))?;
        let compressed = compress(input, compression, threads, tee)
            .map_err(RegistryError::from)
            .and_then(|(tee, digested)| Ok((tee.finish()?, digested)));
        // The upload ends when the sender is gone (dropped with the tee, success or not).
        let uploaded = upload.join().unwrap_or_else(|_| {
            Err(RegistryError::Usage(
                "the upload thread panicked".to_string(),
            ))
        });
        let (blob, digested, location) = match (compressed, uploaded) {
            (Ok((blob, digested)), Ok(location)) => (blob, digested, location),
            // A failed upload breaks the pipe under the compressor: its error is the cause.
            (_, Err(e)) | (Err(e), Ok(_)) => return Err(e),
        };
        let digest = Digest::from_sha256_bytes(&digested.digest.0);
        // The registry verifies the digest while the store syncs its copy.
        let url = with_query(&location, &format!("digest={digest}"));
        let what = &what;
        let finish = s.spawn(move || -> Result<()> {
            let resp = client.request("PUT", &url, &[("Content-Length", "0")], &Body::Empty, op)?;
            if resp.status() != 201 {
                return Err(client.http_error(what, resp));
            }
            Ok(())
        });
        let committed = blob.commit(Some(&digest));
        finish.join().unwrap_or_else(|_| {
            Err(RegistryError::Usage(
                "the upload thread panicked".to_string(),
            ))
        })?;
        let info = committed?;
        let desc = Descriptor::new(
            compressed_layer_media_type(compression),
            info.digest,
            info.size,
        );
        store.compressed_put(diff_id, compression_name(compression), &desc)?;
        sources::record(store, &desc.digest, &client.registry, &client.repository);
        Ok(desc)
    })
}

/// The compressed bytes going both into the store and, in pieces, to the upload thread.
struct Tee {
    blob: BlobWriter,
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    piece: Vec<u8>,
}

impl Tee {
    fn send_piece(&mut self) -> std::io::Result<()> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(STREAM_PIECE));
        self.tx
            .send(piece)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is left and hands back the store's writer (the upload then ends).
    fn finish(mut self) -> Result<BlobWriter> {
        self.send_piece()
            .and_then(|()| self.blob.flush())
            .map_err(io_err("writing", "the compressed layer"))?;
        Ok(self.blob)
    }
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.blob.write_all(buf)?;
        self.piece.extend_from_slice(buf);
        if self.piece.len() >= STREAM_PIECE {
            self.send_piece()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.blob.flush()
    }
}

/// The upload's body: the pieces the compressor sends, until it hangs up.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    piece: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.piece.len() {
            match self.rx.recv() {
                Ok(p) => {
                    self.piece = p;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let rest = self.piece.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(rest.get(..n).unwrap_or_default());
        self.at += n;
        Ok(n)
    }
}

fn manifest_media_type(m: &Manifest) -> &str {
    m.media_type.as_deref().unwrap_or(media::OCI_MANIFEST)
}

/// The manifest the registry gets: OCI, config as stored, layers compressed as asked (made
/// and cached in the store when needed; layers already compressed are sent as they are).
fn remote_manifest(store: &Store, stored: &Manifest, compression: Compression) -> Result<Manifest> {
    let uncompressed = stored
        .layers
        .iter()
        .filter(|l| media::is_uncompressed_layer(&l.media_type))
        .map(|l| l.digest.clone());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (compressed, _): (BTreeMap<Digest, Descriptor>, usize) =
        store.compress_layers::<RegistryError>(uncompressed, compression, threads)?;
    let mut layers = Vec::new();
    for l in &stored.layers {
        let mut desc = match compressed.get(&l.digest) {
            Some(c) => c.clone(),
            None => {
                let mut d = l.clone();
                // Docker's media types name the same bytes; an OCI manifest wants OCI's.
                d.media_type = match d.media_type.as_str() {
                    media::DOCKER_LAYER_GZIP => media::OCI_LAYER_TAR_GZIP.to_string(),
                    "application/vnd.docker.image.rootfs.diff.tar" => {
                        media::OCI_LAYER_TAR.to_string()
                    }
                    other => other.to_string(),
                };
                d
            }
        };
        desc.annotations = l.annotations.clone();
        layers.push(desc);
    }
    let mut config = stored.config.clone();
    config.media_type = media::OCI_CONFIG.to_string();
    let mut m = Manifest::new(config, layers);
    m.annotations = stored.annotations.clone();
    Ok(m)
}

pub(super) fn blob_exists(client: &Client, desc: &Descriptor, op: &str) -> Result<bool> {
    let resp = client.request(
        "HEAD",
        &client.url(&format!("blobs/{}", desc.digest)),
        &[],
        &Body::Empty,
        op,
    )?;
    match resp.status() {
        200 => Ok(true),
        404 => Ok(false),
        _ => Err(client.http_error(&format!("{op}: checking blob {}", desc.digest), resp)),
    }
}

fn with_query(url: &str, kv: &str) -> String {
    if url.contains('?') {
        format!("{url}&{kv}")
    } else {
        format!("{url}?{kv}")
    }
}

/// Puts `desc` into the client's repository: mounted from another repository of the same
/// registry that is known to hold it (no bytes sent), else uploaded. Records where the blob
/// now lives either way. Returns whether it was mounted.
pub(super) fn mount_or_upload(
    client: &Client,
    store: &Store,
    desc: &Descriptor,
    op: &str,
) -> Result<Option<String>> {
    let what = format!("{op}: uploading blob {}", desc.digest);
    let mut session = None;
    for from in mount_candidates(store, &desc.digest, &client.registry, &client.repository)
        .iter()
        .take(2)
    {
        let url = format!(
            "{}?mount={}&from={}",
            client.url("blobs/uploads/"),
            desc.digest,
            from
        );
        let resp = client.request("POST", &url, &[("Content-Length", "0")], &Body::Empty, op);
        match resp {
            Ok(r) if r.status() == 201 => {
                sources::record(store, &desc.digest, &client.registry, &client.repository);
                return Ok(Some(from.to_string()));
            }
            // The registry could not mount, and opened an upload instead: use it.
            Ok(r) if r.status() == 202 => {
                session = Some(location_of(client, &r)?);
                break;
            }
            // A source that is gone or forbidden only means uploading after all.
            Ok(_) | Err(RegistryError::Unauthorized { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let location = match session {
        Some(l) => l,
        None => start_upload(client, &what, op)?,
    };
    upload_blob(client, store, desc, location, op)?;
    sources::record(store, &desc.digest, &client.registry, &client.repository);
    Ok(None)
}

/// Sends the blob's bytes into the upload session at `location`.
fn upload_blob(
    client: &Client,
    store: &Store,
    desc: &Descriptor,
    mut location: String,
    op: &str,
) -> Result<()> {
    let path = store.blob_path(&desc.digest);
    let size = store.blob_size(&desc.digest)?;
    if size != desc.size {
        return Err(RegistryError::Invalid {
            host: "the local store".to_string(),
            message: format!(
                "blob {} has {size} bytes, its descriptor says {}",
                desc.digest, desc.size
            ),
        });
    }
    let what = format!("{op}: uploading blob {}", desc.digest);
    let digest_q = format!("digest={}", desc.digest);
    let final_resp = if size <= CHUNK {
        client.request(
            "PUT",
            &with_query(&location, &digest_q),
            &[("Content-Type", "application/octet-stream")],
            &Body::File {
                path: &path,
                offset: 0,
                len: size,
            },
            op,
        )?
    } else {
        let mut offset = 0;
        while offset < size {
            let len = CHUNK.min(size - offset);
            let range = format!("{offset}-{}", offset + len - 1);
            let resp = client.request(
                "PATCH",
                &location,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &range),
                ],
                &Body::File {
                    path: &path,
                    offset,
                    len,
                },
                op,
            )?;
            if resp.status() != 202 {
                return Err(client.http_error(&what, resp));
            }
            location = location_of(client, &resp)?;
            offset += len;
        }
        client.request(
            "PUT",
            &with_query(&location, &digest_q),
            &[("Content-Length", "0")],
            &Body::Empty,
            op,
        )?
    };
    if final_resp.status() != 201 {
        return Err(client.http_error(&what, final_resp));
    }
    Ok(())
}

/// Opens an upload session; returns where to send the blob.
fn start_upload(client: &Client, what: &str, op: &str) -> Result<String> {
    let resp = client.request(
        "POST",
        &client.url("blobs/uploads/"),
        &[("Content-Length", "0")],
        &Body::Empty,
        op,
    )?;
    if resp.status() != 202 {
        return Err(client.http_error(what, resp));
    }
    location_of(client, &resp)
}

fn location_of(client: &Client, resp: &ureq::Response) -> Result<String> {
    resp.header("Location")
        .map(|l| client.resolve_location(resp.get_url(), l))
        .ok_or_else(|| RegistryError::Invalid {
            host: client.registry.clone(),
            message: "an upload answer without Location".to_string(),
        })
}
