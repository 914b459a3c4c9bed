//! Compressed blobs for push and save: pigz-style parallel gzip and zstd, both producing the
//! same bytes whatever the number of threads, with the sha256 of the output computed as it is
//! written.
//!
//! Gzip: the input is cut into fixed [`GZIP_CHUNK`]-byte chunks; each is deflated by a fresh
//! raw-deflate compressor primed with the last 32 KiB of the previous chunk as dictionary
//! (as pigz does), ended with a sync flush (byte-aligned, not final) except the last chunk,
//! which finishes the stream. Concatenated, the pieces form one deflate stream; the CRC-32s
//! of the chunks are combined into the trailer of a single gzip member. Chunk boundaries
//! depend only on the input, so thread count never changes the output. A compressor is never
//! reused across chunks: a reset zlib-rs compressor was seen to emit different bytes.
//!
//! A chunk that does not compress (its first [`PROBE`] bytes, deflated alone at level 1,
//! save less than 1/[`MIN_SAVING`]) is emitted as stored blocks instead: already-compressed
//! or random data then costs a copy, not a full deflate that would only grow it. The choice
//! depends on the chunk's bytes alone, so the output stays the same for any thread count.

use super::digest::{Digested, HashingWriter};
use super::error::{LayerError, Result};
use flate2::{Compress, FlushCompress, Status};
use rayon::prelude::*;
use rayon::ThreadPool;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// Bytes of input per independently compressed gzip chunk. At 1 MiB the per-chunk cost
/// (fresh compressor, dictionary, flush marker) is lost in the noise, both for speed and size
/// (see benches/layer.rs), while 2 threads still get work from small layers.
pub const GZIP_CHUNK: usize = 1 << 20;
/// Deflate's window: the most of the previous chunk that a dictionary can use.
const DICT: usize = 32 * 1024;
/// Bytes of a chunk test-compressed to decide whether deflating it is worth it.
const PROBE: usize = 64 * 1024;
/// A probe must shrink by at least 1/this (2%) for its chunk to be deflated.
const MIN_SAVING: usize = 50;
/// The largest stored block deflate allows.
const STORED_MAX: usize = 65_535;
/// Chunks read ahead per thread, bounding memory at threads × this × GZIP_CHUNK.
const CHUNKS_PER_THREAD: usize = 4;

/// Compression algorithm and level of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Level 0–9 (6 is gzip's default).
    Gzip { level: u32 },
    /// Level 1–22 (3 is zstd's default).
    Zstd { level: i32 },
}

/// Compresses all of `input` into `out` using up to `threads` threads (0 counts as 1), and
/// returns `out` with the digest and size of the compressed bytes.
pub fn compress<R: Read, W: Write>(
    input: R,
    algo: Compression,
    threads: usize,
    out: W,
) -> Result<(W, Digested)> {
    let threads = threads.max(1);
    let mut out = HashingWriter::new(out);
    match algo {
        Compression::Gzip { level } => gzip_parallel(input, level.min(9), threads, &mut out)?,
        Compression::Zstd { level } => zstd_stream(input, level, threads, &mut out)?,
    }
    out.finish()
        .map_err(|source| LayerError::Compress { source })
}

/// [`compress`] reading the file at `path`.
pub fn compress_file<W: Write>(
    path: &Path,
    algo: Compression,
    threads: usize,
    out: W,
) -> Result<(W, Digested)> {
    let file = std::fs::File::open(path).map_err(|e| LayerError::io(path, e))?;
    compress(file, algo, threads, out)
}

fn gzip_parallel<R: Read, W: Write>(
    mut input: R,
    level: u32,
    threads: usize,
    out: &mut W,
) -> Result<()> {
    let cerr = |source| LayerError::Compress { source };
    // Fixed header: no name, no mtime, OS "unknown"; nothing of the host leaks in.
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])
        .map_err(cerr)?;
    let pool = if threads > 1 {
        Some(pool(threads)?)
    } else {
        None
    };
    let batch_len = threads * CHUNKS_PER_THREAD;

    let mut crc = crc32fast::Hasher::new();
    let mut total: u64 = 0;
    let mut prev_tail: Vec<u8> = Vec::new();
    let mut pending = read_chunk(&mut input).map_err(cerr)?;
    let mut done = false;
    while !done {
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(batch_len);
        while batch.len() < batch_len {
            // Only a full chunk can be followed by more input; a short one ends the stream.
            let next = if pending.len() == GZIP_CHUNK {
                read_chunk(&mut input).map_err(cerr)?
            } else {
                Vec::new()
            };
            done = next.is_empty();
            batch.push(std::mem::replace(&mut pending, next));
            if done {
                break;
            }
        }
        let n = batch.len();
        let job = |i: usize| -> io::Result<(Vec<u8>, crc32fast::Hasher)> {
            let data = batch.get(i).map(Vec::as_slice).unwrap_or_default();
            let dict = match i.checked_sub(1) {
                None => prev_tail.as_slice(),
                Some(p) => tail(batch.get(p).map(Vec::as_slice).unwrap_or_default()),
            };
            let mut h = crc32fast::Hasher::new();
            h.update(data);
            let last = done && i + 1 == n;
            Ok((deflate_chunk(data, dict, level, last)?, h))
        };
        let results: Vec<io::Result<(Vec<u8>, crc32fast::Hasher)>> = match &pool {
            Some(pool) => pool.install(|| (0..n).into_par_iter().map(job).collect()),
            None => (0..n).map(job).collect(),
        };
        for r in results {
            let (bytes, h) = r.map_err(cerr)?;
            out.write_all(&bytes).map_err(cerr)?;
            crc.combine(&h);
        }
        for chunk in &batch {
            total += chunk.len() as u64;
        }
        if let Some(last) = batch.last() {
            prev_tail = tail(last).to_vec();
        }
    }
    let mut trailer = [0u8; 8];
    trailer[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the input length modulo 2^32 by definition.
    trailer[4..].copy_from_slice(&(total as u32).to_le_bytes());
    out.write_all(&trailer).map_err(cerr)
}

fn tail(data: &[u8]) -> &[u8] {
    data.get(data.len().saturating_sub(DICT)..)
        .unwrap_or_default()
}

/// Reads up to GZIP_CHUNK bytes, fewer only at end of input.
fn read_chunk<R: Read>(input: &mut R) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(GZIP_CHUNK);
    input.take(GZIP_CHUNK as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Raw deflate of one chunk: stored blocks when it does not compress, else deflated with a
/// fresh compressor. Either way it ends on a byte boundary (a not-last deflated chunk ends
/// with a sync flush, an empty stored block), so the next chunk starts on one.
fn deflate_chunk(data: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    if level > 0 && incompressible(data)? {
        return Ok(stored_blocks(data, last));
    }
    deflate_with(data, dict, level, last)
}

/// Whether the chunk's probe saves less than 1/MIN_SAVING at level 1. Small chunks are
/// always deflated: the probe would be most of the work.
fn incompressible(data: &[u8]) -> io::Result<bool> {
    let Some(probe) = data.get(..PROBE) else {
        return Ok(false);
    };
    let mut c = Compress::new(flate2::Compression::new(1), false);
    let mut out = Vec::with_capacity(PROBE + PROBE / 8);
    c.compress_vec(probe, &mut out, FlushCompress::Finish)
        .map_err(io::Error::other)?;
    let consumed_all = usize::try_from(c.total_in()).unwrap_or(0) == PROBE;
    Ok(consumed_all && out.len() + PROBE / MIN_SAVING > PROBE)
}

/// `data` as stored (uncompressed) deflate blocks, starting on a byte boundary: each block
/// is a header byte (BFINAL, BTYPE=00, padding), LEN and its complement, then the bytes.
fn stored_blocks(data: &[u8], last: bool) -> Vec<u8> {
    let blocks = data.len().div_ceil(STORED_MAX).max(1);
    let mut out = Vec::with_capacity(data.len() + blocks * 5);
    let mut pieces = data.chunks(STORED_MAX).peekable();
    if pieces.peek().is_none() {
        // Only an empty last chunk gets here: one empty final block ends the stream.
        out.extend_from_slice(&[u8::from(last), 0, 0, 0xff, 0xff]);
        return out;
    }
    while let Some(piece) = pieces.next() {
        let final_block = last && pieces.peek().is_none();
        // `chunks(STORED_MAX)` keeps every piece within u16.
        let len = u16::try_from(piece.len()).unwrap_or(u16::MAX);
        out.push(u8::from(final_block));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

fn deflate_with(data: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let before = c.total_in();
        let status = c
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        let used = usize::try_from(c.total_in() - before).unwrap_or(usize::MAX);
        input = input.get(used..).unwrap_or_default();
        let flushed = input.is_empty() && out.len() < out.capacity();
        match (last, status) {
            (true, Status::StreamEnd) => return Ok(out),
            (false, _) if flushed => return Ok(out),
            _ => {}
        }
    }
}

fn zstd_stream<R: Read, W: Write>(
    mut input: R,
    level: i32,
    threads: usize,
    out: &mut W,
) -> Result<()> {
    let cerr = |source| LayerError::Compress { source };
    let mut enc = zstd::stream::write::Encoder::new(out, level).map_err(cerr)?;
    enc.include_checksum(true).map_err(cerr)?;
    // Always at least one worker: zstd's multithreaded format is the same for any number of
    // workers, but differs from its single-threaded (0 workers) one.
    enc.multithread(u32::try_from(threads).unwrap_or(u32::MAX))
        .map_err(cerr)?;
    io::copy(&mut input, &mut enc).map_err(cerr)?;
    enc.finish().map_err(cerr)?;
    Ok(())
}

/// One pool per thread count, built once: building a pool per blob would cost more than
/// compressing a small one.
fn pool(threads: usize) -> Result<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(Arc::clone(p));
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("kiln-gzip-{i}"))
        .build()
        .map_err(|e| LayerError::Compress {
            source: io::Error::other(e),
        })?;
    let p = Arc::new(p);
    pools.insert(threads, Arc::clone(&p));
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn small_inputs_roundtrip() {
        for input in [&b""[..], b"a", b"hello hello hello hello"] {
            let (gz, d) = compress(input, Compression::Gzip { level: 6 }, 2, Vec::new()).unwrap();
            assert_eq!(gunzip(&gz), input);
            assert_eq!(d.size, gz.len() as u64);
        }
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_chunks_are_stored_and_still_one_stream() {
        // noise, text, noise: stored, deflated (with the stored chunk as dictionary), stored.
        let mut data = noise(GZIP_CHUNK, 1);
        data.extend((0..GZIP_CHUNK).map(|i| b"kiln layer "[i % 11]));
        data.extend(noise(GZIP_CHUNK / 2 + 3, 2));
        for threads in [1, 3] {
            let (gz, _) = compress(
                &data[..],
                Compression::Gzip { level: 6 },
                threads,
                Vec::new(),
            )
            .unwrap();
            assert_eq!(gunzip(&gz), data);
            // Stored noise costs 5 bytes per 64 KiB block, not deflate's expansion.
            let noise_len = GZIP_CHUNK + GZIP_CHUNK / 2 + 3;
            assert!(
                gz.len() < noise_len + noise_len / 1000 + 20_000,
                "{}",
                gz.len()
            );
        }
        assert!(incompressible(&noise(GZIP_CHUNK, 3)).unwrap());
        assert!(!incompressible(&data[GZIP_CHUNK..2 * GZIP_CHUNK]).unwrap());
        // Short chunks are never probed.
        assert!(!incompressible(&noise(PROBE - 1, 4)).unwrap());
        // Level 0 is plain deflate's stored output, unchanged.
        let (gz0, _) = compress(&data[..], Compression::Gzip { level: 0 }, 2, Vec::new()).unwrap();
        assert_eq!(gunzip(&gz0), data);
    }

    #[test]
    fn stored_blocks_split_at_the_deflate_limit() {
        let data = noise(2 * STORED_MAX + 1, 5);
        let out = stored_blocks(&data, true);
        assert_eq!(out.len(), data.len() + 3 * 5);
        assert_eq!(out[0], 0);
        assert_eq!(out[2 * (STORED_MAX + 5)], 1);
        let mut d = flate2::read::DeflateDecoder::new(&out[..]);
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(stored_blocks(&[], true), vec![1, 0, 0, 0xff, 0xff]);
    }

    #[test]
    fn chunk_boundaries_roundtrip() {
        let data: Vec<u8> = (0..(2 * GZIP_CHUNK + 7)).map(|i| (i % 251) as u8).collect();
        for len in [
            GZIP_CHUNK - 1,
            GZIP_CHUNK,
            GZIP_CHUNK + 1,
            2 * GZIP_CHUNK + 7,
        ] {
            let input = &data[..len];
            let (one, _) = compress(input, Compression::Gzip { level: 1 }, 1, Vec::new()).unwrap();
            let (three, _) =
                compress(input, Compression::Gzip { level: 1 }, 3, Vec::new()).unwrap();
            assert_eq!(one, three);
            assert_eq!(gunzip(&one), input);
        }
    }
}
