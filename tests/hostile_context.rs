#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hostile build contexts: symlinks aiming outside the context, FIFOs and sockets, unreadable
//! files, a file rewritten while it is copied, stages whose symlinks point at `/` or `../..`,
//! and a 20,000-file context. Whatever kiln does, the bytes of a secret file outside the
//! context must never reach the store.

mod common;

use common::{is_root, Kiln};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const SECRET: &str = "TOP-SECRET-3f9a1c-never-in-a-layer";

/// A directory outside every context, holding the secret.
fn outside() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("dir")).unwrap();
    fs::write(d.path().join("secret"), SECRET).unwrap();
    fs::write(d.path().join("dir/secret"), SECRET).unwrap();
    d
}

/// `kiln build` with a guard against hanging (a FIFO read would block forever).
fn build(k: &Kiln, ctx: &Path, tag: &str) -> Output {
    let out = k
        .cmd()
        .args(["build", "--progress", "plain", "-t", tag])
        .arg(ctx)
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.code().is_some(),
        "kiln was killed (hung on the context?):\n{err}"
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// No file anywhere in the store holds the secret's bytes.
fn assert_secret_absent(k: &Kiln) {
    let mut todo = vec![k.root()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                todo.push(p);
            } else if md.is_file() {
                let bytes = fs::read(&p).unwrap_or_default();
                assert!(
                    !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                    "the secret from outside the context reached {}",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn symlinks_out_of_the_context_are_copied_as_links_never_followed() {
    let out = outside();
    let o = out.path();
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = common::context(&[("real/file", "inside\n")]);
    let c = ctx.path();
    symlink(o.join("secret"), c.join("abs")).unwrap();
    symlink(o.join("dir"), c.join("absdir")).unwrap();
    symlink(
        "../../../../../../../../../../".to_string() + &o.join("secret").display().to_string()[1..],
        c.join("up"),
    )
    .unwrap();
    symlink("real", c.join("inlink")).unwrap();

    // The whole context: links arrive as links with their targets unchanged.
    fs::write(
        c.join("Dockerfile"),
        format!(
            "FROM busybox\nCOPY . /app/\n\
             RUN test -L /app/abs && test \"$(readlink /app/abs)\" = \"{0}/secret\" \
             && test -L /app/absdir && test -L /app/up && test -L /app/inlink \
             && test \"$(cat /app/inlink/file)\" = inside\n",
            o.display()
        ),
    )
    .unwrap();
    let r = build(&k, c, "ctx:all");
    assert!(r.status.success(), "{}", stderr(&r));

    // Naming a link as the source copies the link (or fails): never the file behind it.
    for (i, src) in ["abs", "up", "absdir"].iter().enumerate() {
        fs::write(
            c.join("Dockerfile"),
            format!("FROM busybox\nCOPY {src} /got\nRUN test ! -f /got || test -L /got\n"),
        )
        .unwrap();
        let r = build(&k, c, &format!("ctx:link{i}"));
        assert!(
            r.status.success() || stderr(&r).contains("COPY failed"),
            "{src}: {}",
            stderr(&r)
        );
    }

    // A path through a symlinked directory that leaves the context is not found.
    for (i, src) in ["absdir/secret", "absdir/", "absdir/*"].iter().enumerate() {
        fs::write(
            c.join("Dockerfile"),
            format!("FROM busybox\nCOPY {src} /got/\n"),
        )
        .unwrap();
        let r = build(&k, c, &format!("ctx:through{i}"));
        let err = stderr(&r);
        if r.status.success() {
            // Only a trailing-slash or wildcard copy of the link itself may succeed.
            assert_ne!(i, 0, "COPY {src} succeeded");
        } else {
            assert!(err.contains("Dockerfile:2: COPY failed"), "{src}: {err}");
        }
    }
    assert_secret_absent(&k);
}

#[test]
fn fifos_and_sockets_in_the_context_never_hang_a_copy() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = common::context(&[("a.txt", "a\n")]);
    let c = ctx.path();
    nix::unistd::mkfifo(
        &c.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(c.join("sock")).unwrap();

    fs::write(
        c.join("Dockerfile"),
        "FROM busybox\nCOPY . /app/\nRUN test -f /app/a.txt\n",
    )
    .unwrap();
    let r = build(&k, c, "ctx:special");
    assert!(r.status.success(), "{}", stderr(&r));
    // kiln lists FIFOs and sockets but never opens them: they arrive as empty files
    // (BuildKit makes FIFOs FIFOs; either way nothing blocks on a read).
    fs::write(
        c.join("Dockerfile"),
        "FROM ctx:special\nRUN test ! -p /app/pipe && test ! -s /app/pipe && test ! -S /app/sock\n",
    )
    .unwrap();
    let r = build(&k, c, "ctx:special2");
    assert!(r.status.success(), "{}", stderr(&r));

    // Naming the FIFO itself does not block either.
    fs::write(
        c.join("Dockerfile"),
        "FROM busybox\nCOPY pipe /p\nRUN test ! -s /p\n",
    )
    .unwrap();
    let r = build(&k, c, "ctx:fifo");
    assert!(r.status.success(), "{}", stderr(&r));
}

#[test]
fn unreadable_files_in_a_copied_directory_are_named() {
    if !is_root() {
        return; // Needs files the unprivileged user cannot read; made as root below.
    }
    let work = tempfile::tempdir().unwrap();
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let ctx = work.path().join("ctx");
    fs::create_dir_all(ctx.join("src/locked")).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /app/\n").unwrap();
    fs::write(ctx.join("src/ok"), "ok").unwrap();
    fs::write(ctx.join("src/private.key"), "k").unwrap();
    fs::write(ctx.join("src/locked/inner"), "i").unwrap();
    for p in [&ctx, &ctx.join("src")] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(ctx.join("Dockerfile"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(ctx.join("src/ok"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(
        ctx.join("src/private.key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let as_nobody = |ctx: &Path| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(work.path().join("store"))
            .args(["build", "--progress", "plain"])
            .arg(ctx)
            .output()
            .unwrap()
    };
    let out = as_nobody(&ctx);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Dockerfile:2: COPY failed") && err.contains("private.key"),
        "{err}"
    );

    // An unreadable directory is named too.
    fs::set_permissions(
        ctx.join("src/private.key"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::set_permissions(ctx.join("src/locked"), fs::Permissions::from_mode(0o700)).unwrap();
    let out = as_nobody(&ctx);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("locked"), "{err}");
}

#[test]
fn a_file_rewritten_during_copy_gives_a_consistent_layer_or_a_clear_error() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = common::context(&[("Dockerfile", "FROM busybox\nCOPY churn /churn\n")]);
    let c = ctx.path().to_path_buf();
    let churn = c.join("churn");
    fs::write(&churn, vec![b'x'; 1 << 20]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let churn = churn.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Shrinks and grows: the copy sees a size different from the one it stat'ed.
                let len = if n.is_multiple_of(2) { 4096 } else { 3 << 20 };
                let _ = fs::write(&churn, vec![b'a' + (n % 26) as u8; len]);
                n += 1;
            }
        })
    };
    let mut outcomes = Vec::new();
    for i in 0..6 {
        let tag = format!("churn:{i}");
        let r = k
            .cmd()
            .args(["build", "--no-cache", "--progress", "plain", "-t", &tag])
            .arg(&c)
            .timeout(Duration::from_secs(300))
            .output()
            .unwrap();
        let err = stderr(&r);
        assert!(!err.contains("panicked"), "{err}");
        if r.status.success() {
            outcomes.push("ok");
            // The layer unpacks (its tar is whole) and holds one state the file had: empty
            // or written part-way by one fs::write (a prefix of one version), never bytes of
            // two versions mixed.
            let check = common::context(&[(
                "Dockerfile",
                &format!(
                    "FROM {tag}\nRUN s=$(wc -c < /churn); echo size $s; test $s -le 3145728 \
                     && test $(tr -d \"$(head -c1 /churn)\" < /churn | wc -c) -eq 0\n"
                ),
            )]);
            let v = build(&k, check.path(), &format!("churn-check:{i}"));
            assert!(
                v.status.success(),
                "layer of {tag} is not consistent: {}",
                stderr(&v)
            );
        } else {
            outcomes.push("error");
            assert!(
                err.contains("Dockerfile:2: COPY failed") && err.contains("churn"),
                "{err}"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    println!("copies of a churning file: {outcomes:?}");
    k.ok(&["images"]);
}

#[test]
fn copy_from_a_stage_cannot_climb_out_through_its_symlinks() {
    let out = outside();
    let o = out.path();
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let dockerfile = format!(
        "FROM busybox AS s\n\
         RUN echo stage-marker > /marker && ln -s / /rootlink && ln -s ../../../../.. /up \
         && mkdir -p /d && ln -s /../../../.. /d/top && ln -s {0} /hostdir\n\
         FROM busybox\n\
         COPY --from=s /rootlink/marker /m1\n\
         COPY --from=s /up/marker /m2\n\
         COPY --from=s /d/top/marker /m3\n\
         RUN test \"$(cat /m1 /m2 /m3)\" = \"$(printf 'stage-marker\\nstage-marker\\nstage-marker')\"\n",
        o.display()
    );
    let ctx = common::context(&[("Dockerfile", &dockerfile)]);
    let r = build(&k, ctx.path(), "stage:ok");
    assert!(r.status.success(), "{}", stderr(&r));

    // The host path behind /hostdir, /up or /rootlink is not the stage's: not found.
    let secret = o.join("secret").display().to_string();
    let through = [
        format!("/up{secret}"),
        format!("/rootlink{secret}"),
        format!("/d/top{secret}"),
        "/hostdir/secret".to_string(),
        format!("/hostdir/../../../../..{secret}"),
    ];
    for (i, src) in through.iter().enumerate() {
        let ctx = common::context(&[(
            "Dockerfile",
            &format!(
                "FROM busybox AS s\n\
                 RUN ln -s / /rootlink && ln -s ../../../../.. /up && mkdir -p /d \
                 && ln -s /../../../.. /d/top && ln -s {0} /hostdir\n\
                 FROM busybox\nCOPY --from=s {src} /got\n",
                o.display()
            ),
        )]);
        let r = build(&k, ctx.path(), &format!("stage:escape{i}"));
        let err = stderr(&r);
        assert_eq!(r.status.code(), Some(1), "COPY --from=s {src} succeeded");
        assert!(err.contains("Dockerfile:4: COPY failed"), "{src}: {err}");
    }
    assert_secret_absent(&k);
}

/// A big context copies whole and right; its speed and memory are measured in the README's
/// figures, not asserted here.
#[test]
fn a_twenty_thousand_file_context_copies_every_file() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    for d in 0..100 {
        let dir = c.join(format!("d{d:03}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..200 {
            fs::write(dir.join(format!("f{f:03}")), format!("{d}-{f}\n")).unwrap();
        }
    }
    fs::write(
        c.join("Dockerfile"),
        "FROM busybox\nCOPY . /app/\n\
         RUN test $(find /app -type f | wc -l) -eq 20001 \
         && test \"$(cat /app/d042/f137)\" = 42-137 \
         && test \"$(cat /app/d*/f* | wc -l)\" -eq 20000\n",
    )
    .unwrap();
    let r = build(&k, c, "big:1");
    assert!(r.status.success(), "{}", stderr(&r));
    // Unchanged: every step is a cache hit.
    let r = build(&k, c, "big:2");
    let err = stderr(&r);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("CACHED COPY . /app/"), "{err}");
}

#[test]
fn a_name_that_is_not_utf8_is_named_or_ignored() {
    use std::os::unix::ffi::OsStrExt;
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = common::context(&[("Dockerfile", "FROM busybox\nCOPY . /app/\n"), ("ok", "ok")]);
    let bad = ctx.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    fs::write(&bad, "x").unwrap();
    let r = build(&k, ctx.path(), "nu:1");
    let err = stderr(&r);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains("caf") && err.contains("not valid UTF-8"),
        "{err}"
    );
    // Excluded, it is never looked at.
    fs::write(ctx.path().join(".dockerignore"), "caf*\n").unwrap();
    let r = build(&k, ctx.path(), "nu:2");
    assert!(r.status.success(), "{}", stderr(&r));
}
