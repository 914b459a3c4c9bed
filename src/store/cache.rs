//! The build cache index (`cache/<key>.json`: cache key → what the step produced) and the
//! compressed-variant records (`compressed/<diffid-hex>/<algo>.json`: diffID + algorithm → the
//! compressed blob's descriptor). Both are small JSON files written atomically.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{io_err, json_err, Result, StoreError};
use super::{fsutil, Store};
use crate::image::digest::is_lower_hex;
use crate::image::timestamp::now_rfc3339;
use crate::image::{Descriptor, Digest};

/// What one cached build step produced. The build engine decides what `data` holds; the store
/// only needs to know which blobs the entry keeps alive (`layer`, `config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The layer the step made (uncompressed, digest = diffID); `None` for metadata-only steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<Descriptor>,
    /// The resulting image config blob, if the engine stores one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Digest>,
    /// Engine-defined payload (e.g. a config patch).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; refreshed by [`Store::cache_touch`].
    pub last_used: String,
}

impl CacheEntry {
    /// A new entry created and last used now.
    pub fn new(layer: Option<Descriptor>, config: Option<Digest>, data: serde_json::Value) -> Self {
        let now = now_rfc3339();
        CacheEntry {
            layer,
            config,
            data,
            created: now.clone(),
            last_used: now,
        }
    }

    fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.layer
            .as_ref()
            .map(|l| &l.digest)
            .into_iter()
            .chain(self.config.as_ref())
    }
}

const MAX_KEY_LEN: usize = 128;

pub(crate) fn check_key(key_hex: &str) -> Result<()> {
    if key_hex.is_empty() || key_hex.len() > MAX_KEY_LEN || !key_hex.bytes().all(is_lower_hex) {
        return Err(StoreError::InvalidName {
            what: "cache key",
            value: key_hex.to_string(),
            reason: "expected 1 to 128 lowercase hex digits",
        });
    }
    Ok(())
}

fn check_algo(algo: &str) -> Result<()> {
    let ok = !algo.is_empty()
        && algo.len() <= 64
        && !algo.starts_with('.')
        && algo.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'+' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what: "compression algorithm",
            value: algo.to_string(),
            reason: "expected lowercase letters, digits and . _ + -",
        })
    }
}

/// Reads a small JSON record; a missing file is `None`.
fn read_record(path: &PathBuf) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

impl Store {
    pub(crate) fn cache_path(&self, key_hex: &str) -> PathBuf {
        self.cache_dir().join(format!("{key_hex}.json"))
    }

    /// The entry for `key_hex`, or `None` on a miss. An entry whose blobs are gone, or that does
    /// not parse (written by another version), is a miss too: gc removes it.
    pub fn cache_get(&self, key_hex: &str) -> Result<Option<CacheEntry>> {
        check_key(key_hex)?;
        let Some(bytes) = read_record(&self.cache_path(key_hex))? else {
            return Ok(None);
        };
        let Ok(entry) = serde_json::from_slice::<CacheEntry>(&bytes) else {
            return Ok(None);
        };
        if entry.blobs().all(|d| self.has_blob(d)) {
            // The file's mtime is the entry's last use, which the byte cap prunes by; a
            // failed touch only makes the entry look older.
            let _ = fsutil::touch(&self.cache_path(key_hex));
            Ok(Some(entry))
        } else {
            Ok(None)
        }
    }

    /// Records `entry` under `key_hex` (replacing any previous one). Its blobs must be in the
    /// store; the check runs under the index lock so gc cannot remove them in between.
    pub fn cache_put(&self, key_hex: &str, entry: &CacheEntry) -> Result<()> {
        check_key(key_hex)?;
        let path = self.cache_path(key_hex);
        let bytes =
            serde_json::to_vec(entry).map_err(json_err("serializing cache entry", &path))?;
        let _lock = self.lock_index_shared()?;
        if let Some(missing) = entry.blobs().find(|d| !self.has_blob(d)) {
            return Err(StoreError::MissingBlob(missing.clone()));
        }
        // Not fsynced: a cache entry lost or emptied by a crash is a miss (see
        // `cache_get`), while its layer blob was made durable before it was recorded.
        fsutil::replace_unsynced(&self.tmp_dir(), &path, &bytes, "writing cache entry")
    }

    /// Marks the entry as used now (for least-recently-used pruning). Returns false on a miss.
    pub fn cache_touch(&self, key_hex: &str) -> Result<bool> {
        let Some(mut entry) = self.cache_get(key_hex)? else {
            return Ok(false);
        };
        entry.last_used = now_rfc3339();
        let path = self.cache_path(key_hex);
        let bytes =
            serde_json::to_vec(&entry).map_err(json_err("serializing cache entry", &path))?;
        fsutil::atomic_write(&self.tmp_dir(), &path, &bytes, "writing cache entry")?;
        Ok(true)
    }

    /// Forgets one cache entry. Returns false if there was none.
    pub fn cache_remove(&self, key_hex: &str) -> Result<bool> {
        check_key(key_hex)?;
        let path = self.cache_path(key_hex);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("removing cache entry", path)(e)),
        }
    }

    /// Every valid cache key with its entry (unparseable files are skipped).
    pub fn cache_entries(&self) -> Result<Vec<(String, CacheEntry)>> {
        let mut out = Vec::new();
        for name in fsutil::list_names(&self.cache_dir())? {
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            if check_key(key).is_err() {
                continue;
            }
            let Some(bytes) = read_record(&self.cache_path(key))? else {
                continue;
            };
            if let Ok(entry) = serde_json::from_slice::<CacheEntry>(&bytes) {
                out.push((key.to_string(), entry));
            }
        }
        Ok(out)
    }

    pub(crate) fn compressed_path(&self, diff_id: &Digest, algo: &str) -> PathBuf {
        self.compressed_dir()
            .join(diff_id.hex())
            .join(format!("{algo}.json"))
    }

    /// The compressed variant of layer `diff_id` made with `algo` (e.g. `gzip`, `zstd`), if one
    /// was recorded and its blob is still present.
    pub fn compressed_get(&self, diff_id: &Digest, algo: &str) -> Result<Option<Descriptor>> {
        check_algo(algo)?;
        let path = self.compressed_path(diff_id, algo);
        let Some(bytes) = read_record(&path)? else {
            return Ok(None);
        };
        let Ok(desc) = serde_json::from_slice::<Descriptor>(&bytes) else {
            return Ok(None);
        };
        Ok(self.has_blob(&desc.digest).then_some(desc))
    }

    /// Records that `compressed` (already a blob of the store) is layer `diff_id` compressed
    /// with `algo`, so push and save reuse it instead of compressing again.
    pub fn compressed_put(
        &self,
        diff_id: &Digest,
        algo: &str,
        compressed: &Descriptor,
    ) -> Result<()> {
        check_algo(algo)?;
        let path = self.compressed_path(diff_id, algo);
        let bytes =
            serde_json::to_vec(compressed).map_err(json_err("serializing descriptor", &path))?;
        let _lock = self.lock_index_shared()?;
        if !self.has_blob(&compressed.digest) {
            return Err(StoreError::MissingBlob(compressed.digest.clone()));
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("creating directory", dir))?;
        }
        fsutil::atomic_write(
            &self.tmp_dir(),
            &path,
            &bytes,
            "writing compressed-variant record",
        )
    }

    /// Every recorded compressed variant of `diff_id`, by algorithm.
    pub(crate) fn compressed_variants(
        &self,
        diff_id_hex: &str,
    ) -> Result<Vec<(String, Descriptor)>> {
        let dir = self.compressed_dir().join(diff_id_hex);
        let mut out = Vec::new();
        for name in fsutil::list_names(&dir)? {
            let Some(algo) = name.strip_suffix(".json") else {
                continue;
            };
            let Some(bytes) = read_record(&dir.join(&name))? else {
                continue;
            };
            if let Ok(desc) = serde_json::from_slice::<Descriptor>(&bytes) {
                out.push((algo.to_string(), desc));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn cache_put_get_touch_remove() {
        let (_d, s) = store();
        let key = "ab".repeat(32);
        assert_eq!(s.cache_get(&key).unwrap(), None);
        let layer = s.put_bytes(media::OCI_LAYER_TAR, b"tar").unwrap();
        let entry = CacheEntry::new(Some(layer), None, serde_json::json!({"env": ["A=1"]}));
        s.cache_put(&key, &entry).unwrap();
        assert_eq!(s.cache_get(&key).unwrap(), Some(entry.clone()));
        assert!(s.cache_touch(&key).unwrap());
        assert_eq!(s.cache_get(&key).unwrap().unwrap().created, entry.created);
        assert_eq!(s.cache_entries().unwrap().len(), 1);
        assert!(s.cache_remove(&key).unwrap());
        assert!(!s.cache_remove(&key).unwrap());
        assert_eq!(s.cache_get(&key).unwrap(), None);
        assert!(!s.cache_touch(&key).unwrap());
    }

    #[test]
    fn metadata_only_entry() {
        let (_d, s) = store();
        let e = CacheEntry::new(None, None, serde_json::Value::Null);
        s.cache_put("00", &e).unwrap();
        let text = fs::read_to_string(s.cache_path("00")).unwrap();
        assert!(!text.contains("layer") && !text.contains("data"), "{text}");
        assert_eq!(s.cache_get("00").unwrap(), Some(e));
    }

    #[test]
    fn cache_refuses_missing_blobs_and_bad_keys() {
        let (_d, s) = store();
        let ghost = Descriptor::of_bytes(media::OCI_LAYER_TAR, b"ghost");
        let e = CacheEntry::new(Some(ghost), None, serde_json::Value::Null);
        assert!(matches!(
            s.cache_put("aa", &e),
            Err(StoreError::MissingBlob(_))
        ));
        for bad in ["", "AA", "../x", "zz", &"a".repeat(129)] {
            assert!(
                matches!(s.cache_get(bad), Err(StoreError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn entry_whose_blob_vanished_is_a_miss() {
        let (_d, s) = store();
        let layer = s.put_bytes(media::OCI_LAYER_TAR, b"tar").unwrap();
        s.cache_put(
            "aa",
            &CacheEntry::new(Some(layer.clone()), None, serde_json::Value::Null),
        )
        .unwrap();
        fs::remove_file(s.blob_path(&layer.digest)).unwrap();
        assert_eq!(s.cache_get("aa").unwrap(), None);
        fs::write(s.cache_path("bb"), b"not json").unwrap();
        assert_eq!(s.cache_get("bb").unwrap(), None);
    }

    #[test]
    fn compressed_put_get() {
        let (_d, s) = store();
        let diff = s.put_bytes(media::OCI_LAYER_TAR, b"tar").unwrap();
        assert_eq!(s.compressed_get(&diff.digest, "gzip").unwrap(), None);
        let gz = s.put_bytes(media::OCI_LAYER_TAR_GZIP, b"gz").unwrap();
        s.compressed_put(&diff.digest, "gzip", &gz).unwrap();
        assert_eq!(
            s.compressed_get(&diff.digest, "gzip").unwrap(),
            Some(gz.clone())
        );
        assert_eq!(s.compressed_get(&diff.digest, "zstd").unwrap(), None);
        assert_eq!(
            s.compressed_variants(diff.digest.hex()).unwrap(),
            vec![("gzip".to_string(), gz)]
        );
        let ghost = Descriptor::of_bytes(media::OCI_LAYER_TAR_ZSTD, b"ghost");
        assert!(matches!(
            s.compressed_put(&diff.digest, "zstd", &ghost),
            Err(StoreError::MissingBlob(_))
        ));
        assert!(matches!(
            s.compressed_get(&diff.digest, "../x"),
            Err(StoreError::InvalidName { .. })
        ));
    }
}
