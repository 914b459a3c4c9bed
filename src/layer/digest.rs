//! sha256 digests of what the layer module writes, computed while the bytes stream past.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Write};

/// A sha256 digest; displays as `sha256:<hex>` (the OCI digest form).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(data).into())
    }

    /// Lower-case hex, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Digest and length of a byte stream: a layer's diffID and size, or a blob's digest and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digested {
    pub digest: Sha256Digest,
    pub size: u64,
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Flushes, and returns the inner writer with the digest of all bytes written.
    pub fn finish(mut self) -> io::Result<(W, Digested)> {
        self.inner.flush()?;
        let digested = Digested {
            digest: Sha256Digest(self.hasher.finalize().into()),
            size: self.size,
        };
        Ok((self.inner, digested))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only what the inner writer accepted counts, so a short write cannot skew the digest.
        self.hasher.update(buf.get(..n).unwrap_or(buf));
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_is_the_well_known_one() {
        assert_eq!(
            Sha256Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashing_writer_matches_one_shot_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (buf, d) = w.finish().unwrap();
        assert_eq!(buf, b"hello world");
        assert_eq!(d.size, 11);
        assert_eq!(d.digest, Sha256Digest::of(b"hello world"));
    }
}
