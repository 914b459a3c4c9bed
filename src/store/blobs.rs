//! Content-addressed blobs under `blobs/sha256/`: streamed in through a hashing writer, verified,
//! then renamed into place.

use std::fs::{self, File, Permissions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tempfile::NamedTempFile;

use super::error::{io_err, Result, StoreError};
use super::fsutil::{self, FILE_MODE};
use super::lock::FileLock;
use super::Store;
use crate::image::{Descriptor, Digest, Sha256Hasher};

/// Digest and size of a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

impl BlobInfo {
    pub fn descriptor(self, media_type: impl Into<String>) -> Descriptor {
        Descriptor::new(media_type, self.digest, self.size)
    }
}

/// Streams a new blob into `tmp/`, hashing as it goes. Nothing is visible in `blobs/` until
/// [`BlobWriter::commit`]; dropping the writer discards the temp file.
pub struct BlobWriter {
    out: BufWriter<NamedTempFile>,
    hasher: Sha256Hasher,
    blobs_dir: PathBuf,
    // Held so gc sees the temp file as live however long the write takes.
    _lock: FileLock,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Makes the blob visible: fsync, verify against `expected` (on mismatch nothing becomes
    /// visible and the temp file is removed), rename into `blobs/sha256/`, fsync the directory.
    /// If the blob already exists the temp file is dropped and the existing one kept.
    pub fn commit(self, expected: Option<&Digest>) -> Result<BlobInfo> {
        let BlobWriter {
            out,
            hasher,
            blobs_dir,
            _lock,
        } = self;
        let size = hasher.len();
        let digest = hasher.finish();
        let tmp_path = out.get_ref().path().to_path_buf();
        let tmp = out
            .into_inner()
            .map_err(|e| io_err("writing blob", tmp_path)(e.into_error()))?;
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    what: format!("blob written to {}", tmp.path().display()),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let dest = blobs_dir.join(digest.hex());
        // Same content already present: refresh its age so a concurrent gc keeps it.
        if fsutil::touch_if_exists(&dest)? {
            return Ok(BlobInfo { digest, size });
        }
        tmp.as_file()
            .sync_all()
            .map_err(io_err("writing blob", tmp.path()))?;
        tmp.persist(&dest)
            .map_err(|e| io_err("writing blob", &dest)(e.error))?;
        fsutil::fsync_dir(&blobs_dir)?;
        Ok(BlobInfo { digest, size })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Store {
    /// Starts writing a new blob.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp_dir = self.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(io_err("creating temp blob in", &tmp_dir))?;
        // Explicit mode, not umask-dependent: other tools (skopeo, umoci) read these files.
        tmp.as_file()
            .set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io_err("setting mode of", tmp.path()))?;
        let lock_handle = tmp
            .reopen()
            .map_err(io_err("opening temp blob", tmp.path()))?;
        let lock = FileLock::exclusive_on(lock_handle, tmp.path().to_path_buf())?;
        Ok(BlobWriter {
            out: BufWriter::with_capacity(256 * 1024, tmp),
            hasher: Sha256Hasher::new(),
            blobs_dir: self.blobs_dir(),
            _lock: lock,
        })
    }

    /// Stores `bytes` as a blob and returns its descriptor.
    pub fn put_bytes(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let desc = Descriptor::of_bytes(media_type, bytes);
        let path = self.blob_path(&desc.digest);
        if fsutil::touch_if_exists(&path)? {
            return Ok(desc);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_err("writing blob", &path))?;
        w.commit(Some(&desc.digest))?;
        Ok(desc)
    }

    /// Where the blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(md) => Ok(md.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::MissingBlob(digest.clone()))
            }
            Err(e) => Err(io_err("inspecting blob", path)(e)),
        }
    }

    /// Opens a stored blob for streaming (not re-verified: large layers are hashed on write).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::MissingBlob(digest.clone()))
            }
            Err(e) => Err(io_err("opening blob", path)(e)),
        }
    }

    /// Reads a whole blob and checks it still hashes to its digest (meant for the small JSON
    /// blobs; a corrupt manifest or config is reported, never trusted).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let mut bytes = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(io_err("reading blob", &path))?;
        let actual = Digest::sha256_of(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                what: format!("stored blob {}", path.display()),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
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
    fn writer_commits_verified_blob() {
        let (_d, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        assert_eq!(w.len(), 11);
        let want = Digest::sha256_of(b"hello world");
        let info = w.commit(Some(&want)).unwrap();
        assert_eq!(
            info,
            BlobInfo {
                digest: want.clone(),
                size: 11
            }
        );
        assert!(s.has_blob(&want));
        assert_eq!(s.read_blob(&want).unwrap(), b"hello world");
        assert_eq!(s.blob_size(&want).unwrap(), 11);
        assert!(fsutil::list_names(&s.tmp_dir()).unwrap().is_empty());
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let (_d, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"actual").unwrap();
        let wrong = Digest::sha256_of(b"expected");
        let err = w.commit(Some(&wrong)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!s.has_blob(&wrong));
        assert!(!s.has_blob(&Digest::sha256_of(b"actual")));
        assert!(fsutil::list_names(&s.blobs_dir()).unwrap().is_empty());
        assert!(fsutil::list_names(&s.tmp_dir()).unwrap().is_empty());
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let (_d, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert!(fsutil::list_names(&s.tmp_dir()).unwrap().is_empty());
        assert!(fsutil::list_names(&s.blobs_dir()).unwrap().is_empty());
    }

    #[test]
    fn put_bytes_is_idempotent() {
        let (_d, s) = store();
        let a = s.put_bytes(media::OCI_CONFIG, b"{}").unwrap();
        let b = s.put_bytes(media::OCI_CONFIG, b"{}").unwrap();
        assert_eq!(a, b);
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"{}").unwrap();
        assert_eq!(w.commit(None).unwrap().digest, a.digest);
        assert_eq!(fsutil::list_names(&s.blobs_dir()).unwrap().len(), 1);
        let mode = fs::metadata(s.blob_path(&a.digest))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, FILE_MODE);
    }

    #[test]
    fn missing_and_corrupt_blobs_are_errors() {
        let (_d, s) = store();
        let d = Digest::sha256_of(b"nope");
        assert!(matches!(s.read_blob(&d), Err(StoreError::MissingBlob(_))));
        assert!(matches!(s.blob_size(&d), Err(StoreError::MissingBlob(_))));
        assert!(matches!(s.open_blob(&d), Err(StoreError::MissingBlob(_))));
        let desc = s.put_bytes("x", b"good").unwrap();
        fs::write(s.blob_path(&desc.digest), b"evil").unwrap();
        assert!(matches!(
            s.read_blob(&desc.digest),
            Err(StoreError::DigestMismatch { .. })
        ));
    }
}
