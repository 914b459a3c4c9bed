//! `kiln save`: images of the store to a tar archive, either an OCI image layout (layers
//! compressed, index.json naming each tag) or a docker-archive (`manifest.json`, uncompressed
//! `layer.tar`s) as `docker save` wrote it before OCI.
//!
//! Everything the archive needs is prepared first (compressed layers are made, or reused from
//! the store's compressed-variant records); only then is the archive written, to a temp file
//! beside the destination that is renamed into place at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

use serde::Serialize;

use super::error::{io_err, ArchiveError, Result};
use super::{Tee, ANNOTATION_CONTAINERD_NAME};
use crate::image::{media, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference};
use crate::layer::{decompressing_reader, Compression};
use crate::store::{ImageRecord, Store};

/// The kind of archive `save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchiveFormat {
    /// An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`), as `skopeo copy
    /// oci-archive:` and `docker save` (since 25) write it.
    #[default]
    Oci,
    /// The docker-archive format that `docker load` and `podman load` read.
    Docker,
}

/// How `save` writes the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    pub format: ArchiveFormat,
    /// How OCI archives compress layers (docker-archives hold them uncompressed).
    pub compression: Compression,
    /// Threads for compression (0 counts as 1).
    pub threads: usize,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            format: ArchiveFormat::Oci,
            compression: Compression::Gzip { level: 6 },
            threads: 1,
        }
    }
}

/// One image written to the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedImage {
    /// The config digest (image ID).
    pub id: Digest,
    /// The names the archive records for it (empty when saved by ID).
    pub names: Vec<Reference>,
    /// The digest of the manifest as written in the archive (OCI archives; compressed layers
    /// make it differ from the store's).
    pub manifest: Option<Digest>,
}

/// What `save` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SaveReport {
    pub images: Vec<SavedImage>,
    /// Layers compressed for this save; layers whose compressed variant was already recorded
    /// are not counted.
    pub compressed_layers: usize,
}

/// An image chosen for the archive, with what the archive needs of it.
struct Selected {
    record: ImageRecord,
    manifest: Manifest,
    config: ImageConfig,
    names: Vec<Reference>,
}

/// Writes the images that `queries` name (as for [`Store::resolve`]) to `dest`, atomically:
/// the archive is written beside it under a temp name and renamed, so a failed save leaves
/// neither a partial archive nor a changed `dest`.
pub fn save_to_file(
    store: &Store,
    queries: &[String],
    opts: &SaveOptions,
    dest: &Path,
) -> Result<SaveReport> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.kiln-"))
        .tempfile_in(dir)
        .map_err(io_err("creating temp file in", dir))?;
    let out = BufWriter::with_capacity(256 * 1024, tmp);
    let (out, report) = save(store, queries, opts, out)?;
    let tmp = out
        .into_inner()
        .map_err(|e| io_err("writing", dest)(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io_err("writing", dest))?;
    // Archives are for sharing; the 0600 of a temp file would surprise.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(io_err("setting mode of", tmp.path()))?;
    tmp.persist(dest)
        .map_err(|e| io_err("renaming archive to", dest)(e.error))?;
    Ok(report)
}

/// Writes the images that `queries` name to `out` as one archive and returns `out`.
pub fn save<W: Write>(
    store: &Store,
    queries: &[String],
    opts: &SaveOptions,
    out: W,
) -> Result<(W, SaveReport)> {
    let selected = select(store, queries)?;
    match opts.format {
        ArchiveFormat::Oci => save_oci(store, &selected, opts, out),
        ArchiveFormat::Docker => save_docker(store, &selected, out),
    }
}

/// Resolves every query; queries naming the same image merge into one entry with all the
/// names given.
fn select(store: &Store, queries: &[String]) -> Result<Vec<Selected>> {
    if queries.is_empty() {
        return Err(ArchiveError::Invalid("no image to save".to_string()));
    }
    let mut out: Vec<Selected> = Vec::new();
    for q in queries {
        let record = store.resolve(q)?;
        // A query naming a tag saves that name; an ID or digest saves the image unnamed.
        let name = Reference::parse(q)
            .ok()
            .filter(|r| r.digest().is_none() && record.references.contains(&r.to_string()));
        if let Some(s) = out
            .iter_mut()
            .find(|s| s.record.manifest.digest == record.manifest.digest)
        {
            if let Some(name) = name {
                if !s.names.contains(&name) {
                    s.names.push(name);
                }
            }
            continue;
        }
        let manifest = store.read_manifest(&record.manifest.digest)?;
        let config = store.read_config(&manifest.config.digest)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ArchiveError::Invalid(format!(
                "image {q}: its config lists {} layers but its manifest {}",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        out.push(Selected {
            record,
            manifest,
            config,
            names: name.into_iter().collect(),
        });
    }
    Ok(out)
}

/// The compressed form of each uncompressed layer, made in parallel (or reused). Returns the
/// compressed descriptor by diffID, and how many were made.
fn compressed_layers(
    store: &Store,
    selected: &[Selected],
    opts: &SaveOptions,
) -> Result<(BTreeMap<Digest, Descriptor>, usize)> {
    let wanted = selected
        .iter()
        .flat_map(|s| &s.manifest.layers)
        .filter(|l| media::is_uncompressed_layer(&l.media_type))
        .map(|l| l.digest.clone());
    store.compress_layers(wanted, opts.compression, opts.threads)
}

/// Where a blob of the archive comes from.
enum BlobSource {
    Store(Digest),
    Bytes(Vec<u8>),
}

fn save_oci<W: Write>(
    store: &Store,
    selected: &[Selected],
    opts: &SaveOptions,
    out: W,
) -> Result<(W, SaveReport)> {
    let (compressed, made) = compressed_layers(store, selected, opts)?;
    let mut blobs: BTreeMap<Digest, (u64, BlobSource)> = BTreeMap::new();
    let mut index = Index::default();
    let mut report = SaveReport {
        images: Vec::new(),
        compressed_layers: made,
    };
    for s in selected {
        let mut manifest = s.manifest.clone();
        let docker_types = manifest.media_type.as_deref() == Some(media::DOCKER_MANIFEST);
        for layer in &mut manifest.layers {
            if let Some(c) = compressed.get(&layer.digest) {
                let mut desc = c.clone();
                if docker_types && desc.media_type == media::OCI_LAYER_TAR_GZIP {
                    desc.media_type = media::DOCKER_LAYER_GZIP.to_string();
                }
                desc.annotations = layer.annotations.clone();
                *layer = desc;
            }
            blobs.insert(
                layer.digest.clone(),
                (layer.size, BlobSource::Store(layer.digest.clone())),
            );
        }
        blobs.insert(
            manifest.config.digest.clone(),
            (
                manifest.config.size,
                BlobSource::Store(manifest.config.digest.clone()),
            ),
        );
        let bytes = manifest.to_json().map_err(|source| ArchiveError::Json {
            what: "manifest".to_string(),
            source,
        })?;
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        let mut desc = Descriptor::of_bytes(media_type, &bytes);
        desc.platform = Some(Platform::new(
            s.config.os.clone(),
            s.config.architecture.clone(),
            s.config.variant.clone(),
        ));
        blobs.insert(desc.digest.clone(), (desc.size, BlobSource::Bytes(bytes)));
        if s.names.is_empty() {
            index.manifests.push(desc.clone());
        }
        for name in &s.names {
            let mut named = desc.clone();
            let full = name.to_string();
            named
                .annotations
                .insert(media::ANNOTATION_REF_NAME.to_string(), full.clone());
            named
                .annotations
                .insert(ANNOTATION_CONTAINERD_NAME.to_string(), full);
            index.manifests.push(named);
        }
        report.images.push(SavedImage {
            id: s.record.config.clone(),
            names: s.names.clone(),
            manifest: Some(desc.digest.clone()),
        });
    }

    let mut tar = TarWriter::new(out);
    tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index_bytes = index.to_json().map_err(|source| ArchiveError::Json {
        what: "index.json".to_string(),
        source,
    })?;
    tar.file("index.json", &index_bytes)?;
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    for (digest, (size, source)) in &blobs {
        let path = format!("blobs/sha256/{}", digest.hex());
        match source {
            BlobSource::Bytes(b) => tar.file(&path, b)?,
            BlobSource::Store(d) => {
                let file = store.open_blob(d)?;
                tar.stream(&path, *size, file, &store.blob_path(d))?;
            }
        }
    }
    Ok((tar.finish()?, report))
}

/// One image of a docker-archive's `manifest.json`.
#[derive(Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn save_docker<W: Write>(store: &Store, selected: &[Selected], out: W) -> Result<(W, SaveReport)> {
    let mut tar = TarWriter::new(out);
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut report = SaveReport::default();
    for s in selected {
        let config_digest = &s.manifest.config.digest;
        let config_path = format!("{}.json", config_digest.hex());
        if written.insert(config_path.clone()) {
            let bytes = store.read_blob(config_digest)?;
            tar.file(&config_path, &bytes)?;
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in s.manifest.layers.iter().zip(&s.config.rootfs.diff_ids) {
            let dir = diff_id.hex().to_string();
            let path = format!("{dir}/layer.tar");
            if written.insert(path.clone()) {
                tar.dir(&format!("{dir}/"))?;
                write_uncompressed_layer(store, &mut tar, &path, layer, diff_id)?;
            }
            layers.push(path);
        }
        let top = s.config.rootfs.diff_ids.last().map(|d| d.hex().to_string());
        let mut tags = Vec::new();
        for name in &s.names {
            tags.push(name.to_string());
            if let (Some(tag), Some(top)) = (name.tag(), &top) {
                repositories
                    .entry(name.familiar_name())
                    .or_default()
                    .insert(tag.to_string(), top.clone());
            }
        }
        entries.push(DockerManifestEntry {
            config: config_path,
            repo_tags: (!tags.is_empty()).then_some(tags),
            layers,
        });
        report.images.push(SavedImage {
            id: s.record.config.clone(),
            names: s.names.clone(),
            manifest: None,
        });
    }
    let json = |what: &str, r: serde_json::Result<Vec<u8>>| {
        r.map_err(|source| ArchiveError::Json {
            what: what.to_string(),
            source,
        })
    };
    tar.file(
        "manifest.json",
        &json("manifest.json", serde_json::to_vec(&entries))?,
    )?;
    tar.file(
        "repositories",
        &json("repositories", serde_json::to_vec(&repositories))?,
    )?;
    Ok((tar.finish()?, report))
}

/// Writes a layer uncompressed: straight from the store when it is kept that way, else
/// decompressed into a temp file first (a tar header needs the size up front) and checked
/// against its diffID.
fn write_uncompressed_layer<W: Write>(
    store: &Store,
    tar: &mut TarWriter<W>,
    path: &str,
    layer: &Descriptor,
    diff_id: &Digest,
) -> Result<()> {
    if layer.digest == *diff_id {
        let file = store.open_blob(&layer.digest)?;
        return tar.stream(path, layer.size, file, &store.blob_path(&layer.digest));
    }
    let blob_path = store.blob_path(&layer.digest);
    let (_, mut reader) = decompressing_reader(store.open_blob(&layer.digest)?)
        .map_err(io_err("reading", &blob_path))?;
    let tmp_dir = store.tmp_dir();
    let mut tmp =
        tempfile::tempfile_in(&tmp_dir).map_err(io_err("creating temp file in", &tmp_dir))?;
    let mut hasher = crate::image::Sha256Hasher::new();
    {
        let mut tee = Tee {
            a: &mut tmp,
            b: &mut hasher,
        };
        io::copy(&mut reader, &mut tee).map_err(io_err("decompressing", &blob_path))?;
    }
    let size = hasher.len();
    let actual = hasher.finish();
    if actual != *diff_id {
        return Err(ArchiveError::DigestMismatch {
            what: format!("layer {} decompressed", layer.digest),
            expected: diff_id.clone(),
            actual,
        });
    }
    tmp.rewind().map_err(io_err("reading", &blob_path))?;
    tar.stream(path, size, tmp, &blob_path)
}

/// A tar writer with fixed metadata (root-owned, mtime 0), so the same images always give
/// the same archive bytes.
struct TarWriter<W: Write> {
    inner: tar::Builder<W>,
}

impl<W: Write> TarWriter<W> {
    fn new(out: W) -> Self {
        TarWriter {
            inner: tar::Builder::new(out),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.inner
            .append_data(&mut h, path, io::empty())
            .map_err(io_err("writing archive entry", path))
    }

    fn file(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        self.inner
            .append_data(&mut h, path, bytes)
            .map_err(io_err("writing archive entry", path))
    }

    /// A file of `size` bytes read from `content` (`source` names it in errors); a short
    /// source is an error rather than a corrupt archive.
    fn stream(&mut self, path: &str, size: u64, content: impl Read, source: &Path) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, size);
        let mut counted = CountingReader {
            inner: content.take(size),
            n: 0,
        };
        self.inner
            .append_data(&mut h, path, &mut counted)
            .map_err(io_err("writing archive entry from", source))?;
        if counted.n != size {
            return Err(ArchiveError::Invalid(format!(
                "{} has {} bytes, expected {size}",
                source.display(),
                counted.n
            )));
        }
        Ok(())
    }

    fn finish(self) -> Result<W> {
        self.inner
            .into_inner()
            .map_err(io_err("finishing archive", "<archive>"))
    }
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
