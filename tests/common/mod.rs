//! Shared support for the integration tests: a kiln with a private store, a busybox base
//! image made from Debian's busybox-static (no network), and the independent readers
//! (skopeo, umoci, podman) that check what kiln wrote.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod env;

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A kiln whose store lives in a temp dir of its own.
pub struct Kiln {
    pub dir: tempfile::TempDir,
}

impl Kiln {
    pub fn new() -> Kiln {
        Kiln {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `kiln --root <store> ...`
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.arg("--root").arg(self.root());
        c.env_remove("SOURCE_DATE_EPOCH");
        c
    }

    /// Run kiln with `args`, assert success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Import the busybox base as `name`.
    pub fn import_busybox(&self, name: &str) {
        self.ok(&["import", busybox_tar().to_str().unwrap(), name]);
    }
}

/// A rootfs tarball of Debian's busybox-static (scripts/busybox-rootfs.sh), made once per
/// test process.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-test-busybox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tar = dir.join("busybox.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-rootfs.sh");
        run(std::process::Command::new("bash").arg(script).arg(&tar));
        tar
    })
}

/// Whether an external tool is installed; tests that need one fail loudly when it is
/// missing and KILN_REQUIRE_TOOLS is set (as in CI), else they say so and skip.
pub fn have(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("KILN_REQUIRE_TOOLS").is_some() {
            panic!("{tool} is required (KILN_REQUIRE_TOOLS is set) but not installed");
        }
        eprintln!("note: {tool} not installed; skipping the part of this test that needs it");
    }
    found
}

/// Run a command, assert success, return stdout.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Write a build context from (path, content) pairs.
pub fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let path = d.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
    d
}

/// The ordinary user the rootless tests run kiln as (when the tests run as root).
pub const TEST_USER: &str = "kilntest";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Make the rootless test user, with subordinate id ranges, if it is missing.
pub fn ensure_test_user() {
    let exists = std::process::Command::new("id")
        .arg(TEST_USER)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        run(std::process::Command::new("useradd").args(["-m", TEST_USER]));
    }
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        if !text
            .lines()
            .any(|l| l.starts_with(&format!("{TEST_USER}:")))
        {
            let mut t = text;
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            t.push_str(&format!("{TEST_USER}:200000:65536\n"));
            std::fs::write(f, t).unwrap();
        }
    }
}

/// The BuildKit conformance corpus: `$KILN_CONFORMANCE_DIR` (CI sets it), else
/// `../shared/conformance` beside the crate. Missing is a failure, never a skip.
pub fn conformance_dir() -> PathBuf {
    conformance_dir_if_present().unwrap_or_else(|| {
        panic!("conformance corpus not found: set KILN_CONFORMANCE_DIR or put shared/ beside the crate")
    })
}

/// As [`conformance_dir`], for tests that only borrow corpus files as extra inputs; still a
/// failure when `$KILN_CONFORMANCE_DIR` names a missing directory.
pub fn conformance_dir_if_present() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KILN_CONFORMANCE_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "KILN_CONFORMANCE_DIR={} is not a directory",
            dir.display()
        );
        return Some(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    dir.is_dir().then_some(dir)
}

/// A docker-registry (the CNCF distribution server Debian packages) on a free loopback port,
/// with its own storage and access log; killed when dropped. `None` when the server is not
/// installed (and KILN_REQUIRE_TOOLS is unset).
pub struct LoopbackRegistry {
    child: std::process::Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl LoopbackRegistry {
    pub fn start() -> Option<LoopbackRegistry> {
        LoopbackRegistry::start_with(None)
    }

    /// With `htpasswd`, a registry that wants basic auth for that user.
    pub fn start_with(htpasswd: Option<(&str, &str)>) -> Option<LoopbackRegistry> {
        let bin = if Path::new("/usr/bin/docker-registry").exists() {
            PathBuf::from("/usr/bin/docker-registry")
        } else if have("docker-registry") {
            PathBuf::from("docker-registry")
        } else {
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = htpasswd {
            if !have("htpasswd") {
                return None;
            }
            let file = dir.path().join("htpasswd");
            run(std::process::Command::new("htpasswd")
                .arg("-Bbc")
                .arg(&file)
                .arg(user)
                .arg(pass));
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = std::process::Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = LoopbackRegistry { child, port, dir };
        let start = std::time::Instant::now();
        // Waiting for the port to open: a bound on a start-up, not a speed assertion.
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "registry did not start:\n{}",
                reg.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(reg)
    }

    /// `127.0.0.1:PORT`, as references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `METHOD /path` of every request in the access log, in order.
    pub fn requests(&self) -> Vec<String> {
        let mut out = Vec::new();
        for line in self.log().lines() {
            for m in ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"] {
                let Some(at) = line.find(&format!("\"{m} /v2/")) else {
                    continue;
                };
                let rest = &line[at + 1..];
                let path = rest.split(' ').nth(1).unwrap_or_default();
                out.push(format!("{m} {path}"));
            }
        }
        out
    }

    /// The HTTP methods of the access log, in order.
    pub fn methods(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|r| r.split(' ').next().unwrap_or_default().to_string())
            .collect()
    }

    /// The stored file of a blob.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for LoopbackRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
