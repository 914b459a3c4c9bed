//! Images in and out of tar archives: `import` (a rootfs tarball becomes a one-layer image),
//! `save` (images to an OCI image-layout archive or a docker-archive) and `load` (either kind
//! back into the store, every blob verified before anything is tagged).
//!
//! The store keeps layers uncompressed (digest = diffID); archives may carry them compressed,
//! so this module converts in both directions and records the compressed variants it makes.

use std::io::{self, Read, Write};

mod error;
mod import;
mod load;
mod save;

pub use error::{ArchiveError, Result};
pub use import::{import_rootfs, ImportOptions, Imported, IMPORT_CREATED_BY};
pub use load::{load, LoadedImage};
pub use save::{save, save_to_file, ArchiveFormat, SaveOptions, SaveReport, SavedImage};

/// The annotation containerd and BuildKit use for an image's full name in an OCI layout.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Writes everything to both sides.
pub(crate) struct Tee<'a, A: Write, B: Write> {
    pub a: &'a mut A,
    pub b: &'a mut B,
}

impl<A: Write, B: Write> Write for Tee<'_, A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.a.write(buf)?;
        self.b.write_all(buf.get(..n).unwrap_or_default())?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.a.flush()?;
        self.b.flush()
    }
}

/// Reads from `inner`, writing every byte read to `out` as well.
pub(crate) struct TeeReader<R: Read, W: Write> {
    pub inner: R,
    pub out: W,
}

impl<R: Read, W: Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(buf.get(..n).unwrap_or_default())?;
        Ok(n)
    }
}
