//! What ADD does beyond COPY: local tar archives (plain, gzip, bzip2, xz, zstd) are
//! unpacked into the destination, and URLs are downloaded (checked against `--checksum`).

use crate::image::Digest;
use crate::layer::index::{Layer, LayerIndex, View};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

/// Whether the file at `path` is a tar archive, possibly compressed: its (decompressed)
/// first block must be a valid tar header, checksum included.
pub fn is_archive(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let Ok((_, mut r)) = crate::layer::decompressing_reader(std::io::BufReader::new(f)) else {
        return false;
    };
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < 512 {
        match r.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return false,
        }
    }
    got == 512 && header_checksum_ok(&block)
}

fn header_checksum_ok(h: &[u8; 512]) -> bool {
    let field = &h[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let Ok(want) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == want && h[0] != 0
}

/// An unpacked archive, readable as a one-layer view; the temp tar lives as long as it.
pub struct Unpacked {
    pub view: View,
    _tar: tempfile::TempPath,
}

/// Decompress the archive at `path` into a temp tar in `tmp` and index it.
pub fn unpack(path: &Path, tmp: &Path) -> Result<Unpacked, String> {
    let err = |e: std::io::Error| format!("unpacking {}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(err)?;
    let (_, mut r) = crate::layer::decompressing_reader(std::io::BufReader::new(f)).map_err(err)?;
    let mut out = tempfile::NamedTempFile::new_in(tmp).map_err(err)?;
    std::io::copy(&mut r, &mut out).map_err(err)?;
    out.flush().map_err(err)?;
    let tar = out.into_temp_path();
    // The temp tar's name means nothing to the user: errors name the archive.
    let index = LayerIndex::read_file(&tar).map_err(|e| match e {
        crate::layer::index::IndexError::Io { source, .. } => err(source),
        other => format!("unpacking {}: {other}", path.display()),
    })?;
    // Refused now rather than stored in a layer that no RUN could unpack.
    for name in index.entries.keys() {
        if name.split('/').any(|c| c.len() > crate::layer::NAME_MAX) {
            return Err(format!(
                "unpacking {}: {name}: a name component is longer than 255 bytes",
                path.display()
            ));
        }
    }
    Ok(Unpacked {
        view: View::new(vec![Layer {
            index: Arc::new(index),
            tar: tar.to_path_buf(),
        }]),
        _tar: tar,
    })
}

/// A downloaded file.
pub struct Downloaded {
    pub path: tempfile::TempPath,
    /// The name it gets in a directory destination: the URL's last path segment.
    pub name: String,
    pub size: u64,
    pub sha256: Digest,
}

/// The file name an URL gives: its last path segment, or `__unnamed__` (BuildKit).
pub fn url_name(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = no_query
        .split_once("://")
        .map(|(_, rest)| rest.split_once('/').map(|(_, p)| p).unwrap_or(""))
        .unwrap_or("");
    match path.rsplit('/').next() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Check a `--checksum` value: only `sha256:<64 hex>` is supported.
pub fn parse_checksum(s: &str) -> Result<Digest, String> {
    if !s.starts_with("sha256:") {
        return Err(format!(
            "unsupported digest algorithm in --checksum={s}: only sha256 is supported"
        ));
    }
    Digest::parse(s).map_err(|e| format!("invalid --checksum={s}: {e}"))
}

/// Download `url` into a temp file in `tmp`, verifying `checksum` when given.
pub fn download(url: &str, checksum: Option<&Digest>, tmp: &Path) -> Result<Downloaded, String> {
    let resp = ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(30))
        .timeout_read(std::time::Duration::from_secs(300))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .get(url)
        .call()
        .map_err(|e| format!("downloading {url}: {e}"))?;
    let mut reader = resp.into_reader();
    let mut out =
        tempfile::NamedTempFile::new_in(tmp).map_err(|e| format!("downloading {url}: {e}"))?;
    let mut hasher = crate::image::Sha256Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| format!("downloading {url}: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| format!("downloading {url}: {e}"))?;
        size += n as u64;
    }
    let sha256 = hasher.finish();
    if let Some(want) = checksum {
        if *want != sha256 {
            return Err(format!(
                "downloading {url}: digest mismatch: expected {want}, got {sha256}"
            ));
        }
    }
    Ok(Downloaded {
        path: out.into_temp_path(),
        name: url_name(url),
        size,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_names() {
        assert_eq!(url_name("http://h/foo"), "foo");
        assert_eq!(url_name("http://h/a/b.tar.gz?x=1"), "b.tar.gz");
        assert_eq!(url_name("http://h/dir/"), "__unnamed__");
        assert_eq!(url_name("http://h"), "__unnamed__");
    }

    #[test]
    fn archives_are_recognised_by_content() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "foo", &b"abc"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        std::fs::write(d.path().join("t.tar"), &tar).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        std::fs::write(d.path().join("t.tgz"), gz.finish().unwrap()).unwrap();
        std::fs::write(d.path().join("plain.txt"), vec![b'x'; 600]).unwrap();
        assert!(is_archive(&d.path().join("t.tar")));
        assert!(is_archive(&d.path().join("t.tgz")));
        assert!(!is_archive(&d.path().join("plain.txt")));
        let u = unpack(&d.path().join("t.tgz"), d.path()).unwrap();
        assert_eq!(u.view.read_file("foo").unwrap().unwrap(), b"abc");
    }

    #[test]
    fn checksums_must_be_sha256() {
        assert!(parse_checksum("md5:abc").is_err());
        assert!(parse_checksum("sha256:xyz").is_err());
        assert!(parse_checksum(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
