#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The root filesystem modes (`KILN_ROOTFS=native|fuse|copy`): the same Dockerfile built in
//! each gives the same image (byte-identical layers), as root and as an ordinary user with
//! subordinate ids, and `kiln run` works on a copied root.

mod common;

use common::env::{As, Env};
use common::{have, is_root, run};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A store with busybox imported at a fixed time, so that every store has the same base.
fn env(who: As) -> Env {
    env_in(who, &std::env::temp_dir())
}

fn env_in(who: As, parent: &std::path::Path) -> Env {
    let e = Env::empty_in(who, parent);
    let out = e.kv(&["import", "busybox.tar", "busybox:latest"], &[]);
    assert!(out.status.success(), "import: {}", text(&out));
    e
}

/// What these tests add to the shared [`Env`] (each test's store is its own, so no build
/// reuses the cache of a build made in another mode).
trait ModesEnv {
    /// kiln with SOURCE_DATE_EPOCH set (so times agree between modes) and `vars`.
    fn kv(&self, args: &[&str], vars: &[(&str, &str)]) -> Output;
    fn build(&self, mode: &str) -> String;
    fn image(&self) -> (String, Vec<String>);
    fn listing(&self) -> String;
}

impl ModesEnv for Env {
    fn kv(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut all = vec![("SOURCE_DATE_EPOCH", "1700000000")];
        all.extend_from_slice(vars);
        self.kiln_with(args, &all, None)
    }

    /// Build DOCKERFILE with `KILN_ROOTFS=mode` ("": the mode kiln finds); returns the log.
    fn build(&self, mode: &str) -> String {
        let ctx = self.context("ctx", &[("Dockerfile", DOCKERFILE)]);
        let out = self.kv(
            &[
                "build",
                "--progress=plain",
                "-t",
                "modes:1",
                ctx.to_str().unwrap(),
            ],
            &[("KILN_ROOTFS", mode)],
        );
        let log = text(&out);
        assert!(out.status.success(), "build in {mode} mode failed:\n{log}");
        log
    }

    /// The manifest digest of `modes:1` and its layer blobs' digests.
    fn image(&self) -> (String, Vec<String>) {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.store().join("index.json")).unwrap())
                .unwrap();
        let m = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"] == "docker.io/library/modes:1"
            })
            .unwrap()
            .clone();
        let digest = m["digest"].as_str().unwrap().to_string();
        let blob = self
            .store()
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap());
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
        let layers = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect();
        (digest, layers)
    }

    /// A listing of every layer made by the build, xattrs too (for a readable failure).
    fn listing(&self) -> String {
        let (_, layers) = self.image();
        let mut all = String::new();
        for l in &layers[1..] {
            let blob = self
                .store()
                .join("blobs/sha256")
                .join(l.strip_prefix("sha256:").unwrap());
            all.push_str(&text(
                &Command::new("python3")
                    .arg("-c")
                    .arg(
                        "import sys,tarfile\n\
                         for t in tarfile.open(sys.argv[1]):\n \
                         print(t.name,t.type,t.linkname,oct(t.mode),t.uid,t.gid,t.mtime,t.size,\
                         t.pax_headers)",
                    )
                    .arg(blob)
                    .output()
                    .unwrap(),
            ));
            all.push('\n');
        }
        all
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Adds, modifies, deletes files and dirs, chowns to a user of its own, chmods, replaces a
/// dir and a file by dirs and a dir by a file, makes symlinks and hard links (to a new file,
/// to an old one, and within one layer), and runs with a cache mount (whose mount point kiln
/// makes and removes: no change of the command's).
const DOCKERFILE: &str = r#"FROM busybox:latest
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd \
 && echo 'app:x:1000:' >> /etc/group \
 && mkdir -p /data/sub /old/inner /gone/deep /home/app \
 && echo one > /data/file && echo keep > /data/keep && echo lone > /data/lone \
 && echo x > /old/inner/x && echo g > /gone/deep/g && echo f > /was-file \
 && mkdir -p /was-dir/d && echo hl > /data/hl1 && ln /data/hl1 /data/hl2
RUN echo added > /data/new \
 && echo more >> /data/file \
 && rm /data/keep \
 && rm -rf /gone \
 && rm -rf /old && mkdir /old && echo y > /old/y \
 && rm /was-file && mkdir /was-file && echo in > /was-file/in \
 && chown -R app:app /home/app /data/file \
 && chmod 700 /data/sub \
 && ln -s /data/file /data/sym \
 && echo h > /data/h1 && ln /data/h1 /data/h2 \
 && ln /data/lone /data/lone2 \
 && rm -rf /was-dir && echo now-a-file > /was-dir \
 && rm /bin/vi
RUN --mount=type=cache,target=/var/cache/kiln-test echo c > /var/cache/kiln-test/c && echo ok > /etc/ok
"#;

fn same_image_in(who: As, mode: &str) {
    let native = env(who);
    let log = native.build("native");
    assert!(!log.contains("warning: overlayfs"), "{log}");
    let other = env(who);
    let log = other.build(mode);
    assert!(log.contains(mode), "no word of the {mode} mode:\n{log}");
    let (a, b) = (native.image(), other.image());
    assert_eq!(
        a,
        b,
        "native and {mode} builds differ\nnative:\n{}\n{mode}:\n{}",
        native.listing(),
        other.listing()
    );
    // The same bytes could still be wrong the same way: check what the image holds.
    let out = other.kv(
        &[
            "run",
            "--rm",
            "modes:1",
            "sh",
            "-c",
            "cat /data/file; ls /old /was-file | grep -v :; cat /old/y /was-file/in; stat -c %u:%g:%a /data/file /home/app /data/sub; \
             test -e /data/keep || echo no-keep; test -e /gone || echo no-gone; \
             test -e /bin/vi || echo no-vi; readlink /data/sym; \
             stat -c %i /data/h1 /data/h2 | uniq | wc -l; cat /was-dir; \
             stat -c %i /data/hl1 /data/hl2 | uniq | wc -l; ls /var/cache 2>&1; cat /etc/ok",
        ],
        &[("KILN_ROOTFS", mode)],
    );
    let got = text(&out);
    assert!(out.status.success(), "run in {mode} mode: {got}");
    for want in [
        "one\nmore\n",
        "y\n\nin\ny\nin\n",
        "1000:1000:644\n1000:1000:755\n0:0:700\n",
        "no-keep\nno-gone\nno-vi\n/data/file\n1\nnow-a-file\n1\n",
        "ok\n",
    ] {
        assert!(got.contains(want), "missing {want:?} in:\n{got}");
    }
}

#[test]
fn copy_mode_builds_the_native_image_as_root() {
    same_image_in(As::Root, "copy");
}

#[test]
fn copy_mode_builds_the_native_image_rootless() {
    same_image_in(As::Rootless, "copy");
}

#[test]
fn fuse_mode_builds_the_native_image_as_root() {
    // /dev/fuse is root's only on these machines; fuse-overlayfs is in .ci/run.
    if !is_root() || !have("fuse-overlayfs") {
        eprintln!("fuse-overlayfs or root missing: fuse mode not tested");
        return;
    }
    same_image_in(As::Root, "fuse");
}

/// A directory on an overlayfs mount: overlayfs refuses an upper dir there (EINVAL), as an
/// old kernel refuses overlayfs in a user namespace, so kiln must find another mode itself.
struct OnOverlay {
    dir: tempfile::TempDir,
}

impl OnOverlay {
    fn new() -> OnOverlay {
        let dir = tempfile::tempdir().unwrap();
        for d in ["l", "u", "w", "m"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let opt = format!(
            "lowerdir={0}/l,upperdir={0}/u,workdir={0}/w",
            dir.path().display()
        );
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opt])
            .arg(dir.path().join("m")));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            dir.path().join("m"),
            std::fs::Permissions::from_mode(0o1777),
        )
        .unwrap();
        OnOverlay { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("m")
    }
}

impl Drop for OnOverlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn finds_a_mode_when_overlay_is_refused(who: As, expect: &str) {
    let native = env(who);
    native.build("native");
    let ov = OnOverlay::new();
    let e = env_in(who, &ov.path());
    let log = e.build("");
    let warned = "warning: overlayfs is not available in a user namespace here \
                  (mounting overlayfs: Invalid argument";
    assert!(
        log.contains(warned) && log.contains(expect),
        "no warning naming {expect:?}:\n{log}"
    );
    assert_eq!(
        native.image(),
        e.image(),
        "{}\n{}",
        native.listing(),
        e.listing()
    );
    drop(e);
}

#[test]
fn falls_back_by_itself_as_root() {
    if !is_root() {
        eprintln!("mounting an overlay needs root: not tested");
        return;
    }
    let expect = if have("fuse-overlayfs") {
        "using fuse-overlayfs"
    } else {
        "using a copy of the image"
    };
    finds_a_mode_when_overlay_is_refused(As::Root, expect);
}

#[test]
fn falls_back_to_a_copy_by_itself_rootless() {
    if !is_root() {
        eprintln!("mounting an overlay needs root: not tested");
        return;
    }
    // fuse-overlayfs, if installed, fails on /dev/fuse (root's only here) and is named too.
    finds_a_mode_when_overlay_is_refused(As::Rootless, "using a copy of the image");
}

#[test]
fn copy_mode_run_changes_nothing_in_the_image_and_exit_codes_pass() {
    let e = env(As::Rootless);
    let out = e.kv(
        &[
            "run",
            "--rm",
            "busybox:latest",
            "sh",
            "-c",
            "rm /bin/vi && echo $(hostname) > /etc/hostname.txt; exit 7",
        ],
        &[("KILN_ROOTFS", "copy")],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        text(&out).contains("using a copy of the image"),
        "{}",
        text(&out)
    );
    let out = e.kv(
        &["run", "--rm", "busybox:latest", "ls", "/bin/vi"],
        &[("KILN_ROOTFS", "copy")],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn copy_mode_detached_container_takes_exec_and_logs() {
    let e = env(As::Rootless);
    let copy = [("KILN_ROOTFS", "copy")];
    let out = e.kv(
        &[
            "run",
            "-d",
            "--name",
            "cp",
            "busybox:latest",
            "sh",
            "-c",
            "echo started; sleep 30",
        ],
        &copy,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = e.kv(
        &[
            "exec",
            "cp",
            "sh",
            "-c",
            "echo hi > /tmp/h && cat /tmp/h && ls /bin/vi",
        ],
        &copy,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n/bin/vi\n");
    let logs = text(&e.kv(&["logs", "cp"], &[]));
    assert!(logs.contains("started"), "{logs}");
    let out = e.kv(&["rm", "-f", "cp"], &[]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn an_unknown_mode_is_a_clear_error() {
    let e = env(if is_root() { As::Root } else { As::Rootless });
    let out = e.kv(
        &["run", "--rm", "busybox:latest", "true"],
        &[("KILN_ROOTFS", "vfs")],
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(text(&out).contains("KILN_ROOTFS=\"vfs\""), "{}", text(&out));
    // Rootless, fuse needs /dev/fuse, which is root's alone on many hosts (these included).
    let fuse_closed = std::fs::metadata("/dev/fuse")
        .map(|m| std::os::unix::fs::MetadataExt::mode(&m) & 0o006 != 0o006)
        .unwrap_or(true);
    if is_root() && fuse_closed {
        let e = env(As::Rootless);
        let out = e.kv(
            &["run", "--rm", "busybox:latest", "true"],
            &[("KILN_ROOTFS", "fuse")],
        );
        assert_eq!(out.status.code(), Some(125), "{}", text(&out));
        assert!(text(&out).contains("KILN_ROOTFS=fuse: "), "{}", text(&out));
    }
}
