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

/// Raw deflate of one chunk with a fresh compressor. Not-last chunks end with a sync flush
/// (an empty stored block), so the next chunk starts on a byte boundary.
fn deflate_chunk(data: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
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
