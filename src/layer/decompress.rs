//! Recognises compressed layer streams by their magic bytes and decompresses them on the fly.

use std::io::{self, Cursor, Read};

/// The compression a stream was found to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectedCompression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

const MAGIC_LEN: usize = 6;

/// Which compression the first bytes of a stream announce.
pub fn detect_compression(prefix: &[u8]) -> DetectedCompression {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        DetectedCompression::Gzip
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        DetectedCompression::Zstd
    } else if prefix.starts_with(b"BZh") {
        DetectedCompression::Bzip2
    } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        DetectedCompression::Xz
    } else {
        DetectedCompression::None
    }
}

/// Wraps `input` in the decompressor its magic bytes call for (plain streams pass through).
/// Multi-member gzip and multi-frame zstd/bzip2/xz are read to their end.
pub fn decompressing_reader<'a, R: Read + 'a>(
    mut input: R,
) -> io::Result<(DetectedCompression, Box<dyn Read + 'a>)> {
    let mut magic = Vec::with_capacity(MAGIC_LEN);
    // A pipe may hand out fewer bytes than asked; keep reading until the magic is complete.
    (&mut input)
        .take(MAGIC_LEN as u64)
        .read_to_end(&mut magic)?;
    let kind = detect_compression(&magic);
    let stream = Cursor::new(magic).chain(input);
    let reader: Box<dyn Read + 'a> = match kind {
        DetectedCompression::None => Box::new(stream),
        DetectedCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        DetectedCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(stream)?),
        DetectedCompression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(stream)),
        DetectedCompression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(stream)),
    };
    Ok((kind, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(compressed: Vec<u8>, want: DetectedCompression) {
        let (kind, mut r) = decompressing_reader(&compressed[..]).unwrap();
        assert_eq!(kind, want);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello layer");
    }

    #[test]
    fn every_format_is_detected_and_decoded() {
        let data = b"hello layer";
        roundtrip(data.to_vec(), DetectedCompression::None);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        roundtrip(gz.finish().unwrap(), DetectedCompression::Gzip);

        roundtrip(
            zstd::encode_all(&data[..], 3).unwrap(),
            DetectedCompression::Zstd,
        );

        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(data).unwrap();
        roundtrip(bz.finish().unwrap(), DetectedCompression::Bzip2);

        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(data).unwrap();
        roundtrip(xz.finish().unwrap(), DetectedCompression::Xz);
    }

    #[test]
    fn short_streams_are_plain() {
        assert_eq!(detect_compression(b""), DetectedCompression::None);
        assert_eq!(detect_compression(b"\x1f"), DetectedCompression::None);
    }
}
