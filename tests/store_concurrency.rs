#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Concurrent use of one store root: threads stand in for processes here, which is faithful
//! because flock locks belong to each open file, not to the process. The last test runs real
//! kiln processes side by side: 8 builds, an import, pulls from a docker-registry on
//! loopback, prunes and a check.

mod common;

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

/// The files of the image saved in OCI archive `path`, every layer applied in order.
fn saved_files(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::collections::BTreeMap;
    use std::io::Read;
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut outer = tar::Archive::new(fs::File::open(path).unwrap());
    for e in outer.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        blobs.insert(name, bytes);
    }
    let json = |name: &str| -> serde_json::Value { serde_json::from_slice(&blobs[name]).unwrap() };
    let blob = |digest: &str| format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap());
    let index = json("index.json");
    let manifest = json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let mut files = BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let bytes = &blobs[&blob(layer["digest"].as_str().unwrap())];
        let reader: Box<dyn Read> = if layer["mediaType"].as_str().unwrap().ends_with("gzip") {
            Box::new(flate2::read::GzDecoder::new(&bytes[..]))
        } else {
            Box::new(&bytes[..])
        };
        let mut tar = tar::Archive::new(reader);
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            files.insert(name.trim_start_matches("./").to_string(), content);
        }
    }
    files
}

#[test]
fn eight_builds_an_import_pulls_prunes_and_a_check_at_once() {
    use common::{busybox_tar, context, Kiln};
    use std::process::{Command, Stdio};
    let k = Kiln::new();
    k.import_busybox("bb");
    let bin = assert_cmd::cargo::cargo_bin("kiln");
    // Pulls from a registry on loopback run beside the builds: an image with busybox's layer
    // (which the store already has) and one of its own, pushed there from another store.
    let reg = common::LoopbackRegistry::start();
    let pulled: Vec<(String, String)> = match &reg {
        None => Vec::new(),
        Some(reg) => {
            let seeder = Kiln::new();
            seeder.import_busybox("bb");
            let mut out = Vec::new();
            for (tag, content) in [("1", "pulled one\n"), ("2", "pulled two\n")] {
                let ctx = context(&[
                    ("Dockerfile", "FROM bb\nCOPY pulled.txt /pulled.txt\n"),
                    ("pulled.txt", content),
                ]);
                let reference = format!("{}/c/pulled:{tag}", reg.host());
                seeder.ok(&[
                    "build",
                    "-q",
                    "-t",
                    &reference,
                    ctx.path().to_str().unwrap(),
                ]);
                seeder.ok(&["push", "-q", &reference]);
                let v: serde_json::Value =
                    serde_json::from_str(&seeder.ok(&["inspect", &reference])).unwrap();
                out.push((reference, v[0]["Id"].as_str().unwrap().to_string()));
            }
            out
        }
    };
    let contexts: Vec<_> = (0..8)
        .map(|i| {
            let run = if i == 0 { "RUN echo ran > /ran.txt\n" } else { "" };
            context(&[
                (
                    "Dockerfile",
                    &format!(
                        "FROM bb\nCOPY common.txt /common.txt\nCOPY group.txt /group.txt\nCOPY own.txt /own.txt\n{run}"
                    ),
                ),
                ("common.txt", "shared by every build\n"),
                ("group.txt", &format!("group {}\n", i % 2)),
                ("own.txt", &format!("build {i}\n")),
            ])
        })
        .collect();
    let spawn = |args: Vec<String>| {
        Command::new(&bin)
            .arg("--root")
            .arg(k.root())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut children = Vec::new();
    for (i, ctx) in contexts.iter().enumerate() {
        children.push((
            format!("build {i}"),
            spawn(vec![
                "build".into(),
                "--progress=plain".into(),
                "-t".into(),
                format!("app{i}"),
                ctx.path().to_str().unwrap().into(),
            ]),
        ));
    }
    children.push((
        "import".into(),
        spawn(vec![
            "import".into(),
            busybox_tar().to_str().unwrap().into(),
            "imported".into(),
        ]),
    ));
    // Two pulls of each: one of them downloads, the other finds it being (or already)
    // stored.
    for (reference, _) in pulled.iter().chain(&pulled) {
        children.push((
            format!("pull {reference}"),
            spawn(vec!["pull".into(), "-q".into(), reference.clone()]),
        ));
    }
    children.push(("prune".into(), spawn(vec!["prune".into(), "-f".into()])));
    // A check beside them must not mistake work in progress for damage.
    children.push((
        "system check".into(),
        spawn(vec!["system".into(), "check".into()]),
    ));
    children.push((
        "builder prune".into(),
        spawn(vec![
            "builder".into(),
            "prune".into(),
            "-f".into(),
            "-a".into(),
        ]),
    ));
    for (what, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    for i in 0..8 {
        let archive = k.dir.path().join(format!("app{i}.tar"));
        k.ok(&["save", "-o", archive.to_str().unwrap(), &format!("app{i}")]);
        let files = saved_files(&archive);
        assert_eq!(files["common.txt"], b"shared by every build\n", "app{i}");
        assert_eq!(
            files["group.txt"],
            format!("group {}\n", i % 2).as_bytes(),
            "app{i}"
        );
        assert_eq!(
            files["own.txt"],
            format!("build {i}\n").as_bytes(),
            "app{i}"
        );
        assert!(files.contains_key("bin/busybox"), "app{i} lost its base");
        assert_eq!(files.contains_key("ran.txt"), i == 0, "app{i}");
    }
    k.ok(&["inspect", "imported"]);
    for (i, (reference, id)) in pulled.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", reference])).unwrap();
        assert_eq!(v[0]["Id"].as_str().unwrap(), id, "{reference}");
        let archive = k.dir.path().join(format!("pulled{i}.tar"));
        k.ok(&["save", "-o", archive.to_str().unwrap(), reference]);
        let files = saved_files(&archive);
        let want = if i == 0 {
            "pulled one\n"
        } else {
            "pulled two\n"
        };
        assert_eq!(files["pulled.txt"], want.as_bytes(), "{reference}");
        assert!(
            files.contains_key("bin/busybox"),
            "{reference} lost its base"
        );
    }
    let check = k.ok(&["system", "check"]);
    assert!(check.contains("the store is sound"), "{check}");

    // The cache is shared, not corrupted (the prunes may have emptied it meanwhile, so fill
    // it again first): a build of a sibling Dockerfile hits the steps they share.
    k.ok(&[
        "build",
        "-q",
        "-t",
        "again3",
        contexts[3].path().to_str().unwrap(),
    ]);
    let out = k
        .cmd()
        .args(["build", "--progress=plain", "-t", "again5"])
        .arg(contexts[5].path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("CACHED COPY common.txt"), "{log}");
    assert!(log.contains("CACHED COPY group.txt"), "{log}");
    let check = k.ok(&["system", "check"]);
    assert!(check.contains("the store is sound"), "{check}");
}
