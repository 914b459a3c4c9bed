//! `kiln load`: an OCI image-layout archive or a docker-archive (either possibly compressed,
//! either from a file or a pipe) into the store.
//!
//! The archive is first spooled into a locked staging directory under the store's `tmp/`,
//! hashing every file on the way (the manifest may come last in the stream, so nothing can be
//! decided before the end). Then every blob is checked against its digest and every layer,
//! decompressed into a pending blob, against the config's diff_ids. Only when all of that
//! succeeded are blobs committed and names tagged, so a bad archive leaves the store as it
//! was.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Deserialize;

use super::error::{io_err, ArchiveError, Result};
use super::{Tee, TeeReader, ANNOTATION_CONTAINERD_NAME};
use crate::image::{
    media, Descriptor, Digest, ImageConfig, Index, Manifest, Reference, Sha256Hasher,
};
use crate::layer::{decompressing_reader, DetectedCompression};
use crate::store::{BlobWriter, FileLock, Store};

/// One image that `load` put into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// The config digest (image ID).
    pub id: Digest,
    /// The manifest as stored (layers uncompressed).
    pub manifest: Descriptor,
    /// The names it was tagged with (empty: kept untagged).
    pub references: Vec<Reference>,
}

/// Reads an archive from `input` and adds its images to the store.
pub fn load(store: &Store, input: impl Read) -> Result<Vec<LoadedImage>> {
    let staged = Staging::spool(store, input)?;
    let images = if staged.get("oci-layout").is_some() {
        staged.oci_images()?
    } else if staged.get("manifest.json").is_some() {
        staged.docker_images()?
    } else {
        return Err(ArchiveError::Invalid(
            "neither oci-layout nor manifest.json found: not an image archive".to_string(),
        ));
    };
    if images.is_empty() {
        return Err(ArchiveError::Invalid(
            "the archive holds no image".to_string(),
        ));
    }
    let layers = staged.prepare_layers(store, &images)?;
    commit(store, images, layers)
}

/// A file of the archive, spooled and hashed.
struct StagedFile {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

/// The archive unpacked into `tmp/`: regular files by their clean archive path, and links.
struct Staging {
    dir: tempfile::TempDir,
    files: HashMap<String, StagedFile>,
    /// Symlinks and hard links: archive path → the archive path they point at.
    links: HashMap<String, String>,
    // Held so gc leaves the staging directory alone however long the load takes.
    _lock: FileLock,
}

/// An image found in the archive, checked except for its layers.
struct Found {
    config_bytes: Vec<u8>,
    config_media_type: String,
    config: ImageConfig,
    /// Archive path of each layer, in order.
    layer_paths: Vec<String>,
    manifest_annotations: BTreeMap<String, String>,
    names: Vec<Reference>,
}

/// A layer decompressed and verified, its blob not yet visible.
struct PreparedLayer {
    diff_id: Digest,
    size: u64,
    /// `None` when the store already has the blob.
    writer: Option<BlobWriter>,
}

fn clean(raw: &[u8]) -> Option<String> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&c| c == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(String::from_utf8_lossy(&parts.join(&b'/')).into_owned())
}

impl Staging {
    fn spool(store: &Store, input: impl Read) -> Result<Staging> {
        let tmp_dir = store.tmp_dir();
        let dir = tempfile::Builder::new()
            .prefix("load-")
            .tempdir_in(&tmp_dir)
            .map_err(io_err("creating staging directory in", &tmp_dir))?;
        let handle = File::open(dir.path()).map_err(io_err("opening", dir.path()))?;
        let lock = FileLock::try_from_file(handle, dir.path().to_path_buf())?.ok_or_else(|| {
            ArchiveError::Invalid(format!(
                "{} is locked by another process",
                dir.path().display()
            ))
        })?;
        let mut staging = Staging {
            dir,
            files: HashMap::new(),
            links: HashMap::new(),
            _lock: lock,
        };
        let (_, stream) = decompressing_reader(input).map_err(ArchiveError::Read)?;
        let mut archive = tar::Archive::new(stream);
        let mut n = 0usize;
        for entry in archive.entries().map_err(ArchiveError::Read)? {
            let mut entry = entry.map_err(ArchiveError::Read)?;
            let raw = entry.path_bytes().into_owned();
            let Some(path) = clean(&raw) else {
                return Err(ArchiveError::Entry {
                    path: String::from_utf8_lossy(&raw).into_owned(),
                    reason: "the path climbs above the archive root with `..`",
                });
            };
            use tar::EntryType as T;
            match entry.header().entry_type() {
                T::Regular | T::Continuous => {
                    n += 1;
                    let file_path = staging.dir.path().join(n.to_string());
                    let file = File::create(&file_path).map_err(io_err("creating", &file_path))?;
                    let mut out = BufWriter::with_capacity(256 * 1024, file);
                    let mut hasher = Sha256Hasher::new();
                    io::copy(
                        &mut entry,
                        &mut Tee {
                            a: &mut out,
                            b: &mut hasher,
                        },
                    )
                    .map_err(ArchiveError::Read)?;
                    out.flush().map_err(io_err("writing", &file_path))?;
                    staging.links.remove(&path);
                    staging.files.insert(
                        path,
                        StagedFile {
                            path: file_path,
                            size: hasher.len(),
                            digest: hasher.finish(),
                        },
                    );
                }
                T::Symlink | T::Link => {
                    let is_symlink = entry.header().entry_type() == T::Symlink;
                    let Some(target) = entry.link_name_bytes().map(|t| t.into_owned()) else {
                        continue;
                    };
                    // Symlinks are relative to their directory (docker's old archives link
                    // repeated layers as `../<id>/layer.tar`); hard links name archive paths.
                    let joined = if is_symlink && !target.starts_with(b"/") {
                        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                        [parent.as_bytes(), b"/", &target].concat()
                    } else {
                        target
                    };
                    if let Some(target) = clean(&joined) {
                        staging.files.remove(&path);
                        staging.links.insert(path, target);
                    }
                }
                _ => {}
            }
        }
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(ArchiveError::Read)?;
        Ok(staging)
    }

    /// The file at `path`, following links (a bounded number of times).
    fn get(&self, path: &str) -> Option<&StagedFile> {
        let mut p = path;
        for _ in 0..16 {
            if let Some(f) = self.files.get(p) {
                return Some(f);
            }
            p = self.links.get(p)?;
        }
        None
    }

    fn require(&self, path: &str, what: impl FnOnce() -> String) -> Result<&StagedFile> {
        self.get(path)
            .ok_or_else(|| ArchiveError::Missing { what: what() })
    }

    fn read(&self, f: &StagedFile) -> Result<Vec<u8>> {
        std::fs::read(&f.path).map_err(io_err("reading", &f.path))
    }

    /// The blob `desc` names under `blobs/`, checked against its digest and size.
    fn blob(&self, desc: &Descriptor, what: &str) -> Result<&StagedFile> {
        let path = format!("blobs/{}/{}", desc.digest.algorithm(), desc.digest.hex());
        let f = self.require(&path, || format!("{what} {} ({path})", desc.digest))?;
        if f.digest != desc.digest {
            return Err(ArchiveError::DigestMismatch {
                what: format!("{what} {path}"),
                expected: desc.digest.clone(),
                actual: f.digest.clone(),
            });
        }
        if f.size != desc.size {
            return Err(ArchiveError::Invalid(format!(
                "{what} {path} has {} bytes but its descriptor says {}",
                f.size, desc.size
            )));
        }
        Ok(f)
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, f: &StagedFile, what: &str) -> Result<T> {
        let bytes = self.read(f)?;
        serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Json {
            what: what.to_string(),
            source,
        })
    }

    fn oci_images(&self) -> Result<Vec<Found>> {
        let index_file = self.require("index.json", || "index.json".to_string())?;
        let index: Index = self.json(index_file, "index.json")?;
        let mut found: Vec<(Digest, Found)> = Vec::new();
        for desc in &index.manifests {
            let manifest_desc = self.pick_manifest(desc, 0)?;
            let name = desc
                .annotations
                .get(ANNOTATION_CONTAINERD_NAME)
                .or_else(|| desc.annotations.get(media::ANNOTATION_REF_NAME))
                .map(|n| {
                    Reference::parse(n).map_err(|e| {
                        ArchiveError::Invalid(format!("image name {n:?} in index.json: {e}"))
                    })
                })
                .transpose()?;
            if let Some((_, f)) = found.iter_mut().find(|(d, _)| *d == manifest_desc.digest) {
                f.names.extend(name.filter(|n| !f.names.contains(n)));
                continue;
            }
            let manifest_file = self.blob(&manifest_desc, "manifest")?;
            let manifest: Manifest = self.json(manifest_file, "manifest")?;
            let config_file = self.blob(&manifest.config, "config")?;
            let config_bytes = self.read(config_file)?;
            let config = parse_config(&config_bytes)?;
            let mut layer_paths = Vec::new();
            for layer in &manifest.layers {
                self.blob(layer, "layer")?;
                layer_paths.push(format!(
                    "blobs/{}/{}",
                    layer.digest.algorithm(),
                    layer.digest.hex()
                ));
            }
            found.push((
                manifest_desc.digest.clone(),
                Found {
                    config_bytes,
                    config_media_type: manifest.config.media_type.clone(),
                    config,
                    layer_paths,
                    manifest_annotations: manifest.annotations.clone(),
                    names: name.into_iter().collect(),
                },
            ));
        }
        let out: Vec<Found> = found.into_iter().map(|(_, f)| f).collect();
        for f in &out {
            check_layer_count(f)?;
        }
        Ok(out)
    }

    /// A manifest descriptor, or the host platform's manifest of an index (nested indexes
    /// are followed a few levels deep).
    fn pick_manifest(&self, desc: &Descriptor, depth: usize) -> Result<Descriptor> {
        if media::is_manifest(&desc.media_type) {
            return Ok(desc.clone());
        }
        if !media::is_index(&desc.media_type) || depth > 4 {
            return Err(ArchiveError::Invalid(format!(
                "{} has media type {:?}, not an image",
                desc.digest, desc.media_type
            )));
        }
        let file = self.blob(desc, "index")?;
        let index: Index = self.json(file, "image index")?;
        let os = "linux";
        let arch = crate::image::host_architecture();
        let candidates: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| {
                d.platform
                    .as_ref()
                    .is_none_or(|p| p.os == os && p.architecture == arch)
            })
            // BuildKit's attestation manifests have platform unknown/unknown and this marker.
            .filter(|d| !d.annotations.contains_key("vnd.docker.reference.type"))
            .collect();
        let Some(chosen) = candidates.first() else {
            return Err(ArchiveError::Invalid(format!(
                "index {} has no manifest for {os}/{arch}",
                desc.digest
            )));
        };
        self.pick_manifest(chosen, depth + 1)
    }

    fn docker_images(&self) -> Result<Vec<Found>> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "Config")]
            config: String,
            #[serde(rename = "RepoTags", default)]
            repo_tags: Option<Vec<String>>,
            #[serde(rename = "Layers", default)]
            layers: Vec<String>,
        }
        let manifest_file = self.require("manifest.json", || "manifest.json".to_string())?;
        let entries: Vec<Entry> = self.json(manifest_file, "manifest.json")?;
        let mut out = Vec::new();
        for e in entries {
            let config_path = clean(e.config.as_bytes()).unwrap_or_default();
            let config_file = self.require(&config_path, || format!("config {}", e.config))?;
            // docker names the config by its digest; when it does, the name is a promise.
            let stem = config_path
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".json"))
                .unwrap_or_default();
            if let Ok(expected) = Digest::from_sha256_hex(stem) {
                if expected != config_file.digest {
                    return Err(ArchiveError::DigestMismatch {
                        what: format!("config {}", e.config),
                        expected,
                        actual: config_file.digest.clone(),
                    });
                }
            }
            let config_bytes = self.read(config_file)?;
            let config = parse_config(&config_bytes)?;
            let mut layer_paths = Vec::new();
            for l in &e.layers {
                let p = clean(l.as_bytes()).unwrap_or_default();
                self.require(&p, || format!("layer {l}"))?;
                layer_paths.push(p);
            }
            let names = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    Reference::parse(t).map_err(|err| {
                        ArchiveError::Invalid(format!("RepoTags {t:?} in manifest.json: {err}"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let found = Found {
                config_bytes,
                config_media_type: media::OCI_CONFIG.to_string(),
                config,
                layer_paths,
                manifest_annotations: BTreeMap::new(),
                names,
            };
            check_layer_count(&found)?;
            out.push(found);
        }
        Ok(out)
    }

    /// Decompresses every distinct layer (in parallel) into a pending blob and checks it
    /// against the diffID the config gives it.
    fn prepare_layers(
        &self,
        store: &Store,
        images: &[Found],
    ) -> Result<BTreeMap<String, PreparedLayer>> {
        let mut jobs: BTreeMap<&str, &Digest> = BTreeMap::new();
        for f in images {
            for (path, diff_id) in f.layer_paths.iter().zip(&f.config.rootfs.diff_ids) {
                if let Some(prev) = jobs.insert(path.as_str(), diff_id) {
                    if prev != diff_id {
                        return Err(ArchiveError::Invalid(format!(
                            "layer {path} is given two different diff_ids ({prev}, {diff_id})"
                        )));
                    }
                }
            }
        }
        let results: Vec<Result<(String, PreparedLayer)>> = jobs
            .into_par_iter()
            .map(|(path, diff_id)| {
                let f = self.require(path, || format!("layer {path}"))?;
                let prepared = prepare_layer(store, f, path, diff_id)?;
                Ok((path.to_string(), prepared))
            })
            .collect();
        results.into_iter().collect()
    }
}

fn parse_config(bytes: &[u8]) -> Result<ImageConfig> {
    ImageConfig::from_json(bytes).map_err(|source| ArchiveError::Json {
        what: "image config".to_string(),
        source,
    })
}

fn check_layer_count(f: &Found) -> Result<()> {
    if f.config.rootfs.diff_ids.len() != f.layer_paths.len() {
        return Err(ArchiveError::Invalid(format!(
            "an image config lists {} diff_ids but its manifest has {} layers",
            f.config.rootfs.diff_ids.len(),
            f.layer_paths.len()
        )));
    }
    Ok(())
}

fn prepare_layer(
    store: &Store,
    f: &StagedFile,
    path: &str,
    diff_id: &Digest,
) -> Result<PreparedLayer> {
    let open = || -> Result<BufReader<File>> {
        let file = File::open(&f.path).map_err(io_err("reading", &f.path))?;
        Ok(BufReader::with_capacity(256 * 1024, file))
    };
    let mismatch = |actual: Digest| ArchiveError::DigestMismatch {
        what: format!("layer {path} (uncompressed)"),
        expected: diff_id.clone(),
        actual,
    };
    let (kind, mut reader) = decompressing_reader(open()?).map_err(io_err("reading", &f.path))?;
    let have = store.has_blob(diff_id);
    if kind == DetectedCompression::None {
        // Already hashed while spooling.
        if f.digest != *diff_id {
            return Err(mismatch(f.digest.clone()));
        }
        if have {
            return Ok(PreparedLayer {
                diff_id: diff_id.clone(),
                size: f.size,
                writer: None,
            });
        }
    }
    let mut hasher = Sha256Hasher::new();
    let read_err = |e: io::Error| ArchiveError::Invalid(format!("layer {path}: {e}"));
    // The tar is checked as it streams past: a layer apply_layer would refuse (a name
    // climbing out, a hard link leaving the root, a stream ending inside an entry) is
    // refused here, before anything is stored.
    let check_err = |e: crate::layer::LayerError| match e {
        crate::layer::LayerError::Read { source } => read_err(source),
        other => ArchiveError::Invalid(format!("layer {path}: {other}")),
    };
    let writer = if have {
        crate::layer::check_layer(TeeReader {
            inner: &mut reader,
            out: &mut hasher,
        })
        .map_err(check_err)?;
        None
    } else {
        let mut w = store.blob_writer()?;
        crate::layer::check_layer(TeeReader {
            inner: &mut reader,
            out: &mut Tee {
                a: &mut w,
                b: &mut hasher,
            },
        })
        .map_err(check_err)?;
        Some(w)
    };
    let size = hasher.len();
    let actual = hasher.finish();
    if actual != *diff_id {
        return Err(mismatch(actual));
    }
    Ok(PreparedLayer {
        diff_id: diff_id.clone(),
        size,
        writer,
    })
}

/// Makes everything visible: layer blobs, configs, manifests, then names.
fn commit(
    store: &Store,
    images: Vec<Found>,
    mut layers: BTreeMap<String, PreparedLayer>,
) -> Result<Vec<LoadedImage>> {
    let mut sizes: HashMap<String, (Digest, u64)> = HashMap::new();
    for (path, layer) in std::mem::take(&mut layers) {
        if let Some(w) = layer.writer {
            w.commit(Some(&layer.diff_id))?;
        }
        sizes.insert(path, (layer.diff_id, layer.size));
    }
    let mut out = Vec::new();
    for f in images {
        let config_desc = store.put_bytes(&f.config_media_type, &f.config_bytes)?;
        let mut layer_descs = Vec::new();
        for path in &f.layer_paths {
            let Some((diff_id, size)) = sizes.get(path) else {
                return Err(ArchiveError::Missing {
                    what: format!("layer {path}"),
                });
            };
            layer_descs.push(Descriptor::new(
                media::OCI_LAYER_TAR,
                diff_id.clone(),
                *size,
            ));
        }
        let mut manifest = Manifest::new(config_desc.clone(), layer_descs);
        manifest.annotations = f.manifest_annotations;
        let manifest_desc = store.put_manifest(&manifest)?;
        if f.names.is_empty() {
            store.keep_untagged(&manifest_desc)?;
        }
        for name in &f.names {
            store.tag(name, &manifest_desc)?;
        }
        out.push(LoadedImage {
            id: config_desc.digest,
            manifest: manifest_desc,
            references: f.names,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Platform, RootFs};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    fn layer_tar(content: &[u8]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        t.append_data(&mut h, "file", content).unwrap();
        t.into_inner().unwrap()
    }

    fn config_for(layers: &[&[u8]], arch: &str) -> Vec<u8> {
        let c = ImageConfig {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: layers.iter().map(|l| Digest::sha256_of(l)).collect(),
            },
            ..Default::default()
        };
        c.to_json().unwrap()
    }

    /// Builds a tar from (path, content) files and (path, target) symlinks.
    fn archive(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for (p, c) in files {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(c.len() as u64);
            t.append_data(&mut h, p, *c).unwrap();
        }
        for (p, target) in symlinks {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            t.append_link(&mut h, p, target).unwrap();
        }
        t.into_inner().unwrap()
    }

    fn blob_path(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }

    #[test]
    fn oci_index_of_indexes_picks_the_host_platform() {
        let (_d, s) = store();
        let host_layer = layer_tar(b"host");
        let other_layer = layer_tar(b"other");
        let host_config = config_for(&[&host_layer], crate::image::host_architecture());
        let other_config = config_for(&[&other_layer], "s390x-not-this-host");
        let manifest = |config: &[u8], layer: &[u8]| {
            Manifest::new(
                Descriptor::of_bytes(media::OCI_CONFIG, config),
                vec![Descriptor::of_bytes(media::OCI_LAYER_TAR, layer)],
            )
            .to_json()
            .unwrap()
        };
        let host_manifest = manifest(&host_config, &host_layer);
        let other_manifest = manifest(&other_config, &other_layer);
        let mut other_desc = Descriptor::of_bytes(media::OCI_MANIFEST, &other_manifest);
        other_desc.platform = Some(Platform::new("linux", "s390x-not-this-host", None));
        let mut host_desc = Descriptor::of_bytes(media::OCI_MANIFEST, &host_manifest);
        host_desc.platform = Some(Platform::new(
            "linux",
            crate::image::host_architecture(),
            None,
        ));
        let inner = Index {
            manifests: vec![other_desc, host_desc],
            ..Default::default()
        };
        let inner_bytes = inner.to_json().unwrap();
        let mut top = Index::default();
        let mut inner_desc = Descriptor::of_bytes(media::OCI_INDEX, &inner_bytes);
        inner_desc.annotations.insert(
            ANNOTATION_CONTAINERD_NAME.to_string(),
            "docker.io/library/multi:1".to_string(),
        );
        inner_desc
            .annotations
            .insert(media::ANNOTATION_REF_NAME.to_string(), "1".to_string());
        top.manifests.push(inner_desc);
        let top_bytes = top.to_json().unwrap();
        let files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), top_bytes),
            (
                blob_path(&Digest::sha256_of(&inner_bytes)),
                inner_bytes.clone(),
            ),
            (blob_path(&Digest::sha256_of(&host_manifest)), host_manifest),
            (
                blob_path(&Digest::sha256_of(&other_manifest)),
                other_manifest,
            ),
            (
                blob_path(&Digest::sha256_of(&host_config)),
                host_config.clone(),
            ),
            (blob_path(&Digest::sha256_of(&host_layer)), host_layer),
        ];
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        // The other platform's config and layer are absent: only the host's are needed.
        let loaded = load(&s, &archive(&refs, &[])[..]).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, Digest::sha256_of(&host_config));
        assert_eq!(
            loaded[0].references,
            vec![Reference::parse("multi:1").unwrap()]
        );
        assert_eq!(s.resolve("multi:1").unwrap().config, loaded[0].id);
    }

    #[test]
    fn docker_archive_with_symlinked_layers() {
        let (_d, s) = store();
        let base = layer_tar(b"base");
        let top = layer_tar(b"top");
        let c1 = config_for(&[&base], "amd64");
        let c2 = config_for(&[&base, &top], "amd64");
        let c1_name = format!("{}.json", Digest::sha256_of(&c1).hex());
        let c2_name = format!("{}.json", Digest::sha256_of(&c2).hex());
        let manifest = serde_json::json!([
            {"Config": c1_name, "RepoTags": ["one:latest"], "Layers": ["a/layer.tar"]},
            {"Config": c2_name, "RepoTags": null, "Layers": ["b/layer.tar", "c/layer.tar"]},
        ]);
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let tar = archive(
            &[
                (&c1_name, &c1),
                (&c2_name, &c2),
                ("a/layer.tar", &base),
                ("c/layer.tar", &top),
                ("manifest.json", &manifest),
            ],
            &[("b/layer.tar", "../a/layer.tar")],
        );
        let loaded = load(&s, &tar[..]).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].references.len(), 1);
        assert!(loaded[1].references.is_empty());
        let m = s.read_manifest(&loaded[1].manifest.digest).unwrap();
        assert_eq!(m.layers[0].digest, Digest::sha256_of(&base));
        assert_eq!(m.layers[1].digest, Digest::sha256_of(&top));
        assert_eq!(s.list().unwrap().len(), 2);
    }

    #[test]
    fn bad_archives_are_refused_before_anything_is_stored() {
        let (_d, s) = store();
        let layer = layer_tar(b"x");
        let config = config_for(&[&layer], "amd64");
        let name = format!("{}.json", Digest::sha256_of(&config).hex());
        let manifest = |layers: &str| {
            format!(r#"[{{"Config":"{name}","RepoTags":["x:1"],"Layers":[{layers}]}}]"#)
        };
        let wrong_config = config_for(&[&layer_tar(b"y")], "amd64");
        for (files, want) in [
            (
                vec![
                    (name.as_str(), config.as_slice()),
                    ("manifest.json", manifest(r#""l.tar""#).as_bytes()),
                ],
                "lacks",
            ),
            (
                vec![
                    (name.as_str(), config.as_slice()),
                    ("manifest.json", manifest("").as_bytes()),
                ],
                "diff_ids",
            ),
            (
                vec![
                    (name.as_str(), wrong_config.as_slice()),
                    ("l.tar", layer.as_slice()),
                    ("manifest.json", manifest(r#""l.tar""#).as_bytes()),
                ],
                "digest mismatch",
            ),
            (vec![("something", b"x".as_slice())], "not an image archive"),
        ] {
            let files: Vec<(&str, Vec<u8>)> =
                files.into_iter().map(|(p, c)| (p, c.to_vec())).collect();
            let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
            let tar = archive(&refs, &[]);
            let err = load(&s, &tar[..]).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err}");
            assert!(s.list().unwrap().is_empty());
            assert_eq!(
                std::fs::read_dir(s.root().join("blobs/sha256"))
                    .unwrap()
                    .count(),
                0
            );
            assert_eq!(std::fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
        }
        let err = load(&s, &raw_escape_tar()[..]).unwrap_err().to_string();
        assert!(err.contains("climbs above"), "{err}");
    }

    fn raw_escape_tar() -> Vec<u8> {
        // The tar crate's own setters refuse `..`, which is what is tested.
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(1);
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        let mut t = tar::Builder::new(Vec::new());
        t.append(&h, &b"x"[..]).unwrap();
        t.into_inner().unwrap()
    }
}
