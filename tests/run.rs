#![allow(clippy::unwrap_used, clippy::expect_used)]
//! RUN in `kiln build`, through the real binary, as root and as an unprivileged user with
//! subordinate ids; results read back by umoci and by reading the layer tars.

mod common;

use common::env::{As, Env};
use common::{have, run};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

/// What these tests add to the shared [`Env`].
trait RunEnv {
    fn kiln_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Output;
    fn kiln_ok(&self, args: &[&str]) -> String;
    fn build(&self, ctx: &Path, tag: &str, extra: &[&str]) -> Output;
    fn layers(&self, tag: &str) -> Vec<Vec<(String, u64, u64)>>;
    fn config(&self, tag: &str) -> serde_json::Value;
}

impl RunEnv for Env {
    fn kiln_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        self.kiln_with(args, vars, None)
    }

    fn kiln_ok(&self, args: &[&str]) -> String {
        let out = self.kiln(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kiln {args:?} failed:\n{text}");
        text
    }

    fn build(&self, ctx: &Path, tag: &str, extra: &[&str]) -> Output {
        let mut args = vec!["build", "--progress=plain", "-t", tag];
        args.extend_from_slice(extra);
        let c = ctx.to_str().unwrap().to_string();
        args.push(&c);
        self.kiln(&args)
    }

    /// The layer tars of an image, in order, as `tar tvn`-like listings: (path, uid, gid).
    fn layers(&self, tag: &str) -> Vec<Vec<(String, u64, u64)>> {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.store().join("index.json")).unwrap())
                .unwrap();
        let want = format!("docker.io/library/{tag}");
        let m = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == want.as_str())
            .unwrap_or_else(|| panic!("{want} not in the store"));
        let blob = |d: &serde_json::Value| {
            let hex = d
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap()
                .to_string();
            self.store().join("blobs/sha256").join(hex)
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob(&m["digest"])).unwrap()).unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let f = std::fs::File::open(blob(&l["digest"])).unwrap();
                let mut a = tar::Archive::new(f);
                a.entries()
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        let h = e.header();
                        (
                            e.path().unwrap().to_string_lossy().into_owned(),
                            h.uid().unwrap(),
                            h.gid().unwrap(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn config(&self, tag: &str) -> serde_json::Value {
        let out = self.kiln_ok(&["inspect", tag]);
        let start = out.find(['[', '{']).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out[start..]).unwrap();
        if v.is_array() {
            v[0].clone()
        } else {
            v
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const DOCKERFILE: &str = r#"FROM busybox:latest
ARG GREETING=hello
ENV FOO=bar
RUN echo "env FOO=$FOO arg GREETING=$GREETING" && echo "pid $$ host $(hostname)" && id -u
RUN echo 'kiln:x:1234:1234:kiln:/home/kiln:/bin/sh' >> /etc/passwd \
 && echo 'kiln:x:1234:' >> /etc/group \
 && mkdir -p /home/kiln /data && echo made > /data/file \
 && chown -R kiln:kiln /home/kiln /data \
 && rm /bin/vi
RUN test ! -e /bin/vi && echo vi-is-gone
RUN ["/bin/echo", "exec form"]
USER kiln
WORKDIR /home/kiln
RUN id && pwd && echo mine > mine && stat -c owner=%u:%g /data/file
"#;

fn builds_with_run(who: As) {
    let e = Env::new(who);
    let ctx = e.context("ctx", &[("Dockerfile", DOCKERFILE)]);
    let out = e.build(&ctx, "runapp:1", &["--build-arg", "GREETING=salut"]);
    let log = text(&out);
    assert!(out.status.success(), "build failed:\n{log}");
    let mut missing = Vec::new();
    for want in [
        "[stage-0 4/10] env FOO=bar arg GREETING=salut",
        "[stage-0 4/10] pid 1 host ",
        "[stage-0 6/10] vi-is-gone",
        "[stage-0 7/10] exec form",
        "[stage-0 10/10] uid=1234(kiln) gid=1234(kiln)",
        "[stage-0 10/10] /home/kiln",
        "[stage-0 10/10] owner=1234:1234",
    ] {
        if !log.contains(want) {
            missing.push(want);
        }
    }
    // Container root, whoever runs kiln.
    let id_line = log
        .lines()
        .find(|l| l.starts_with("[stage-0 4/10]") && l.ends_with(" 0"))
        .is_some();
    assert!(id_line, "RUN did not run as uid 0:\n{log}");
    assert!(
        missing.is_empty(),
        "missing from the output {missing:?}:\n{log}"
    );

    // The layers: container ids, a whiteout for the deleted file, no mount points.
    let layers = e.layers("runapp:1");
    // The base, then five RUNs (WORKDIR names a directory that exists: no layer).
    assert_eq!(layers.len(), 6, "{:?}", &layers[1..]);
    let run2 = &layers[2];
    let find = |l: &Vec<(String, u64, u64)>, p: &str| l.iter().find(|(n, _, _)| n == p).cloned();
    assert_eq!(
        find(run2, "bin/.wh.vi").map(|x| x.0),
        Some("bin/.wh.vi".into())
    );
    assert_eq!(
        find(run2, "data/file"),
        Some(("data/file".into(), 1234, 1234))
    );
    assert_eq!(
        find(run2, "home/kiln/"),
        Some(("home/kiln/".into(), 1234, 1234))
    );
    assert!(find(run2, "etc/passwd").is_some(), "{run2:?}");
    assert!(
        layers[1].is_empty(),
        "echo-only RUN changed files: {:?}",
        layers[1]
    );
    for l in &layers[1..] {
        for (p, _, _) in l {
            assert!(
                !p.starts_with("proc")
                    && !p.starts_with("dev")
                    && !p.starts_with("sys")
                    && !p.contains("resolv.conf"),
                "mount point {p} in a layer"
            );
        }
    }
    assert_eq!(
        find(&layers[5], "home/kiln/mine"),
        Some(("home/kiln/mine".into(), 1234, 1234))
    );
    // Build args are not kept in the image; ENV is.
    let config = e.config("runapp:1");
    let env = config.to_string();
    assert!(
        env.contains("FOO=bar") && !env.contains("GREETING"),
        "{env}"
    );

    // An independent reader sees the deleted file gone and the new ones in place.
    if have("umoci") {
        let dest = e.path().join("bundle");
        run(Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!(
                "{}:docker.io/library/runapp:1",
                e.store().display()
            ))
            .arg(&dest));
        let rootfs = dest.join("rootfs");
        assert!(!rootfs.join("bin/vi").exists());
        assert!(rootfs.join("bin/sh").exists());
        assert_eq!(
            std::fs::read_to_string(rootfs.join("data/file")).unwrap(),
            "made\n"
        );
        let md = std::fs::metadata(rootfs.join("home/kiln/mine")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 1234));
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
        assert!(passwd.contains("kiln:x:1234:1234"));
    }

    // No change: every step from the cache, and no RUN output.
    let again = e.build(&ctx, "runapp:1", &["--build-arg", "GREETING=salut"]);
    let log = text(&again);
    assert!(again.status.success(), "{log}");
    assert_eq!(log.matches("CACHED").count(), 9, "{log}");
    assert!(!log.contains("[stage-0 6/10] vi-is-gone"), "{log}");
    // A build arg in use changes the RUN that sees it.
    let other = e.build(&ctx, "runapp:2", &["--build-arg", "GREETING=hej"]);
    let log = text(&other);
    assert!(other.status.success(), "{log}");
    assert!(log.contains("arg GREETING=hej"), "{log}");
    // Nothing left behind in the store's staging area.
    let tmp: Vec<_> = std::fs::read_dir(e.store().join("tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");

    // Everything can be collected again, even snapshots holding files that belong to
    // container users (subordinate ids the rootless user cannot remove alone).
    let out = e.kiln_env(&["prune", "-a", "-f"], &[("KILN_GC_GRACE_SECONDS", "0")]);
    assert!(out.status.success(), "prune failed:\n{}", text(&out));
    let left: Vec<_> = std::fs::read_dir(e.store().join("snapshots"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "snapshots left after prune -a: {left:?}");
}

#[test]
fn run_as_root() {
    builds_with_run(As::Root);
}

#[test]
fn run_rootless() {
    builds_with_run(As::Rootless);
}

fn failures(who: As) {
    let e = Env::new(who);
    let cases = [
        (
            "FROM busybox:latest\nENV A=1\nRUN echo before && exit 3\n",
            "Dockerfile:3: RUN failed: process \"/bin/sh -c echo before && exit 3\" did not complete successfully: exit code: 3",
        ),
        (
            "FROM busybox:latest\nRUN [\"no-such-command\", \"x\"]\n",
            "Dockerfile:2: RUN failed: process \"no-such-command x\" did not complete successfully: exit code: 127",
        ),
        (
            "FROM busybox:latest\nUSER ghost\nRUN true\n",
            "Dockerfile:3: RUN failed: unable to find user ghost",
        ),
    ];
    let mut failed = Vec::new();
    for (i, (df, want)) in cases.iter().enumerate() {
        let ctx = e.context(&format!("fail{i}"), &[("Dockerfile", df)]);
        let out = e.build(&ctx, "fails:1", &[]);
        let log = text(&out);
        if out.status.success() || !log.contains(want) {
            failed.push(format!("{df:?}: want {want:?}, got:\n{log}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n---\n"));
}

#[test]
fn failing_run_names_the_line_command_and_code() {
    failures(As::Root);
    failures(As::Rootless);
}

#[test]
fn run_network_none_has_only_loopback() {
    let e = Env::new(As::Rootless);
    let ctx = e.context(
        "net",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN --network=none cat /proc/net/dev | tail -n +3 | cut -d: -f1\nRUN echo $(ls /proc | grep -c '^[0-9]') processes\n",
        )],
    );
    let out = e.build(&ctx, "net:1", &[]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let ifaces: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("[stage-0 2/3] "))
        .filter(|l| !l.starts_with("DONE") && !l.starts_with("RUN"))
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{log}");
    // Its own pid namespace: the shell, its subshell, ls and grep (the host has hundreds).
    let procs = log
        .lines()
        .filter_map(|l| l.strip_prefix("[stage-0 3/3] ")?.strip_suffix(" processes"))
        .find_map(|n| n.trim().parse::<u32>().ok());
    assert!(procs.is_some_and(|n| n <= 6), "{log}");
}

#[test]
fn run_heredocs() {
    let e = Env::new(As::Rootless);
    let df = "FROM busybox:latest\n\
              ARG WHO=world\n\
              RUN <<EOF\n\
              echo one $WHO\n\
              echo two > /two\n\
              EOF\n\
              RUN <<EOF\n\
              #!/bin/busybox sh\n\
              echo script $0\n\
              EOF\n\
              RUN cat <<A > /a && cat <<'B' > /b\n\
              alpha $WHO\n\
              A\n\
              beta $WHO\n\
              B\n\
              RUN cat /two /a /b\n";
    let ctx = e.context("heredoc", &[("Dockerfile", df)]);
    let out = e.build(&ctx, "heredoc:1", &[]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let mut missing = Vec::new();
    for want in [
        "[stage-0 3/6] one world",
        "[stage-0 4/6] script /dev/pipes/EOF",
        "[stage-0 6/6] two",
        "[stage-0 6/6] alpha world",
        "[stage-0 6/6] beta $WHO",
    ] {
        if !log.contains(want) {
            missing.push(want);
        }
    }
    assert!(missing.is_empty(), "missing {missing:?}:\n{log}");
}

#[test]
fn parallel_stages_with_run_and_copy_from() {
    let e = Env::new(As::Rootless);
    let df = "FROM busybox:latest AS a\n\
              RUN sleep 1 && echo from-a > /a.txt\n\
              FROM busybox:latest AS b\n\
              RUN sleep 1 && echo from-b > /b.txt\n\
              FROM busybox:latest\n\
              COPY --from=a /a.txt /\n\
              COPY --from=b /b.txt /\n\
              RUN cat /a.txt /b.txt && test -d /sys/class && ! touch /sys/x 2>/dev/null && echo sys-ro\n";
    let ctx = e.context("stages", &[("Dockerfile", df)]);
    let out = e.build(&ctx, "stages:1", &[]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    for want in ["] from-a", "] from-b", "] sys-ro"] {
        assert!(log.contains(want), "missing {want:?}:\n{log}");
    }
}

#[test]
fn without_newuidmap_only_the_callers_id_is_mapped_with_a_warning() {
    let e = Env::new(As::Rootless);
    // A PATH without newuidmap/newgidmap (kiln itself is started by its full path).
    let vars = [("PATH", "/nonexistent")];
    let ok = e.context(
        "one-id",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN id -u && touch /mine\n",
        )],
    );
    let mut args = vec!["build", "--progress=plain", "-t", "oneid:1"];
    let c = ok.to_str().unwrap().to_string();
    args.push(&c);
    let out = e.kiln_env(&args, &vars);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("[stage-0 2/2] 0"), "{log}");
    assert!(
        log.contains("WARNING: newuidmap/newgidmap are not installed"),
        "{log}"
    );
    let chown = e.context(
        "chown",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN touch /f && chown 1234 /f\n",
        )],
    );
    let c = chown.to_str().unwrap().to_string();
    let out = e.kiln_env(&["build", "--progress=plain", "-t", "oneid:2", &c], &vars);
    let log = text(&out);
    assert!(
        !out.status.success(),
        "chown to an unmapped id succeeded:\n{log}"
    );
    assert!(log.contains("RUN failed"), "{log}");
}
