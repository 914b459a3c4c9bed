#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `RUN --mount` (cache, bind from the context and from a stage, tmpfs, secret), build
//! secrets, `kiln build --network` and secret-looking build args, through the real binary,
//! as root and as an unprivileged user with subordinate ids.

mod common;

use common::env::{As, Env};
use common::{is_root, run, TEST_USER as USER};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What these tests add to the shared [`Env`].
trait MountEnv {
    fn own(&self, p: &Path);
    /// kiln with extra environment variables.
    fn kv(&self, args: &[&str], vars: &[(&str, &str)]) -> Output;
    /// Run, assert success, return stdout and stderr together.
    fn ok_text(&self, args: &[&str]) -> String;
    fn build(&self, ctx: &Path, tag: &str, extra: &[&str], vars: &[(&str, &str)]) -> Output;
    fn build_ok(&self, ctx: &Path, tag: &str, extra: &[&str], vars: &[(&str, &str)]) -> String;
    fn layer_paths(&self, tag: &str) -> Vec<String>;
    fn saved(&self, tag: &str) -> (Vec<String>, Vec<u8>);
}

impl MountEnv for Env {
    fn own(&self, p: &Path) {
        if self.who == As::Rootless && is_root() {
            run(Command::new("chown").arg("-R").arg(USER).arg(p));
        }
    }

    fn kv(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        self.kiln_with(args, vars, None)
    }

    fn ok_text(&self, args: &[&str]) -> String {
        let out = self.kv(args, &[]);
        let t = text(&out);
        assert!(out.status.success(), "kiln {args:?} failed:\n{t}");
        t
    }

    fn build(&self, ctx: &Path, tag: &str, extra: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut args = vec!["build", "--progress=plain", "-t", tag];
        args.extend_from_slice(extra);
        let c = ctx.to_str().unwrap().to_string();
        args.push(&c);
        self.kv(&args, vars)
    }

    fn build_ok(&self, ctx: &Path, tag: &str, extra: &[&str], vars: &[(&str, &str)]) -> String {
        let out = self.build(ctx, tag, extra, vars);
        let t = text(&out);
        assert!(out.status.success(), "build failed ({:?}):\n{t}", self.who);
        t
    }

    /// Every path in every layer of an image (from a `kiln save` archive).
    fn layer_paths(&self, tag: &str) -> Vec<String> {
        self.saved(tag).0
    }

    /// The paths in an image's layers, and every byte of the `kiln save` archive with its
    /// layers decompressed (where a secret would show).
    fn saved(&self, tag: &str) -> (Vec<String>, Vec<u8>) {
        let mut all = Vec::new();
        let tar = self.path().join(format!("{}.tar", tag.replace(':', "_")));
        self.ok_text(&["save", "-o", tar.to_str().unwrap(), tag]);
        let mut paths = Vec::new();
        let mut outer = tar::Archive::new(std::fs::File::open(&tar).unwrap());
        for e in outer.entries().unwrap() {
            let mut e = e.unwrap();
            if !e.header().entry_type().is_file() {
                continue;
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            // Layers are tars (maybe gzipped); other blobs are JSON.
            let data = if bytes.starts_with(&[0x1f, 0x8b]) {
                let mut d = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut d)
                    .unwrap();
                d
            } else {
                bytes
            };
            all.extend_from_slice(&data);
            if data.len() > 262 && &data[257..262] == b"ustar" {
                let mut inner = tar::Archive::new(&data[..]);
                for f in inner.entries().unwrap() {
                    paths.push(f.unwrap().path().unwrap().to_string_lossy().into_owned());
                }
            }
        }
        (paths, all)
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The output lines of step `n` (its `[stage-0 n/..]` lines minus the step's own events).
fn step_output(log: &str, stage: &str, n: usize) -> Vec<String> {
    let prefix = format!("[{stage} {n}/");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| l.split_once("] ").map(|p| p.1))
        .filter(|l| {
            !["DONE", "RUN", "CACHED", "cache miss"]
                .iter()
                .any(|w| l.starts_with(w))
        })
        .map(str::to_string)
        .collect()
}

/// Whether `needle` occurs in any file under `dir` (symlinks not followed).
fn tree_contains(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    for entry in walk(dir) {
        if let Ok(bytes) = std::fs::read(&entry) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return Some(entry);
            }
        }
    }
    None
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

fn cache_mount_persists_outside_the_layer(who: As) {
    let e = Env::new(who);
    let ctx = e.context(
        "cache",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nARG N\nRUN --mount=type=cache,target=/c sh -c 'echo $N >> /c/f; wc -l < /c/f'\n\
             RUN --mount=type=cache,target=/var/cache/u,uid=1000,gid=1000,mode=0700 stat -c '%u:%g %a' /var/cache/u\n",
        )],
    );
    let log = e.build_ok(&ctx, "cache:1", &["--build-arg", "N=1"], &[]);
    assert_eq!(step_output(&log, "stage-0", 3), ["1"], "{log}");
    assert_eq!(step_output(&log, "stage-0", 4), ["1000:1000 700"], "{log}");
    let log = e.build_ok(&ctx, "cache:2", &["--build-arg", "N=2"], &[]);
    assert_eq!(step_output(&log, "stage-0", 3), ["2"], "{log}");
    // --no-cache starts from an empty cache and leaves the kept one alone.
    let log = e.build_ok(&ctx, "cache:3", &["--build-arg", "N=3", "--no-cache"], &[]);
    assert_eq!(step_output(&log, "stage-0", 3), ["1"], "{log}");
    let log = e.build_ok(&ctx, "cache:4", &["--build-arg", "N=4"], &[]);
    assert_eq!(step_output(&log, "stage-0", 3), ["3"], "{log}");
    let paths = e.layer_paths("cache:4");
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("c/") || p == "c" || p.starts_with("var/cache")),
        "the cache mount leaked into a layer: {paths:?}"
    );
    assert!(e.store().join("cache-mounts").is_dir());
}

/// `sharing=locked` RUNs of two stages running at once never use the cache together (each
/// claims it with mkdir, which fails while the other holds it); both see the same cache.
#[test]
fn locked_cache_mounts_are_used_one_at_a_time() {
    let e = Env::new(As::Rootless);
    let run = |name: &str| {
        format!(
            "FROM busybox:latest AS {name}\nRUN --mount=type=cache,id=shared,target=/c,sharing=locked sh -c 'mkdir /c/inside && sleep 0.5 && rmdir /c/inside && echo {name} >> /c/log'\n"
        )
    };
    let df = format!(
        "{}{}FROM busybox:latest\nCOPY --from=a /etc/group /a\nCOPY --from=b /etc/group /b\n\
         RUN --mount=type=cache,id=shared,target=/c,sharing=private sort /c/log\n",
        run("a"),
        run("b")
    );
    let ctx = e.context("locked", &[("Dockerfile", &df)]);
    let log = e.build_ok(&ctx, "locked:1", &["--jobs", "2"], &[]);
    assert_eq!(step_output(&log, "stage-2", 4), ["a", "b"], "{log}");
}

#[test]
fn cache_mount_as_root() {
    cache_mount_persists_outside_the_layer(As::Root);
}

#[test]
fn cache_mount_rootless() {
    cache_mount_persists_outside_the_layer(As::Rootless);
}

fn bind_from_context(who: As) {
    let e = Env::new(who);
    let ctx = e.context(
        "bind",
        &[
            (
                "Dockerfile",
                "FROM busybox:latest\n\
                 RUN --mount=target=/src,source=src sh -c 'cat /src/a; ls /src; if echo no 2>/dev/null > /src/a; then echo wrote; else echo read-only; fi'\n\
                 RUN --mount=target=/src,source=src,rw sh -c 'echo changed > /src/a && cat /src/a && touch /src/new'\n\
                 RUN --mount=target=/whole cat /whole/src/a\n\
                 RUN ls /src /whole 2>&1 | wc -l\n",
            ),
            ("src/a", "hello\n"),
            ("src/secret.key", "ignored\n"),
            (".dockerignore", "src/*.key\n"),
        ],
    );
    let log = e.build_ok(&ctx, "bind:1", &[], &[]);
    assert_eq!(
        step_output(&log, "stage-0", 2),
        ["hello", "a", "read-only"],
        "{log}"
    );
    assert_eq!(step_output(&log, "stage-0", 3), ["changed"], "{log}");
    // rw writes were made on a copy: the next RUN and the context still see the original.
    assert_eq!(step_output(&log, "stage-0", 4), ["hello"], "{log}");
    assert_eq!(
        std::fs::read_to_string(ctx.join("src/a")).unwrap(),
        "hello\n"
    );
    assert!(!ctx.join("src/new").exists());
    let paths = e.layer_paths("bind:1");
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("src") || p.starts_with("whole")),
        "{paths:?}"
    );
    // Changing a bound file re-runs the RUNs that bind it; nothing else changes.
    let log = e.build_ok(&ctx, "bind:2", &[], &[]);
    assert!(log.contains("[stage-0 2/5] CACHED"), "{log}");
    std::fs::write(ctx.join("src/a"), "hello again\n").unwrap();
    let log = e.build_ok(&ctx, "bind:3", &[], &[]);
    assert!(!log.contains("[stage-0 2/5] CACHED"), "{log}");
    assert_eq!(step_output(&log, "stage-0", 4), ["hello again"], "{log}");
    // An ignored file is not part of the key either.
    std::fs::write(ctx.join("src/secret.key"), "other\n").unwrap();
    let log = e.build_ok(&ctx, "bind:4", &[], &[]);
    assert!(log.contains("[stage-0 2/5] CACHED"), "{log}");
}

/// Without a `.dockerignore` a read-only bind is the context itself; a symlink source is
/// never followed to the host.
#[test]
fn bind_of_an_unfiltered_context_and_symlink_sources() {
    let e = Env::new(As::Rootless);
    let ctx = e.context(
        "plain",
        &[
            (
                "Dockerfile",
                "FROM busybox:latest
RUN --mount=target=/src sh -c 'cat /src/d/a; touch /src/new 2>/dev/null || echo read-only'
",
            ),
            ("d/a", "plain\n"),
        ],
    );
    // A relative context path (kiln's working directory is the test's directory).
    let out = e.kv(
        &["build", "--progress=plain", "-t", "plain:1", "plain"],
        &[],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        step_output(&log, "stage-0", 2),
        ["plain", "read-only"],
        "{log}"
    );
    assert!(!ctx.join("new").exists());
    std::os::unix::fs::symlink("/etc", ctx.join("hostetc")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest
RUN --mount=target=/e,source=hostetc cat /e/hostname
",
    )
    .unwrap();
    let out = e.build(&ctx, "plain:2", &[], &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("Dockerfile:2") && t.contains("not a file or directory"),
        "{t}"
    );
}

#[test]
fn bind_from_context_as_root() {
    bind_from_context(As::Root);
}

#[test]
fn bind_from_context_rootless() {
    bind_from_context(As::Rootless);
}

fn bind_from_stage_stays_inside_it(who: As) {
    let e = Env::new(who);
    let ctx = e.context(
        "stage",
        &[(
            "Dockerfile",
            "FROM busybox:latest AS base\n\
             RUN mkdir /out && echo built > /out/f && ln -s / /out/up && ln -s ../../.. /out/rel && echo stage-root > /marker\n\
             FROM busybox:latest\n\
             RUN --mount=from=base,source=/out/up,target=/m sh -c 'cat /m/marker /m/out/f; test -e /m/work && echo HOST; true'\n\
             RUN --mount=from=base,source=out/rel,target=/m,rw sh -c 'cat /m/marker; echo x > /m/marker'\n\
             RUN --mount=from=0,source=/marker,target=/one cat /one\n\
             RUN --mount=from=busybox:latest,source=/etc/group,target=/g head -n 1 /g\n",
        )],
    );
    let log = e.build_ok(&ctx, "stage:1", &[], &[]);
    assert_eq!(step_output(&log, "stage-1", 5), ["root:x:0:"], "{log}");
    assert_eq!(
        step_output(&log, "stage-1", 2),
        ["stage-root", "built"],
        "a symlink in the stage reached the host:\n{log}"
    );
    assert_eq!(step_output(&log, "stage-1", 3), ["stage-root"], "{log}");
    // The rw write went to a throwaway copy.
    assert_eq!(step_output(&log, "stage-1", 4), ["stage-root"], "{log}");
    let out = e.build(
        &e.context(
            "stage-missing",
            &[(
                "Dockerfile",
                "FROM busybox:latest AS base\nFROM busybox:latest\nRUN --mount=from=base,source=/nope,target=/m true\n",
            )],
        ),
        "stage:2",
        &[],
        &[],
    );
    let t = text(&out);
    assert!(!out.status.success());
    assert!(
        t.contains("Dockerfile:3") && t.contains("\"/nope\" not found in base"),
        "{t}"
    );
}

/// Only the content of what a stage mount binds is in the key (BuildKit's testMountRWCache).
#[test]
fn a_stage_mount_is_keyed_by_the_content_it_binds() {
    let e = Env::new(As::Root);
    let ctx = e.context(
        "key",
        &[(
            "Dockerfile",
            "FROM busybox:latest AS build
ARG OTHER
ARG OUT
RUN mkdir /out && echo \"$OUT\" > /out/f && echo \"$OTHER\" > /other
             FROM busybox:latest
RUN --mount=from=build,source=/out,target=/o cat /o/f
",
        )],
    );
    let args = |other: &'static str, out: &'static str| {
        vec![
            "--build-arg".to_string(),
            format!("OTHER={other}"),
            "--build-arg".to_string(),
            format!("OUT={out}"),
        ]
    };
    let build = |tag: &str, a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        e.build_ok(&ctx, tag, &a, &[])
    };
    let log = build("key:1", args("a", "one"));
    assert_eq!(step_output(&log, "stage-1", 2), ["one"], "{log}");
    // The stage is rebuilt, but /out is the same: the RUN stays cached.
    let log = build("key:2", args("b", "one"));
    assert!(!log.contains("[build 4/4] CACHED"), "{log}");
    assert!(log.contains("[stage-1 2/2] CACHED"), "{log}");
    let log = build("key:3", args("b", "two"));
    assert_eq!(step_output(&log, "stage-1", 2), ["two"], "{log}");
}

#[test]
fn bind_from_stage_as_root() {
    bind_from_stage_stays_inside_it(As::Root);
}

#[test]
fn bind_from_stage_rootless() {
    bind_from_stage_stays_inside_it(As::Rootless);
}

#[test]
fn tmpfs_mount_is_sized_and_left_out() {
    let e = Env::new(As::Rootless);
    let ctx = e.context(
        "tmpfs",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN --mount=type=tmpfs,target=/t,size=1m sh -c 'echo x > /t/f && df -k /t | tail -1 | tr -s \" \" | cut -d\" \" -f2'\n",
        )],
    );
    let log = e.build_ok(&ctx, "tmpfs:1", &[], &[]);
    assert_eq!(step_output(&log, "stage-0", 2), ["1024"], "{log}");
    let paths = e.layer_paths("tmpfs:1");
    assert!(
        !paths.iter().any(|p| p == "t/" || p.starts_with("t/")),
        "{paths:?}"
    );
}

const SECRET: &str = "s3cr3t-Value-4f9a1c";
const SECRET2: &str = "other-s3cr3t-77e0";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn secrets(who: As) {
    let e = Env::new(who);
    let secret_file = e.path().join("token.txt");
    std::fs::write(&secret_file, SECRET).unwrap();
    e.own(&secret_file);
    // The command checks the secret by its hash, so the build log cannot hold it.
    let df = "FROM busybox:latest\n\
              RUN --mount=type=secret,id=tok sh -c 'sha256sum < /run/secrets/tok; stat -c \"%a %u:%g\" /run/secrets/tok'\n\
              RUN --mount=type=secret,id=envsec,env=MYSEC sh -c 'printf %s \"$MYSEC\" | sha256sum; test -e /run/secrets/envsec || echo no-file'\n\
              RUN --mount=type=secret,id=absent,required=false sh -c 'test -e /run/secrets/absent || echo skipped'\n\
              RUN --mount=type=secret,id=tok,target=/etc/app.key,uid=1000,mode=0440 stat -c '%a %u' /etc/app.key\n\
              RUN ls /run/secrets /etc/app.key 2>&1 | wc -l\n";
    let ctx = e.context("sec", &[("Dockerfile", df)]);
    let file_arg = format!("id=tok,src={}", secret_file.display());
    let log = e.build_ok(
        &ctx,
        "sec:1",
        &[
            "--secret",
            &file_arg,
            "--secret",
            "id=envsec,env=KILN_TEST_SECRET",
        ],
        &[("KILN_TEST_SECRET", SECRET2)],
    );
    assert_eq!(
        step_output(&log, "stage-0", 2),
        [format!("{}  -", sha256_hex(SECRET)), "400 0:0".to_string()],
        "{log}"
    );
    assert_eq!(
        step_output(&log, "stage-0", 3),
        [format!("{}  -", sha256_hex(SECRET2)), "no-file".to_string()],
        "{log}"
    );
    assert_eq!(step_output(&log, "stage-0", 4), ["skipped"], "{log}");
    assert_eq!(step_output(&log, "stage-0", 5), ["440 1000"], "{log}");
    // No stub file or directory is left behind.
    assert_eq!(step_output(&log, "stage-0", 6), ["2"], "{log}");
    assert!(!log.contains(SECRET) && !log.contains(SECRET2), "{log}");

    // A changed secret does not re-run the step: it is no part of the key.
    std::fs::write(&secret_file, "a different value").unwrap();
    let log = e.build_ok(
        &ctx,
        "sec:2",
        &[
            "--secret",
            &file_arg,
            "--secret",
            "id=envsec,env=KILN_TEST_SECRET",
        ],
        &[("KILN_TEST_SECRET", "changed too")],
    );
    assert!(log.contains("[stage-0 2/6] CACHED"), "{log}");
    assert!(log.contains("[stage-0 3/6] CACHED"), "{log}");

    // Nowhere in the image, its config, `inspect`, or the store.
    let inspect = e.ok_text(&["inspect", "sec:1"]);
    let history = e.ok_text(&["history", "--no-trunc", "sec:1"]);
    let (paths, bytes) = e.saved("sec:1");
    for s in [SECRET, SECRET2] {
        assert!(!inspect.contains(s) && !history.contains(s));
        assert!(
            !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
            "secret in the saved image"
        );
        assert_eq!(tree_contains(&e.store(), s.as_bytes()), None);
    }
    // The layers hold no /run/secrets mount point.
    assert!(!paths.iter().any(|p| p.starts_with("run")), "{paths:?}");
}

#[test]
fn secrets_as_root() {
    secrets(As::Root);
}

#[test]
fn secrets_rootless() {
    secrets(As::Rootless);
}

#[test]
fn secret_id_alone_reads_the_env_and_required_missing_names_the_line() {
    let e = Env::new(As::Root);
    let ctx = e.context(
        "sec",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN --mount=type=secret,id=API_KEY,env=API_KEY sh -c 'printf %s \"$API_KEY\" | sha256sum'\nRUN --mount=type=secret,id=missing,required=true true\n",
        )],
    );
    let out = e.build(
        &ctx,
        "sec:1",
        &["--secret", "id=API_KEY"],
        &[("API_KEY", SECRET)],
    );
    let log = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        step_output(&log, "stage-0", 2),
        [format!("{}  -", sha256_hex(SECRET))],
        "{log}"
    );
    assert!(
        log.contains("Dockerfile:3: RUN failed: secret missing: not found"),
        "{log}"
    );
    // A secret file that does not exist is the user's mistake, said before building.
    let out = e.build(
        &ctx,
        "sec:2",
        &["--secret", "id=x,src=/nonexistent/file"],
        &[],
    );
    let log = text(&out);
    assert!(!out.status.success());
    assert!(log.contains("/nonexistent/file"), "{log}");
}

#[test]
fn a_mount_from_a_later_or_the_same_stage_is_refused() {
    let e = Env::new(As::Root);
    for (df, want) in [
        (
            "FROM busybox:latest\nRUN --mount=from=later,target=/l true\nFROM busybox:latest AS later\n",
            "Dockerfile:2",
        ),
        (
            "FROM busybox:latest AS me\nRUN --mount=type=cache,target=/c,from=me true\n",
            "circular dependency detected on stage: me",
        ),
    ] {
        let ctx = e.context("order", &[("Dockerfile", df)]);
        let out = e.build(&ctx, "order:1", &[], &[]);
        let t = text(&out);
        assert!(!out.status.success(), "{t}");
        assert!(t.contains(want), "{t}");
    }
}

#[test]
fn ssh_mounts_are_refused_by_line() {
    let e = Env::new(As::Root);
    let ctx = e.context(
        "ssh",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN true\nRUN --mount=type=ssh ssh-add -l\n",
        )],
    );
    let out = e.build(&ctx, "ssh:1", &[], &[]);
    let log = text(&out);
    assert!(!out.status.success());
    assert!(
        log.contains("Dockerfile:3: RUN failed: RUN --mount=type=ssh is not supported"),
        "{log}"
    );
}

#[test]
fn build_network_none_is_the_default_for_every_run() {
    let e = Env::new(As::Rootless);
    let ctx = e.context(
        "net",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '\nRUN --network=host tail -n +3 /proc/net/dev | wc -l\n",
        )],
    );
    let log = e.build_ok(&ctx, "net:1", &["--network", "none"], &[]);
    assert_eq!(step_output(&log, "stage-0", 2), ["lo"], "{log}");
    // A RUN's own --network wins.
    let host_ifaces: usize = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .count();
    assert_eq!(
        step_output(&log, "stage-0", 3),
        [host_ifaces.to_string()],
        "{log}"
    );
    // The network is part of the key: the default build runs the step again.
    let log = e.build_ok(&ctx, "net:2", &[], &[]);
    assert!(!log.contains("[stage-0 2/3] CACHED"), "{log}");
    assert_eq!(step_output(&log, "stage-0", 2).len(), host_ifaces, "{log}");
    let out = e.build(&ctx, "net:3", &["--network", "private"], &[]);
    assert!(!out.status.success());
}

#[test]
fn secret_looking_build_args_are_warned_about_and_redacted() {
    let e = Env::new(As::Root);
    let ctx = e.context(
        "args",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nARG VERSION=1.0\nARG API_TOKEN=default-tok-9b7e\nARG DB_PASSWORD\nRUN test -n \"$API_TOKEN$DB_PASSWORD\" && echo ok\n",
        )],
    );
    let log = e.build_ok(
        &ctx,
        "args:1",
        &["--build-arg", "DB_PASSWORD=hunter2-77aa"],
        &[],
    );
    assert!(
        log.contains("Dockerfile:3: ARG API_TOKEN looks like a secret: build args are visible in the image history; use --secret"),
        "{log}"
    );
    assert!(
        log.contains("Dockerfile:4: ARG DB_PASSWORD looks like a secret"),
        "{log}"
    );
    assert!(!log.contains("ARG VERSION looks like"), "{log}");
    assert!(log.contains("ARG API_TOKEN=<redacted>"), "{log}");
    assert!(!log.contains("default-tok-9b7e"), "{log}");
    let inspect = e.ok_text(&["inspect", "args:1"]);
    let history = e.ok_text(&["history", "--no-trunc", "args:1"]);
    assert!(history.contains("ARG API_TOKEN=<redacted>"), "{history}");
    assert!(history.contains("ARG VERSION=1.0"), "{history}");
    let (_, bytes) = e.saved("args:1");
    for v in ["default-tok-9b7e", "hunter2-77aa"] {
        assert!(!inspect.contains(v) && !history.contains(v), "{v}");
        assert!(!bytes.windows(v.len()).any(|w| w == v.as_bytes()), "{v}");
    }
}
