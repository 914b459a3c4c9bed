#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The hostile archive corpus (scripts/make-hostile-corpus.sh, generated at test time) through
//! every way a tarball reaches kiln: `kiln import`, `kiln load` (a docker-archive whose second
//! layer is the hostile tar), ADD of a local archive in a build, and a hostile base-image
//! layer used with FROM + RUN and COPY --from. Every archive aims at a directory outside the
//! store holding canaries; after every command that directory must be unchanged. Archives
//! marked `fail` must be refused; the others may be refused or sanitised, and a refusal must
//! be a one-line `error:` that leaves no tag behind.

mod common;

use common::{busybox_tar, context, have, run, Kiln};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Case {
    name: String,
    file: PathBuf,
    expect_fail: bool,
}

struct Corpus {
    dir: tempfile::TempDir,
    outside: PathBuf,
    cases: Vec<Case>,
    before: BTreeMap<String, String>,
}

impl Corpus {
    /// Generates the corpus in a fresh temp dir, aimed at a canary dir of its own.
    fn new(bomb_mib: u32) -> Corpus {
        assert!(
            have("python3") && have("zstd"),
            "the corpus script needs python3 and zstd"
        );
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("canary"), "canary\n").unwrap();
        fs::write(outside.join("sub/inner"), "inner\n").unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-hostile-corpus.sh");
        run(Command::new("bash")
            .arg(script)
            .arg(dir.path().join("corpus"))
            .arg(&outside)
            .arg(busybox_tar())
            .env("BOMB_MIB", bomb_mib.to_string()));
        let tsv = fs::read_to_string(dir.path().join("corpus/cases.tsv")).unwrap();
        let cases: Vec<Case> = tsv
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                Case {
                    name: f[0].to_string(),
                    file: PathBuf::from(f[1]),
                    expect_fail: f[2] == "fail",
                }
            })
            .collect();
        assert!(cases.len() >= 40, "corpus too small: {}", cases.len());
        let before = fingerprint(&outside);
        Corpus {
            dir,
            outside,
            cases,
            before,
        }
    }

    fn image(&self, case: &Case) -> PathBuf {
        self.dir
            .path()
            .join("corpus/images")
            .join(format!("{}.tar", case.name))
    }

    /// The canary dir is exactly as it was: no file written, removed or changed in it.
    fn assert_untouched(&self, what: &str) {
        let now = fingerprint(&self.outside);
        assert_eq!(
            now, self.before,
            "{what}: the directory outside was modified"
        );
    }
}

/// Every path below `dir` with its type, mode and content (or link target).
fn fingerprint(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let v = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                todo.push(p.clone());
                format!("dir {:o}", m.permissions().mode())
            } else {
                format!(
                    "file {:o} {} {:?}",
                    m.permissions().mode(),
                    m.nlink(),
                    fs::read(&p).unwrap()
                )
            };
            out.insert(rel, v);
        }
    }
    out
}

/// What one entry point did with one archive.
fn outcome(name: &str, out: &Output) -> Result<(), String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "{name}: kiln panicked:\n{stderr}"
    );
    if out.status.success() {
        return Ok(());
    }
    assert_eq!(out.status.code(), Some(1), "{name}: killed?\n{stderr}");
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{name}: failed without an `error:` line:\n{stderr}"));
    assert!(
        line.len() > "error: ".len() + 10,
        "{name}: vague error {line:?}"
    );
    Err(line.to_string())
}

fn check(case: &Case, entry_point: &str, result: &Result<(), String>) {
    if case.expect_fail {
        assert!(
            result.is_err(),
            "{entry_point} accepted {} which must be refused",
            case.name
        );
    }
    println!(
        "{:<28} {:<11} {}",
        case.name,
        entry_point,
        match result {
            Ok(()) => "accepted (sanitised)".to_string(),
            Err(e) => e.clone(),
        }
    );
}

fn tag_of(case: &Case) -> String {
    format!("hostile/{}", case.name.replace('_', "-"))
}

fn has_image(k: &Kiln, name: &str) -> bool {
    !k.ok(&["images", "-q", name]).trim().is_empty()
}

/// The store still works: it lists images and builds on busybox.
fn assert_store_sound(k: &Kiln) {
    k.ok(&["images"]);
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo sound > /sound\nCOPY Dockerfile /d\n",
    )]);
    k.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "after:1",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(has_image(k, "after:1"));
}

#[test]
fn kiln_import_never_escapes_and_refuses_what_it_must() {
    let c = Corpus::new(64);
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    for case in &c.cases {
        let tag = tag_of(case);
        let out = k
            .cmd()
            .args(["import", case.file.to_str().unwrap(), &tag])
            .output()
            .unwrap();
        let r = outcome(&case.name, &out);
        c.assert_untouched(&format!("import {}", case.name));
        check(case, "import", &r);
        assert_eq!(
            has_image(&k, &tag),
            r.is_ok(),
            "{}: tag after import",
            case.name
        );
    }
    assert_store_sound(&k);
    println!(
        "hostile archives tried: {} x import, escapes: 0",
        c.cases.len()
    );
}

#[test]
fn kiln_load_and_hostile_base_layers_never_escape() {
    let c = Corpus::new(64);
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let mut based = 0;
    for case in &c.cases {
        let tag = tag_of(case);
        let out = k
            .cmd()
            .args(["load", "-i", c.image(case).to_str().unwrap()])
            .output()
            .unwrap();
        let r = outcome(&case.name, &out);
        c.assert_untouched(&format!("load {}", case.name));
        check(case, "load", &r);
        assert_eq!(
            has_image(&k, &tag),
            r.is_ok(),
            "{}: tag after load",
            case.name
        );
        if r.is_err() {
            continue;
        }
        // The hostile layer as a base: unpacked into a snapshot for RUN, read by COPY --from.
        based += 1;
        let ctx = context(&[(
            "Dockerfile",
            &format!(
                "FROM {tag} AS base\n\
                 RUN find / -xdev >/dev/null 2>&1; cat /a/pwn_link /h /f 2>/dev/null; echo ran > /ran\n\
                 FROM busybox\n\
                 COPY --from=base / /base/\n\
                 RUN test -f /base/ran && find /base >/dev/null\n"
            ),
        )]);
        let out = k
            .cmd()
            .args([
                "build",
                "--progress",
                "plain",
                "-t",
                &format!("{tag}-child"),
            ])
            .arg(ctx.path())
            .output()
            .unwrap();
        let r = outcome(&case.name, &out);
        c.assert_untouched(&format!("FROM {}", case.name));
        check(case, "base-layer", &r);
    }
    assert_store_sound(&k);
    println!(
        "hostile archives tried: {} x load + {based} x base layer, escapes: 0",
        c.cases.len()
    );
}

#[test]
fn add_of_hostile_archives_never_escapes() {
    let c = Corpus::new(64);
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    for case in &c.cases {
        let ctx = tempfile::tempdir().unwrap();
        let fname = case.file.file_name().unwrap().to_str().unwrap().to_string();
        fs::copy(&case.file, ctx.path().join(&fname)).unwrap();
        // A file ADD does not recognise as an archive is copied as it is (docker does the
        // same), so a refused-everywhere archive may arrive verbatim, but never half-unpacked.
        fs::write(
            ctx.path().join("Dockerfile"),
            format!(
                "FROM busybox\n\
                 ADD {fname} /dst/\n\
                 COPY {fname} /orig/\n\
                 RUN find /dst >/dev/null; if [ -f /dst/{fname} ]; then cmp /dst/{fname} /orig/{fname}; fi\n"
            ),
        )
        .unwrap();
        let tag = format!("hostile-add/{}", case.name.replace('_', "-"));
        let out = k
            .cmd()
            .args(["build", "--progress", "plain", "-t", &tag])
            .arg(ctx.path())
            .output()
            .unwrap();
        let r = outcome(&case.name, &out);
        c.assert_untouched(&format!("ADD {}", case.name));
        if case.expect_fail && r.is_ok() {
            // Accepted only as an opaque file: the build's RUN compared it with the source.
            println!(
                "{:<28} {:<11} copied verbatim (not an archive)",
                case.name, "ADD"
            );
        } else {
            check(case, "ADD", &r);
        }
        assert_eq!(
            has_image(&k, &tag),
            r.is_ok(),
            "{}: tag after ADD",
            case.name
        );
    }
    assert_store_sound(&k);
    println!(
        "hostile archives tried: {} x ADD, escapes: 0",
        c.cases.len()
    );
}

/// A decompression bomb streams: kiln's memory stays far below the bomb's size.
#[test]
fn a_decompression_bomb_is_streamed_in_bounded_memory() {
    if !have("/usr/bin/time") {
        return;
    }
    let c = Corpus::new(512);
    let bomb = c.cases.iter().find(|c| c.name == "gzip_bomb").unwrap();
    assert!(fs::metadata(&bomb.file).unwrap().len() < 2 << 20);
    let k = Kiln::new();
    let report = c.dir.path().join("rss");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(k.root())
        .args(["import", bomb.file.to_str().unwrap(), "bomb:1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kib: u64 = fs::read_to_string(&report)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    println!("importing a 512 MiB gzip bomb: peak RSS {} MiB", kib / 1024);
    assert!(kib < 128 * 1024, "peak RSS {kib} KiB for a 512 MiB bomb");
    let size = k.ok(&["inspect", "-f", "{{.Size}}", "bomb:1"]);
    assert!(size.trim().parse::<u64>().unwrap() >= 512 << 20, "{size}");
    c.assert_untouched("bomb");
}

/// ADD unpacks an archive as files, never as a layer: a `.wh.` name or an opaque marker in
/// it must not delete what the base image has (in a layer tar they would, so kiln leaves
/// them out of what ADD writes).
#[test]
fn add_archives_cannot_white_out_the_base_image() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = context(&[
        ("p/.wh.bin", ""),
        ("p/etc/.wh..wh..opq", ""),
        ("p/keep", "k"),
    ]);
    run(Command::new("tar")
        .arg("-C")
        .arg(ctx.path().join("p"))
        .arg("-cf")
        .arg(ctx.path().join("wh.tar"))
        .args([".wh.bin", "etc/.wh..wh..opq", "keep"]));
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN touch /etc/mine\nADD wh.tar /\n\
         RUN test -x /bin/sh && test -f /etc/mine && test \"$(cat /keep)\" = k\n",
    )
    .unwrap();
    k.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "wh:1",
        ctx.path().to_str().unwrap(),
    ]);
}
