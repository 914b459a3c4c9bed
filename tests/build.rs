//! `kiln build` end to end: a busybox base made with `kiln import`, Dockerfiles using every
//! instruction but RUN, results read back by skopeo and umoci (independent readers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{context, have, is_root, run, Kiln};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn build(k: &Kiln, ctx: &Path, extra: &[&str]) -> (String, String) {
    let out = k
        .cmd()
        .args(["build", "--progress", "plain"])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{stderr}");
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        stderr,
    )
}

fn skopeo_config(k: &Kiln, reference: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg("--raw")
        .arg(format!("oci:{}:{}", k.root().display(), reference)));
    serde_json::from_str(&out).unwrap()
}

fn umoci_unpack(k: &Kiln, reference: &str) -> tempfile::TempDir {
    let dest = tempfile::tempdir().unwrap();
    let bundle = dest.path().join("bundle");
    let mut c = Command::new("umoci");
    c.arg("unpack");
    if !is_root() {
        c.arg("--rootless");
    }
    run(c
        .arg("--image")
        .arg(format!("{}:{}", k.root().display(), reference))
        .arg(&bundle));
    dest
}

const APP: &str = r#"FROM busybox:latest AS base
LABEL org.example.title="demo app" version=1
ENV APP_HOME=/app GREETING="hello world"
WORKDIR $APP_HOME
COPY --chown=app:staff src/ ./src/
COPY --chmod=0755 run.sh /usr/local/bin/run
COPY <<EOF /etc/motd
welcome to ${GREETING}
EOF
EXPOSE 8080 53/udp
VOLUME /data
USER app
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/run", "--check"]
ENTRYPOINT ["/usr/local/bin/run"]
CMD ["serve"]
COPY late/config.txt /app/config.txt
"#;

fn app_context() -> tempfile::TempDir {
    context(&[
        ("Dockerfile", APP),
        ("src/main.py", "print('hi')\n"),
        ("src/lib/util.py", "x = 1\n"),
        ("run.sh", "#!/bin/sh\necho run\n"),
        ("late/config.txt", "v=1\n"),
        ("ignored.log", "noise\n"),
        (".dockerignore", "*.log\n"),
    ])
}

#[test]
fn builds_an_image_that_skopeo_and_umoci_read() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = app_context();
    let (id, log) = build(&k, ctx.path(), &["-t", "app:1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(log.contains("[base 2/15] LABEL"), "{log}");

    if have("skopeo") {
        let cfg = skopeo_config(&k, "docker.io/library/app:1");
        let c = &cfg["config"];
        assert_eq!(c["WorkingDir"], "/app");
        assert_eq!(c["User"], "app");
        assert_eq!(c["Labels"]["org.example.title"], "demo app");
        let env = c["Env"].as_array().unwrap();
        assert!(env.iter().any(|e| e == "GREETING=hello world"), "{env:?}");
        assert!(
            env.iter().any(|e| e.as_str().unwrap().starts_with("PATH=")),
            "{env:?}"
        );
        assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/local/bin/run"]));
        assert_eq!(c["Cmd"], serde_json::json!(["serve"]));
        assert!(c["ExposedPorts"].get("8080/tcp").is_some());
        assert!(c["ExposedPorts"].get("53/udp").is_some());
        assert!(c["Volumes"].get("/data").is_some());
        assert_eq!(c["StopSignal"], "SIGTERM");
        assert_eq!(
            c["Healthcheck"]["Test"],
            serde_json::json!(["CMD", "/usr/local/bin/run", "--check"])
        );
        assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000u64);
        // busybox layer + WORKDIR + 3 COPY + late COPY
        assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 6);
    }
    if have("umoci") {
        let d = umoci_unpack(&k, "docker.io/library/app:1");
        let rootfs = d.path().join("bundle/rootfs");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("app/src/main.py")).unwrap(),
            "print('hi')\n"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
            "welcome to hello world\n"
        );
        assert!(!rootfs.join("app/ignored.log").exists());
        if is_root() {
            let m = std::fs::metadata(rootfs.join("app/src/lib/util.py")).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 50), "--chown=app:staff");
            let run_sh = std::fs::metadata(rootfs.join("usr/local/bin/run")).unwrap();
            assert_eq!(run_sh.mode() & 0o7777, 0o755);
        }
        assert!(rootfs.join("bin/busybox").exists());
    }
}

#[test]
fn rebuilds_hit_the_cache_and_say_why_they_miss() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = app_context();
    let (id1, _) = build(&k, ctx.path(), &["-t", "app:1"]);
    let (id2, log) = build(&k, ctx.path(), &["-t", "app:1"]);
    assert_eq!(id1, id2, "a no-change rebuild gives the same image");
    for step in [
        "COPY --chown=app:staff src/ ./src/",
        "COPY late/config.txt /app/config.txt",
        "WORKDIR $APP_HOME",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("CACHED") && l.contains(step)),
            "expected `{step}` CACHED:\n{log}"
        );
    }
    // An ignored file changes nothing.
    std::fs::write(ctx.path().join("ignored.log"), "more noise").unwrap();
    let (id3, log) = build(&k, ctx.path(), &["-t", "app:1"]);
    assert_eq!(id1, id3, "{log}");
    // A late file invalidates only the last step, and the log says which file.
    std::fs::write(ctx.path().join("late/config.txt"), "v=2\n").unwrap();
    let (id4, log) = build(&k, ctx.path(), &["-t", "app:1"]);
    assert_ne!(id1, id4);
    assert!(
        log.lines()
            .any(|l| l.contains("CACHED") && l.contains("COPY --chmod=0755 run.sh")),
        "{log}"
    );
    assert!(
        log.contains("cache miss: COPY late/config.txt /app/config.txt: late/config.txt changed"),
        "{log}"
    );
    // --no-cache rebuilds everything.
    let (_, log) = build(&k, ctx.path(), &["-t", "app:1", "--no-cache"]);
    assert!(!log.contains("CACHED"), "{log}");
}

#[test]
fn multistage_target_and_copy_from() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = context(&[(
        "Dockerfile",
        "ARG VERSION=1.0\nFROM busybox AS build\nARG VERSION\nCOPY <<EOF /out/version\n${VERSION}\nEOF\n\
         FROM busybox AS unused\nCOPY missing-file /x\n\
         FROM scratch AS final\nCOPY --from=build /out/ /\nCOPY --from=BUILD /bin/busybox /bin/busybox\n",
    )]);
    let (_, log) = build(
        &k,
        ctx.path(),
        &["-t", "final:1", "--build-arg", "VERSION=2.5"],
    );
    assert!(
        !log.contains("[unused"),
        "the unneeded stage must not run:\n{log}"
    );
    if have("umoci") {
        let d = umoci_unpack(&k, "docker.io/library/final:1");
        let rootfs = d.path().join("bundle/rootfs");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("version")).unwrap(),
            "2.5\n"
        );
        assert!(rootfs.join("bin/busybox").exists());
    }
    // --target picks a stage; an unknown one is an error that suggests a name.
    build(&k, ctx.path(), &["-t", "b:1", "--target", "Build"]);
    let out = k
        .cmd()
        .args(["build", "--target", "bulid"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("target stage \"bulid\" could not be found (did you mean build?)"),
        "{err}"
    );
    assert_eq!(
        err.matches("could not be found").count(),
        1,
        "said once: {err}"
    );
}

#[test]
fn bad_input_names_the_line_and_leaves_no_tag() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let cases: &[(&str, &str)] = &[
        (
            "FROM busybox\nCOPY nope /x\n",
            "Dockerfile:2: COPY failed: \"nope\" not found in build context",
        ),
        (
            "FROM busybox\nCOPY ../x /x\n",
            "Dockerfile:2: COPY failed: \"../x\" is outside the build context",
        ),
        (
            "FROM busybox\nCOPY --from=127.0.0.1:1/nostage /x /x\n",
            "Dockerfile:2: COPY failed",
        ),
        (
            "FROM busybox\nCOPY --chown=nobodyhere f /x\n",
            "unable to find user nobodyhere",
        ),
        (
            "FROM busybox\nCOPY --chmod=64a f /x\n",
            "invalid chmod parameter: '64a'",
        ),
        (
            "FROM busybox AS a\nCOPY --from=a f /x\n",
            "circular dependency detected on stage: a",
        ),
        // A loopback port nothing listens on: the pull fails without leaving the machine.
        ("FROM 127.0.0.1:1/nosuchimage:1\n", "not in the local store"),
        ("FROM busybox\nRUNN echo\n", "did you mean RUN?"),
    ];
    for (dockerfile, want) in cases {
        let ctx = context(&[("Dockerfile", dockerfile), ("f", "x")]);
        let out = k
            .cmd()
            .args(["build", "-t", "bad:1"])
            .arg(ctx.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{dockerfile}: {err}");
        assert!(err.contains(want), "{dockerfile}: want {want:?} in:\n{err}");
    }
    if have("skopeo") {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!(
                "oci:{}:docker.io/library/bad:1",
                k.root().display()
            ))
            .output()
            .unwrap();
        assert!(!out.status.success(), "a failed build must not leave a tag");
    }
}

#[test]
fn source_date_epoch_makes_builds_reproducible_across_stores() {
    let ctx = app_context();
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let k = Kiln::new();
            let imported = k
                .cmd()
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .arg("import")
                .arg(common::busybox_tar())
                .arg("busybox:latest")
                .output()
                .unwrap();
            assert!(imported.status.success());
            let out = k
                .cmd()
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args(["build", "-q", "-t", "app:1"])
                .arg(ctx.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
}

/// Everything a user does must work without root: import and build as uid 65534 (when the
/// tests run as root, `setpriv` drops to it; otherwise the tests already run unprivileged).
#[test]
fn builds_as_an_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nWORKDIR /app\nCOPY --chown=app:staff src/ ./\nUSER app\n",
    )
    .unwrap();
    std::fs::write(ctx.join("src/a.txt"), "a\n").unwrap();
    for p in [&ctx, &ctx.join("src")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let store = work.path().join("store");
    let kiln = assert_cmd::cargo::cargo_bin("kiln");
    let as_user = |args: &[&std::ffi::OsStr]| {
        let mut c = if is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
            c.arg(&kiln);
            c
        } else {
            Command::new(&kiln)
        };
        c.env("HOME", work.path())
            .arg("--root")
            .arg(&store)
            .args(args);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} as an unprivileged user failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    as_user(&[
        "import".as_ref(),
        common::busybox_tar().as_os_str(),
        "busybox".as_ref(),
    ]);
    as_user(&[
        "build".as_ref(),
        "-t".as_ref(),
        "rootless:1".as_ref(),
        ctx.as_os_str(),
    ]);
    let owner = std::fs::metadata(store.join("index.json")).unwrap().uid();
    if is_root() {
        assert_eq!(
            owner, 65534,
            "the store was written by the unprivileged user"
        );
    }
    if have("umoci") {
        let k = Kiln { dir: work };
        let d = umoci_unpack(&k, "docker.io/library/rootless:1");
        let f = d.path().join("bundle/rootfs/app/a.txt");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a\n");
        if is_root() {
            // The layer records the owners even though no chown ever ran.
            let m = std::fs::metadata(&f).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 50));
        }
    }
}

/// A one-shot HTTP server on loopback serving `body` for any path; returns its base URL.
fn serve_once(body: Vec<u8>, times: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..times {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_unpacks_archives_and_downloads_urls() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = context(&[
        ("payload/etc/dnf/dnf.conf", "conf\n"),
        ("payload/foo", "foo\n"),
    ]);
    // A gzip tarball in the context, made by GNU tar with owners 100:200.
    run(Command::new("tar")
        .args(["--owner=100", "--group=200", "-czf"])
        .arg(ctx.path().join("t.tar.gz"))
        .arg("-C")
        .arg(ctx.path().join("payload"))
        .args(["etc", "foo"]));
    let body = b"downloaded bytes\n".to_vec();
    let sum = {
        use sha2::Digest as _;
        format!("sha256:{:x}", sha2::Sha256::digest(&body))
    };
    let url = serve_once(body, 2);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM busybox\nADD t.tar.gz /out/\nCOPY t.tar.gz /kept/\nADD {url}/files/remote.txt /dl/\nADD --checksum={sum} {url}/x/checked.bin /checked\n"
        ),
    )
    .unwrap();
    build(&k, ctx.path(), &["-t", "add:1"]);
    if have("umoci") {
        let d = umoci_unpack(&k, "docker.io/library/add:1");
        let r = d.path().join("bundle/rootfs");
        assert_eq!(std::fs::read_to_string(r.join("out/foo")).unwrap(), "foo\n");
        assert_eq!(
            std::fs::read_to_string(r.join("out/etc/dnf/dnf.conf")).unwrap(),
            "conf\n"
        );
        assert!(r.join("kept/t.tar.gz").is_file(), "COPY never extracts");
        assert_eq!(
            std::fs::read_to_string(r.join("dl/remote.txt")).unwrap(),
            "downloaded bytes\n"
        );
        assert_eq!(
            std::fs::read_to_string(r.join("checked")).unwrap(),
            "downloaded bytes\n"
        );
        let m = std::fs::metadata(r.join("dl/remote.txt")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600, "downloads are 0600 as in docker");
        if is_root() {
            let m = std::fs::metadata(r.join("out/foo")).unwrap();
            assert_eq!((m.uid(), m.gid()), (100, 200), "archive owners are kept");
        }
    }
    // A wrong checksum is an error naming both digests; nothing is tagged.
    let url = serve_once(b"other".to_vec(), 1);
    let bad = context(&[(
        "Dockerfile",
        &format!("FROM busybox\nADD --checksum={sum} {url}/f /f\n"),
    )]);
    let out = k
        .cmd()
        .args(["build", "-t", "add:2"])
        .arg(bad.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Dockerfile:2: ADD failed") && err.contains("digest mismatch"),
        "{err}"
    );
    // An unreachable URL fails clearly too.
    let gone = context(&[(
        "Dockerfile",
        "FROM busybox\nADD http://127.0.0.1:9/nothing /x\n",
    )]);
    let out = k.cmd().args(["build"]).arg(gone.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("downloading http://127.0.0.1:9/nothing"),
        "{err}"
    );
}

#[test]
fn onbuild_triggers_run_in_the_child_once() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let parent = context(&[(
        "Dockerfile",
        "FROM busybox\nONBUILD COPY marker /marker\nONBUILD ENV TRIGGERED=yes\n",
    )]);
    build(&k, parent.path(), &["-t", "parent:1"]);
    let child = context(&[("Dockerfile", "FROM parent:1\n"), ("marker", "m\n")]);
    build(&k, child.path(), &["-t", "child:1"]);
    let grandchild = context(&[("Dockerfile", "FROM child:1\n")]);
    build(&k, grandchild.path(), &["-t", "grandchild:1"]);
    if have("skopeo") {
        let p = skopeo_config(&k, "docker.io/library/parent:1");
        assert_eq!(p["config"]["OnBuild"].as_array().unwrap().len(), 2);
        let c = skopeo_config(&k, "docker.io/library/child:1");
        assert!(
            c["config"].get("OnBuild").is_none(),
            "triggers are cleared after running"
        );
        assert!(c["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "TRIGGERED=yes"));
        let g = skopeo_config(&k, "docker.io/library/grandchild:1");
        assert_eq!(
            g["rootfs"]["diff_ids"].as_array().unwrap().len(),
            c["rootfs"]["diff_ids"].as_array().unwrap().len(),
            "a grandchild does not run the triggers again"
        );
    }
}

#[test]
fn a_changed_build_arg_is_named_as_the_miss_reason() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nARG V=1\nENV X=$V\nCOPY <<EOF /v\n$V\nEOF\n",
    )]);
    build(&k, ctx.path(), &[]);
    let (_, log) = build(&k, ctx.path(), &["--build-arg", "V=2"]);
    assert!(
        log.contains("cache miss: ") && log.contains("build-arg V changed"),
        "{log}"
    );
}

#[test]
fn an_unreadable_context_file_is_named() {
    if !is_root() {
        return; // Needs a file the unprivileged user cannot read; made as root below.
    }
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::set_permissions(&ctx, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY secret /secret\n",
    )
    .unwrap();
    std::fs::set_permissions(
        ctx.join("Dockerfile"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(ctx.join("secret"), "s").unwrap();
    std::fs::set_permissions(ctx.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(assert_cmd::cargo::cargo_bin("kiln"))
        .arg("--root")
        .arg(work.path().join("store"))
        .arg("build")
        .arg(&ctx)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Dockerfile:2: COPY failed") && err.contains("secret"),
        "{err}"
    );
}

#[test]
fn entrypoint_cmd_and_shell_combine_as_in_docker() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS base\nCMD [\"base-cmd\"]\n\
         FROM base AS inherits\nENTRYPOINT [\"/ep\"]\n\
         FROM base AS same-stage\nCMD [\"mine\"]\nENTRYPOINT [\"/ep\"]\n\
         FROM busybox AS shell\nSHELL [\"/bin/ash\", \"-eo\", \"pipefail\", \"-c\"]\nCMD echo hi\nENTRYPOINT run me\n",
    )]);
    for t in ["inherits", "same-stage", "shell"] {
        build(&k, ctx.path(), &["--target", t, "-t", &format!("{t}:1")]);
    }
    if !have("skopeo") {
        return;
    }
    let cfg = |t: &str| skopeo_config(&k, &format!("docker.io/library/{t}:1"))["config"].clone();
    // An ENTRYPOINT clears the CMD inherited from the base...
    assert!(cfg("inherits").get("Cmd").is_none(), "{}", cfg("inherits"));
    // ...but not one set in the same stage.
    assert_eq!(cfg("same-stage")["Cmd"], serde_json::json!(["mine"]));
    // Shell forms go through SHELL.
    let s = cfg("shell");
    assert_eq!(
        s["Cmd"],
        serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c", "echo hi"])
    );
    assert_eq!(
        s["Entrypoint"],
        serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c", "run me"])
    );
    assert_eq!(
        s["Shell"],
        serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c"])
    );
}

#[test]
fn a_changed_base_image_is_named_at_the_from() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = context(&[("Dockerfile", "FROM busybox\nCOPY f /f\n"), ("f", "x")]);
    build(&k, ctx.path(), &[]);
    // The same tag, another image: imported with a clamped time, so another layer and ID.
    let out = k
        .cmd()
        .env("SOURCE_DATE_EPOCH", "0")
        .arg("import")
        .arg(common::busybox_tar())
        .arg("busybox:latest")
        .output()
        .unwrap();
    assert!(out.status.success());
    let (_, log) = build(&k, ctx.path(), &[]);
    assert!(
        log.contains("[stage-0 1/2] cache miss: FROM busybox: base image changed"),
        "{log}"
    );
    assert!(!log.contains("CACHED"), "{log}");
}

#[test]
fn onbuild_copy_from_resolves_in_the_child_and_never_waits_forever() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let parent = context(&[(
        "Dockerfile",
        "FROM busybox\nONBUILD COPY --from=helper /data /data\n",
    )]);
    build(&k, parent.path(), &["-t", "parent:2"]);
    // `helper` is an image here: the trigger reads it.
    let helper = context(&[
        ("Dockerfile", "FROM scratch\nCOPY data /data\n"),
        ("data", "d\n"),
    ]);
    build(&k, helper.path(), &["-t", "helper"]);
    let child = context(&[("Dockerfile", "FROM parent:2\n")]);
    build(&k, child.path(), &["-t", "child:2"]);
    if have("umoci") {
        let d = umoci_unpack(&k, "docker.io/library/child:2");
        assert_eq!(
            std::fs::read_to_string(d.path().join("bundle/rootfs/data")).unwrap(),
            "d\n"
        );
    }
    // A stage of the child that nothing else needs is not run: a clear error, not a hang.
    let child = context(&[("Dockerfile", "FROM busybox AS helper\nFROM parent:2\n")]);
    let out = k.cmd().arg("build").arg(child.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ONBUILD trigger: COPY --from=helper names a stage"),
        "{err}"
    );
}

#[test]
fn a_failing_dependency_stage_reports_its_own_error() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS dep\nCOPY nope /x\nFROM busybox\nCOPY --from=dep /x /x\n",
    )]);
    let out = k.cmd().arg("build").arg(ctx.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Dockerfile:2: COPY failed: \"nope\" not found in build context"),
        "{err}"
    );
}
