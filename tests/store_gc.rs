#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Garbage collection and image removal, through the public store API.

use std::fs;
use std::io::Write;
use std::time::{Duration, SystemTime};

use kiln::image::{media, Descriptor, Digest, ImageConfig, Reference};
use kiln::store::{CacheEntry, GcOptions, GcReport, Store, StoreError};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn now(keep_cache: bool) -> GcOptions {
    GcOptions {
        keep_cache,
        grace: Duration::ZERO,
    }
}

fn layer(store: &Store, content: &str) -> Descriptor {
    store
        .put_bytes(media::OCI_LAYER_TAR, content.as_bytes())
        .unwrap()
}

fn image(store: &Store, layers: &[Descriptor]) -> (Descriptor, Digest) {
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    config.rootfs.diff_ids = layers.iter().map(|l| l.digest.clone()).collect();
    store.put_image(&config, layers).unwrap()
}

fn snapshot(store: &Store, diff_id: &Digest) {
    store
        .ensure_snapshot(diff_id, |dir| fs::write(dir.join("f"), diff_id.hex()))
        .unwrap();
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

#[test]
fn gc_keeps_reachable_and_removes_unreachable() {
    let (_d, s) = open();
    let base = layer(&s, "base");
    let app = layer(&s, "app");
    let (kept, kept_config) = image(&s, &[base.clone(), app.clone()]);
    s.tag(&r("app:1"), &kept).unwrap();
    snapshot(&s, &base.digest);
    snapshot(&s, &app.digest);
    let gz = s
        .put_bytes(media::OCI_LAYER_TAR_GZIP, b"gz of app")
        .unwrap();
    s.compressed_put(&app.digest, "gzip", &gz).unwrap();

    let orphan = layer(&s, "orphan");
    let (gone, gone_config) = image(&s, &[base.clone(), orphan.clone()]);
    snapshot(&s, &orphan.digest);
    let orphan_zstd = s
        .put_bytes(media::OCI_LAYER_TAR_ZSTD, b"zstd of orphan")
        .unwrap();
    s.compressed_put(&orphan.digest, "zstd", &orphan_zstd)
        .unwrap();

    let report = s.gc(now(true)).unwrap();
    // orphan layer, its zstd variant, the orphan image's manifest and config.
    assert_eq!(report.removed_blobs, 4, "{report:?}");
    assert_eq!(report.removed_snapshots, 1, "{report:?}");
    assert_eq!(report.removed_compressed_records, 1, "{report:?}");
    assert!(report.bytes > 0);

    for d in [
        &kept.digest,
        &kept_config,
        &base.digest,
        &app.digest,
        &gz.digest,
    ] {
        assert!(s.has_blob(d), "{d} is reachable");
    }
    for d in [
        &gone.digest,
        &gone_config,
        &orphan.digest,
        &orphan_zstd.digest,
    ] {
        assert!(!s.has_blob(d), "{d} is unreachable");
    }
    assert!(s.snapshot_path(&base.digest).is_some());
    assert!(s.snapshot_path(&app.digest).is_some());
    assert!(s.snapshot_path(&orphan.digest).is_none());
    assert_eq!(s.compressed_get(&app.digest, "gzip").unwrap(), Some(gz));
    assert_eq!(s.compressed_get(&orphan.digest, "zstd").unwrap(), None);
    assert_eq!(s.resolve("app:1").unwrap().config, kept_config);

    // A second gc finds nothing more.
    assert_eq!(s.gc(now(true)).unwrap(), GcReport::default());
}

#[test]
fn grace_period_protects_fresh_work() {
    let (_d, s) = open();
    let fresh = layer(&s, "just written, not yet recorded");
    snapshot(&s, &fresh.digest);
    let report = s.gc(GcOptions::default()).unwrap();
    assert_eq!(report, GcReport::default());
    assert!(s.has_blob(&fresh.digest));
    assert!(s.snapshot_path(&fresh.digest).is_some());
    s.gc(now(true)).unwrap();
    assert!(!s.has_blob(&fresh.digest));
    assert!(s.snapshot_path(&fresh.digest).is_none());
}

#[test]
fn cache_entries_keep_layers_unless_pruned() {
    let (_d, s) = open();
    let cached = layer(&s, "cached step");
    let config_blob = s
        .put_bytes(
            media::OCI_CONFIG,
            b"{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
        )
        .unwrap();
    snapshot(&s, &cached.digest);
    let key = "0123abcd".repeat(8);
    s.cache_put(
        &key,
        &CacheEntry::new(
            Some(cached.clone()),
            Some(config_blob.digest.clone()),
            serde_json::Value::Null,
        ),
    )
    .unwrap();
    let meta_key = "ff".repeat(32);
    s.cache_put(
        &meta_key,
        &CacheEntry::new(None, None, serde_json::json!({"Env": ["A=1"]})),
    )
    .unwrap();

    assert_eq!(s.gc(now(true)).unwrap(), GcReport::default());
    assert!(s.has_blob(&cached.digest) && s.has_blob(&config_blob.digest));
    assert!(s.snapshot_path(&cached.digest).is_some());
    assert!(s.cache_get(&key).unwrap().is_some());

    let report = s.gc(now(false)).unwrap();
    assert_eq!(report.removed_cache_entries, 2, "{report:?}");
    assert_eq!(report.removed_blobs, 2, "{report:?}");
    assert_eq!(report.removed_snapshots, 1, "{report:?}");
    assert!(s.cache_get(&key).unwrap().is_none());
    assert!(s.cache_get(&meta_key).unwrap().is_none());
}

#[test]
fn dangling_and_unreadable_cache_entries_are_dropped() {
    let (_d, s) = open();
    let l = layer(&s, "x");
    s.cache_put(
        "aa",
        &CacheEntry::new(Some(l.clone()), None, serde_json::Value::Null),
    )
    .unwrap();
    fs::remove_file(s.blob_path(&l.digest)).unwrap();
    fs::write(s.root().join("cache/bb.json"), b"{not json").unwrap();
    let report = s.gc(now(true)).unwrap();
    assert_eq!(report.removed_cache_entries, 2, "{report:?}");
}

#[test]
fn tmp_leftovers_are_swept_but_live_writes_are_not() {
    let (_d, s) = open();
    // A crashed writer's leftovers: nobody holds their lock.
    fs::write(s.root().join("tmp/blob-crashed"), b"partial").unwrap();
    fs::create_dir_all(s.root().join("tmp/snapshot-crashed/usr/bin")).unwrap();
    // A live writer: its temp file is locked.
    let mut live = s.blob_writer().unwrap();
    live.write_all(b"still streaming").unwrap();
    live.flush().unwrap();

    // Temp entries always get a minute before gc judges them; pretend an hour has passed.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for entry in fs::read_dir(s.root().join("tmp")).unwrap() {
        fs::File::open(entry.unwrap().path())
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    fs::write(s.root().join("tmp/blob-just-created"), b"").unwrap();

    let report = s.gc(now(true)).unwrap();
    assert_eq!(report.removed_tmp, 2, "{report:?}");
    let left: Vec<_> = fs::read_dir(s.root().join("tmp")).unwrap().collect();
    assert_eq!(left.len(), 2, "the live and the brand-new temp files stay");
    let info = live.commit(None).unwrap();
    assert!(s.has_blob(&info.digest));
}

#[test]
fn leases_pin_blobs_and_snapshots() {
    let (_d, s) = open();
    let l = layer(&s, "in use by a running build");
    snapshot(&s, &l.digest);
    let lease = s.lease().unwrap();
    lease.pin(&l.digest).unwrap();
    assert_eq!(s.gc(now(false)).unwrap(), GcReport::default());
    assert!(s.has_blob(&l.digest));
    assert!(s.snapshot_path(&l.digest).is_some());
    drop(lease);
    let report = s.gc(now(false)).unwrap();
    assert_eq!((report.removed_blobs, report.removed_snapshots), (1, 1));
}

#[test]
fn remove_image_by_name_by_id_and_shared_layers() {
    let (_d, s) = open();
    let base = layer(&s, "base");
    let a_top = layer(&s, "a");
    let b_top = layer(&s, "b");
    let (a, a_config) = image(&s, &[base.clone(), a_top.clone()]);
    let (b, _) = image(&s, &[base.clone(), b_top.clone()]);
    s.tag(&r("a:1"), &a).unwrap();
    s.tag(&r("a:latest"), &a).unwrap();
    s.tag(&r("b"), &b).unwrap();
    for l in [&base, &a_top, &b_top] {
        snapshot(&s, &l.digest);
    }

    // By name with another tag left: only the tag goes.
    let rep = s.remove_image("a:1", false).unwrap();
    assert_eq!(rep.untagged, vec!["docker.io/library/a:1"]);
    assert!(!rep.deleted);
    assert_eq!(rep.collected, GcReport::default());
    assert!(s.has_blob(&a.digest));
    s.tag(&r("a:1"), &a).unwrap();

    // By ID with several tags: refused without force.
    let err = s.remove_image(a_config.short(), false).unwrap_err();
    assert!(matches!(err, StoreError::MultipleTags { .. }), "{err}");
    assert!(err.to_string().contains("docker.io/library/a:1"), "{err}");

    let rep = s.remove_image(a_config.short(), true).unwrap();
    assert!(rep.deleted);
    assert_eq!(
        rep.untagged,
        vec!["docker.io/library/a:1", "docker.io/library/a:latest"]
    );
    // a's manifest, config and top layer; base is shared with b.
    assert_eq!(rep.collected.removed_blobs, 3, "{:?}", rep.collected);
    assert_eq!(rep.collected.removed_snapshots, 1, "{:?}", rep.collected);
    assert!(!s.has_blob(&a.digest) && !s.has_blob(&a_top.digest));
    assert!(s.has_blob(&base.digest) && s.snapshot_path(&base.digest).is_some());
    assert!(s.resolve("a").is_err());
    assert_eq!(s.resolve("b").unwrap().manifest.digest, b.digest);

    assert!(matches!(
        s.remove_image("nothing", false),
        Err(StoreError::ImageNotFound(_))
    ));
}

#[test]
fn remove_image_keeps_layers_the_cache_uses() {
    let (_d, s) = open();
    let l = layer(&s, "cached");
    let (m, _) = image(&s, std::slice::from_ref(&l));
    s.tag(&r("x"), &m).unwrap();
    s.cache_put(
        "abcd",
        &CacheEntry::new(Some(l.clone()), None, serde_json::Value::Null),
    )
    .unwrap();
    let rep = s.remove_image("x", false).unwrap();
    assert!(rep.deleted);
    assert_eq!(rep.collected.removed_blobs, 2, "manifest and config only");
    assert!(s.has_blob(&l.digest));
    assert!(s.cache_get("abcd").unwrap().is_some());
}
