//! `kiln exec`: a command in a running container. A forked helper enters the namespaces
//! of the container's first process (user first, which gives it the rights to enter the
//! others; the ones kiln already shares, such as the host network, are skipped), chroots
//! to that process's root, and forks the command so it is inside the container's pid
//! namespace; the command takes the user, environment and working directory as `run` does.

use super::{check, cstr, os_err, Identity, RuntimeError, Stdio, FORWARDED_SIGNALS};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// What to run in the container.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// `KEY=value`, complete (see [`exec_env`]).
    pub env: Vec<String>,
    /// Absolute; "" is /.
    pub cwd: String,
    pub user: Identity,
    /// Whether setgroups is allowed in the container's user namespace.
    pub groups_allowed: bool,
    /// [`Stdio::Inherit`] or [`Stdio::Fds`] (`Capture` reads as Inherit without stdin).
    pub stdio: Stdio,
}

/// The environment of an exec'd command: the container's, then `extra` over it, with
/// PATH, HOSTNAME and HOME filled in when missing, as for the container's own command.
pub fn exec_env(
    base: &[String],
    extra: &[String],
    hostname: &str,
    home: Option<&str>,
) -> Vec<String> {
    super::fill_env(super::container::merge_env(base, extra), hostname, home)
}

/// The namespaces entered, in order: the user namespace first.
const NAMESPACES: [(&str, libc::c_int); 6] = [
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

fn open_fd(path: &str, flags: libc::c_int) -> Result<OwnedFd, RuntimeError> {
    let c = cstr(path)?;
    // SAFETY: a valid C string; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(RuntimeError::Setup(os_err(&format!("opening {path}"))));
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn same_file(a: &str, b: &str) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
        _ => false,
    }
}

/// Run `spec` inside the container whose first process is host pid `pid`; returns the
/// command's exit code (127 not found, 126 not executable, 128+N killed by signal N).
/// `started` runs once the command's process exists (to close the caller's pty slave).
pub fn exec(
    pid: libc::pid_t,
    spec: &ExecSpec,
    started: &mut dyn FnMut(),
) -> Result<i32, RuntimeError> {
    let Some(arg0) = spec.argv.first() else {
        return Err(RuntimeError::Setup("no command to run".into()));
    };
    let mut ns = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{pid}/ns/{name}");
        if same_file(&theirs, &format!("/proc/self/ns/{name}")) {
            continue;
        }
        ns.push((open_fd(&theirs, libc::O_RDONLY)?, flag, name));
    }
    let root = open_fd(
        &format!("/proc/{pid}/root"),
        libc::O_PATH | libc::O_DIRECTORY,
    )?;
    let argv: Vec<CString> = spec.argv.iter().map(cstr).collect::<Result<_, _>>()?;
    let env: Vec<CString> = spec.env.iter().map(cstr).collect::<Result<_, _>>()?;
    let program = super::program_paths(arg0, &spec.env)?;
    let cwd = cstr(if spec.cwd.is_empty() { "/" } else { &spec.cwd })?;
    let dot = cstr(".")?;
    let (err_r, err_w) = super::pipe()?;
    // SAFETY: the helper only makes syscalls, formats messages and ends in _exit.
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        return Err(RuntimeError::Setup(os_err("fork")));
    }
    if helper == 0 {
        drop(err_r);
        let mut err = std::fs::File::from(err_w);
        let result = (|| -> Result<i32, String> {
            for (fd, flag, name) in &ns {
                // SAFETY: fd is an open namespace file of the given type.
                check(
                    unsafe { libc::setns(fd.as_raw_fd(), *flag) },
                    &format!("entering the container's {name} namespace"),
                )?;
            }
            // SAFETY: plain syscalls on C strings and descriptors we own.
            unsafe {
                check(
                    libc::fchdir(root.as_raw_fd()),
                    "entering the container's root",
                )?;
                check(libc::chroot(dot.as_ptr()), "chroot")?;
                if libc::chdir(cwd.as_ptr()) != 0 {
                    return Err(os_err(&format!(
                        "working directory {}",
                        cwd.to_string_lossy()
                    )));
                }
            }
            // SAFETY: the command child only makes syscalls and ends in exec or _exit.
            let child = unsafe { libc::fork() };
            if child < 0 {
                return Err(os_err("fork"));
            }
            if child == 0 {
                let (code, msg) = command(spec, &argv, &env, &program);
                let _ = err.write_all(format!("X{msg}").as_bytes());
                // SAFETY: ends the child.
                unsafe { libc::_exit(code) };
            }
            let mut st = 0;
            loop {
                // SAFETY: waits for our own child.
                let r = unsafe { libc::waitpid(child, &mut st, 0) };
                if r == child {
                    break;
                }
                if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return Err(os_err("waitpid"));
                }
            }
            Ok(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128 + libc::WTERMSIG(st)
            })
        })();
        let code = match result {
            Ok(code) => code,
            Err(m) => {
                let _ = err.write_all(format!("E{m}").as_bytes());
                125
            }
        };
        // SAFETY: ends the helper.
        unsafe { libc::_exit(code) };
    }
    drop(err_w);
    drop(ns);
    drop(root);
    started();
    let mut msg = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
    let mut st = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(helper, &mut st, 0) };
        if r == helper {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(RuntimeError::Setup(os_err("waitpid")));
        }
    }
    if let Some(m) = msg.strip_prefix('E') {
        return Err(RuntimeError::Setup(m.to_string()));
    }
    if let Some(m) = msg.strip_prefix('X') {
        let _ = writeln!(std::io::stderr(), "kiln: {m}");
    }
    Ok(if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    })
}

/// The command process: identity, streams, exec. Returns only on failure.
fn command(
    spec: &ExecSpec,
    argv: &[CString],
    env: &[CString],
    program: &[CString],
) -> (i32, String) {
    let u = &spec.user;
    // SAFETY: identity and descriptor syscalls in the single-threaded child.
    unsafe {
        for sig in FORWARDED_SIGNALS {
            libc::signal(sig, libc::SIG_DFL);
        }
        if spec.groups_allowed {
            if let Err(e) = check(
                libc::setgroups(u.groups.len(), u.groups.as_ptr()),
                "setgroups",
            ) {
                return (125, e);
            }
        }
        if let Err(e) = check(
            libc::setresgid(u.gid, u.gid, u.gid),
            &format!("setgid {}", u.gid),
        ) {
            return (125, e);
        }
        if let Err(e) = check(
            libc::setresuid(u.uid, u.uid, u.uid),
            &format!("setuid {}", u.uid),
        ) {
            return (125, e);
        }
        match spec.stdio {
            Stdio::Fds {
                stdin,
                stdout,
                stderr,
                tty,
            } => {
                if tty {
                    libc::setsid();
                    libc::ioctl(stdin, libc::TIOCSCTTY as _, 0);
                }
                libc::dup2(stdin, 0);
                libc::dup2(stdout, 1);
                libc::dup2(stderr, 2);
                for fd in [stdin, stdout, stderr] {
                    if fd > 2 {
                        libc::close(fd);
                    }
                }
            }
            Stdio::Inherit { stdin: true } => {}
            Stdio::Inherit { stdin: false } | Stdio::Capture => {
                let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                if fd >= 0 {
                    libc::dup2(fd, 0);
                    libc::close(fd);
                }
            }
        }
    }
    let name = spec.argv.first().map_or("", String::as_str);
    super::exec_first(program, argv, env, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_env_fills_what_is_missing_and_lets_extra_win() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let env = exec_env(&base, &["A=2".to_string()], "box", Some("/home/u"));
        assert_eq!(env, ["PATH=/bin", "A=2", "HOSTNAME=box", "HOME=/home/u"]);
        let env = exec_env(&[], &[], "h", None);
        assert!(env[0].starts_with("PATH=/usr/local/sbin"));
        assert!(env.contains(&"HOME=/root".to_string()));
    }
}
