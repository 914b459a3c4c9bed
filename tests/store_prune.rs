#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Garbage collection with a cap: `kiln builder prune` (--keep-storage, --filter until=, -a),
//! the automatic `gc.keep-storage` policy after builds, `kiln prune --volumes`, and
//! `kiln system df`.

mod common;

use common::{context, Kiln};
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

const MB: usize = 1_000_000;

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed * 2 + 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A context whose one COPY layer is `len` bytes of its own.
fn ctx(seed: u64, len: usize) -> tempfile::TempDir {
    let c = context(&[("Dockerfile", "FROM bb\nCOPY blob.bin /blob.bin\n")]);
    fs::write(c.path().join("blob.bin"), noise(seed, len)).unwrap();
    c
}

/// Builds `dir` as `tag`; true when its COPY step came from the cache.
fn build(k: &Kiln, dir: &Path, tag: &str, env: &[(&str, &str)]) -> bool {
    let mut cmd = k.cmd();
    for (key, v) in env {
        cmd.env(key, v);
    }
    let out = cmd
        .args(["build", "--progress=plain", "-t", tag])
        .arg(dir)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    log.contains("CACHED COPY blob.bin")
}

/// Bytes of a size as kiln prints it (`1.05MB`, `512kB`, `0B`).
fn bytes(size: &str) -> f64 {
    let split = size.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (n, unit) = size.split_at(split);
    let mult = match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => panic!("{size}"),
    };
    n.parse::<f64>().unwrap() * mult
}

/// The row of `system df` for `kind`: (total, active, size text).
fn df_row(k: &Kiln, kind: &str) -> (usize, usize, String) {
    let out = k.ok(&["system", "df"]);
    let line = out
        .lines()
        .find(|l| l.starts_with(kind))
        .unwrap_or_else(|| panic!("{kind} missing:\n{out}"));
    let cells: Vec<&str> = line[kind.len()..].split_whitespace().collect();
    (
        cells[0].parse().unwrap(),
        cells[1].parse().unwrap(),
        cells[2].to_string(),
    )
}

fn cache_files(k: &Kiln) -> Vec<std::path::PathBuf> {
    fs::read_dir(k.root().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn keep_storage_removes_least_recently_used_first() {
    let k = Kiln::new();
    k.import_busybox("bb");
    let (a, b, c) = (ctx(1, MB), ctx(2, MB), ctx(3, MB));
    for (dir, tag) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert!(!build(&k, dir.path(), tag, &[]));
    }
    // Only the cache keeps their layers now; then `a` is used again, so `b` is the oldest.
    k.ok(&["rmi", "a", "b", "c"]);
    assert!(build(&k, a.path(), "a", &[]));
    k.ok(&["rmi", "a"]);
    let (_, _, size) = df_row(&k, "Build Cache");
    assert!(bytes(&size) >= 3.0 * MB as f64, "{size}");

    let out = k
        .cmd()
        .env("KILN_GC_GRACE_SECONDS", "0")
        .args(["builder", "prune", "-f", "--keep-storage", "1.5MB"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Total:"), "{text}");
    let (_, _, size) = df_row(&k, "Build Cache");
    assert!(bytes(&size) <= 1.5 * MB as f64, "{size}");
    assert!(bytes(&size) >= MB as f64, "{size}");
    assert!(
        build(&k, a.path(), "a", &[]),
        "the most recently used entry stays"
    );
    assert!(
        !build(&k, b.path(), "b", &[]),
        "the least recently used entry goes"
    );
    let check = k.ok(&["system", "check"]);
    assert!(check.contains("the store is sound"), "{check}");
}

#[test]
fn until_filter_and_all() {
    let k = Kiln::new();
    k.import_busybox("bb");
    let a = ctx(4, 1000);
    build(&k, a.path(), "a", &[]);
    // Without -a, cache an image shares is kept: removing it would free nothing.
    let out = k.ok(&["builder", "prune", "-f"]);
    assert!(out.contains("Deleted build cache entries: 0"), "{out}");
    let out = k.ok(&["builder", "prune", "-f", "-a", "--filter", "until=1h"]);
    assert!(out.contains("Deleted build cache entries: 0"), "{out}");
    let n = cache_files(&k).len();
    assert!(n > 0);
    let old = filetime::FileTime::from_system_time(SystemTime::now() - Duration::from_secs(7200));
    for f in cache_files(&k) {
        filetime::set_file_mtime(&f, old).unwrap();
    }
    let out = k.ok(&["builder", "prune", "-f", "-a", "--filter", "until=1h"]);
    assert!(
        out.contains(&format!("Deleted build cache entries: {n}")),
        "{out}"
    );
    assert!(cache_files(&k).is_empty());
    assert!(!build(&k, a.path(), "a", &[]));

    let bad = k
        .cmd()
        .args(["builder", "prune", "-f", "--filter", "since=1h"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("until=DURATION"));
    let bad = k
        .cmd()
        .args(["builder", "prune", "-f", "--keep-storage", "lots"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--keep-storage"));
}

#[test]
fn config_cap_is_applied_after_builds() {
    let k = Kiln::new();
    k.import_busybox("bb");
    let config = tempfile::tempdir().unwrap();
    fs::create_dir_all(config.path().join("kiln")).unwrap();
    fs::write(
        config.path().join("kiln/config.toml"),
        "# kiln\n[gc]\nkeep-storage = \"1.5MB\"\n",
    )
    .unwrap();
    let xdg = config.path().to_str().unwrap();
    let env = [("XDG_CONFIG_HOME", xdg)];
    let dirs: Vec<_> = (0..4).map(|i| ctx(10 + i, MB)).collect();
    for (i, d) in dirs.iter().enumerate() {
        build(&k, d.path(), &format!("i{i}"), &env);
        // Untagged, the layer is the cache's alone: the next build's policy counts it.
        k.ok(&["rmi", &format!("i{i}")]);
    }
    build(&k, dirs[0].path(), "again", &env);
    let (_, _, size) = df_row(&k, "Build Cache");
    assert!(bytes(&size) <= 1.5 * MB as f64, "over the cap: {size}");
    assert!(
        build(&k, dirs[3].path(), "last", &env),
        "the newest cache entry survives the cap"
    );
    // Without the config the cap is off: nothing is pruned.
    for d in &dirs {
        build(&k, d.path(), "x", &[("XDG_CONFIG_HOME", "/nonexistent")]);
    }
    k.ok(&["rmi", "x", "last", "again"]);
    build(
        &k,
        dirs[1].path(),
        "y",
        &[("XDG_CONFIG_HOME", "/nonexistent")],
    );
    let (_, _, size) = df_row(&k, "Build Cache");
    assert!(bytes(&size) >= 3.0 * MB as f64, "{size}");

    // A bad value is an error naming the file and line.
    fs::write(
        config.path().join("kiln/config.toml"),
        "[gc]\nkeep-storage = \"lots\"\n",
    )
    .unwrap();
    let out = k
        .cmd()
        .env("XDG_CONFIG_HOME", xdg)
        .args(["build", "-q", "-t", "z"])
        .arg(dirs[2].path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kiln/config.toml:2"), "{err}");
}

#[test]
fn volumes_go_only_with_the_volumes_flag_and_df_shows_them() {
    let k = Kiln::new();
    k.import_busybox("bb");
    k.ok(&["volume", "create", "data"]);
    let vol = k.root().join("volumes/data");
    fs::write(vol.join("_data/f"), vec![7u8; 5000]).unwrap();
    let (total, _, size) = df_row(&k, "Local Volumes");
    assert_eq!(total, 1);
    assert!(size.ends_with("kB"), "{size}");
    let (total, _, _) = df_row(&k, "Images");
    assert_eq!(total, 1);
    let out = k.ok(&["system", "df"]);
    assert!(
        out.starts_with("TYPE") && out.contains("RECLAIMABLE") && out.contains("Containers"),
        "{out}"
    );

    k.ok(&["prune", "-f", "-a"]);
    assert!(
        vol.exists(),
        "prune without --volumes never removes a volume"
    );
    // As docker's: `--volumes` removes unused anonymous volumes, never a named one.
    k.ok(&["prune", "-f", "--volumes"]);
    assert!(vol.exists(), "a named volume is kept");
    let meta = vol.join("volume.json");
    let text = fs::read_to_string(&meta).unwrap();
    fs::write(
        &meta,
        text.replace("\"Anonymous\": false", "\"Anonymous\": true"),
    )
    .unwrap();
    let out = k.ok(&["prune", "-f", "--volumes"]);
    assert!(out.contains("Deleted Volumes:\ndata"), "{out}");
    assert!(!vol.exists());
    assert_eq!(df_row(&k, "Local Volumes").0, 0);
}
