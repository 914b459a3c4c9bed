#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Concurrent use of one store root: threads stand in for processes here, which is faithful
//! because flock locks belong to each open file, not to the process.

use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use kiln::image::{media, Digest, ImageConfig, Index, Reference};
use kiln::store::{GcOptions, Store, StoreError};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn two_threads_one_snapshot_fill() {
    let (_d, s) = open();
    let diff_id = Digest::sha256_of(b"a layer");
    let fills = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (s, diff_id, fills, start) =
                (s.clone(), diff_id.clone(), fills.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                s.ensure_snapshot(&diff_id, |dir| {
                    fills.fetch_add(1, Ordering::SeqCst);
                    // Slow enough that the other thread arrives while this one fills.
                    thread::sleep(Duration::from_millis(100));
                    fs::create_dir(dir.join("bin"))?;
                    fs::write(dir.join("bin/sh"), b"#!")
                })
                .unwrap()
            })
        })
        .collect();
    let paths: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(fills.load(Ordering::SeqCst), 1, "exactly one fill");
    assert_eq!(paths[0], paths[1]);
    assert_eq!(fs::read(paths[0].join("bin/sh")).unwrap(), b"#!");
    assert_eq!(
        fs::read_dir(s.root().join("tmp")).unwrap().count(),
        0,
        "no staging left"
    );
}

#[test]
fn same_blob_from_many_writers() {
    let (_d, s) = open();
    let content = vec![7u8; 1 << 20];
    let want = Digest::sha256_of(&content);
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (s, content, want) = (s.clone(), content.clone(), want.clone());
            thread::spawn(move || {
                let mut w = s.blob_writer().unwrap();
                for chunk in content.chunks(4096) {
                    w.write_all(chunk).unwrap();
                }
                w.commit(Some(&want)).unwrap()
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap().digest, want);
    }
    assert_eq!(
        fs::read_dir(s.root().join("blobs/sha256")).unwrap().count(),
        1
    );
    assert_eq!(fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
    assert_eq!(s.read_blob(&want).unwrap(), content);
}

fn small_image(s: &Store, seed: &str) -> kiln::image::Descriptor {
    let layer = s.put_bytes(media::OCI_LAYER_TAR, seed.as_bytes()).unwrap();
    let mut config = ImageConfig::default();
    config.rootfs.diff_ids.push(layer.digest.clone());
    s.put_image(&config, &[layer]).unwrap().0
}

#[test]
fn concurrent_tags_are_never_lost() {
    let (_d, s) = open();
    let m = small_image(&s, "shared");
    let workers: Vec<_> = (0..6)
        .map(|t| {
            let (s, m) = (s.clone(), m.clone());
            thread::spawn(move || {
                for i in 0..15 {
                    s.tag(&Reference::parse(&format!("t{t}/img:{i}")).unwrap(), &m)
                        .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let index = s.read_index().unwrap();
    assert_eq!(index.manifests.len(), 90, "every tag written survives");
    assert_eq!(s.list().unwrap()[0].references.len(), 90);
}

#[test]
fn readers_never_see_a_partial_index() {
    let (_d, s) = open();
    let images: Vec<_> = (0..4)
        .map(|i| small_image(&s, &format!("img{i}")))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 300 {
                let m = &images[n % images.len()];
                s.tag(&Reference::parse(&format!("app:{}", n % 7)).unwrap(), m)
                    .unwrap();
                n += 1;
            }
        })
    };
    let index_path = s.root().join("index.json");
    let mut reads = 0;
    while !writer.is_finished() {
        let bytes = fs::read(&index_path).unwrap();
        Index::from_json(&bytes)
            .unwrap_or_else(|e| panic!("partial index after {reads} reads: {e}"));
        reads += 1;
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(reads > 0);
}

/// Runs gc with no grace period in a loop until `stop`; returns how many runs it made.
fn gc_loop(s: &Store, stop: &Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    let (s, stop) = (s.clone(), stop.clone());
    thread::spawn(move || {
        let mut runs = 0;
        while !stop.load(Ordering::SeqCst) {
            s.gc(GcOptions {
                keep_cache: false,
                grace: Duration::ZERO,
            })
            .unwrap();
            runs += 1;
            thread::sleep(Duration::from_millis(1));
        }
        runs
    })
}

fn assert_no_dangling_tags(s: &Store) {
    let index = s.read_index().unwrap();
    for entry in &index.manifests {
        let manifest = s
            .read_manifest(&entry.digest)
            .unwrap_or_else(|e| panic!("{:?}: {e}", entry.ref_name()));
        assert!(
            s.has_blob(&manifest.config.digest),
            "{:?} lost its config",
            entry.ref_name()
        );
        for l in &manifest.layers {
            assert!(
                s.has_blob(&l.digest),
                "{:?} lost layer {}",
                entry.ref_name(),
                l.digest
            );
        }
    }
}

#[test]
fn gc_racing_builds_never_leaves_a_dangling_tag() {
    let (_d, s) = open();
    let stop = Arc::new(AtomicBool::new(false));
    let gc = gc_loop(&s, &stop);
    let (mut tagged, mut refused) = (0, 0);
    for i in 0..40 {
        let reference = Reference::parse(&format!("build:{}", i % 5)).unwrap();
        // Without grace or lease, gc may sweep fresh blobs before the tag: then tag must refuse.
        let attempt = (|| -> Result<(), StoreError> {
            let layer = s.put_bytes(media::OCI_LAYER_TAR, format!("layer {i}").as_bytes())?;
            let mut config = ImageConfig::default();
            config.rootfs.diff_ids.push(layer.digest.clone());
            let (m, _) = s.put_image(&config, &[layer])?;
            s.tag(&reference, &m)
        })();
        match attempt {
            Ok(()) => tagged += 1,
            Err(StoreError::MissingBlob(_)) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let gc_runs = gc.join().unwrap();
    assert!(gc_runs > 0, "gc never ran");
    assert_eq!(tagged + refused, 40);
    assert_no_dangling_tags(&s);
}

#[test]
fn leases_let_builds_finish_under_aggressive_gc() {
    let (_d, s) = open();
    let stop = Arc::new(AtomicBool::new(false));
    let gc = gc_loop(&s, &stop);
    for i in 0..20 {
        let lease = s.lease().unwrap();
        let reference = Reference::parse(&format!("leased:{i}")).unwrap();
        let mut attempts = 0;
        // What a build does: pin each blob as soon as it exists; retry a step whose fresh
        // blob gc took before the pin.
        let done = loop {
            attempts += 1;
            assert!(attempts <= 200, "build {i} never finished");
            let Ok(layer) =
                s.put_bytes(media::OCI_LAYER_TAR, format!("leased layer {i}").as_bytes())
            else {
                continue;
            };
            if lease.pin(&layer.digest).is_err() {
                continue;
            }
            let mut config = ImageConfig::default();
            config.rootfs.diff_ids.push(layer.digest.clone());
            let Ok((m, _)) = s.put_image(&config, &[layer]) else {
                continue;
            };
            if lease.pin(&m.digest).is_err() {
                continue;
            }
            match s.tag(&reference, &m) {
                Ok(()) => break m,
                Err(StoreError::MissingBlob(_)) => continue,
                Err(e) => panic!("unexpected error: {e}"),
            }
        };
        drop(lease);
        assert_eq!(
            s.resolve(&reference.to_string()).unwrap().manifest.digest,
            done.digest
        );
    }
    stop.store(true, Ordering::SeqCst);
    gc.join().unwrap();
    assert_no_dangling_tags(&s);
    assert_eq!(s.list().unwrap().len(), 20);
}
