#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Blobs, tags and image lookup through the public store API, checked against the files on disk.

use std::fs;
use std::io::Write;

use kiln::image::{media, Digest, ImageConfig, Reference};
use kiln::store::{Store, StoreError};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn files_in(dir: &std::path::Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

#[test]
fn blob_commit_is_verified_and_atomic() {
    let (_d, s) = open();
    let blobs = s.root().join("blobs/sha256");
    let tmp = s.root().join("tmp");

    let mut w = s.blob_writer().unwrap();
    w.write_all(b"layer bytes").unwrap();
    assert_eq!(files_in(&blobs), 0, "nothing visible before commit");
    let err = w
        .commit(Some(&Digest::sha256_of(b"other bytes")))
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(Digest::sha256_of(b"other bytes").as_str()),
        "{err}"
    );
    assert_eq!(
        (files_in(&blobs), files_in(&tmp)),
        (0, 0),
        "mismatch leaves nothing"
    );

    let mut w = s.blob_writer().unwrap();
    w.write_all(b"layer bytes").unwrap();
    let info = w.commit(Some(&Digest::sha256_of(b"layer bytes"))).unwrap();
    assert_eq!(info.size, 11);
    let on_disk = fs::read(blobs.join(info.digest.hex())).unwrap();
    assert_eq!(on_disk, b"layer bytes");
    assert_eq!(files_in(&tmp), 0);
}

#[test]
fn index_json_names_each_tag_with_its_full_reference() {
    let (_d, s) = open();
    let layer = s.put_bytes(media::OCI_LAYER_TAR, b"l").unwrap();
    let mut config = ImageConfig {
        architecture: "arm64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    config.rootfs.diff_ids.push(layer.digest.clone());
    let (manifest, id) = s.put_image(&config, &[layer]).unwrap();
    s.tag(&Reference::parse("user/app:1").unwrap(), &manifest)
        .unwrap();
    s.tag(
        &Reference::parse("127.0.0.1:5000/busybox").unwrap(),
        &manifest,
    )
    .unwrap();

    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(s.root().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], media::OCI_INDEX);
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["digest"], manifest.digest.as_str());
            assert_eq!(m["mediaType"], media::OCI_MANIFEST);
            assert_eq!(m["size"], manifest.size);
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        ["docker.io/user/app:1", "127.0.0.1:5000/busybox:latest"]
    );

    // Every way docker lets a user name the image.
    for q in [
        "user/app:1",
        "docker.io/user/app:1",
        "127.0.0.1:5000/busybox",
        "127.0.0.1:5000/busybox:latest",
        id.as_str(),
        id.short(),
        &id.hex()[..3],
        manifest.digest.as_str(),
        &format!("user/app@{}", manifest.digest),
    ] {
        let rec = s.resolve(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert_eq!(rec.id(), &id, "{q}");
    }
    for q in ["user/app", "user/app:2", "nope", "sha256:", "ABC", "zz"] {
        assert!(
            matches!(s.resolve(q), Err(StoreError::ImageNotFound(_))),
            "{q}"
        );
    }

    let list = s.list().unwrap();
    assert_eq!(list.len(), 1);
    let familiar: Vec<String> = list[0]
        .references
        .iter()
        .map(|r| Reference::parse(r).unwrap().familiar())
        .collect();
    assert_eq!(familiar, ["127.0.0.1:5000/busybox:latest", "user/app:1"]);

    assert!(s.untag(&Reference::parse("user/app:1").unwrap()).unwrap());
    assert!(s.resolve("user/app:1").is_err());
    assert_eq!(
        s.resolve(id.short()).unwrap().references,
        ["127.0.0.1:5000/busybox:latest"]
    );
}

#[test]
fn config_bytes_are_canonical() {
    let (_d, s) = open();
    let mut a = ImageConfig::default();
    a.config.labels.insert("z".into(), "1".into());
    a.config.labels.insert("a".into(), "2".into());
    let mut b = ImageConfig::default();
    b.config.labels.insert("a".into(), "2".into());
    b.config.labels.insert("z".into(), "1".into());
    let (ma, ia) = s.put_image(&a, &[]).unwrap();
    let (mb, ib) = s.put_image(&b, &[]).unwrap();
    assert_eq!(
        (ma, ia),
        (mb, ib),
        "same config, same digests, whatever the insertion order"
    );
}
