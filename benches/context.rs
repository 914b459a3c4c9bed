//! Context listing and hashing: 2,000 small files (cold, and again through the stat cache)
//! and one 256 MiB file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln::context::hash::{hash_files, StatCache};
use kiln::context::ignore::PatternMatcher;
use kiln::context::walk::Listing;

fn tree(files: usize, size: usize) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..files {
        let dir = d.path().join(format!("dir{:02}", i / 50));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join(format!("f{i:04}.dat")), data).unwrap();
    }
    d
}

fn bench(c: &mut Criterion) {
    let none = PatternMatcher::new(&[] as &[&str]).unwrap();
    let small = tree(2000, 15 * 1024);
    let mut g = c.benchmark_group("context");
    g.throughput(Throughput::Bytes(2000 * 15 * 1024));
    g.bench_function("scan 2000 files", |b| {
        b.iter(|| Listing::scan(small.path(), &none).unwrap())
    });
    g.bench_function("scan+hash 2000 files, cold", |b| {
        b.iter(|| {
            let l = Listing::scan(small.path(), &none).unwrap();
            let all: Vec<_> = l.entries.iter().collect();
            hash_files(&l, &all, &mut StatCache::default()).unwrap()
        })
    });
    // Files must be older than the racy window before the stat cache trusts them.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let l = Listing::scan(small.path(), &none).unwrap();
    let all: Vec<_> = l.entries.iter().collect();
    let mut warm = StatCache::default();
    hash_files(&l, &all, &mut warm).unwrap();
    g.bench_function("scan+hash 2000 files, stat cache", |b| {
        b.iter(|| {
            let l = Listing::scan(small.path(), &none).unwrap();
            let all: Vec<_> = l.entries.iter().collect();
            hash_files(&l, &all, &mut warm).unwrap()
        })
    });
    g.finish();

    let big = tree(1, 256 << 20);
    let mut g = c.benchmark_group("context-big");
    g.throughput(Throughput::Bytes(256 << 20));
    g.sample_size(10);
    g.bench_function("hash one 256 MiB file", |b| {
        b.iter(|| {
            let l = Listing::scan(big.path(), &none).unwrap();
            let all: Vec<_> = l.entries.iter().collect();
            hash_files(&l, &all, &mut StatCache::default()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
