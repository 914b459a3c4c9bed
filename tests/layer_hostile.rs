#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hostile layer tars, written header by header (our own writer refuses to produce them):
//! `..`, absolute names, writing through symlinks, hard links leaving the root, whiteouts
//! aimed outside. Every case runs with both path resolvers (openat2 and the user-space walk);
//! after each, the directory beside the destination must be byte-for-byte unchanged.

use kiln::layer::{apply_layer, ApplyOptions, LayerError, PathResolution, Policy};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A tar assembled from raw ustar headers.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn header(&mut self, name: &[u8], typeflag: u8, size: usize, link: &[u8]) {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000755\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
    }

    fn data(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }

    fn file(mut self, name: &str, data: &str) -> Self {
        self.header(name.as_bytes(), b'0', data.len(), b"");
        self.data(data.as_bytes());
        self
    }

    fn dir(mut self, name: &str) -> Self {
        self.header(name.as_bytes(), b'5', 0, b"");
        self
    }

    fn symlink(mut self, name: &str, target: &str) -> Self {
        self.header(name.as_bytes(), b'2', 0, target.as_bytes());
        self
    }

    fn hardlink(mut self, name: &str, target: &str) -> Self {
        self.header(name.as_bytes(), b'1', 0, target.as_bytes());
        self
    }

    /// A PAX `path` record naming the next entry, whose own header says something harmless.
    fn pax_path(mut self, path: &str) -> Self {
        let body = format!(" path={path}\n");
        let mut len = body.len() + 1;
        while len != body.len() + len.to_string().len() {
            len = body.len() + len.to_string().len();
        }
        let rec = format!("{len}{body}");
        self.header(b"././@PaxHeader", b'x', rec.len(), b"");
        self.data(rec.as_bytes());
        self
    }

    /// A GNU long-name entry naming the next entry.
    fn gnu_long_name(mut self, path: &str) -> Self {
        let mut name = path.as_bytes().to_vec();
        name.push(0);
        self.header(b"././@LongLink", b'L', name.len(), b"");
        self.data(&name);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// Ownership from the tar (uid 0) cannot be applied by a non-root test run; these tests are
/// about paths, so refusals are ignored.
fn best_effort() -> ApplyOptions {
    ApplyOptions {
        ownership: Policy::BestEffort,
        ..ApplyOptions::default()
    }
}

enum Expect {
    /// apply_layer fails, and its message contains this text.
    Rejected(&'static str),
    /// apply_layer succeeds; these paths (relative to dest; `{out}` stands for the outside
    /// directory's absolute path without its leading `/`) exist inside dest.
    Contained(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    /// Builds the tar given the absolute path of the outside directory.
    tar: fn(&str) -> Vec<u8>,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        Case {
            name: "dotdot file",
            tar: |_| RawTar::default().file("../escaped", "x").finish(),
            expect: Rejected("outside the destination"),
        },
        Case {
            name: "nested dotdot",
            tar: |_| RawTar::default().file("a/../../escaped", "x").finish(),
            expect: Rejected("outside the destination"),
        },
        Case {
            name: "dotdot after real dirs",
            tar: |_| {
                RawTar::default()
                    .dir("a/")
                    .dir("a/b/")
                    .file("a/b/../../../escaped", "x")
                    .finish()
            },
            expect: Rejected("outside the destination"),
        },
        Case {
            name: "dotdot in PAX path",
            tar: |_| {
                RawTar::default()
                    .pax_path("../../escaped")
                    .file("harmless", "x")
                    .finish()
            },
            expect: Rejected("outside the destination"),
        },
        Case {
            name: "dotdot in GNU long name",
            tar: |_| {
                RawTar::default()
                    .gnu_long_name("../escaped")
                    .file("harmless", "x")
                    .finish()
            },
            expect: Rejected("outside the destination"),
        },
        Case {
            name: "absolute file name",
            tar: |out| RawTar::default().file(&format!("{out}/abs"), "x").finish(),
            expect: Contained(&["{out}/abs"]),
        },
        Case {
            name: "write through absolute symlink",
            tar: |out| {
                RawTar::default()
                    .symlink("evil", out)
                    .file("evil/pwned", "x")
                    .finish()
            },
            expect: Contained(&["{out}/pwned"]),
        },
        Case {
            name: "write through relative symlink climbing out",
            tar: |_| {
                RawTar::default()
                    .symlink("up", "../../../../../../../..")
                    .file("up/pwned", "x")
                    .finish()
            },
            expect: Contained(&["pwned"]),
        },
        Case {
            name: "write through a symlink chain",
            tar: |out| {
                RawTar::default()
                    .symlink("l1", "l2")
                    .symlink("l2", out)
                    .file("l1/x", "x")
                    .finish()
            },
            expect: Contained(&["{out}/x"]),
        },
        Case {
            name: "directory entry over a symlink",
            tar: |out| RawTar::default().symlink("evil", out).dir("evil/").finish(),
            expect: Contained(&["evil"]),
        },
        Case {
            name: "file entry over a symlink to an outside file",
            tar: |out| {
                RawTar::default()
                    .symlink("lnk", &format!("{out}/secret"))
                    .file("lnk", "overwritten")
                    .finish()
            },
            expect: Contained(&["lnk"]),
        },
        Case {
            name: "hard link with dotdot",
            tar: |_| {
                RawTar::default()
                    .hardlink("hl", "../outside/secret")
                    .finish()
            },
            expect: Rejected("hard link target ../outside/secret is outside the destination"),
        },
        Case {
            name: "hard link to an absolute outside path",
            tar: |out| {
                RawTar::default()
                    .hardlink("hl", &format!("{out}/secret"))
                    .finish()
            },
            expect: Rejected("No such file"),
        },
        Case {
            name: "hard link through a symlink",
            tar: |out| {
                RawTar::default()
                    .symlink("s", out)
                    .hardlink("hl", "s/secret")
                    .finish()
            },
            expect: Rejected("No such file"),
        },
        Case {
            name: "hard link to a symlink pointing outside",
            tar: |out| {
                RawTar::default()
                    .symlink("s2", &format!("{out}/secret"))
                    .hardlink("hl", "s2")
                    .finish()
            },
            expect: Contained(&["hl", "s2"]),
        },
        Case {
            name: "whiteout of dotdot",
            tar: |_| RawTar::default().dir("a/").file("a/.wh..", "").finish(),
            expect: Rejected("whiteout of an invalid name"),
        },
        Case {
            name: "whiteout above the root",
            tar: |_| RawTar::default().file("../.wh.secret", "").finish(),
            expect: Rejected("outside the destination"),
        },
        Case {
            name: "whiteout through a symlink",
            tar: |out| {
                RawTar::default()
                    .symlink("evil", out)
                    .file("evil/.wh.secret", "")
                    .finish()
            },
            expect: Contained(&["evil"]),
        },
        Case {
            name: "opaque marker through a symlink",
            tar: |out| {
                RawTar::default()
                    .symlink("evil", out)
                    .file("evil/.wh..wh..opq", "")
                    .finish()
            },
            expect: Contained(&["evil", "{out}"]),
        },
        Case {
            name: "root entry",
            tar: |_| RawTar::default().dir("./").dir("/").finish(),
            expect: Contained(&[]),
        },
    ]
}

/// Every path under `dir` with its kind, mode, size, link count, mtime and content.
fn fingerprint(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        let content = if md.is_file() {
            String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
        } else if md.is_symlink() {
            fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.insert(
            p.display().to_string(),
            format!(
                "mode={:o} nlink={} size={} mtime={} uid={} {content}",
                md.mode(),
                md.nlink(),
                md.size(),
                md.mtime(),
                md.uid()
            ),
        );
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

#[test]
fn hostile_layers_never_write_outside_dest() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in cases() {
        for resolution in [PathResolution::Auto, PathResolution::Walk] {
            ran += 1;
            let label = format!("{} ({resolution:?})", case.name);
            let t = tempfile::tempdir().unwrap();
            let dest = t.path().join("dest");
            let outside = t.path().join("outside");
            fs::create_dir_all(&dest).unwrap();
            fs::create_dir_all(outside.join("dir")).unwrap();
            fs::write(outside.join("secret"), b"secret").unwrap();
            let before = fingerprint(t.path());
            let before_outside = fingerprint(&outside);

            let out_str = outside.to_str().unwrap();
            let tar = (case.tar)(out_str);
            let opts = ApplyOptions {
                path_resolution: resolution,
                ownership: Policy::BestEffort,
                ..ApplyOptions::default()
            };
            let result = apply_layer(&tar[..], &dest, &opts);

            if fingerprint(&outside) != before_outside {
                failures.push(format!("{label}: the outside directory changed"));
            }
            let mut after = fingerprint(t.path());
            after.retain(|k, _| {
                !k.starts_with(dest.to_str().unwrap()) || k == dest.to_str().unwrap()
            });
            let mut before_top = before.clone();
            before_top.retain(|k, _| {
                !k.starts_with(dest.to_str().unwrap()) || k == dest.to_str().unwrap()
            });
            // dest's own mtime may change; compare the set of paths and everything else.
            after.remove(dest.to_str().unwrap());
            before_top.remove(dest.to_str().unwrap());
            if after != before_top {
                failures.push(format!(
                    "{label}: something appeared beside dest: {after:?}"
                ));
            }

            let rel_out = out_str.trim_start_matches('/');
            match (&case.expect, result) {
                (Expect::Rejected(text), Err(e)) => {
                    let msg = e.to_string();
                    if !msg.contains(text) {
                        failures.push(format!("{label}: error {msg:?} lacks {text:?}"));
                    }
                    if matches!(e, LayerError::Escape { .. }) && !msg.contains("..") {
                        failures.push(format!("{label}: error {msg:?} does not name the entry"));
                    }
                }
                (Expect::Rejected(_), Ok(stats)) => {
                    failures.push(format!("{label}: accepted ({stats:?}), should be rejected"))
                }
                (Expect::Contained(paths), Ok(_)) => {
                    for p in *paths {
                        let p = p.replace("{out}", rel_out);
                        if fs::symlink_metadata(dest.join(&p)).is_err() {
                            failures.push(format!("{label}: {p} missing inside dest"));
                        }
                    }
                }
                (Expect::Contained(_), Err(e)) => {
                    failures.push(format!("{label}: rejected ({e}), should be contained"))
                }
            }
        }
    }
    assert_eq!(ran, cases().len() * 2);
    assert!(
        failures.is_empty(),
        "{} of {ran} hostile cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn file_over_symlink_replaces_the_link_not_its_target() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let outside = t.path().join("outside");
    fs::create_dir_all(&dest).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let tar = RawTar::default()
        .symlink("lnk", &format!("{}/secret", outside.display()))
        .file("lnk", "overwritten")
        .finish();
    apply_layer(&tar[..], &dest, &best_effort()).unwrap();
    assert_eq!(fs::read(dest.join("lnk")).unwrap(), b"overwritten");
    assert!(fs::symlink_metadata(dest.join("lnk")).unwrap().is_file());
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");
}

#[test]
fn truncated_and_garbage_streams_are_read_errors() {
    let t = tempfile::tempdir().unwrap();
    let full = RawTar::default().file("f", &"x".repeat(2000)).finish();
    let truncated = &full[..1024];
    let err = apply_layer(truncated, t.path(), &ApplyOptions::default()).unwrap_err();
    // The content of `f` ends early: the error names the entry.
    assert!(
        matches!(&err, LayerError::SizeMismatch { path, expected: 2000, actual: 512 } if path == Path::new("f")),
        "{err:?}"
    );

    let mut bad_gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    bad_gzip.extend_from_slice(b"not deflate at all");
    let err = apply_layer(&bad_gzip[..], t.path(), &ApplyOptions::default()).unwrap_err();
    assert!(matches!(err, LayerError::Read { .. }), "{err:?}");

    let mut bad_sum = RawTar::default().file("g", "x").finish();
    bad_sum[148] = b'7';
    assert!(apply_layer(&bad_sum[..], t.path(), &ApplyOptions::default()).is_err());
}

#[test]
fn overlay_xattrs_in_a_layer_are_not_applied() {
    let t = tempfile::tempdir().unwrap();
    let mut meta = kiln::layer::EntryMeta::with_mode(0o755);
    meta.xattrs
        .insert("user.overlay.opaque".into(), b"y".to_vec());
    meta.xattrs
        .insert("user.overlay.redirect".into(), b"/etc".to_vec());
    meta.xattrs.insert("user.fine".into(), b"1".to_vec());
    let mut b = kiln::layer::LayerBuilder::new(Vec::new(), kiln::layer::BuildOptions::default());
    b.append_dir(Path::new("d"), &meta).unwrap();
    let (tar, _) = b.finish().unwrap();
    let opts = ApplyOptions {
        xattrs: Policy::BestEffort,
        ..best_effort()
    };
    apply_layer(&tar[..], t.path(), &opts).unwrap();
    let names: Vec<String> = xattr::list(t.path().join("d"))
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("overlay")), "{names:?}");
}

#[test]
fn old_style_directory_entries_become_directories() {
    let t = tempfile::tempdir().unwrap();
    let tar = RawTar::default()
        .file("olddir/", "")
        .file("olddir/f", "x")
        .finish();
    apply_layer(&tar[..], t.path(), &best_effort()).unwrap();
    assert!(t.path().join("olddir").is_dir());
    assert!(t.path().join("olddir/f").is_file());
}

/// Inputs the `tar_index` fuzz target found (testdata/fuzz/tar_index-*): applying each with
/// both resolvers returns (error or not) without panicking and writes only inside.
#[test]
fn fuzz_regressions_apply_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("tar_index-")
        {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        for how in [PathResolution::Auto, PathResolution::Walk] {
            let t = tempfile::tempdir().unwrap();
            let dest = t.path().join("dest");
            fs::create_dir(&dest).unwrap();
            let opts = ApplyOptions {
                path_resolution: how,
                ..best_effort()
            };
            let _ = apply_layer(&bytes[..], &dest, &opts);
            let beside: Vec<_> = fs::read_dir(t.path()).unwrap().collect();
            assert_eq!(beside.len(), 1, "{}: wrote beside dest", path.display());
        }
        seen += 1;
    }
    assert!(seen > 0, "no regression inputs in {}", dir.display());
}
