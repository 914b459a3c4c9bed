//! A test's own directory with kiln, the busybox tarball and a store, reachable by the
//! rootless test user, and kiln run there as root or as that user: the runtime tests drive
//! both paths through it.

use super::{busybox_tar, ensure_test_user, is_root, run, TEST_USER};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Who runs kiln: root itself, or (when the tests run as root) an ordinary user made for the
/// purpose with subordinate ids, so the rootless path is taken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum As {
    Root,
    Rootless,
}

/// Both when the tests run as root (CI), else the caller as it is.
pub fn modes() -> Vec<As> {
    if is_root() {
        vec![As::Root, As::Rootless]
    } else {
        vec![As::Rootless]
    }
}

/// kiln where the rootless user can run it, copied once per test process: a copy made while
/// another test thread forks would stay open for writing in that child, and exec'ing it
/// would then fail with ETXTBSY.
fn kiln_copy() -> &'static Path {
    static KILN: OnceLock<PathBuf> = OnceLock::new();
    KILN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("kiln");
        std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &bin).unwrap();
        bin
    })
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub who: As,
}

impl Env {
    /// A directory with `busybox:latest` imported.
    pub fn new(who: As) -> Env {
        let e = Env::empty(who);
        e.ok(&["import", "busybox.tar", "busybox:latest"]);
        e
    }

    /// As [`Env::new`], the directory made under `parent` (a filesystem of the test's).
    pub fn new_in(who: As, parent: &Path) -> Env {
        let e = Env::empty_in(who, parent);
        e.ok(&["import", "busybox.tar", "busybox:latest"]);
        e
    }

    /// A directory with kiln and `busybox.tar`, and no store yet.
    pub fn empty(who: As) -> Env {
        Env::empty_in(who, &std::env::temp_dir())
    }

    pub fn empty_in(who: As, parent: &Path) -> Env {
        let dir = tempfile::tempdir_in(parent).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(kiln_copy(), dir.path().join("kiln")).unwrap();
        std::fs::copy(busybox_tar(), dir.path().join("busybox.tar")).unwrap();
        if who == As::Rootless && is_root() {
            ensure_test_user();
            run(Command::new("chown")
                .arg("-R")
                .arg(TEST_USER)
                .arg(dir.path()));
        }
        Env { dir, who }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    /// `kiln --root STORE ARGS` as this env's user, in its directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = if self.who == As::Rootless && is_root() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--reuid", TEST_USER, "--regid", TEST_USER, "--init-groups"])
                .arg(self.path().join("kiln"))
                .env("HOME", format!("/home/{TEST_USER}"));
            c
        } else {
            Command::new(self.path().join("kiln"))
        };
        c.current_dir(self.path())
            .arg("--root")
            .arg(self.store())
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_ROOTFS");
        c
    }

    /// Run kiln with extra environment variables and, when given, this standard input.
    pub fn kiln_with(&self, args: &[&str], vars: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
        let mut c = self.command(args);
        c.envs(vars.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(&mut c);
        if let Some(data) = stdin {
            let mut w = child.stdin.take().unwrap();
            w.write_all(data).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_with(args, &[], None)
    }

    /// Run kiln, assert success, return stdout.
    pub fn ok_with(&self, args: &[&str], vars: &[(&str, &str)], stdin: Option<&[u8]>) -> String {
        let out = self.kiln_with(args, vars, stdin);
        assert!(
            out.status.success(),
            "{:?}: kiln {args:?} failed ({:?}):\n{}{}",
            self.who,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, &[], None)
    }

    /// A build context of (path, content) pairs in this env's directory, owned by its user.
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path().join(name);
        for (p, c) in files {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        if self.who == As::Rootless && is_root() {
            run(Command::new("chown").arg("-R").arg(TEST_USER).arg(&dir));
        }
        dir
    }
}

impl Drop for Env {
    /// A failed test must not leave its containers running.
    fn drop(&mut self) {
        let records = self.store().join("containers");
        if std::fs::read_dir(&records).map_or(true, |mut d| d.next().is_none()) {
            return;
        }
        let out = self.kiln(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.kiln(&["rm", "-f", id]);
        }
    }
}

/// Spawn, retrying while the binary is busy (ETXTBSY: another thread's fork still holds a
/// copy open for writing).
pub fn spawn(c: &mut Command) -> std::process::Child {
    for _ in 0..200 {
        match c.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(25));
            }
            r => return r.unwrap(),
        }
    }
    panic!("{c:?}: the binary stayed busy");
}
