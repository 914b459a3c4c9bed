//! Content digests in OCI form (`sha256:<64 lowercase hex>`) and a streaming sha256 hasher.

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Why a string is not a digest kiln can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {input:?}: {reason}")]
    InvalidFormat { input: String, reason: &'static str },
    /// Well-formed `algorithm:hex`, but not an algorithm the store addresses blobs by.
    #[error("unsupported digest algorithm {algorithm:?} in {input:?}: only sha256 is supported")]
    UnsupportedAlgorithm { input: String, algorithm: String },
}

/// A validated `sha256:<64 lowercase hex>` digest.
///
/// Only sha256 is accepted because the store lays blobs out under `blobs/sha256/` and every
/// registry kiln talks to uses it; the OCI spec also requires lowercase hex for sha256.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

const SHA256_PREFIX: &str = "sha256:";
const SHA256_HEX_LEN: usize = 64;

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(input: &str) -> Result<Self, DigestError> {
        let invalid = |reason| DigestError::InvalidFormat {
            input: input.to_string(),
            reason,
        };
        let Some((algorithm, encoded)) = input.split_once(':') else {
            return Err(invalid("expected <algorithm>:<hex>"));
        };
        if !is_algorithm(algorithm) {
            return Err(invalid("malformed algorithm"));
        }
        if encoded.is_empty()
            || !encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-')
        {
            return Err(invalid("malformed encoded part"));
        }
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm {
                input: input.to_string(),
                algorithm: algorithm.to_string(),
            });
        }
        Self::from_sha256_hex(encoded)
            .map_err(|_| invalid("sha256 needs exactly 64 lowercase hex digits"))
    }

    /// Builds a digest from the 64 lowercase hex digits of a sha256 sum.
    pub fn from_sha256_hex(hex: &str) -> Result<Self, DigestError> {
        if is_sha256_hex(hex) {
            Ok(Digest(format!("{SHA256_PREFIX}{hex}")))
        } else {
            Err(DigestError::InvalidFormat {
                input: hex.to_string(),
                reason: "sha256 needs exactly 64 lowercase hex digits",
            })
        }
    }

    /// Builds a digest from a raw 32-byte sha256 sum.
    pub fn from_sha256_bytes(sum: &[u8; 32]) -> Self {
        let mut s = String::with_capacity(SHA256_PREFIX.len() + SHA256_HEX_LEN);
        s.push_str(SHA256_PREFIX);
        for b in sum {
            s.push(hex_digit(b >> 4));
            s.push(hex_digit(b & 0x0f));
        }
        Digest(s)
    }

    /// The digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        let sum: [u8; 32] = Sha256::digest(bytes).into();
        Self::from_sha256_bytes(&sum)
    }

    /// `"sha256"`.
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        self.0.get(SHA256_PREFIX.len()..).unwrap_or_default()
    }

    /// The first 12 hex digits: the short image ID docker shows.
    pub fn short(&self) -> &str {
        self.hex().get(..12).unwrap_or_default()
    }

    /// The whole `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True when `s` is exactly 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == SHA256_HEX_LEN && s.bytes().all(is_lower_hex)
}

pub(crate) fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

// OCI grammar: algorithm-component (separator algorithm-component)*, components [a-z0-9]+,
// separators [+._-].
fn is_algorithm(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(n & 0x0f)])
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Streaming sha256: feed bytes (or use it as an `io::Write` sink), then `finish`.
#[derive(Clone, Default)]
pub struct Sha256Hasher {
    inner: Sha256,
    len: u64,
}

impl Sha256Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len = self.len.saturating_add(bytes.len() as u64);
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        let sum: [u8; 32] = self.inner.finalize().into();
        Digest::from_sha256_bytes(&sum)
    }
}

impl io::Write for Sha256Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_empty() {
        assert_eq!(Digest::sha256_of(b"").as_str(), EMPTY);
        let mut h = Sha256Hasher::new();
        h.update(b"");
        assert_eq!(h.finish().as_str(), EMPTY);
    }

    #[test]
    fn streaming_matches_one_shot() {
        let mut h = Sha256Hasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert_eq!(h.finish(), Digest::sha256_of(b"hello world"));
    }

    #[test]
    fn parse_roundtrip_and_parts() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.short(), "e3b0c44298fc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn parse_rejects() {
        let upper = EMPTY.replace('e', "E");
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:abc",
            &upper,
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/",
        ] {
            assert!(
                matches!(Digest::parse(bad), Err(DigestError::InvalidFormat { .. })),
                "{bad:?} should be invalid"
            );
        }
        assert!(matches!(
            Digest::parse("sha512:abcd"),
            Err(DigestError::UnsupportedAlgorithm { .. })
        ));
        assert!(serde_json::from_str::<Digest>("\"sha256:abc\"").is_err());
    }
}
