#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `kiln system check` / `kiln fsck` against damage made by hand: a flipped byte in a blob, a
//! deleted layer, a hand-edited index.json, a changed snapshot, a cache entry naming a
//! missing blob, and leftovers of killed processes. Repair removes exactly what is broken;
//! the sound images keep working (`inspect`, `save`, a build on top of them).

mod common;

use common::{context, Kiln};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

struct Checked {
    code: i32,
    stdout: String,
}

fn check(k: &Kiln, args: &[&str]) -> Checked {
    let out = k
        .cmd()
        .args(["system", "check"])
        .args(args)
        .output()
        .unwrap();
    Checked {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
    }
}

/// busybox imported as `bb`, and `app` built on it with a COPY layer of its own.
fn two_images() -> Kiln {
    let k = Kiln::new();
    k.import_busybox("bb");
    let ctx = context(&[
        ("Dockerfile", "FROM bb\nCOPY hello.txt /hello.txt\n"),
        ("hello.txt", "hello from app\n"),
    ]);
    k.ok(&["build", "-q", "-t", "app", ctx.path().to_str().unwrap()]);
    k
}

fn layers(k: &Kiln, image: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", image])).unwrap();
    v[0]["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn blob_path(k: &Kiln, digest: &str) -> PathBuf {
    k.root()
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The image still resolves, inspects and saves to an archive.
fn still_works(k: &Kiln, image: &str) {
    k.ok(&["inspect", image]);
    let out = k.dir.path().join(format!("{image}.tar"));
    k.ok(&["save", "-o", out.to_str().unwrap(), image]);
    assert!(fs::metadata(&out).unwrap().len() > 0);
}

#[test]
fn sound_store_checks_clean_and_fsck_is_an_alias() {
    let k = two_images();
    let c = check(&k, &[]);
    assert_eq!(c.code, 0, "{}", c.stdout);
    assert!(c.stdout.contains("the store is sound"), "{}", c.stdout);
    assert!(c.stdout.contains("2 snapshots") || c.stdout.contains("snapshots"));
    let out = k.cmd().arg("fsck").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("the store is sound"));
}

#[test]
fn corrupt_blob_byte_is_found_and_repaired() {
    let k = two_images();
    let app_layer = layers(&k, "app").pop().unwrap();
    let path = blob_path(&k, &app_layer);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&path, bytes).unwrap();

    let c = check(&k, &[]);
    assert_eq!(c.code, 1, "{}", c.stdout);
    assert!(
        c.stdout.contains(&format!("problem: blob {app_layer}")),
        "{}",
        c.stdout
    );
    assert!(c.stdout.contains("content hashes to"), "{}", c.stdout);
    assert!(
        c.stdout
            .contains("problem: tag docker.io/library/app:latest"),
        "{}",
        c.stdout
    );
    assert!(!c.stdout.contains("library/bb"), "{}", c.stdout);

    let r = check(&k, &["--repair"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("— removed"), "{}", r.stdout);
    assert!(!path.exists());
    let c = check(&k, &[]);
    assert_eq!(c.code, 0, "{}", c.stdout);
    assert!(!c.stdout.contains("problem"), "{}", c.stdout);
    still_works(&k, "bb");
    assert!(!k
        .cmd()
        .args(["inspect", "app"])
        .output()
        .unwrap()
        .status
        .success());
    // The same build works again: the cache entry for the corrupt layer went with it.
    let ctx = context(&[
        ("Dockerfile", "FROM bb\nCOPY hello.txt /hello.txt\n"),
        ("hello.txt", "hello from app\n"),
    ]);
    k.ok(&["build", "-q", "-t", "app", ctx.path().to_str().unwrap()]);
    still_works(&k, "app");
    assert_eq!(check(&k, &[]).code, 0);
}

#[test]
fn deleted_layer_breaks_only_its_tag() {
    let k = two_images();
    k.ok(&["tag", "bb", "bb2"]);
    let app_layer = layers(&k, "app").pop().unwrap();
    fs::remove_file(blob_path(&k, &app_layer)).unwrap();
    let c = check(&k, &[]);
    assert_eq!(c.code, 1, "{}", c.stdout);
    assert!(
        c.stdout.contains(&format!(
            "tag docker.io/library/app:latest: layer {app_layer} is missing"
        )),
        "{}",
        c.stdout
    );
    let r = check(&k, &["--repair"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("removed from index.json"), "{}", r.stdout);
    assert_eq!(check(&k, &[]).code, 0);
    still_works(&k, "bb");
    still_works(&k, "bb2");
    let images = k.ok(&["images"]);
    assert!(!images.contains("app"), "{images}");
}

#[test]
fn hand_damaged_index_json_is_named() {
    let k = two_images();
    let index = k.root().join("index.json");
    let text = fs::read_to_string(&index).unwrap();
    fs::write(&index, &text[..text.len() / 2]).unwrap();
    let c = check(&k, &[]);
    assert_eq!(c.code, 1, "{}", c.stdout);
    assert!(
        c.stdout.contains(&format!("problem: {}", index.display())),
        "{}",
        c.stdout
    );
    // Repair does not guess tags: the file is left for a human, and said so.
    let r = check(&k, &["--repair"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("by hand"), "{}", r.stdout);
    let out = k.cmd().args(["images"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&index.display().to_string()), "{err}");
    // Blobs were left alone: restoring the file restores the images.
    fs::write(&index, &text).unwrap();
    assert_eq!(check(&k, &[]).code, 0);
    still_works(&k, "app");
}

#[test]
fn changed_snapshot_is_named_and_made_again() {
    let k = two_images();
    // A RUN step unpacks the base into a snapshot.
    let ctx = context(&[("Dockerfile", "FROM bb\nRUN cat /bin/busybox > /dev/null\n")]);
    k.ok(&["build", "-q", "-t", "ran", ctx.path().to_str().unwrap()]);
    let snapshots = k.root().join("snapshots");
    let snap = fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("bin").is_dir())
        .expect("a busybox snapshot");
    fs::write(snap.join("bin/extra-file"), b"not from the layer").unwrap();
    let c = check(&k, &[]);
    assert_eq!(c.code, 1, "{}", c.stdout);
    assert!(
        c.stdout.contains("unexpected bin/extra-file"),
        "{}",
        c.stdout
    );
    let r = check(&k, &["--repair"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(!snap.exists());
    assert_eq!(check(&k, &[]).code, 0);
    let ctx = context(&[(
        "Dockerfile",
        "FROM bb\nRUN ls /bin/extra-file || echo clean > /r\n",
    )]);
    k.ok(&["build", "-q", "-t", "ran2", ctx.path().to_str().unwrap()]);
    assert!(snap.is_dir(), "made again from the layer");
    assert!(!snap.join("bin/extra-file").exists());
    assert_eq!(check(&k, &[]).code, 0);
}

#[test]
fn cache_entry_naming_a_missing_blob_is_removed() {
    let k = two_images();
    let cache = k.root().join("cache");
    let entry = fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let ghost = format!("sha256:{}", "ab".repeat(32));
    fs::write(
        &entry,
        format!(
            r#"{{"layer":{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ghost}","size":1}},"created":"2024-01-01T00:00:00Z","last_used":"2024-01-01T00:00:00Z"}}"#
        ),
    )
    .unwrap();
    let c = check(&k, &[]);
    assert_eq!(c.code, 1, "{}", c.stdout);
    assert!(
        c.stdout.contains(&format!("names blob {ghost}")),
        "{}",
        c.stdout
    );
    assert_eq!(check(&k, &["--repair"]).code, 0);
    assert!(!entry.exists());
    assert_eq!(check(&k, &[]).code, 0);
    still_works(&k, "app");
}

#[test]
fn leftovers_are_listed_not_failures_and_repair_removes_them() {
    let k = two_images();
    let tmp = k.root().join("tmp");
    let old = tmp.join("write-killed");
    fs::write(&old, b"half a blob").unwrap();
    let old_dir = tmp.join("snapshot-killed");
    fs::create_dir(&old_dir).unwrap();
    fs::write(old_dir.join("f"), b"x").unwrap();
    let young = tmp.join("write-running");
    fs::write(&young, b"in progress").unwrap();
    let two_minutes_ago = SystemTime::now() - Duration::from_secs(120);
    for p in [&old, &old_dir] {
        filetime::set_file_mtime(p, filetime::FileTime::from_system_time(two_minutes_ago)).unwrap();
    }
    let locks = k.root().join("locks");
    fs::write(locks.join("lease-dead.lock"), b"").unwrap();
    fs::write(locks.join("lease-dead.json"), b"[]").unwrap();

    let c = check(&k, &[]);
    assert_eq!(c.code, 0, "leftovers are not damage:\n{}", c.stdout);
    for p in [&old, &old_dir, &locks.join("lease-dead.lock")] {
        assert!(
            c.stdout.contains(&format!("leftover: {}", p.display())),
            "{}",
            c.stdout
        );
    }
    assert!(!c.stdout.contains("write-running"), "{}", c.stdout);
    assert!(c.stdout.contains("1 temp entries in use"), "{}", c.stdout);

    let r = check(&k, &["--repair"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(!old.exists() && !old_dir.exists());
    assert!(!locks.join("lease-dead.json").exists());
    assert!(young.exists(), "a young temp file may be live work");
    let c = check(&k, &[]);
    assert!(!c.stdout.contains("leftover"), "{}", c.stdout);
    still_works(&k, "app");
}
