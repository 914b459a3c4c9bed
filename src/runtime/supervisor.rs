//! Detached containers (`kiln run -d`): kiln re-executes itself as a hidden subcommand,
//! the supervisor, in a session of its own with its streams on /dev/null. The supervisor
//! runs the container with its output captured into `container.log` (json lines, as
//! docker's json-file driver: `{"log":..,"stream":..,"time":..}`), keeps its state, and
//! exits with it. It tells the `kiln run -d` that started it, through a pipe, once the
//! container runs or why it could not start.

use super::container::{self, ContainerError};
use super::state;
use super::{pty, RuntimeError, Stdio};
use crate::image::Digest;
use crate::store::Store;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};

/// The hidden subcommand the supervisor runs as.
pub const SUPERVISE_COMMAND: &str = "__supervise";
/// The environment variable naming the descriptor of the pipe to `kiln run -d`.
const READY_FD_VAR: &str = "KILN_READY_FD";

fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    super::pipe()
}

/// Start the supervisor of the created container `id` and wait until the container runs.
/// On failure nothing is left: no process, no record.
pub fn spawn(store: &Store, id: &str) -> Result<(), ContainerError> {
    let fail = |e: ContainerError| -> Result<(), ContainerError> {
        let _ = state::remove(store, id);
        Err(e)
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(RuntimeError::io(std::path::Path::new("/proc/self/exe"), e).into()),
    };
    let (r, w) = match pipe() {
        Ok(p) => p,
        Err(e) => return fail(e.into()),
    };
    let wfd = w.as_raw_fd();
    // The supervisor lives in / (it must not pin the caller's working directory), so the
    // store's path has to be absolute.
    let root = std::fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root")
        .arg(root)
        .current_dir("/")
        .arg(SUPERVISE_COMMAND)
        .arg(id)
        .env(READY_FD_VAR, "3")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if wfd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if let Err(e) = cmd.spawn() {
        return fail(RuntimeError::Setup(format!("starting the supervisor: {e}")).into());
    }
    drop(w);
    let mut msg = String::new();
    let _ = std::fs::File::from(r).read_to_string(&mut msg);
    if let Some((code, m)) = msg.strip_prefix('X').and_then(|m| m.split_once(':')) {
        return fail(ContainerError::StartFailed {
            code: code.parse().unwrap_or(125),
            msg: m.trim().trim_start_matches("kiln: ").to_string(),
        });
    }
    match msg.strip_prefix('E') {
        None if msg == "R" => Ok(()),
        Some(m) => fail(ContainerError::Invalid(m.to_string())),
        None => fail(ContainerError::Invalid(format!(
            "the supervisor of container {} exited before the container started",
            id.get(..12).unwrap_or(id)
        ))),
    }
}

/// One line of the log, docker's json-file form.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    pub log: String,
    pub stream: String,
    pub time: String,
}

type SharedLog = Arc<Mutex<std::fs::File>>;

fn write_line(log: &SharedLog, stream: &str, bytes: &[u8]) {
    let line = LogLine {
        log: String::from_utf8_lossy(bytes).into_owned(),
        stream: stream.to_string(),
        time: crate::image::timestamp::now_rfc3339(),
    };
    if let Ok(mut text) = serde_json::to_vec(&line) {
        text.push(b'\n');
        let mut f = log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = f.write_all(&text);
    }
}

/// Read `fd` to its end, writing each line (a last partial one too) to the log.
fn log_stream(fd: OwnedFd, log: SharedLog, stream: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(fd);
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                        let rest = pending.split_off(i + 1);
                        write_line(&log, stream, &pending);
                        pending = rest;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EIO: the pty's last slave closed.
                Err(_) => break,
            }
        }
        if !pending.is_empty() {
            write_line(&log, stream, &pending);
        }
    })
}

/// The supervisor's life: run container `id` to its end. Returns the process's exit code.
pub fn supervise(store: &Store, id: &str) -> i32 {
    let ready = std::env::var(READY_FD_VAR)
        .ok()
        .and_then(|v| v.parse::<libc::c_int>().ok())
        // SAFETY: F_GETFD only checks that the descriptor is open.
        .filter(|fd| *fd > 2 && unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0)
        // SAFETY: kiln run -d handed this descriptor to us alone.
        .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
    if let Some(r) = &ready {
        // SAFETY: the ready pipe must not leak into the container.
        unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let mut ready = ready;
    let mut report = |msg: &str| {
        if let Some(mut r) = ready.take() {
            let _ = r.write_all(msg.as_bytes());
        }
    };
    match run(store, id, &mut report) {
        Ok(code) => code,
        Err(e) => {
            report(&format!("E{e}"));
            125
        }
    }
}

fn run(store: &Store, id: &str, report: &mut dyn FnMut(&str)) -> Result<i32, ContainerError> {
    let c = state::load(store, id)?;
    let fail = |e: ContainerError| {
        let _ = state::remove(store, id);
        e
    };
    let manifest = Digest::parse(&c.config.manifest)
        .map_err(|e| fail(ContainerError::Invalid(format!("container {id}: {e}"))))?;
    let planned = container::plan(
        store,
        &manifest,
        &c.config.options,
        &c.config.hostname,
        &crate::progress::NullReporter,
    )
    .map_err(fail)?;
    let log_path = state::log_path(store, id);
    let log: SharedLog = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| fail(RuntimeError::io(&log_path, e).into()))?,
    ));
    // The container's ends (closed here once it has its copies) and ours.
    let mut theirs: Vec<OwnedFd> = Vec::new();
    let mut ours: Vec<(OwnedFd, &'static str)> = Vec::new();
    let stdio = if c.config.options.tty {
        let p = pty::Pty::open().map_err(|e| fail(e.into()))?;
        let fd = p.slave.as_raw_fd();
        theirs.push(p.slave);
        ours.push((p.master, "stdout"));
        Stdio::Fds {
            stdin: fd,
            stdout: fd,
            stderr: fd,
            tty: true,
        }
    } else {
        let (out_r, out_w) = pipe().map_err(|e| fail(e.into()))?;
        let (err_r, err_w) = pipe().map_err(|e| fail(e.into()))?;
        let s = Stdio::Fds {
            stdin: 0,
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            tty: false,
        };
        theirs.extend([out_w, err_w]);
        ours.extend([(out_r, "stdout"), (err_r, "stderr")]);
        s
    };
    let threads = std::cell::RefCell::new(Vec::new());
    let log_for_errors = log.clone();
    // A command that could not start (not found, bad working directory) fails `run -d`
    // itself, as docker's does, instead of leaving an exited container.
    let setup_error = std::cell::RefCell::new(String::new());
    let code = container::start(
        store,
        &c.config,
        planned,
        stdio,
        &mut |_pid| {
            theirs.clear();
            for (fd, stream) in ours.drain(..) {
                threads
                    .borrow_mut()
                    .push(log_stream(fd, log.clone(), stream));
            }
            if setup_error.borrow().is_empty() {
                report("R");
            }
        },
        &mut |bytes| {
            setup_error
                .borrow_mut()
                .push_str(&String::from_utf8_lossy(bytes));
            write_line(&log_for_errors, "stderr", bytes)
        },
        &mut || {
            for t in threads.borrow_mut().drain(..) {
                let _ = t.join();
            }
        },
    )?;
    let msg = setup_error.into_inner();
    if !msg.is_empty() {
        let _ = state::remove(store, id);
        report(&format!("X{code}:{msg}"));
    }
    Ok(code)
}
