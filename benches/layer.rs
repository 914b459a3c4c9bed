#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Layer throughput: tar creation (a tree of small files, one big file) and blob compression
//! (gzip and zstd, incompressible and text-like data, 1 and 2 threads).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln::layer::{compress, BuildOptions, Compression, LayerBuilder, TreeOptions};
use std::fs;
use std::hint::black_box;
use std::io;
use std::path::Path;
use std::time::Duration;

const BIG: usize = 64 << 20;

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

/// Text-like bytes: words of a small vocabulary in random order (compresses about 6:1).
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

/// 2,000 files of 0–8 KiB in 40 directories, like a package install.
fn small_tree(root: &Path) {
    let data = text(8192);
    for d in 0..40 {
        let dir = root.join(format!("dir{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            let len = (d * 50 + f) * 37 % 8192;
            fs::write(dir.join(format!("file{f:03}.txt")), &data[..len]).unwrap();
        }
    }
}

fn tar_creation(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    small_tree(&tree);
    let big = tmp.path().join("big");
    fs::create_dir(&big).unwrap();
    fs::write(big.join("blob"), random(BIG, 1)).unwrap();

    let mut g = c.benchmark_group("tar");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(2000));
    g.bench_function("2000 small files", |b| {
        b.iter(|| {
            let mut lb = LayerBuilder::new(io::sink(), BuildOptions::default());
            lb.append_tree(&tree, TreeOptions::default()).unwrap();
            black_box(lb.finish().unwrap().1)
        })
    });
    g.throughput(Throughput::Bytes(BIG as u64));
    g.bench_function("one 64 MiB file", |b| {
        b.iter(|| {
            let mut lb = LayerBuilder::new(io::sink(), BuildOptions::default());
            lb.append_tree(&big, TreeOptions::default()).unwrap();
            black_box(lb.finish().unwrap().1)
        })
    });
    g.finish();
}

fn compression(c: &mut Criterion) {
    let inputs = [("random", random(BIG, 2)), ("text", text(BIG))];
    let algos = [
        ("gzip-6", Compression::Gzip { level: 6 }),
        ("zstd-3", Compression::Zstd { level: 3 }),
    ];
    let mut g = c.benchmark_group("compress 64MiB");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(BIG as u64));
    for (aname, algo) in algos {
        for (dname, data) in &inputs {
            for threads in [1, 2] {
                let id = BenchmarkId::new(format!("{aname}/{dname}"), format!("{threads}t"));
                g.bench_with_input(id, data, |b, data| {
                    b.iter(|| black_box(compress(&data[..], algo, threads, io::sink()).unwrap().1))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, tar_creation, compression);
criterion_main!(benches);
