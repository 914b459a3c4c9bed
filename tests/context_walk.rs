//! The context walker and hasher on real directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kiln::context::hash::{hash_files, selection_digest, StatCache};
use kiln::context::ignore::PatternMatcher;
use kiln::context::walk::{Kind, Listing};
use std::fs;
use std::path::Path;

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn paths(l: &Listing) -> Vec<&str> {
    l.entries.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn dockerignore_rules_shape_the_listing() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "a.txt", "a");
    write(r, "a.log", "x");
    write(r, "sub/deep/b.log", "x");
    write(r, "sub/c.txt", "c");
    write(r, "build/out.bin", "x");
    write(r, "build/keep.txt", "k");
    write(r, "node_modules/m/index.js", "x");
    let m = PatternMatcher::new(&["*.log", "build", "!build/keep.txt", "node_modules"]).unwrap();
    let l = Listing::scan(r, &m).unwrap();
    // `*.log` is anchored at the root (not gitignore's any-depth rule), an excluded
    // directory is skipped, and `!` re-includes beneath an excluded directory.
    assert_eq!(
        paths(&l),
        vec![
            "a.txt",
            "build/keep.txt",
            "sub",
            "sub/c.txt",
            "sub/deep",
            "sub/deep/b.log"
        ]
    );
}

#[test]
fn symlinks_are_listed_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", "s");
    let r = t.path();
    std::os::unix::fs::symlink(outside.path(), r.join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", r.join("passwd")).unwrap();
    let l = Listing::scan(r, &PatternMatcher::new(&[] as &[&str]).unwrap()).unwrap();
    assert_eq!(paths(&l), vec!["escape", "passwd"]);
    assert_eq!(
        l.entries[0].kind,
        Kind::Symlink(outside.path().to_path_buf())
    );
    // Nothing below the link was listed.
    assert!(l.get("escape/secret").is_none());
}

#[test]
fn fifos_are_listed_as_other() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let l = Listing::scan(t.path(), &PatternMatcher::new(&[] as &[&str]).unwrap()).unwrap();
    assert_eq!(l.entries[0].kind, Kind::Other);
}

#[test]
fn subtree_selects_a_directory_and_not_its_prefix_siblings() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "a/x", "1");
    write(t.path(), "a.b", "2");
    write(t.path(), "ab/y", "3");
    let l = Listing::scan(t.path(), &PatternMatcher::new(&[] as &[&str]).unwrap()).unwrap();
    let sub: Vec<_> = l.subtree("a").map(|e| e.path.as_str()).collect();
    assert_eq!(sub, vec!["a", "a/x"]);
    assert_eq!(l.subtree("").count(), l.entries.len());
}

#[test]
fn stat_cache_skips_unchanged_files_and_sees_changes() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("ctx");
    write(&r, "one", "1");
    write(&r, "two", "2");
    // Entries changed within the last two seconds are not trusted (racily clean).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let cache_path = t.path().join("statcache");
    let m = PatternMatcher::new(&[] as &[&str]).unwrap();

    let l = Listing::scan(&r, &m).unwrap();
    let all: Vec<_> = l.entries.iter().collect();
    let mut cache = StatCache::load(&cache_path);
    let (h1, s1) = hash_files(&l, &all, &mut cache).unwrap();
    assert_eq!(s1.reread, 2);
    cache.save(&cache_path).unwrap();

    let mut cache = StatCache::load(&cache_path);
    assert_eq!(cache.len(), 2);
    let (h2, s2) = hash_files(&l, &all, &mut cache).unwrap();
    assert_eq!(s2.reread, 0, "unchanged files must not be reread");
    assert_eq!(h1, h2);
    assert_eq!(h2["one"], blake3::hash(b"1"));

    write(&r, "two", "changed");
    let l = Listing::scan(&r, &m).unwrap();
    let all: Vec<_> = l.entries.iter().collect();
    let (h3, s3) = hash_files(&l, &all, &mut cache).unwrap();
    assert_eq!(s3.reread, 1);
    assert_eq!(h3["two"], blake3::hash(b"changed"));
    assert_ne!(
        selection_digest("", &all, &h1),
        selection_digest("", &all, &h3)
    );
}

#[test]
fn a_damaged_stat_cache_is_an_empty_one() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("statcache");
    fs::write(&p, b"kiln-statcache-v1\n\xff\xff").unwrap();
    assert!(StatCache::load(&p).is_empty());
}

#[test]
fn big_files_hash_like_small_ones() {
    let t = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(9u32 << 20))
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let p = t.path().join("big");
    fs::write(&p, &data).unwrap();
    let h = kiln::context::hash::hash_path(&p, data.len() as u64).unwrap();
    assert_eq!(h, blake3::hash(&data));
}
