#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Compressed blobs: valid for independent readers (flate2, zstd, and the gzip/zstd command
//! line tools when installed), and byte-identical for 1, 2, 4 and 8 threads.

use kiln::layer::{compress, compress_file, Compression, Sha256Digest, GZIP_CHUNK};
use std::io::Read;
use std::process::Command;

/// Deterministic incompressible bytes (xorshift64).
fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic text-like bytes: words from a small vocabulary, lines of varying length.
fn text(len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "layer",
        "kiln",
        "the",
        "of",
        "image",
        "build",
        "RUN",
        "apt-get",
        "install",
        "-y",
        "COPY",
        "/usr/local/bin",
        "=",
        "sha256",
        "config",
        "\n",
    ];
    let r = random(len, 7);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(WORDS[usize::from(r[i % r.len().max(1)] & 15)].as_bytes());
        out.push(b' ');
        i += 1;
    }
    out.truncate(len);
    out
}

fn gunzip_single_member(data: &[u8]) -> Vec<u8> {
    // GzDecoder (not MultiGzDecoder) stops after the first member: getting all the input back
    // proves the output is one member.
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn tool_accepts(tool: &str, data: &[u8], suffix: &str) -> Option<bool> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("blob{suffix}"));
    std::fs::write(&path, data).unwrap();
    let out = Command::new(tool).arg("-t").arg(&path).output().ok()?;
    Some(out.status.success())
}

fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("1 byte".into(), b"x".to_vec()),
        ("100 bytes text".into(), text(100)),
    ];
    for (name, len) in [
        ("chunk-1", GZIP_CHUNK - 1),
        ("chunk", GZIP_CHUNK),
        ("chunk+1", GZIP_CHUNK + 1),
        ("3 chunks+12345", 3 * GZIP_CHUNK + 12345),
    ] {
        v.push((format!("{name} random"), random(len, len as u64)));
        v.push((format!("{name} text"), text(len)));
    }
    // Enough chunks that 8 threads run several batches.
    v.push(("40 chunks mixed".into(), {
        let mut m = text(20 * GZIP_CHUNK);
        m.extend(random(20 * GZIP_CHUNK + 77, 3));
        m
    }));
    v
}

#[test]
fn gzip_is_valid_and_identical_for_every_thread_count() {
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut tool_checked = 0;
    for (name, input) in inputs() {
        for level in [1, 6, 9] {
            if level == 9 && input.len() > 4 * GZIP_CHUNK {
                continue; // level 9 on the big input adds minutes in debug builds, no coverage
            }
            let algo = Compression::Gzip { level };
            let mut reference: Option<Vec<u8>> = None;
            for threads in [1, 2, 4, 8] {
                checked += 1;
                let label = format!("{name}, level {level}, {threads} threads");
                let (blob, d) = compress(&input[..], algo, threads, Vec::new()).unwrap();
                if d.size != blob.len() as u64 || d.digest != Sha256Digest::of(&blob) {
                    failures.push(format!("{label}: digest/size do not match the output"));
                }
                if gunzip_single_member(&blob) != input {
                    failures.push(format!("{label}: does not decompress to the input"));
                }
                match &reference {
                    None => reference = Some(blob),
                    Some(r) if *r != blob => {
                        failures.push(format!("{label}: differs from 1 thread"))
                    }
                    Some(_) => {}
                }
            }
            if let Some(blob) = &reference {
                match tool_accepts("gzip", blob, ".gz") {
                    Some(true) => tool_checked += 1,
                    Some(false) => failures.push(format!("{name}, level {level}: gzip -t failed")),
                    None => {}
                }
            }
        }
    }
    eprintln!("{checked} gzip outputs checked, {tool_checked} also by gzip -t");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gzip_of_the_same_input_is_the_same_across_runs_and_sources() {
    let data = text(2 * GZIP_CHUNK + 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in");
    std::fs::write(&path, &data).unwrap();
    let algo = Compression::Gzip { level: 6 };
    let (a, da) = compress(&data[..], algo, 2, Vec::new()).unwrap();
    let (b, db) = compress(&data[..], algo, 2, Vec::new()).unwrap();
    let (c, dc) = compress_file(&path, algo, 4, Vec::new()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!((da, db), (dc, dc));
    // A source that hands out tiny reads must not move chunk boundaries.
    let (d, _) = compress(Dribble(&data[..]), algo, 3, Vec::new()).unwrap();
    assert_eq!(a, d);
    // Parallel chunks cost little ratio: within 1% of a single flate2 stream.
    let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    std::io::Write::write_all(&mut single, &data).unwrap();
    let single = single.finish().unwrap();
    assert!(
        (a.len() as f64) < single.len() as f64 * 1.01,
        "parallel {} vs single {}",
        a.len(),
        single.len()
    );
}

struct Dribble<'a>(&'a [u8]);
impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(4093);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn zstd_is_valid_and_identical_for_every_thread_count() {
    let mut cases = inputs();
    // Bigger than several zstd multithreading jobs (8 MiB at level 3).
    cases.push(("30 MiB mixed".into(), {
        let mut m = text(15 << 20);
        m.extend(random(15 << 20, 11));
        m
    }));
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, input) in cases {
        let mut reference: Option<Vec<u8>> = None;
        for threads in [1, 2, 4, 8] {
            checked += 1;
            let label = format!("{name}, {threads} threads");
            let (blob, d) = compress(
                &input[..],
                Compression::Zstd { level: 3 },
                threads,
                Vec::new(),
            )
            .unwrap();
            if d.size != blob.len() as u64 || d.digest != Sha256Digest::of(&blob) {
                failures.push(format!("{label}: digest/size do not match the output"));
            }
            if zstd::decode_all(&blob[..]).unwrap() != input {
                failures.push(format!("{label}: does not decompress to the input"));
            }
            match &reference {
                None => reference = Some(blob),
                Some(r) if *r != blob => failures.push(format!("{label}: differs from 1 thread")),
                Some(_) => {}
            }
        }
        if let Some(blob) = &reference {
            if tool_accepts("zstd", blob, ".zst") == Some(false) {
                failures.push(format!("{name}: zstd -t failed"));
            }
        }
    }
    eprintln!("{checked} zstd outputs checked");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Pinned outputs: a change here changes every blob digest kiln produces (and so every
/// registry cache hit). If a dependency upgrade moves them, that must be a decision.
#[test]
fn golden_digests() {
    let data = text(3 * GZIP_CHUNK + 5);
    let gz = compress(
        &data[..],
        Compression::Gzip { level: 6 },
        2,
        std::io::sink(),
    )
    .unwrap()
    .1;
    let zst = compress(
        &data[..],
        Compression::Zstd { level: 3 },
        2,
        std::io::sink(),
    )
    .unwrap()
    .1;
    let got = [gz.digest.to_string(), zst.digest.to_string()];
    assert_eq!(
        got,
        [
            "sha256:e63335cbc737791e3abe6b5ecd357a7b3140bd36b27480998fe75b5c89f17fbf",
            "sha256:f7c8eae0c828726fdee086aa8d2e38dd353717abc9bbd99425319a81acbea3cb"
        ]
    );
}
