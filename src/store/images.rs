//! Images and tags: manifests and configs as blobs, tags as entries of `index.json`.

use std::collections::BTreeMap;

use super::error::{io_err, json_err, Result, StoreError};
use super::{fsutil, Store};
use crate::image::digest::is_lower_hex;
use crate::image::{media, Descriptor, Digest, ImageConfig, Index, Manifest, Reference};

/// One image of the store as `kiln images` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Full reference names (`docker.io/library/busybox:latest`) tagging this manifest; empty for
    /// an image kept untagged.
    pub references: Vec<String>,
    /// The manifest descriptor as recorded in `index.json`, without the ref-name annotation.
    pub manifest: Descriptor,
    /// The config digest: the image ID docker shows.
    pub config: Digest,
    /// The config's `created` time, if it has one.
    pub created: Option<String>,
    /// Bytes of the config and layer blobs the manifest lists.
    pub size: u64,
}

impl ImageRecord {
    /// The image ID (config digest).
    pub fn id(&self) -> &Digest {
        &self.config
    }
}

impl Store {
    /// The current `index.json`. Lock-free: it is only ever replaced by rename.
    pub fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let bytes = std::fs::read(&path).map_err(io_err("reading", &path))?;
        Index::from_json(&bytes).map_err(json_err("parsing", &path))
    }

    /// Replaces `index.json`; the caller holds the exclusive index lock.
    pub(crate) fn write_index(&self, index: &Index) -> Result<()> {
        let path = self.index_path();
        let bytes = index.to_json().map_err(json_err("serializing", &path))?;
        fsutil::atomic_write(&self.tmp_dir(), &path, &bytes, "writing")
    }

    /// Reads, changes and writes `index.json` under the exclusive index lock.
    fn update_index<T>(&self, change: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
        let _lock = self.lock_index_exclusive()?;
        let mut index = self.read_index()?;
        let before = index.clone();
        let out = change(&mut index)?;
        // An unchanged index is not rewritten: a rebuild that only re-tags costs no fsync.
        if index != before {
            self.write_index(&index)?;
        }
        Ok(out)
    }

    pub fn read_manifest(&self, digest: &Digest) -> Result<Manifest> {
        let bytes = self.read_blob(digest)?;
        Manifest::from_json(&bytes).map_err(json_err("parsing manifest", self.blob_path(digest)))
    }

    pub fn read_config(&self, digest: &Digest) -> Result<ImageConfig> {
        let bytes = self.read_blob(digest)?;
        ImageConfig::from_json(&bytes)
            .map_err(json_err("parsing image config", self.blob_path(digest)))
    }

    /// Stores a manifest blob (canonical JSON) and returns its descriptor.
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<Descriptor> {
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        let bytes = manifest
            .to_json()
            .map_err(json_err("serializing manifest for", self.blobs_dir()))?;
        self.put_bytes(&media_type, &bytes)
    }

    /// Writes `config` and an OCI manifest listing `layers` (whose blobs must already be in
    /// the store). Returns the manifest descriptor and the config digest (the image ID). The
    /// image is not tagged: call [`Store::tag`] or [`Store::keep_untagged`] to keep it.
    pub fn put_image(
        &self,
        config: &ImageConfig,
        layers: &[Descriptor],
    ) -> Result<(Descriptor, Digest)> {
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(StoreError::InvalidImage(format!(
                "config lists {} diff_ids but {} layers were given",
                config.rootfs.diff_ids.len(),
                layers.len()
            )));
        }
        for layer in layers {
            if !self.has_blob(&layer.digest) {
                return Err(StoreError::MissingBlob(layer.digest.clone()));
            }
        }
        let config_bytes = config
            .to_json()
            .map_err(json_err("serializing image config for", self.blobs_dir()))?;
        let config_desc = self.put_bytes(media::OCI_CONFIG, &config_bytes)?;
        let config_digest = config_desc.digest.clone();
        let manifest = Manifest::new(config_desc, layers.to_vec());
        let manifest_desc = self.put_manifest(&manifest)?;
        Ok((manifest_desc, config_digest))
    }

    /// Points `reference` at `manifest`, replacing what it pointed at. Refused unless the
    /// manifest, its config and all its layers are in the store.
    pub fn tag(&self, reference: &Reference, manifest: &Descriptor) -> Result<()> {
        let name = reference.to_string();
        self.update_index(|index| {
            self.check_complete(manifest)?;
            let already = index
                .manifests
                .iter()
                .any(|d| d.ref_name() == Some(name.as_str()) && d.digest == manifest.digest);
            if already {
                return Ok(());
            }
            let mut entry = manifest.clone();
            entry
                .annotations
                .insert(media::ANNOTATION_REF_NAME.to_string(), name.clone());
            // The tag moves; an untagged entry for this manifest is now redundant.
            index.manifests.retain(|d| {
                d.ref_name() != Some(name.as_str())
                    && !(d.ref_name().is_none() && d.digest == manifest.digest)
            });
            index.manifests.push(entry);
            Ok(())
        })
    }

    /// Keeps an image without a tag (docker's `<none>` image), e.g. a build without `-t`, so gc
    /// does not collect it. No-op if the manifest is already in the index.
    pub fn keep_untagged(&self, manifest: &Descriptor) -> Result<()> {
        self.update_index(|index| {
            self.check_complete(manifest)?;
            if !index.manifests.iter().any(|d| d.digest == manifest.digest) {
                let mut entry = manifest.clone();
                entry.annotations.remove(media::ANNOTATION_REF_NAME);
                index.manifests.push(entry);
            }
            Ok(())
        })
    }

    /// Removes a tag. Returns false if it did not exist. Blobs stay until gc.
    pub fn untag(&self, reference: &Reference) -> Result<bool> {
        let name = reference.to_string();
        self.update_index(|index| {
            let before = index.manifests.len();
            index
                .manifests
                .retain(|d| d.ref_name() != Some(name.as_str()));
            Ok(index.manifests.len() != before)
        })
    }

    fn check_complete(&self, manifest: &Descriptor) -> Result<()> {
        if !media::is_manifest(&manifest.media_type) {
            return Err(StoreError::InvalidImage(format!(
                "{} has media type {:?}; only image manifests can be tagged (tag a platform's manifest)",
                manifest.digest, manifest.media_type
            )));
        }
        let size = self.blob_size(&manifest.digest)?;
        if size != manifest.size {
            return Err(StoreError::InvalidImage(format!(
                "descriptor of {} says {} bytes but the blob has {size}",
                manifest.digest, manifest.size
            )));
        }
        let m = self.read_manifest(&manifest.digest)?;
        for blob in std::iter::once(&m.config).chain(&m.layers) {
            if !self.has_blob(&blob.digest) {
                return Err(StoreError::MissingBlob(blob.digest.clone()));
            }
        }
        Ok(())
    }

    /// Every image of the store, one record per manifest, in index order. Entries written by
    /// other tools that kiln cannot read as an image (indexes, artifacts) are left out.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        for (_, entries) in group_by_manifest(&index) {
            if let Ok(record) = self.record(&entries) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Finds an image by reference (`busybox`, `docker.io/library/busybox:latest`,
    /// `name@sha256:...`), by image ID (config digest: `sha256:<hex>`, or a hex prefix such as
    /// the 12 digits docker shows), or by manifest digest or its prefix.
    pub fn resolve(&self, query: &str) -> Result<ImageRecord> {
        let index = self.read_index()?;
        let groups = group_by_manifest(&index);

        if let Ok(reference) = Reference::parse(query) {
            let hit = match reference.digest() {
                Some(d) => groups.iter().find(|(digest, _)| digest == d),
                None => {
                    let name = reference.to_string();
                    groups.iter().find(|(_, entries)| {
                        entries.iter().any(|e| e.ref_name() == Some(name.as_str()))
                    })
                }
            };
            if let Some((_, entries)) = hit {
                return self.record(entries);
            }
        }

        let prefix = query.strip_prefix("sha256:").unwrap_or(query);
        if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(is_lower_hex) {
            return Err(StoreError::ImageNotFound(query.to_string()));
        }
        let mut matches = Vec::new();
        for (digest, entries) in &groups {
            let Ok(record) = self.record(entries) else {
                continue;
            };
            if record.config.hex().starts_with(prefix) || digest.hex().starts_with(prefix) {
                matches.push(record);
            }
        }
        match matches.len() {
            0 => Err(StoreError::ImageNotFound(query.to_string())),
            1 => Ok(matches.remove(0)),
            _ => Err(StoreError::Ambiguous {
                query: query.to_string(),
                candidates: matches
                    .iter()
                    .map(|r| r.manifest.digest.to_string())
                    .collect(),
            }),
        }
    }

    fn record(&self, entries: &[&Descriptor]) -> Result<ImageRecord> {
        let Some(first) = entries.first() else {
            return Err(StoreError::ImageNotFound(String::new()));
        };
        let mut manifest_desc = (*first).clone();
        manifest_desc.annotations.remove(media::ANNOTATION_REF_NAME);
        let manifest = self.read_manifest(&manifest_desc.digest)?;
        let created = self
            .read_config(&manifest.config.digest)
            .ok()
            .and_then(|c| c.created);
        let size = manifest
            .layers
            .iter()
            .map(|l| l.size)
            .fold(manifest.config.size, u64::saturating_add);
        let mut references: Vec<String> = entries
            .iter()
            .filter_map(|e| e.ref_name().map(str::to_string))
            .collect();
        references.sort();
        references.dedup();
        Ok(ImageRecord {
            references,
            manifest: manifest_desc,
            config: manifest.config.digest,
            created,
            size,
        })
    }
}

/// Index entries grouped by manifest digest, in order of first appearance.
pub(crate) fn group_by_manifest(index: &Index) -> Vec<(Digest, Vec<&Descriptor>)> {
    let mut order: Vec<(Digest, Vec<&Descriptor>)> = Vec::new();
    let mut pos: BTreeMap<&Digest, usize> = BTreeMap::new();
    for d in &index.manifests {
        match pos.get(&d.digest) {
            Some(&i) => {
                if let Some((_, v)) = order.get_mut(i) {
                    v.push(d);
                }
            }
            None => {
                pos.insert(&d.digest, order.len());
                order.push((d.digest.clone(), vec![d]));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{History, Reference};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    fn image(s: &Store, layer: &[u8], created: &str) -> (Descriptor, Digest) {
        let l = s.put_bytes(media::OCI_LAYER_TAR, layer).unwrap();
        let mut c = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            created: Some(created.into()),
            ..Default::default()
        };
        c.rootfs.diff_ids.push(l.digest.clone());
        c.history.push(History::default());
        s.put_image(&c, &[l]).unwrap()
    }

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn put_image_is_deterministic_and_readable() {
        let (_d, s) = store();
        let (m1, c1) = image(&s, b"layer", "2024-01-01T00:00:00Z");
        let (m2, c2) = image(&s, b"layer", "2024-01-01T00:00:00Z");
        assert_eq!((&m1, &c1), (&m2, &c2));
        assert_eq!(m1.media_type, media::OCI_MANIFEST);
        let m = s.read_manifest(&m1.digest).unwrap();
        assert_eq!(m.config.digest, c1);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(s.read_config(&c1).unwrap().os, "linux");
    }

    #[test]
    fn retagging_the_same_manifest_leaves_index_json_alone() {
        use std::os::unix::fs::MetadataExt;
        let (_d, s) = store();
        let (m, _) = image(&s, b"layer", "2024-01-01T00:00:00Z");
        s.tag(&r("app:1"), &m).unwrap();
        let index = s.root().join("index.json");
        let ino = std::fs::metadata(&index).unwrap().ino();
        // Every write replaces the file (a new inode); an unchanged tag must not write.
        s.tag(&r("app:1"), &m).unwrap();
        assert_eq!(std::fs::metadata(&index).unwrap().ino(), ino);
        let (m2, _) = image(&s, b"other", "2024-01-01T00:00:00Z");
        s.tag(&r("app:1"), &m2).unwrap();
        assert_ne!(std::fs::metadata(&index).unwrap().ino(), ino);
    }

    #[test]
    fn put_image_checks_layers() {
        let (_d, s) = store();
        let c = ImageConfig::default();
        let ghost = Descriptor::of_bytes(media::OCI_LAYER_TAR, b"ghost");
        assert!(matches!(
            s.put_image(&c, std::slice::from_ref(&ghost)),
            Err(StoreError::InvalidImage(_))
        ));
        let mut c2 = ImageConfig::default();
        c2.rootfs.diff_ids.push(ghost.digest.clone());
        assert!(matches!(
            s.put_image(&c2, &[ghost]),
            Err(StoreError::MissingBlob(_))
        ));
    }

    #[test]
    fn tag_resolve_list_untag() {
        let (_d, s) = store();
        let (m, c) = image(&s, b"one", "2024-01-01T00:00:00Z");
        s.tag(&r("busybox"), &m).unwrap();
        s.tag(&r("localhost:5000/x/busybox:1"), &m).unwrap();

        for q in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
            "localhost:5000/x/busybox:1",
            c.as_str(),
            c.hex(),
            c.short(),
            &c.hex()[..5],
            m.digest.as_str(),
            &format!("busybox@{}", m.digest),
        ] {
            let rec = s.resolve(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!(rec.manifest.digest, m.digest, "{q}");
            assert_eq!(rec.config, c);
        }
        assert!(matches!(
            s.resolve("busybox:2"),
            Err(StoreError::ImageNotFound(_))
        ));
        assert!(matches!(
            s.resolve("nothere"),
            Err(StoreError::ImageNotFound(_))
        ));

        let list = s.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            list[0].references,
            vec![
                "docker.io/library/busybox:latest",
                "localhost:5000/x/busybox:1"
            ]
        );
        assert_eq!(list[0].created.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(list[0].size, s.blob_size(&c).unwrap() + 3);

        // Moving a tag.
        let (m2, _) = image(&s, b"two", "2024-01-02T00:00:00Z");
        s.tag(&r("busybox"), &m2).unwrap();
        assert_eq!(s.resolve("busybox").unwrap().manifest.digest, m2.digest);
        assert_eq!(s.list().unwrap().len(), 2);

        assert!(s.untag(&r("busybox")).unwrap());
        assert!(!s.untag(&r("busybox")).unwrap());
        assert!(s.resolve("busybox").is_err());
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn ambiguous_prefix() {
        let (_d, s) = store();
        // Enough images that some two share a first hex digit.
        let mut ids = Vec::new();
        for i in 0..20 {
            let (m, c) = image(&s, format!("layer{i}").as_bytes(), "2024-01-01T00:00:00Z");
            s.tag(&r(&format!("img{i}")), &m).unwrap();
            ids.push(c);
        }
        let shared = ids
            .iter()
            .find(|a| ids.iter().filter(|b| b.hex()[..1] == a.hex()[..1]).count() > 1)
            .unwrap();
        let err = s.resolve(&shared.hex()[..1]).unwrap_err();
        assert!(matches!(err, StoreError::Ambiguous { .. }), "{err}");
    }

    #[test]
    fn tag_refuses_incomplete_images() {
        let (_d, s) = store();
        let (m, c) = image(&s, b"one", "2024-01-01T00:00:00Z");
        std::fs::remove_file(s.blob_path(&c)).unwrap();
        assert!(matches!(
            s.tag(&r("a"), &m),
            Err(StoreError::MissingBlob(_))
        ));
        let ghost = Descriptor::of_bytes(media::OCI_MANIFEST, b"{}");
        assert!(matches!(
            s.tag(&r("a"), &ghost),
            Err(StoreError::MissingBlob(_))
        ));
        let mut wrong_size = m.clone();
        wrong_size.size += 1;
        assert!(matches!(
            s.tag(&r("a"), &wrong_size),
            Err(StoreError::InvalidImage(_))
        ));
        let mut index_type = m.clone();
        index_type.media_type = media::OCI_INDEX.into();
        assert!(matches!(
            s.tag(&r("a"), &index_type),
            Err(StoreError::InvalidImage(_))
        ));
        assert!(s.read_index().unwrap().manifests.is_empty());
    }

    #[test]
    fn untagged_images_are_listed_and_absorbed_by_tags() {
        let (_d, s) = store();
        let (m, c) = image(&s, b"one", "2024-01-01T00:00:00Z");
        s.keep_untagged(&m).unwrap();
        s.keep_untagged(&m).unwrap();
        let list = s.list().unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].references.is_empty());
        assert_eq!(s.resolve(c.short()).unwrap().config, c);
        s.tag(&r("app"), &m).unwrap();
        assert_eq!(s.read_index().unwrap().manifests.len(), 1);
    }
}
