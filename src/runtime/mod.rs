//! kiln's own rootless container runtime: one command in new user, mount, pid, uts and ipc
//! namespaces (and a network namespace of its own for `--network=none`), on an overlayfs
//! root made of layer snapshots and a fresh upper dir, whose changes can be written out as a
//! layer tar afterwards (what a RUN step needs).
//!
//! Process tree: kiln forks a *keeper* that unshares the user namespace (kiln installs the id
//! maps from outside, through newuidmap/newgidmap or /proc), then the other namespaces, mounts
//! the root ([`copyroot`]: native overlayfs, else fuse-overlayfs, else a copy of the
//! snapshots; `KILN_ROOTFS` forces one), unshares the pid namespace and forks the *command*
//! process (PID 1 of the new pid namespace), which takes a mount namespace of its own for
//! /proc, /dev and pivot_root, drops to the USER and execs.
//! Just before that it is confined ([`security`]: seccomp, no_new_privs, capabilities) and,
//! with `--init`, becomes the reaper ([`init`]) of the command it forks. kiln puts the keeper
//! in the container's cgroup ([`cgroup`]) before the command starts; `--isolation=chroot`
//! ([`isolation`]) skips the user namespace.
//! The keeper waits for it, removes the mount points it had to create, and walks the upper
//! dir (or compares the copy with its record) from inside the user namespace, so the layer
//! records container ids, not host ones.
//! The keeper reports the command's host pid to kiln (see [`run_container`]), which records
//! it, signals it, and `exec` enters its namespaces; containers with a life of their own
//! (records, the supervisor, ptys, exec) live in the submodules below.

pub mod cgroup;
pub mod container;
pub mod copyroot;
pub mod exec;
pub mod ids;
pub mod init;
pub mod isolation;
pub mod mounts;
pub mod names;
pub mod net;
pub mod ports;
pub mod pty;
pub mod rootfs;
pub mod security;
pub mod state;
pub mod supervisor;
pub mod volumes;

pub use cgroup::Limits;
pub use ids::{plan_ids, resolve_user, IdMap, IdPlan, Identity};
use isolation::userns_refused;
pub use isolation::Isolation;
pub use mounts::{Mount, MountKind};
pub use rootfs::ensure_lower;
pub use security::{Confinement, Security};

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A failure of the runtime itself (not of the command it runs).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The kernel or a security policy refused a new user namespace.
    #[error("{0}")]
    UserNamespace(String),
    #[error("setting up the container's id maps: {0}")]
    IdMap(String),
    #[error("container root filesystem: {0}")]
    Rootfs(String),
    #[error("{0}")]
    User(String),
    #[error("container setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
}

impl RuntimeError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network namespace (package installs work without a tun device).
    Host,
    /// A namespace of its own with only loopback.
    None,
    /// A namespace of its own with loopback, and outbound access through slirp4netns when
    /// it can run (see [`net::outbound_unavailable`]).
    Private,
}

/// What to run, and on what.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Snapshot dirs, topmost first (see [`ensure_lower`]).
    pub lowers: Vec<PathBuf>,
    /// An empty directory owned by the caller, on a filesystem that can be an overlay upper;
    /// `upper/`, `work/` and `merged/` are made in it. The caller removes it.
    pub scratch: PathBuf,
    pub argv: Vec<String>,
    /// `KEY=value` entries, given as they are.
    pub env: Vec<String>,
    /// Absolute working directory in the container ("" is /).
    pub cwd: String,
    pub user: Identity,
    pub network: Network,
    pub hostname: String,
    pub ids: IdPlan,
    /// Where to write the upper dir's changes as a layer tar (OCI whiteouts).
    pub layer_tar: Option<PathBuf>,
    pub source_date_epoch: Option<i64>,
    /// Files (name, content, mode) put at /dev/pipes/NAME for the command.
    pub pipes: Vec<(String, Vec<u8>, u32)>,
    /// Bind and tmpfs mounts, made in this order (parents before what they hold).
    pub mounts: Vec<Mount>,
    /// Capabilities, seccomp, `--init`, cgroup limits, isolation.
    pub confine: Confinement,
    /// Host sockets of published ports, forwarded into the container's network namespace
    /// (ignored with [`Network::Host`]).
    pub ports: Vec<ports::Listener>,
    /// Named volumes the keeper fills from the image on first use.
    pub volume_fills: Vec<volumes::VolumeFill>,
    /// Mount the root read-only (`--read-only`).
    pub readonly_root: bool,
}

/// The id plan for the calling user on this host: /etc/subuid, /etc/subgid and the helpers.
/// Remove a tree that holds files of the caller's subordinate ids (a rootless snapshot or
/// scratch dir): from inside a user namespace mapped as the containers are, where the
/// caller is root over all of them. The store calls this when it cannot remove a tree.
pub fn remove_foreign_tree(path: &std::path::Path) -> std::io::Result<()> {
    let plan = host_id_plan();
    in_user_namespace(&plan, &mut || {
        std::fs::remove_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))
    })
    .map_err(|e| std::io::Error::other(e.to_string()))
}

pub fn host_id_plan() -> IdPlan {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(euid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let helpers = find_in_path("newuidmap").is_some() && find_in_path("newgidmap").is_some();
    let subuid = std::fs::read_to_string("/etc/subuid").ok();
    let subgid = std::fs::read_to_string("/etc/subgid").ok();
    plan_ids(
        euid,
        egid,
        &name,
        subuid.as_deref(),
        subgid.as_deref(),
        helpers,
    )
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin:/usr/sbin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if r != 0 {
        return Err(RuntimeError::Setup(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Where the command's standard streams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// stdin is /dev/null; stdout and stderr go to `run`'s `output` callback (RUN steps).
    Capture,
    /// stdout and stderr are kiln's own; stdin too when `stdin`, else /dev/null
    /// (a foreground `kiln run`).
    Inherit { stdin: bool },
    /// The command's 0, 1 and 2 are these descriptors of the caller (pipes or a pty slave,
    /// which stay open in the caller); with `tty`, the command leads a session of its own
    /// with the stdin descriptor as its controlling terminal. Setup errors go to `output`.
    Fds {
        stdin: libc::c_int,
        stdout: libc::c_int,
        stderr: libc::c_int,
        tty: bool,
    },
}

/// The signals a foreground `kiln run` forwards; the keeper ignores them (so a terminal's
/// ^C reaching the whole process group does not kill it) and the command gets them back
/// at their defaults before exec.
pub const FORWARDED_SIGNALS: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Run `spec.argv` in a new container; `output` receives its stdout and stderr as they come.
/// Returns the command's exit code (128 + signal when killed by one, 127 when not found).
pub fn run(spec: &RunSpec, output: &mut dyn FnMut(&[u8])) -> Result<i32, RuntimeError> {
    run_with_stdio(spec, Stdio::Capture, output)
}

/// [`run`] with a choice of where the command's standard streams go; with
/// [`Stdio::Inherit`], `output` only sees what the runtime itself reports.
pub fn run_with_stdio(
    spec: &RunSpec,
    stdio: Stdio,
    output: &mut dyn FnMut(&[u8]),
) -> Result<i32, RuntimeError> {
    run_container(spec, stdio, &mut |_| {}, output)
}

/// [`run_with_stdio`], calling `started` with the host pid of the container's first
/// process (PID 1 inside) once it exists (with [`Stdio::Capture`]) or once it has exec'd
/// or failed to (otherwise; a failure has reached `output` by then): a caller records it,
/// forwards signals to it, or closes its own copies of the descriptors of [`Stdio::Fds`].
pub fn run_container(
    spec: &RunSpec,
    stdio: Stdio,
    started: &mut dyn FnMut(libc::pid_t),
    output: &mut dyn FnMut(&[u8]),
) -> Result<i32, RuntimeError> {
    if spec.argv.is_empty() {
        return Err(RuntimeError::Setup("no command to run".into()));
    }
    for d in ["upper", "work", "merged", "empty"] {
        let p = spec.scratch.join(d);
        std::fs::create_dir_all(&p).map_err(|e| RuntimeError::io(&p, e))?;
    }
    let hostname = if spec.hostname.is_empty() {
        "kiln"
    } else {
        &spec.hostname
    };
    let files = [
        ("hostname", format!("{hostname}\n")),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
        ),
    ];
    for (name, text) in &files {
        let p = spec.scratch.join(name);
        std::fs::write(&p, text).map_err(|e| RuntimeError::io(&p, e))?;
    }
    let outbound = spec.network == Network::Private && net::outbound_unavailable().is_none();
    if outbound {
        let p = spec.scratch.join("resolv.conf");
        let text = format!("nameserver {}\n", net::SLIRP_DNS);
        std::fs::write(&p, text).map_err(|e| RuntimeError::io(&p, e))?;
    }
    let mut prepared = Prepared::new(spec, hostname)?;
    prepared.stdio = stdio;
    if !spec.confine.isolation.user_namespace() {
        isolation::check_chroot_here()?;
    }
    let group_id = cgroup::group_name(
        &spec
            .scratch
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let cg = cgroup::Cgroup::create(&cgroup::plan(
        &spec.confine.limits,
        &group_id,
        &cgroup::RealHost,
    )?)?;
    // slirp4netns starts while the keeper sets up the root; the command waits on this pipe
    // (one byte: tap0 is configured) only just before it execs.
    let net_ready = if outbound { Some(pipe()?) } else { None };
    prepared.net_ready = net_ready.as_ref().map(|(r, _)| r.as_raw_fd());
    let (sync_r, sync_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (pid_r, pid_w) = pipe()?;
    // SAFETY: the child only runs the keeper (see `keeper`), which uses plain syscalls, the
    // allocator (fork-safe in glibc) and file writes, and always ends in _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(RuntimeError::Setup(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        drop((sync_r, go_w, out_r, status_r, pid_r));
        for sig in FORWARDED_SIGNALS {
            // SAFETY: setting a disposition in the single-threaded child.
            unsafe { libc::signal(sig, libc::SIG_IGN) };
        }
        let mut keep = vec![
            sync_w.as_raw_fd(),
            go_r.as_raw_fd(),
            out_w.as_raw_fd(),
            status_w.as_raw_fd(),
            pid_w.as_raw_fd(),
        ];
        keep.extend(prepared.ports.iter().map(ports::Listener::raw_fd));
        keep.extend(prepared.net_ready);
        if let Stdio::Fds {
            stdin,
            stdout,
            stderr,
            ..
        } = stdio
        {
            keep.extend([stdin, stdout, stderr]);
        }
        close_other_fds(&keep);
        let result = keeper(&mut prepared, sync_w, go_r, out_w, pid_w);
        let msg = match result {
            Ok(code) => format!("C{code}"),
            Err(m) => format!("E{m}"),
        };
        let mut f = std::fs::File::from(status_w);
        let _ = f.write_all(msg.as_bytes());
        drop(f);
        // SAFETY: ends the forked child without running the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    drop((sync_w, go_r, out_w, status_w, pid_w));
    let net_ready_w = net_ready.map(|(_, w)| w);
    let reap = |pid: libc::pid_t| {
        let mut st = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
    };
    let mut sync = std::fs::File::from(sync_r);
    let mut byte = [0u8; 1];
    let unshared = matches!(sync.read(&mut byte), Ok(1));
    let mut go = std::fs::File::from(go_w);
    // Stopped (killed and reaped) when dropped, after the keeper is gone.
    let mut _outbound = None;
    if unshared {
        // The keeper joins the cgroup before it forks the command, so all of it is limited.
        let ready = if spec.confine.isolation.user_namespace() {
            install_maps(pid, &spec.ids)
        } else {
            Ok(())
        }
        .and_then(|()| cg.add(pid).map_err(RuntimeError::from));
        if let Err(e) = ready {
            // SAFETY: kills and reaps our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap(pid);
            return Err(e);
        }
        let _ = go.write_all(&[1]);
        drop(go);
        if let Some(w) = net_ready_w {
            match net::start_outbound(pid, &spec.scratch.join("slirp4netns.log")) {
                Ok(o) => {
                    _outbound = Some(o);
                    let _ = std::fs::File::from(w).write_all(&[1]);
                }
                Err(e) => {
                    // SAFETY: kills and reaps our own child (the command dies with it).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    reap(pid);
                    return Err(RuntimeError::Setup(e));
                }
            }
        }
    } else {
        drop(go);
    }
    let mut pid_bytes = [0u8; 4];
    // EOF instead of a pid: the keeper failed before the command existed (its status says why).
    let command_pid = std::fs::File::from(pid_r)
        .read_exact(&mut pid_bytes)
        .is_ok()
        .then(|| libc::pid_t::from_ne_bytes(pid_bytes));
    let capture = stdio == Stdio::Capture;
    if let (true, Some(p)) = (capture, command_pid) {
        started(p);
    }
    let mut out = std::fs::File::from(out_r);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => output(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    // Without capture, the pipe only carries setup errors and ends when the command execs
    // (close-on-exec) or fails: `started` then comes after any such error was reported.
    if let (false, Some(p)) = (capture, command_pid) {
        started(p);
    }
    let mut status = String::new();
    let _ = std::fs::File::from(status_r).read_to_string(&mut status);
    reap(pid);
    drop(cg);
    if let Some(code) = status.strip_prefix('C') {
        return code
            .parse()
            .map_err(|_| RuntimeError::Setup(format!("bad status from the container: {status}")));
    }
    let msg = status
        .strip_prefix('E')
        .unwrap_or("the container process died");
    if msg.starts_with("unshare(CLONE_NEWUSER)") {
        return Err(userns_refused(msg));
    }
    Err(RuntimeError::Setup(msg.to_string()))
}

/// Run `f` in a forked child inside a new user namespace with the maps of `plan` (no other
/// namespace): file ownership set there is in container ids, as in a container. Used to
/// unpack snapshots rootless, so a layer's owners survive.
pub fn in_user_namespace(
    plan: &IdPlan,
    f: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), RuntimeError> {
    let (sync_r, sync_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    // SAFETY: the child runs `f` (file work: syscalls, allocation) and ends in _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(RuntimeError::Setup(os_err("fork")));
    }
    if pid == 0 {
        drop((sync_r, go_w, status_r));
        close_other_fds(&[sync_w.as_raw_fd(), go_r.as_raw_fd(), status_w.as_raw_fd()]);
        let result = (|| {
            // SAFETY: plain syscalls in the single-threaded child.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            // SAFETY: as above.
            check(
                unsafe { libc::unshare(libc::CLONE_NEWUSER) },
                "unshare(CLONE_NEWUSER)",
            )?;
            std::fs::File::from(sync_w)
                .write_all(&[1])
                .map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            if !matches!(std::fs::File::from(go_r).read(&mut byte), Ok(1)) {
                return Err("the id maps were not installed".to_string());
            }
            f()
        })();
        let msg = match result {
            Ok(()) => "C0".to_string(),
            Err(m) => format!("E{m}"),
        };
        let _ = std::fs::File::from(status_w).write_all(msg.as_bytes());
        // SAFETY: ends the forked child.
        unsafe { libc::_exit(0) };
    }
    drop((sync_w, go_r, status_w));
    let reap = || {
        let mut st = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
    };
    let mut byte = [0u8; 1];
    let mut go = std::fs::File::from(go_w);
    if matches!(std::fs::File::from(sync_r).read(&mut byte), Ok(1)) {
        if let Err(e) = install_maps(pid, plan) {
            // SAFETY: kills our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap();
            return Err(e);
        }
        let _ = go.write_all(&[1]);
    }
    drop(go);
    let mut status = String::new();
    let _ = std::fs::File::from(status_r).read_to_string(&mut status);
    reap();
    match status.strip_prefix('E') {
        None if status == "C0" => Ok(()),
        Some(m) if m.starts_with("unshare(CLONE_NEWUSER)") => Err(userns_refused(m)),
        Some(m) => Err(RuntimeError::Setup(m.to_string())),
        None => Err(RuntimeError::Setup("the helper process died".into())),
    }
}

fn install_maps(pid: libc::pid_t, plan: &IdPlan) -> Result<(), RuntimeError> {
    if plan.helpers {
        for (tool, maps) in [("newuidmap", &plan.uids), ("newgidmap", &plan.gids)] {
            let out = std::process::Command::new(tool)
                .arg(pid.to_string())
                .args(ids::helper_args(maps))
                .output()
                .map_err(|e| RuntimeError::IdMap(format!("{tool}: {e}")))?;
            if !out.status.success() {
                return Err(RuntimeError::IdMap(format!(
                    "{tool} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        return Ok(());
    }
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |name: &str, text: &str| {
        let p = proc.join(name);
        std::fs::write(&p, text).map_err(|e| RuntimeError::IdMap(format!("{}: {e}", p.display())))
    };
    write("uid_map", &ids::map_text(&plan.uids))?;
    if !nix::unistd::geteuid().is_root() {
        // The kernel allows an unprivileged gid_map only once setgroups is denied.
        write("setgroups", "deny")?;
    }
    write("gid_map", &ids::map_text(&plan.gids))
}

/// Everything the forked processes need, made before fork (no allocation decisions after).
struct Prepared {
    lower_dir: Option<CString>,
    mount_data: CString,
    /// The snapshots, topmost first, by full path (for fuse-overlayfs and the copy).
    lowers_full: Vec<PathBuf>,
    /// fuse-overlayfs' options: full paths, as it daemonizes into `/`.
    fuse_data: String,
    fuse_bin: Option<PathBuf>,
    rootfs_forced: Option<copyroot::RootfsMode>,
    merged: PathBuf,
    upper: PathBuf,
    scratch: PathBuf,
    argv: Vec<CString>,
    env: Vec<CString>,
    program: Vec<CString>,
    cwd: CString,
    user: Identity,
    groups_allowed: bool,
    network: Network,
    hostname: CString,
    layer_tar: Option<PathBuf>,
    source_date_epoch: Option<i64>,
    pipes: Vec<(String, Vec<u8>, u32)>,
    mounts: Vec<Mount>,
    /// The mount points of `mounts` in the merged root, found by the keeper.
    mount_targets: Vec<PathBuf>,
    stdio: Stdio,
    security: Security,
    seccomp: Vec<libc::sock_filter>,
    init: bool,
    isolation: Isolation,
    ports: Vec<ports::Listener>,
    volume_fills: Vec<volumes::VolumeFill>,
    readonly_root: bool,
    /// The read end of the pipe on which kiln says that slirp4netns is ready.
    net_ready: Option<libc::c_int>,
}

pub(crate) fn cstr(s: impl AsRef<[u8]>) -> Result<CString, RuntimeError> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| RuntimeError::Setup("a NUL byte in an argument or variable".into()))
}

impl Prepared {
    fn new(spec: &RunSpec, hostname: &str) -> Result<Prepared, RuntimeError> {
        let upper = spec.scratch.join("upper");
        // overlayfs refuses one dir twice (ELOOP); a layer repeated (two RUNs that changed
        // nothing) shows the same content whichever copy is kept, so the topmost stays.
        let mut seen = std::collections::HashSet::new();
        let deduped: Vec<PathBuf> = spec
            .lowers
            .iter()
            .filter(|l| seen.insert((*l).clone()))
            .cloned()
            .collect();
        let spec = &RunSpec {
            lowers: deduped,
            ..spec.clone()
        };
        let work = spec.scratch.join("work");
        // Short lower names keep the mount options under the kernel's one-page limit.
        let common = spec
            .lowers
            .first()
            .and_then(|p| p.parent())
            .filter(|parent| spec.lowers.iter().all(|l| l.parent() == Some(*parent)));
        let lowers: Vec<PathBuf> = if spec.lowers.is_empty() {
            vec![spec.scratch.join("empty")]
        } else {
            match common {
                Some(_) => spec
                    .lowers
                    .iter()
                    .map(|l| PathBuf::from(l.file_name().unwrap_or_default()))
                    .collect(),
                None => spec.lowers.clone(),
            }
        };
        let escape = |p: &Path| -> String {
            p.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace(',', "\\,")
                .replace(':', "\\:")
        };
        let lowerdir = lowers
            .iter()
            .map(|p| escape(p))
            .collect::<Vec<_>>()
            .join(":");
        let data = format!(
            "lowerdir={lowerdir},upperdir={},workdir={},userxattr",
            escape(&upper),
            escape(&work)
        );
        let fuse_data = format!(
            "lowerdir={},upperdir={},workdir={}",
            if spec.lowers.is_empty() {
                escape(&spec.scratch.join("empty"))
            } else {
                spec.lowers
                    .iter()
                    .map(|p| escape(p))
                    .collect::<Vec<_>>()
                    .join(":")
            },
            escape(&upper),
            escape(&work)
        );
        let env = fill_env(spec.env.clone(), hostname, spec.user.home.as_deref());
        let program = program_paths(&spec.argv[0], &env)?;
        Ok(Prepared {
            lower_dir: match (common, spec.lowers.is_empty()) {
                (Some(c), false) => Some(cstr(c.as_os_str().as_bytes())?),
                _ => None,
            },
            mount_data: cstr(data)?,
            lowers_full: spec.lowers.clone(),
            fuse_data,
            fuse_bin: find_in_path("fuse-overlayfs"),
            rootfs_forced: copyroot::forced_mode()?,
            merged: spec.scratch.join("merged"),
            upper,
            scratch: spec.scratch.clone(),
            argv: spec.argv.iter().map(cstr).collect::<Result<_, _>>()?,
            env: env.iter().map(cstr).collect::<Result<_, _>>()?,
            program,
            cwd: cstr(if spec.cwd.is_empty() { "/" } else { &spec.cwd })?,
            user: spec.user.clone(),
            // A user namespace kiln itself runs in may deny setgroups (`unshare -r`); the
            // containers' namespaces inherit that.
            groups_allowed: (spec.ids.helpers || nix::unistd::geteuid().is_root())
                && !std::fs::read_to_string("/proc/self/setgroups")
                    .is_ok_and(|t| t.trim() == "deny"),
            network: spec.network,
            hostname: cstr(hostname)?,
            layer_tar: spec.layer_tar.clone(),
            source_date_epoch: spec.source_date_epoch,
            pipes: spec.pipes.clone(),
            mounts: spec.mounts.clone(),
            mount_targets: Vec::new(),
            stdio: Stdio::Capture,
            security: spec.confine.security,
            seccomp: security::seccomp_program(&security::seccomp_rules(
                spec.confine.security.caps,
            )),
            init: spec.confine.init,
            isolation: spec.confine.isolation,
            ports: if spec.network == Network::Host {
                Vec::new()
            } else {
                spec.ports.clone()
            },
            volume_fills: spec.volume_fills.clone(),
            readonly_root: spec.readonly_root,
            net_ready: None,
        })
    }
}

/// docker's PATH for an image that sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command's environment with PATH, HOSTNAME and HOME set when the image and the user
/// gave none, as docker does.
pub(crate) fn fill_env(mut env: Vec<String>, hostname: &str, home: Option<&str>) -> Vec<String> {
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home.unwrap_or("/root")));
    }
    env
}

/// Where to look for `arg0`: itself when it has a slash, else each directory of the
/// environment's PATH (the container's, not kiln's), for [`exec_first`].
pub(crate) fn program_paths(arg0: &str, env: &[String]) -> Result<Vec<CString>, RuntimeError> {
    if arg0.contains('/') {
        return Ok(vec![cstr(arg0)?]);
    }
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| cstr(format!("{}/{arg0}", d.trim_end_matches('/'))))
        .collect()
}

pub(crate) fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

pub(crate) fn check(r: libc::c_int, what: &str) -> Result<(), String> {
    if r < 0 {
        Err(os_err(what))
    } else {
        Ok(())
    }
}

fn path_c(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{}: NUL in path", p.display()))
}

fn mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> Result<(), String> {
    let s = cstr(src).map_err(|e| e.to_string())?;
    let t = path_c(target)?;
    let f = cstr(fstype).map_err(|e| e.to_string())?;
    // SAFETY: all pointers are valid NUL-terminated strings (or null data) for the call.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    check(r, &format!("mounting {fstype} on {}", target.display()))
}

/// Close every descriptor above stderr but `keep`. A forked child that does not exec keeps
/// the parent's descriptors, among them the output pipes of other RUNs running at the same
/// time, whose readers would then wait for this child to end before they see EOF.
fn close_other_fds(keep: &[libc::c_int]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<libc::c_int> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: closing descriptors this child inherited and never uses; the one the
        // directory listing used is already closed or fails harmlessly with EBADF.
        unsafe { libc::close(fd) };
    }
}

/// The keeper: namespaces, the overlay, the command, then the diff. Returns the exit code.
fn keeper(
    p: &mut Prepared,
    sync_w: OwnedFd,
    go_r: OwnedFd,
    out_w: OwnedFd,
    pid_w: OwnedFd,
) -> Result<i32, String> {
    // SAFETY: plain syscalls on this (single-threaded) child.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // The network namespace comes with the user namespace: once the sync byte says both
    // exist, kiln can start slirp4netns for it.
    let own_net = p.network != Network::Host;
    let net_flag = if own_net { libc::CLONE_NEWNET } else { 0 };
    if p.isolation.user_namespace() {
        // SAFETY: as above.
        check(
            unsafe { libc::unshare(libc::CLONE_NEWUSER | net_flag) },
            "unshare(CLONE_NEWUSER)",
        )?;
    } else if own_net {
        // SAFETY: as above.
        check(unsafe { libc::unshare(net_flag) }, "unshare(CLONE_NEWNET)")?;
    }
    let mut sync = std::fs::File::from(sync_w);
    sync.write_all(&[1]).map_err(|e| e.to_string())?;
    drop(sync);
    let mut byte = [0u8; 1];
    if !matches!(std::fs::File::from(go_r).read(&mut byte), Ok(1)) {
        return Err("the id maps were not installed".into());
    }
    if own_net {
        loopback_up()?;
    }
    // Forked before the pid namespace, so the command stays its PID 1.
    let forwarder = if p.ports.is_empty() {
        None
    } else {
        Some(ports::spawn_forwarder(&p.ports)?)
    };
    let _stop_forwarder = ChildGuard(forwarder);
    p.ports.clear();
    let unshare_what = if p.isolation.user_namespace() {
        "unshare"
    } else {
        // Without a mount namespace there is no container root to give the command.
        "--isolation=chroot: new mount, pid, uts and ipc namespaces are refused here too \
         (they need CAP_SYS_ADMIN); kiln will not run the command on the host's \
         filesystem. unshare"
    };
    // The pid namespace comes later, just before the command: fuse-overlayfs, forked while
    // the root is mounted, would otherwise become its PID 1.
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    // SAFETY: plain syscalls.
    check(unsafe { libc::unshare(flags) }, unshare_what)?;
    mount(
        "none",
        Path::new("/"),
        "",
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    // SAFETY: hostname is a valid buffer of the given length.
    check(
        unsafe { libc::sethostname(p.hostname.as_ptr(), p.hostname.as_bytes().len()) },
        "sethostname",
    )?;
    if let Some(dir) = &p.lower_dir {
        // SAFETY: dir is a valid C string.
        check(
            unsafe { libc::chdir(dir.as_ptr()) },
            "chdir to the snapshots",
        )?;
    }
    let (mode, before) = mount_root(p, &out_w)?;
    let mut unmount = Unmount(Some(path_c(&p.merged)?));
    volumes::fill_from_image(&p.merged, &p.volume_fills)?;
    let mut created = make_mount_points(&p.merged)?;
    p.mount_targets = mounts::prepare_targets(&p.merged, &p.mounts, &mut created)?;
    // SAFETY: plain syscalls.
    check(unsafe { libc::unshare(libc::CLONE_NEWPID) }, unshare_what)?;
    // SAFETY: the command child only runs `command`, which ends in exec or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid == 0 {
        let code = match command(p, &out_w) {
            Ok(never) => match never {},
            Err((code, msg)) => {
                if !matches!(p.stdio, Stdio::Inherit { .. }) {
                    let mut f = std::fs::File::from(out_w);
                    let _ = writeln!(f, "kiln: {msg}");
                } else {
                    let _ = writeln!(std::io::stderr(), "kiln: {msg}");
                }
                code
            }
        };
        // SAFETY: ends the child.
        unsafe { libc::_exit(code) };
    }
    drop(out_w);
    // The command's host pid (the keeper is still in kiln's pid namespace).
    let _ = std::fs::File::from(pid_w).write_all(&pid.to_ne_bytes());
    let mut st = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(os_err("waitpid"));
        }
    }
    let code = if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    };
    // Mount points kiln made are not the command's changes.
    mounts::remove_created(&created);
    if let Some(path) = unmount.0.take() {
        Unmount::now(path);
    }
    if let Some(before) = before {
        return finish_copy(p, &before, &created).map(|()| code);
    }
    if mode == copyroot::RootfsMode::Fuse {
        copyroot::normalize_fuse_upper(&p.upper, &p.lowers_full).map_err(|e| e.to_string())?;
    }
    // Making a mount point copied its directory up; if nothing else is left in that copy,
    // it is no change of the command's (a metadata-only change to it is lost: rare).
    for path in &created {
        let Some(rel) = path.parent().and_then(|d| d.strip_prefix(&p.merged).ok()) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let up = p.upper.join(rel);
        let empty = std::fs::read_dir(&up).is_ok_and(|mut d| d.next().is_none());
        let opaque = xattr::get(&up, rootfs::OPAQUE_XATTR).is_ok_and(|v| v.is_some());
        if empty && !opaque {
            let _ = std::fs::remove_dir(&up);
        }
    }
    if let Some(tar) = &p.layer_tar {
        let f = std::fs::File::create(tar).map_err(|e| format!("{}: {e}", tar.display()))?;
        let w = std::io::BufWriter::new(f);
        let (w, _) = crate::layer::diff_overlay_upper(
            &p.upper,
            w,
            crate::layer::BuildOptions {
                source_date_epoch: p.source_date_epoch,
            },
            crate::layer::TreeOptions::default(),
        )
        .map_err(|e| format!("reading the container's changes: {e}"))?;
        // No fsync: this is staging; the blob made from it is synced when committed.
        w.into_inner()
            .map_err(|e| format!("{}: {e}", tar.display()))?;
    }
    // Inside the user namespace the keeper may remove files owned by any container id;
    // kiln outside it could not remove those a rootless command made as another user.
    let _ = std::fs::remove_dir_all(&p.upper);
    let _ = std::fs::remove_dir_all(p.scratch.join("work"));
    Ok(code)
}

/// Unmounts the container's root (lazily) when the keeper is done with it, on every path:
/// a fuse-overlayfs daemon left with a mount would keep running.
struct Unmount(Option<CString>);

impl Unmount {
    fn now(path: CString) {
        // SAFETY: valid C string.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Drop for Unmount {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            Unmount::now(p);
        }
    }
}

/// Mount the container's root on `merged` in the first mode that works here (or the one
/// `KILN_ROOTFS` forces), telling the user when it is not native overlayfs. The copy mode
/// returns the record of what the copy held, for the diff.
fn mount_root(
    p: &Prepared,
    out_w: &OwnedFd,
) -> Result<(copyroot::RootfsMode, Option<copyroot::Record>), String> {
    use copyroot::RootfsMode as M;
    let forced = p.rootfs_forced;
    let mut why = Vec::new();
    if matches!(forced, None | Some(M::Native)) {
        match mount_io("overlay", &p.merged, "overlay", Some(&p.mount_data)) {
            Ok(()) => return Ok((M::Native, None)),
            Err(e) if forced.is_none() && copyroot::overlay_unavailable(&e) => {
                why.push(format!("mounting overlayfs: {e}; kernel < 5.11?"));
            }
            Err(e) => {
                return Err(format!(
                    "mounting overlayfs on {}: {e} (overlayfs in a user namespace needs \
                     Linux 5.11 or later; KILN_ROOTFS=copy works everywhere)",
                    p.merged.display()
                ))
            }
        }
    }
    let tell = |mode: M, why: &[String]| {
        let text = format!("kiln: {}\n", copyroot::warning(mode, &why.join("; ")));
        match p.stdio {
            Stdio::Inherit { .. } => {
                let _ = std::io::stderr().write_all(text.as_bytes());
            }
            // What reaches `output` here is taken for a failure to start: the warning goes
            // with the container's own output instead.
            Stdio::Fds { stderr, .. } => {
                // SAFETY: the caller keeps this descriptor open for the container.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stderr) };
                let _ = nix::unistd::write(fd, text.as_bytes());
            }
            Stdio::Capture => {
                let _ = nix::unistd::write(out_w, text.as_bytes());
            }
        }
    };
    if matches!(forced, None | Some(M::Fuse)) {
        match mount_fuse(p) {
            Ok(()) => {
                tell(M::Fuse, &why);
                return Ok((M::Fuse, None));
            }
            Err(e) if forced.is_none() => why.push(format!("fuse-overlayfs: {e}")),
            Err(e) => return Err(format!("KILN_ROOTFS=fuse: {e}")),
        }
    }
    tell(M::Copy, &why);
    copyroot::populate(&p.lowers_full, &p.merged).map_err(|e| e.to_string())?;
    let before = copyroot::record(&p.merged).map_err(|e| e.to_string())?;
    // pivot_root needs a mount point.
    mount_io(&p.merged.to_string_lossy(), &p.merged, "", None)
        .map_err(|e| format!("bind-mounting {}: {e}", p.merged.display()))?;
    Ok((M::Copy, Some(before)))
}

/// mount(2) for the root's modes; no fstype is a bind mount.
fn mount_io(src: &str, target: &Path, fstype: &str, data: Option<&CString>) -> std::io::Result<()> {
    let bad = || std::io::Error::from_raw_os_error(libc::EINVAL);
    let s = cstr(src).map_err(|_| bad())?;
    let t = CString::new(target.as_os_str().as_bytes()).map_err(|_| bad())?;
    let f = cstr(fstype).map_err(|_| bad())?;
    let flags = if fstype.is_empty() { libc::MS_BIND } else { 0 };
    // SAFETY: all pointers are valid NUL-terminated strings (or null data) for the call.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn mount_fuse(p: &Prepared) -> Result<(), String> {
    let bin = p
        .fuse_bin
        .as_ref()
        .ok_or("fuse-overlayfs is not installed (Debian: apt-get install fuse-overlayfs)")?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("/dev/fuse: {e}"))?;
    let out = std::process::Command::new(bin)
        .arg("-o")
        .arg(&p.fuse_data)
        .arg(&p.merged)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The copy mode's end: the layer from comparing `merged` with what the copy held, then
/// the copy removed (from inside the user namespace, where its owners are the keeper's).
fn finish_copy(p: &Prepared, before: &copyroot::Record, created: &[PathBuf]) -> Result<(), String> {
    let settled: std::collections::HashSet<PathBuf> = created
        .iter()
        .filter_map(|c| c.parent()?.strip_prefix(&p.merged).ok())
        .map(Path::to_path_buf)
        .collect();
    let result = match &p.layer_tar {
        None => Ok(()),
        Some(tar) => (|| {
            let f = std::fs::File::create(tar).map_err(|e| format!("{}: {e}", tar.display()))?;
            let (w, _) = copyroot::diff_copy(
                &p.merged,
                before,
                &settled,
                std::io::BufWriter::new(f),
                crate::layer::BuildOptions {
                    source_date_epoch: p.source_date_epoch,
                },
            )
            .map_err(|e| format!("reading the container's changes: {e}"))?;
            w.into_inner()
                .map(drop)
                .map_err(|e| format!("{}: {e}", tar.display()))
        })(),
    };
    let _ = std::fs::remove_dir_all(&p.merged);
    let _ = std::fs::remove_dir_all(&p.upper);
    let _ = std::fs::remove_dir_all(p.scratch.join("work"));
    result
}

/// Create in the merged root the mount points the command process needs and the image
/// lacks; returns what was created (in creation order).
fn make_mount_points(merged: &Path) -> Result<Vec<PathBuf>, String> {
    let mut created = Vec::new();
    for d in ["proc", "dev", "sys"] {
        let path = merged.join(d);
        if std::fs::symlink_metadata(&path).is_err() {
            std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            created.push(path);
        }
    }
    let etc = merged.join("etc");
    if etc.is_dir() {
        for f in ["hosts", "hostname", "resolv.conf"] {
            let path = etc.join(f);
            if std::fs::symlink_metadata(&path).is_err() {
                std::fs::write(&path, b"").map_err(|e| format!("{}: {e}", path.display()))?;
                created.push(path);
            }
        }
    }
    Ok(created)
}

/// Kills and reaps a helper child of the keeper (the port forwarder) when the keeper is done.
struct ChildGuard(Option<libc::pid_t>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let mut st = 0;
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut st, 0);
            }
        }
    }
}

fn loopback_up() -> Result<(), String> {
    // SAFETY: a socket used only for the ioctl below, closed at the end.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("socket"));
    }
    // SAFETY: fd is the socket just made.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) };
    check(r, "bringing up loopback")
}

enum Never {}

/// The command process: its mounts, pivot_root, identity, exec. Only returns on failure,
/// with the exit code to use (125: setup, 126: cannot execute, 127: not found).
fn command(p: &Prepared, out_w: &OwnedFd) -> Result<Never, (i32, String)> {
    let setup = |m: String| (125, m);
    // SAFETY: plain syscalls in the single-threaded child.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // pivot_root moves every process whose root is the old one: a mount namespace of its
    // own keeps the keeper's view (where the upper dir is) intact.
    // SAFETY: as above.
    check(
        unsafe { libc::unshare(libc::CLONE_NEWNS) },
        "unshare(CLONE_NEWNS)",
    )
    .map_err(setup)?;
    let root = &p.merged;
    mount(
        "proc",
        &root.join("proc"),
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(setup)?;
    // /sys read-only, best effort: a user namespace may not remount a bind it does not own
    // the locked flags of, and few build commands read /sys.
    let sys = root.join("sys");
    if mount("/sys", &sys, "", libc::MS_BIND | libc::MS_REC, None).is_ok() {
        let _ = mount(
            "",
            &sys,
            "",
            libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC,
            None,
        );
    }
    let dev = root.join("dev");
    let mode = cstr("mode=755,size=65536k").map_err(|e| setup(e.to_string()))?;
    mount("tmpfs", &dev, "tmpfs", libc::MS_NOSUID, Some(&mode)).map_err(setup)?;
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(d);
        std::fs::write(&target, b"").map_err(|e| setup(format!("{}: {e}", target.display())))?;
        let host = format!("/dev/{d}");
        mount(&host, &target, "", libc::MS_BIND, None).map_err(setup)?;
    }
    for (d, fstype, opts) in [
        ("pts", "devpts", "newinstance,ptmxmode=0666,mode=0620"),
        ("shm", "tmpfs", "mode=1777,size=65536k"),
    ] {
        let target = dev.join(d);
        let _ = std::fs::create_dir(&target);
        let o = cstr(opts).map_err(|e| setup(e.to_string()))?;
        // A missing /dev/pts or /dev/shm only matters to the few commands that use them.
        let _ = mount(
            fstype,
            &target,
            fstype,
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(&o),
        );
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }
    if !p.pipes.is_empty() {
        let dir = dev.join("pipes");
        std::fs::create_dir(&dir).map_err(|e| setup(format!("{}: {e}", dir.display())))?;
        for (name, data, mode) in &p.pipes {
            use std::os::unix::fs::PermissionsExt;
            let f = dir.join(name);
            std::fs::write(&f, data).map_err(|e| setup(format!("{}: {e}", f.display())))?;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| setup(format!("{}: {e}", f.display())))?;
        }
    }
    mounts::apply(&p.mounts, &p.mount_targets).map_err(setup)?;
    let etc = root.join("etc");
    let own_resolv = p.scratch.join("resolv.conf");
    let resolv = if own_resolv.is_file() {
        own_resolv
    } else {
        PathBuf::from("/etc/resolv.conf")
    };
    let binds = [
        (p.scratch.join("hosts"), etc.join("hosts")),
        (p.scratch.join("hostname"), etc.join("hostname")),
        (resolv, etc.join("resolv.conf")),
    ];
    for (src, dst) in &binds {
        if src.exists() && dst.is_file() {
            let s = src.to_string_lossy();
            mount(&s, dst, "", libc::MS_BIND, None).map_err(setup)?;
        }
    }
    if p.readonly_root {
        // Only the root mount: volumes, tmpfs, /dev and /proc keep their own flags.
        mount(
            "",
            root,
            "",
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            None,
        )
        .map_err(setup)?;
    }
    let r = path_c(root).map_err(setup)?;
    let dot = cstr(".").map_err(|e| setup(e.to_string()))?;
    // SAFETY: valid C strings; pivot_root(".", ".") stacks the old root under the new one,
    // and the detach then drops it, so no directory has to be made in the image.
    unsafe {
        check(libc::chdir(r.as_ptr()), "chdir to the root").map_err(setup)?;
        check(
            libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as libc::c_int,
            "pivot_root",
        )
        .map_err(setup)?;
        check(
            libc::umount2(dot.as_ptr(), libc::MNT_DETACH),
            "detaching the old root",
        )
        .map_err(setup)?;
        let slash = c"/";
        check(libc::chdir(slash.as_ptr()), "chdir /").map_err(setup)?;
    }
    // SAFETY: valid C string.
    if unsafe { libc::chdir(p.cwd.as_ptr()) } != 0 {
        return Err(setup(os_err(&format!(
            "working directory {}",
            p.cwd.to_string_lossy()
        ))));
    }
    security::apply_filter(&p.security, &p.seccomp).map_err(setup)?;
    security::apply_bounding(p.security.caps).map_err(setup)?;
    let u = &p.user;
    // SAFETY: plain identity syscalls; groups is a valid slice.
    unsafe {
        if p.groups_allowed {
            let groups: Vec<libc::gid_t> = u.groups.clone();
            check(libc::setgroups(groups.len(), groups.as_ptr()), "setgroups").map_err(setup)?;
        }
        check(
            libc::setresgid(u.gid, u.gid, u.gid),
            &format!("setgid {}", u.gid),
        )
        .map_err(setup)?;
        check(
            libc::setresuid(u.uid, u.uid, u.uid),
            &format!("setuid {}", u.uid),
        )
        .map_err(setup)?;
    }
    security::apply_caps(p.security.caps).map_err(setup)?;
    // SAFETY: fd plumbing in the child: stdin from /dev/null unless passed through, stdout
    // and stderr to kiln's pipe when captured (inherited ones are already in place).
    unsafe {
        for sig in FORWARDED_SIGNALS {
            libc::signal(sig, libc::SIG_DFL);
        }
        if let Stdio::Fds {
            stdin,
            stdout,
            stderr,
            tty,
        } = p.stdio
        {
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
        } else if !matches!(p.stdio, Stdio::Inherit { stdin: true }) {
            let null = c"/dev/null";
            let fd = libc::open(null.as_ptr(), libc::O_RDONLY);
            if fd >= 0 {
                libc::dup2(fd, 0);
                libc::close(fd);
            }
        }
        if p.stdio == Stdio::Capture {
            libc::dup2(out_w.as_raw_fd(), 1);
            libc::dup2(out_w.as_raw_fd(), 2);
        }
    }
    if let Some(fd) = p.net_ready {
        let mut byte = [0u8; 1];
        let n = loop {
            // SAFETY: reads one byte from the inherited pipe into a local buffer.
            let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
            if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break n;
            }
        };
        if n != 1 {
            return Err(setup(
                "the container's network (slirp4netns) was not set up".into(),
            ));
        }
    }
    if p.init {
        let code = init::run_as_init(&mut || exec_program(p));
        // SAFETY: ends the reaper once the command is gone.
        unsafe { libc::_exit(code) };
    }
    Err(exec_program(p))
}

/// Exec the command (looked up in the container's PATH); returns only on failure, with the
/// exit code (126: cannot execute, 127: not found) and why.
fn exec_program(p: &Prepared) -> (i32, String) {
    let name = p
        .argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    exec_first(&p.program, &p.argv, &p.env, &name)
}

/// execve each candidate path of the program in turn, as execvp does: past missing
/// entries, remembering a real failure. Returns only on failure, with docker's exit code
/// (127: not found, 126: cannot execute) and why.
pub(crate) fn exec_first(
    program: &[CString],
    argv: &[CString],
    env: &[CString],
    name: &str,
) -> (i32, String) {
    let mut av: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    av.push(std::ptr::null());
    let mut ev: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    ev.push(std::ptr::null());
    let mut err = libc::ENOENT;
    for prog in program {
        // SAFETY: null-terminated arrays of valid C strings.
        unsafe { libc::execve(prog.as_ptr(), av.as_ptr(), ev.as_ptr()) };
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if e != libc::ENOENT && e != libc::ENOTDIR {
            err = e;
        }
    }
    if err == libc::ENOENT {
        (127, format!("{name}: executable file not found in $PATH"))
    } else {
        (
            126,
            format!("{name}: {}", std::io::Error::from_raw_os_error(err)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lowers: &[&str]) -> RunSpec {
        RunSpec {
            lowers: lowers.iter().map(PathBuf::from).collect(),
            scratch: PathBuf::from("/s/run-1"),
            argv: vec!["ls".into(), "-l".into()],
            env: vec!["PATH=/bin:/usr/bin".into()],
            cwd: String::new(),
            user: Identity::default(),
            network: Network::Host,
            hostname: String::new(),
            ids: plan_ids(0, 0, "root", None, None, false),
            layer_tar: None,
            source_date_epoch: None,
            pipes: Vec::new(),
            mounts: Vec::new(),
            confine: Confinement::default(),
            ports: Vec::new(),
            volume_fills: Vec::new(),
            readonly_root: false,
        }
    }

    #[test]
    fn lowers_are_short_names_deduplicated_topmost_first() {
        let p = Prepared::new(
            &spec(&["/st/snapshots/b", "/st/snapshots/a", "/st/snapshots/b"]),
            "h",
        )
        .unwrap();
        assert_eq!(
            p.mount_data.to_str().unwrap(),
            "lowerdir=b:a,upperdir=/s/run-1/upper,workdir=/s/run-1/work,userxattr"
        );
        assert_eq!(
            p.lower_dir.as_deref().unwrap().to_str().unwrap(),
            "/st/snapshots"
        );
    }

    #[test]
    fn scratch_images_get_an_empty_lower_and_odd_paths_are_escaped() {
        let p = Prepared::new(&spec(&[]), "h").unwrap();
        assert!(p.lower_dir.is_none());
        assert!(p
            .mount_data
            .to_str()
            .unwrap()
            .starts_with("lowerdir=/s/run-1/empty,"));
        let p = Prepared::new(&spec(&["/x/a:b", "/y/c,d"]), "h").unwrap();
        assert!(p
            .mount_data
            .to_str()
            .unwrap()
            .starts_with("lowerdir=/x/a\\:b:/y/c\\,d,"));
    }

    #[test]
    fn the_program_is_looked_up_in_the_containers_path() {
        let p = Prepared::new(&spec(&[]), "h").unwrap();
        let progs: Vec<_> = p.program.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(progs, ["/bin/ls", "/usr/bin/ls"]);
        let envs: Vec<_> = p.env.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(envs, ["PATH=/bin:/usr/bin", "HOSTNAME=h", "HOME=/root"]);
    }

    #[test]
    fn refusal_of_user_namespaces_is_explained() {
        let e = userns_refused("unshare(CLONE_NEWUSER): Operation not permitted");
        let m = e.to_string();
        assert!(
            m.contains("does not allow unprivileged user namespaces"),
            "{m}"
        );
        assert!(m.contains("--isolation=chroot"), "{m}");
    }
}
