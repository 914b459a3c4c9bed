#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Layers built from real trees, applied to real directories, and compared back: contents,
//! modes, owners (as root), symlinks, hard links, xattrs, mtimes; determinism of the diffID;
//! OCI whiteouts; overlayfs upper directories.

use kiln::layer::{
    apply_layer, diff_overlay_upper, ApplyOptions, BuildOptions, Digested, EntryMeta, LayerBuilder,
    Policy, TreeOptions,
};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Non-root runs cannot chown or make devices; those parts of the checks are skipped there.
fn apply_opts() -> ApplyOptions {
    if is_root() {
        ApplyOptions::default()
    } else {
        eprintln!("not root: ownership and device checks are skipped");
        ApplyOptions {
            ownership: Policy::BestEffort,
            devices: Policy::BestEffort,
            xattrs: Policy::BestEffort,
            ..ApplyOptions::default()
        }
    }
}

fn set_mtime(p: &Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(secs, 0);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

fn xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, b"").unwrap();
    let ok = xattr::set(&probe, "user.probe", b"1").is_ok();
    fs::remove_file(&probe).unwrap();
    ok
}

/// A tree with every kind of entry a layer carries. mtimes are all `mtime`, except where a
/// later entry changes a directory, which the caller fixes with `fix_dir_mtimes`.
fn make_tree(root: &Path, mtime: i64) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::create_dir_all(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("a/b/c/file.txt"), b"hello\n").unwrap();
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("setgid"), b"").unwrap();
    fs::set_permissions(root.join("setgid"), fs::Permissions::from_mode(0o2710)).unwrap();
    fs::write(root.join("private"), b"secret").unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    // Larger than the copy buffers, not a multiple of the tar block.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 333)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("a/big.bin"), &big).unwrap();
    fs::write(root.join("a/hl1"), b"linked").unwrap();
    fs::hard_link(root.join("a/hl1"), root.join("a/b/hl2")).unwrap();
    symlink("b/c/file.txt", root.join("a/rel-link")).unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let long = root.join("l".repeat(60)).join("n".repeat(70));
    fs::create_dir_all(long.parent().unwrap()).unwrap();
    fs::write(&long, b"long name").unwrap();
    fs::write(root.join("naïve ünïcode"), b"utf8").unwrap();
    if xattrs_supported(root) {
        xattr::set(root.join("a/b/c/file.txt"), "user.kiln", b"value").unwrap();
        xattr::set(root.join("a/b"), "user.dir", b"d").unwrap();
    }
    if is_root() {
        nix::unistd::chown(
            &root.join("private"),
            Some(nix::unistd::Uid::from_raw(1234)),
            Some(nix::unistd::Gid::from_raw(5678)),
        )
        .unwrap();
        // A uid above the ustar limit (0o7777777) exercises the PAX uid record.
        nix::unistd::chown(
            &root.join("a/hl1"),
            Some(nix::unistd::Uid::from_raw(3_000_000)),
            Some(nix::unistd::Gid::from_raw(42)),
        )
        .unwrap();
        nix::sys::stat::mknod(
            &root.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            libc::makedev(1, 3),
        )
        .unwrap();
        // chown cleared setuid; put it back.
        fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    }
    set_all_mtimes(root, mtime);
}

fn set_all_mtimes(root: &Path, mtime: i64) {
    // Children first, so setting a file's time never disturbs its directory's afterwards.
    let mut all = Vec::new();
    collect(root, &mut all);
    for p in all.iter().rev() {
        set_mtime(p, mtime);
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        out.push(p.clone());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            collect(&p, out);
        }
    }
}

/// What the comparison looks at for one path.
#[derive(Debug, PartialEq)]
struct Snap {
    kind: &'static str,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
    content: Vec<u8>,
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn snapshot(root: &Path, with_owner: bool) -> BTreeMap<String, Snap> {
    let mut all = Vec::new();
    collect(root, &mut all);
    let mut out = BTreeMap::new();
    for p in all {
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let (kind, content) = if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if ft.is_file() {
            ("file", fs::read(&p).unwrap())
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else if ft.is_char_device() {
            ("char", Vec::new())
        } else {
            ("other", Vec::new())
        };
        let xattrs = xattr::list(&p)
            .map(|names| {
                names
                    .filter(|n| n.to_string_lossy().starts_with("user."))
                    .map(|n| {
                        let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                        (n.to_string_lossy().into_owned(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        out.insert(
            rel,
            Snap {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    md.mode() & 0o7777
                },
                owner: with_owner.then(|| (md.uid(), md.gid())),
                mtime: md.mtime(),
                content,
                rdev: md.rdev(),
                xattrs,
            },
        );
    }
    out
}

fn build_tree(root: &Path, epoch: Option<i64>) -> (Vec<u8>, Digested) {
    let mut b = LayerBuilder::new(
        Vec::new(),
        BuildOptions {
            source_date_epoch: epoch,
        },
    );
    b.append_tree(root, TreeOptions::default()).unwrap();
    b.finish().unwrap()
}

fn compare(want: &BTreeMap<String, Snap>, got: &BTreeMap<String, Snap>) -> Vec<String> {
    let mut failures = Vec::new();
    for (path, w) in want {
        match got.get(path) {
            None => failures.push(format!("{path}: missing after apply")),
            Some(g) if g != w => failures.push(format!("{path}: want {w:?}\n  got {g:?}")),
            Some(_) => {}
        }
    }
    for path in got.keys() {
        if !want.contains_key(path) {
            failures.push(format!("{path}: unexpected after apply"));
        }
    }
    failures
}

#[test]
fn roundtrip_preserves_everything() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    make_tree(&src, 1_600_000_000);
    let (tar, d) = build_tree(&src, None);
    assert_eq!(d.size, tar.len() as u64);
    assert_eq!(d.digest, kiln::layer::Sha256Digest::of(&tar));
    assert!(d.digest.to_string().starts_with("sha256:"));

    let stats = apply_layer(&tar[..], &dst, &apply_opts()).unwrap();
    assert_eq!(stats.hardlinks, 1);
    assert_eq!(stats.symlinks, 3);
    assert_eq!(stats.fifos, 1);
    if is_root() {
        assert_eq!(stats.devices, 1);
        assert_eq!(stats.ignored, 0);
    }

    let want = snapshot(&src, is_root());
    let mut got = snapshot(&dst, is_root());
    if !is_root() {
        // The device exists only when root made it; nothing else may differ.
        got.remove("null");
    }
    let failures = compare(&want, &got);
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let a = fs::metadata(dst.join("a/hl1")).unwrap();
    let b = fs::metadata(dst.join("a/b/hl2")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "hard link lost");
    assert_eq!(a.nlink(), 2);
    if is_root() {
        assert_eq!((a.uid(), a.gid()), (3_000_000, 42));
    }
}

#[test]
fn an_independent_tar_reads_the_layer() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path(), 1_600_000_000);
    let (tar, _) = build_tree(t.path(), None);
    // Entries, in order, as the tar crate (not our writer) reads them.
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(&tar[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header();
        assert_eq!(h.username_bytes(), Some(&b""[..]), "uname must be empty");
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "gname must be empty");
        names.push(String::from_utf8(e.path_bytes().to_vec()).unwrap());
        let mut sink = Vec::new();
        e.read_to_end(&mut sink).unwrap();
    }
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| {
        // Depth-first with sorted siblings equals sorting by path components.
        let ka: Vec<&[u8]> = a
            .trim_end_matches('/')
            .split('/')
            .map(str::as_bytes)
            .collect();
        let kb: Vec<&[u8]> = b
            .trim_end_matches('/')
            .split('/')
            .map(str::as_bytes)
            .collect();
        ka.cmp(&kb)
    });
    assert_eq!(names, sorted, "entries are not in walk order");
    assert!(names.contains(&"a/b/c/".to_string()));
    assert!(names.contains(&format!("{}/{}", "l".repeat(60), "n".repeat(70))));

    // GNU tar, where present, must list the same names.
    let file = t.path().join("layer.tar");
    fs::write(&file, &tar).unwrap();
    match Command::new("tar").arg("-tf").arg(&file).output() {
        Ok(out) if out.status.success() => {
            let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(listed, names);
        }
        Ok(out) => panic!(
            "tar -tf rejected the layer: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("no tar binary; skipped the GNU tar listing"),
    }
}

#[test]
fn same_tree_same_diffid_and_epoch_clamps() {
    let t = tempfile::tempdir().unwrap();
    let one = t.path().join("one");
    let two = t.path().join("two");
    fs::create_dir(&one).unwrap();
    fs::create_dir(&two).unwrap();
    make_tree(&one, 1_700_000_000);
    make_tree(&two, 1_700_000_000);

    let (tar_a, a) = build_tree(&one, None);
    let (tar_b, b) = build_tree(&one, None);
    assert_eq!(tar_a, tar_b, "same tree twice gave different bytes");
    assert_eq!(a, b);
    let (_, c) = build_tree(&two, None);
    assert_eq!(a, c, "identical trees in different places differ");

    // Different mtimes: different layers, unless SOURCE_DATE_EPOCH clamps them all.
    set_all_mtimes(&two, 1_750_000_000);
    let (_, d) = build_tree(&two, None);
    assert_ne!(a.digest, d.digest);
    let epoch = Some(1_000_000_000);
    let (_, e) = build_tree(&one, epoch);
    let (_, f) = build_tree(&two, epoch);
    assert_eq!(e, f, "SOURCE_DATE_EPOCH did not make the layers equal");
    // The clamp is min(mtime, epoch): an epoch after every mtime changes nothing.
    let (_, g) = build_tree(&one, Some(1_900_000_000));
    assert_eq!(a, g);

    let clamped = build_tree(&two, epoch).0;
    let mut ar = tar::Archive::new(&clamped[..]);
    for entry in ar.entries().unwrap() {
        assert_eq!(entry.unwrap().header().mtime().unwrap(), 1_000_000_000);
    }
}

fn explicit_layer(build: impl FnOnce(&mut LayerBuilder<Vec<u8>>)) -> Vec<u8> {
    let mut b = LayerBuilder::new(Vec::new(), BuildOptions::default());
    build(&mut b);
    b.finish().unwrap().0
}

fn file(b: &mut LayerBuilder<Vec<u8>>, path: &str, content: &str) {
    b.append_file(
        Path::new(path),
        &EntryMeta::with_mode(0o644),
        content.len() as u64,
        content.as_bytes(),
    )
    .unwrap();
}

fn dir(b: &mut LayerBuilder<Vec<u8>>, path: &str) {
    b.append_dir(Path::new(path), &EntryMeta::with_mode(0o755))
        .unwrap();
}

fn listing(root: &Path) -> Vec<String> {
    let mut all = Vec::new();
    collect(root, &mut all);
    all.iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn whiteouts_and_opaque_dirs_hide_lower_layers_only() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let lower = explicit_layer(|b| {
        for d in ["a", "b", "b/sub", "keep", "d"] {
            dir(b, d);
        }
        for f in ["a/x", "a/y", "b/1", "b/sub/2", "c", "keep/k", "d/old"] {
            file(b, f, f);
        }
    });
    let upper = explicit_layer(|b| {
        b.append_whiteout(Path::new("a/x")).unwrap();
        b.append_whiteout(Path::new("c")).unwrap();
        b.append_whiteout(Path::new("not/there")).unwrap();
        dir(b, "b");
        // Sorts before the marker, so it is written first and must survive it.
        file(b, "b/-early", "e");
        b.append_opaque(Path::new("b")).unwrap();
        file(b, "b/new", "n");
        // Same-layer whiteout: OCI says it only hides lower layers.
        file(b, "d/same", "s");
        b.append_whiteout(Path::new("d/same")).unwrap();
        b.append_whiteout(Path::new("d/old")).unwrap();
    });
    apply_layer(&lower[..], root, &apply_opts()).unwrap();
    let stats = apply_layer(&upper[..], root, &apply_opts()).unwrap();
    assert_eq!(stats.whiteouts, 5);
    assert_eq!(stats.opaques, 1);
    assert_eq!(
        listing(root),
        ["a", "a/y", "b", "b/-early", "b/new", "d", "d/same", "keep", "keep/k"]
    );

    // Without whiteout handling (a tar given to ADD) the markers are plain files.
    let add = t.path().join("add");
    fs::create_dir(&add).unwrap();
    let opts = ApplyOptions {
        whiteouts: false,
        ..apply_opts()
    };
    apply_layer(&upper[..], &add, &opts).unwrap();
    assert!(add.join("a/.wh.x").is_file());
    assert!(add.join("b/.wh..wh..opq").is_file());
}

#[test]
fn compressed_layers_are_detected_and_digests_see_every_byte() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src, 1_600_000_000);
    let (tar, _) = build_tree(&src, None);
    let want = snapshot(&src, false);

    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&tar).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&tar).unwrap();
    let forms: Vec<(&str, Vec<u8>)> = vec![
        (
            "gzip",
            kiln::layer::compress(
                &tar[..],
                kiln::layer::Compression::Gzip { level: 1 },
                2,
                Vec::new(),
            )
            .unwrap()
            .0,
        ),
        (
            "zstd",
            kiln::layer::compress(
                &tar[..],
                kiln::layer::Compression::Zstd { level: 3 },
                2,
                Vec::new(),
            )
            .unwrap()
            .0,
        ),
        ("xz", xz.finish().unwrap()),
        ("bzip2", bz.finish().unwrap()),
    ];
    let mut failures = Vec::new();
    for (name, blob) in forms {
        let dst = t.path().join(name);
        fs::create_dir(&dst).unwrap();
        let mut counting = CountingReader(&blob[..], 0);
        apply_layer(&mut counting, &dst, &apply_opts()).unwrap();
        if counting.1 != blob.len() {
            failures.push(format!(
                "{name}: read {} of {} bytes",
                counting.1,
                blob.len()
            ));
        }
        let mut got = snapshot(&dst, false);
        got.remove("null");
        let mut w = snapshot(&src, false);
        w.remove("null");
        let diff = compare(&w, &got);
        if !diff.is_empty() {
            failures.push(format!("{name}: {}", diff.join("; ")));
        }
    }
    assert!(!want.is_empty());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

struct CountingReader<R>(R, usize);
impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1 += n;
        Ok(n)
    }
}

#[test]
fn replacing_entries_of_lower_layers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let lower = explicit_layer(|b| {
        dir(b, "was-dir");
        file(b, "was-dir/inner", "i");
        file(b, "was-file", "f");
        b.append_symlink(
            Path::new("was-link"),
            &EntryMeta::default(),
            Path::new("was-dir"),
        )
        .unwrap();
        dir(b, "stays");
        file(b, "stays/old", "o");
    });
    let upper = explicit_layer(|b| {
        file(b, "was-dir", "now a file");
        dir(b, "was-file");
        dir(b, "was-link");
        let mut m = EntryMeta::with_mode(0o700);
        m.mtime = 12345;
        b.append_dir(Path::new("stays"), &m).unwrap();
    });
    apply_layer(&lower[..], root, &apply_opts()).unwrap();
    apply_layer(&upper[..], root, &apply_opts()).unwrap();
    assert_eq!(fs::read(root.join("was-dir")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(root.join("was-file"))
        .unwrap()
        .is_dir());
    assert!(fs::symlink_metadata(root.join("was-link"))
        .unwrap()
        .is_dir());
    // A directory entry over an existing directory updates it and keeps its contents.
    let md = fs::metadata(root.join("stays")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o700);
    assert_eq!(md.mtime(), 12345);
    assert!(root.join("stays/old").is_file());
}

#[test]
fn archive_through_absolute_symlink_lands_inside_root() {
    // BuildKit behaviour 17: an earlier archive leaves `var/run -> /run`; a later one writing
    // `var/run/x` lands in `<root>/run/x`, never in the host's /run.
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let first = explicit_layer(|b| {
        dir(b, "var");
        b.append_symlink(
            Path::new("var/run"),
            &EntryMeta::default(),
            Path::new("/run"),
        )
        .unwrap();
    });
    let marker = format!("kiln-test-{}", std::process::id());
    let second = explicit_layer(|b| file(b, &format!("var/run/{marker}"), "x"));
    apply_layer(&first[..], root, &apply_opts()).unwrap();
    apply_layer(&second[..], root, &apply_opts()).unwrap();
    assert!(root.join("run").join(&marker).is_file());
    assert!(!Path::new("/run").join(&marker).exists());
}

fn overlay_expectations(layer: &[u8]) -> Vec<(String, BTreeMap<String, Vec<u8>>)> {
    let mut ar = tar::Archive::new(layer);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
        let mut xattrs = BTreeMap::new();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for r in pax {
                let r = r.unwrap();
                if let Some(k) = r.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(k.to_string(), r.value_bytes().to_vec());
                }
            }
        }
        out.push((name, xattrs));
    }
    out
}

#[test]
fn overlay_upper_with_xattr_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    if !xattrs_supported(t.path()) {
        eprintln!("no user xattrs on this filesystem; skipped");
        return;
    }
    let upper = t.path().join("upper");
    fs::create_dir_all(upper.join("dir1")).unwrap();
    fs::write(upper.join("dir1/new"), b"n").unwrap();
    xattr::set(upper.join("dir1"), "user.overlay.opaque", b"y").unwrap();
    fs::create_dir_all(upper.join("dir2")).unwrap();
    // "x" marks a directory holding xattr whiteouts; it is not opaque.
    xattr::set(upper.join("dir2"), "user.overlay.opaque", b"x").unwrap();
    fs::write(upper.join("dir2/gone"), b"").unwrap();
    xattr::set(upper.join("dir2/gone"), "user.overlay.whiteout", b"").unwrap();
    fs::write(upper.join("kept"), b"k").unwrap();
    xattr::set(upper.join("kept"), "user.overlay.origin", b"junk").unwrap();
    xattr::set(upper.join("kept"), "user.keep", b"1").unwrap();

    let (layer, d) = diff_overlay_upper(
        &upper,
        Vec::new(),
        BuildOptions::default(),
        TreeOptions::default(),
    )
    .unwrap();
    assert_eq!(d.size, layer.len() as u64);
    let got = overlay_expectations(&layer);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "dir1/",
            "dir1/.wh..wh..opq",
            "dir1/new",
            "dir2/",
            "dir2/.wh.gone",
            "kept"
        ]
    );
    for (name, xattrs) in &got {
        assert!(
            xattrs.keys().all(|k| !k.contains("overlay")),
            "{name} carries overlay xattrs: {xattrs:?}"
        );
    }
    let kept = &got.last().unwrap().1;
    assert_eq!(kept.get("user.keep").map(Vec::as_slice), Some(&b"1"[..]));
}

#[test]
fn overlay_upper_with_device_whiteouts_root_only() {
    if !is_root() {
        eprintln!("not root: 0/0 character devices and trusted.* xattrs need root; skipped");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let upper = t.path().join("upper");
    fs::create_dir_all(upper.join("opq")).unwrap();
    fs::write(upper.join("opq/f"), b"f").unwrap();
    xattr::set(upper.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
    nix::sys::stat::mknod(
        &upper.join("deleted"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    let (layer, _) = diff_overlay_upper(
        &upper,
        Vec::new(),
        BuildOptions::default(),
        TreeOptions::default(),
    )
    .unwrap();
    let names: Vec<String> = overlay_expectations(&layer)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, [".wh.deleted", "opq/", "opq/.wh..wh..opq", "opq/f"]);
}

/// Mounts a real overlayfs, changes the merged view, turns the upper dir into a layer, applies
/// it on a copy of the lower layer, and expects the merged view back.
#[test]
fn real_overlayfs_diff_reproduces_the_merged_view_root_only() {
    if !is_root() {
        eprintln!("not root: cannot mount overlayfs; skipped");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged, applied] =
        ["lower", "upper", "work", "merged", "applied"].map(|n| t.path().join(n));
    for d in [&lower, &upper, &work, &merged, &applied] {
        fs::create_dir(d).unwrap();
    }
    let base = explicit_layer(|b| {
        for d in ["etc", "opt", "opt/app", "var"] {
            dir(b, d);
        }
        for f in ["etc/hosts", "etc/gone", "opt/app/a", "opt/app/b", "var/log"] {
            file(b, f, f);
        }
    });
    apply_layer(&base[..], &lower, &apply_opts()).unwrap();
    apply_layer(&base[..], &applied, &apply_opts()).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("overlayfs mount failed here; skipped");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        fs::remove_file(merged.join("etc/gone")).unwrap();
        fs::write(merged.join("etc/hosts"), b"changed").unwrap();
        fs::remove_dir_all(merged.join("opt/app")).unwrap();
        fs::create_dir(merged.join("opt/app")).unwrap();
        fs::write(merged.join("opt/app/fresh"), b"fresh").unwrap();
        fs::write(merged.join("var/new"), b"new").unwrap();
        fs::hard_link(merged.join("var/new"), merged.join("var/new2")).unwrap();
        snapshot(&merged, true)
    });
    let _ = Command::new("umount").arg(&merged).status();
    let want = result.unwrap();

    let (layer, _) = diff_overlay_upper(
        &upper,
        Vec::new(),
        BuildOptions::default(),
        TreeOptions::default(),
    )
    .unwrap();
    apply_layer(&layer[..], &applied, &apply_opts()).unwrap();
    let got = snapshot(&applied, true);
    let failures = compare(&want, &got);
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let a = fs::metadata(applied.join("var/new")).unwrap();
    let b = fs::metadata(applied.join("var/new2")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

/// A pinned diffID for a layer written entry by entry (no filesystem involved): any change to
/// the tar encoding changes every layer digest kiln makes, and must be deliberate.
#[test]
fn golden_diffid() {
    let mut b = LayerBuilder::new(
        Vec::new(),
        BuildOptions {
            source_date_epoch: Some(1_700_000_000),
        },
    );
    let mut m = EntryMeta::with_mode(0o755);
    m.mtime = 1_800_000_000;
    b.append_dir(Path::new("etc"), &m).unwrap();
    m.mode = 0o4755;
    m.uid = 1000;
    m.gid = 3_000_000;
    m.xattrs
        .insert("security.capability".into(), vec![1, 0, 0, 2]);
    b.append_file(Path::new("etc/tool"), &m, 5, &b"hello"[..])
        .unwrap();
    b.append_symlink(
        Path::new(&"x".repeat(120)),
        &EntryMeta::default(),
        Path::new("etc/tool"),
    )
    .unwrap();
    b.append_hardlink(
        Path::new("etc/tool2"),
        &EntryMeta::default(),
        Path::new("etc/tool"),
    )
    .unwrap();
    b.append_device(
        Path::new("null"),
        &EntryMeta::with_mode(0o666),
        kiln::layer::DeviceKind::Char,
        1,
        3,
    )
    .unwrap();
    b.append_fifo(Path::new("fifo"), &EntryMeta::with_mode(0o600))
        .unwrap();
    b.append_whiteout(Path::new("etc/old")).unwrap();
    b.append_opaque(Path::new("var")).unwrap();
    let (tar, d) = b.finish().unwrap();
    if let Ok(p) = std::env::var("KILN_DUMP_GOLDEN_TAR") {
        fs::write(p, &tar).unwrap();
    }
    assert_eq!(
        d.digest.to_string(),
        "sha256:ddc793442b407197456851c04c6ead6ec576beb0e7faa19ebd9f26466c015463"
    );
}
