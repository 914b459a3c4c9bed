#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `kiln save` and `kiln load` through the real binary: archives checked by independent readers
//! (skopeo, umoci, podman), round trips between fresh stores, and corrupt archives refused
//! without a trace in the store.

mod common;

use common::{busybox_tar, have, run, Kiln};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A store with busybox imported reproducibly as `busybox:latest`; returns the image ID.
fn store_with_busybox() -> (Kiln, String) {
    let k = Kiln::new();
    let out = k
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("import")
        .arg(busybox_tar())
        .arg("busybox:latest")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (k, id)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn blob_count(k: &Kiln) -> usize {
    std::fs::read_dir(k.root().join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `images -q --no-trunc --digests` rows: (name, manifest digest, ID).
fn listing(k: &Kiln) -> Vec<String> {
    let mut v: Vec<String> = k
        .ok(&["images", "--digests", "--no-trunc"])
        .lines()
        .skip(1)
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .take(4)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    v.sort();
    v
}

/// Flips one byte in the middle of the biggest member of a tar archive (a layer).
fn corrupt_biggest_member(src: &Path, dst: &Path) {
    let mut data = std::fs::read(src).unwrap();
    let mut archive = tar::Archive::new(&data[..]);
    let (offset, size) = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.raw_file_position(), e.size())
        })
        .max_by_key(|(_, size)| *size)
        .unwrap();
    assert!(size > 100_000, "expected a layer-sized member");
    data[(offset + size / 2) as usize] ^= 0xff;
    std::fs::write(dst, data).unwrap();
}

#[test]
fn oci_archive_is_read_by_skopeo_and_umoci() {
    let (k, id) = store_with_busybox();
    let file = k.dir.path().join("busybox-oci.tar");
    k.ok(&["save", "busybox", "-o", path_str(&file)]);
    assert!(file.is_file());

    // The archive is an OCI layout: oci-layout, index.json naming the tag, blobs.
    let mut names = Vec::new();
    for e in tar::Archive::new(std::fs::File::open(&file).unwrap())
        .entries()
        .unwrap()
    {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert!(names.contains(&"oci-layout".to_string()), "{names:?}");
    assert!(names.contains(&"index.json".to_string()), "{names:?}");
    assert!(
        names.contains(&format!("blobs/sha256/{}", &id[7..])),
        "{names:?}"
    );

    if have("skopeo") {
        let archive = format!("oci-archive:{}", file.display());
        let v: serde_json::Value =
            serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &archive]))).unwrap();
        assert_eq!(v["Os"], "linux");
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
        let raw: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!("{archive}:docker.io/library/busybox:latest"),
        ])))
        .unwrap();
        assert_eq!(raw["config"]["digest"], id.as_str());
        assert_eq!(
            raw["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        // Copying reads and verifies every blob.
        let dir = k.dir.path().join("copied");
        run(Command::new("skopeo")
            .args(["copy", "--quiet", &archive])
            .arg(format!("dir:{}", dir.display())));
        assert!(dir.join(&id[7..]).is_file());
        let layer = raw["layers"][0]["digest"].as_str().unwrap();
        assert!(dir.join(&layer[7..]).is_file());
    }

    if have("umoci") {
        let layout = k.dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(&file)
            .arg("-C")
            .arg(&layout));
        let ls = run(Command::new("umoci").arg("ls").arg("--layout").arg(&layout));
        assert_eq!(ls.trim(), "docker.io/library/busybox:latest");
        let bundle = k.dir.path().join("bundle");
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!(
                "{}:docker.io/library/busybox:latest",
                layout.display()
            ))
            .arg(&bundle));
        let bb = bundle.join("rootfs/bin/busybox");
        assert_eq!(
            std::fs::read(bb).unwrap(),
            std::fs::read("/bin/busybox").unwrap()
        );
        assert_eq!(
            std::fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
            PathBuf::from("/bin/busybox")
        );
    }
}

#[test]
fn second_save_reuses_the_compressed_layer() {
    let (k, id) = store_with_busybox();
    let diff_id = k.ok(&["inspect", "-f", "{{json .RootFS.Layers}}", "busybox"]);
    let diff_id: Vec<String> = serde_json::from_str(diff_id.trim()).unwrap();
    let diff_hex = &diff_id[0][7..];
    let before = blob_count(&k);
    for algo in ["gzip", "zstd"] {
        let a = k.dir.path().join(format!("a-{algo}.tar"));
        let b = k.dir.path().join(format!("b-{algo}.tar"));
        k.ok(&["save", "--compression", algo, "-o", path_str(&a), "busybox"]);
        let record = k.root().join(format!("compressed/{diff_hex}/{algo}.json"));
        assert!(record.is_file(), "{algo}: no compressed-variant record");
        let after_first = blob_count(&k);
        k.ok(&["save", "--compression", algo, "-o", path_str(&b), &id]);
        assert_eq!(
            blob_count(&k),
            after_first,
            "{algo}: the second save made a new blob"
        );
        let first = std::fs::read(&a).unwrap();
        let second = std::fs::read(&b).unwrap();
        // Saved by ID the index has no name, but the blobs are the same bytes.
        let compressed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        let layer_hex = &compressed["digest"].as_str().unwrap()[7..];
        for archive in [&first, &second] {
            let mut found = false;
            for e in tar::Archive::new(&archive[..]).entries().unwrap() {
                let e = e.unwrap();
                if e.path().unwrap().ends_with(layer_hex) {
                    found = true;
                }
            }
            assert!(found, "{algo}: archive lacks the recorded compressed layer");
        }
        // The same save twice gives the same bytes.
        let c = k.dir.path().join(format!("c-{algo}.tar"));
        k.ok(&["save", "--compression", algo, "-o", path_str(&c), "busybox"]);
        assert_eq!(std::fs::read(&c).unwrap(), first, "{algo}: saves differ");
    }
    assert_eq!(blob_count(&k), before + 2, "one gzip and one zstd blob");
}

#[test]
fn save_then_load_into_a_fresh_store_keeps_the_image() {
    let (k, id) = store_with_busybox();
    k.ok(&["tag", "busybox", "127.0.0.1:5000/busybox:v1"]);
    let want = listing(&k);
    for (format, compression) in [("oci", "gzip"), ("oci", "zstd"), ("docker", "gzip")] {
        let file = k.dir.path().join(format!("{format}-{compression}.tar"));
        k.ok(&[
            "save",
            "--format",
            format,
            "--compression",
            compression,
            "-o",
            path_str(&file),
            "busybox",
            "127.0.0.1:5000/busybox:v1",
        ]);
        let fresh = Kiln::new();
        let out = fresh.ok(&["load", "-i", path_str(&file)]);
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "Loaded image: 127.0.0.1:5000/busybox:v1",
                "Loaded image: busybox:latest"
            ],
            "{format}/{compression}"
        );
        // Same ID, same names, same manifest digest (layers are stored uncompressed again).
        assert_eq!(listing(&fresh), want, "{format}/{compression}");
        let v: serde_json::Value =
            serde_json::from_str(&fresh.ok(&["inspect", "busybox"])).unwrap();
        assert_eq!(v[0]["Id"], id.as_str());
        // Loading again changes nothing.
        fresh.ok(&["load", "-i", path_str(&file)]);
        assert_eq!(listing(&fresh), want);
    }
}

#[test]
fn load_reads_compressed_archives_from_stdin_and_unnamed_images() {
    let (k, id) = store_with_busybox();
    let file = k.dir.path().join("by-id.tar");
    k.ok(&[
        "save",
        "--format",
        "docker",
        "-o",
        path_str(&file),
        &id[7..19],
    ]);
    let gz = k.dir.path().join("by-id.tar.gz");
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", file.display(), gz.display())));
    let fresh = Kiln::new();
    let out = fresh
        .cmd()
        .arg("load")
        .pipe_stdin(&gz)
        .unwrap()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("Loaded image ID: {id}\n")
    );
    let images = fresh.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(images, format!("{id}\n"));
    assert!(fresh.ok(&["images"]).contains("<none>"));

    // An OCI archive compressed with zstd as a whole, by file.
    let oci = k.dir.path().join("oci.tar");
    k.ok(&["save", "-o", path_str(&oci), "busybox"]);
    let zst = k.dir.path().join("oci.tar.zst");
    std::fs::write(
        &zst,
        zstd::encode_all(&std::fs::read(&oci).unwrap()[..], 3).unwrap(),
    )
    .unwrap();
    assert_eq!(
        fresh.ok(&["load", "-q", "-i", path_str(&zst)]),
        "",
        "-q prints nothing"
    );
    assert!(fresh.ok(&["images"]).contains("busybox"));
}

#[test]
fn corrupt_archives_are_refused_and_leave_the_store_unchanged() {
    let (k, _) = store_with_busybox();
    for format in ["oci", "docker"] {
        let good = k.dir.path().join(format!("good-{format}.tar"));
        let bad = k.dir.path().join(format!("bad-{format}.tar"));
        k.ok(&["save", "--format", format, "-o", path_str(&good), "busybox"]);
        corrupt_biggest_member(&good, &bad);
        let fresh = Kiln::new();
        fresh.ok(&["images"]);
        let out = fresh
            .cmd()
            .args(["load", "-i", path_str(&bad)])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{format}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("digest mismatch"), "{format}: {err}");
        assert!(err.contains(path_str(&bad)), "{format}: {err}");
        assert_eq!(
            fresh.ok(&["images", "-q"]),
            "",
            "{format}: something was tagged"
        );
        assert_eq!(blob_count(&fresh), 0, "{format}: blobs were left behind");
        assert_eq!(
            std::fs::read_dir(fresh.root().join("tmp")).unwrap().count(),
            0,
            "{format}: staging was left behind"
        );
        // The intact archive still loads into that store.
        fresh.ok(&["load", "-i", path_str(&good)]);
        assert!(fresh.ok(&["images"]).contains("busybox"));
    }

    // Not an image archive at all.
    let junk = k.dir.path().join("junk.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&junk)
        .arg("-C")
        .arg(busybox_tar().parent().unwrap())
        .arg("busybox.tar"));
    let fresh = Kiln::new();
    let out = fresh
        .cmd()
        .args(["load", "-i", path_str(&junk)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an image archive"));
}

#[test]
fn failed_save_leaves_nothing_behind() {
    let (k, _) = store_with_busybox();
    let out_dir = k.dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let file = out_dir.join("x.tar");
    let out = k
        .cmd()
        .args(["save", "-o", path_str(&file), "busybox", "ghost:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost:1"));
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);

    // An existing file is kept as it was.
    std::fs::write(&file, b"precious").unwrap();
    let out = k
        .cmd()
        .args([
            "save",
            "--format",
            "docker",
            "-o",
            path_str(&file),
            "ghost:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 1);
}

#[test]
fn docker_archive_is_loaded_by_podman() {
    if !have("podman") {
        return;
    }
    let (k, id) = store_with_busybox();
    let file = k.dir.path().join("busybox-docker.tar");
    k.ok(&[
        "save",
        "--format",
        "docker",
        "-o",
        path_str(&file),
        "busybox",
    ]);
    let storage = tempfile::tempdir().unwrap();
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(storage.path().join("root"))
            .arg("--runroot")
            .arg(storage.path().join("runroot"))
            .args(["--storage-driver", "vfs"]);
        c
    };
    let out = run(podman().args(["load", "-i"]).arg(&file));
    assert!(
        out.contains("Loaded image: docker.io/library/busybox:latest"),
        "{out}"
    );
    let podman_id = run(podman().args([
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "docker.io/library/busybox:latest",
    ]));
    assert_eq!(format!("sha256:{}", podman_id.trim()), id);

    // And podman's own docker-archive of it loads back into kiln with the same ID.
    let back = k.dir.path().join("from-podman.tar");
    run(podman()
        .args(["save", "--format", "docker-archive", "-o"])
        .arg(&back)
        .arg("docker.io/library/busybox:latest"));
    let fresh = Kiln::new();
    fresh.ok(&["load", "-i", path_str(&back)]);
    assert_eq!(fresh.ok(&["images", "-q", "--no-trunc"]), format!("{id}\n"));
}
