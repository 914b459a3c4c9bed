//! The container's outbound network in `--network private`: slirp4netns, started by kiln
//! against the keeper's network namespace once it exists, and stopped when the container
//! ends. Where slirp4netns cannot run (it needs /dev/net/tun, root-only on many hosts) the
//! container keeps loopback only; [`outbound_unavailable`] says why, for one warning.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The DNS forwarder slirp4netns offers in its default 10.0.2.0/24 network.
pub const SLIRP_DNS: &str = "10.0.2.3";
/// The address slirp4netns gives the container's tap0.
pub const SLIRP_ADDRESS: &str = "10.0.2.100";

/// Why a private network gets no outbound access on this host (`None`: slirp4netns will be
/// used).
pub fn outbound_unavailable() -> Option<String> {
    let Some(_) = slirp4netns() else {
        return Some(
            "slirp4netns is not installed (Debian: apt-get install slirp4netns): the container \
             has no outbound network; use --network host for outbound access, -p still works"
                .into(),
        );
    };
    let tun = c"/dev/net/tun";
    // SAFETY: access() only reads the NUL-terminated path.
    if unsafe { libc::access(tun.as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
        let uid = nix::unistd::getuid().as_raw();
        return Some(format!(
            "/dev/net/tun is not accessible to uid {uid}: the container has no outbound \
             network; use --network host for outbound access, -p still works"
        ));
    }
    None
}

fn slirp4netns() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin:/usr/sbin".into());
    std::env::split_paths(&path)
        .map(|d| d.join("slirp4netns"))
        .find(|p| p.is_file())
}

/// A running slirp4netns; killed and reaped when dropped. It also exits by itself when kiln
/// dies (the write end of its `--exit-fd` pipe, held here, closes), so a killed kiln leaves
/// none behind.
pub(crate) struct Outbound {
    child: Child,
    _exit_w: OwnedFd,
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded: both descriptors are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Start slirp4netns for the network namespace of `pid` (which must already have its id
/// maps), and wait until tap0 is configured. `log` receives slirp4netns's own output.
pub(crate) fn start_outbound(pid: libc::pid_t, log: &Path) -> Result<Outbound, String> {
    let prog = slirp4netns().ok_or("slirp4netns is not installed")?;
    let (ready_r, ready_w) = pipe()?;
    let (exit_r, exit_w) = pipe()?;
    let logf = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let logf2 = logf
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let (w, x) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
    let mut cmd = Command::new(&prog);
    cmd.args([
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--ready-fd=3",
        "--exit-fd=4",
    ])
    .arg(pid.to_string())
    .arg("tap0")
    .stdin(Stdio::null())
    .stdout(logf)
    .stderr(logf2);
    // SAFETY: fcntl and dup2 are async-signal-safe. The pipes are first copied above 9, so
    // that neither is overwritten when they are put at 3 and 4 (without close-on-exec).
    unsafe {
        cmd.pre_exec(move || {
            let hw = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 10);
            let hx = libc::fcntl(x, libc::F_DUPFD_CLOEXEC, 10);
            if hw < 0 || hx < 0 || libc::dup2(hw, 3) < 0 || libc::dup2(hx, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", prog.display()))?;
    let out = Outbound {
        child,
        _exit_w: exit_w,
    };
    drop((ready_w, exit_r));
    let mut byte = [0u8; 1];
    let ready = matches!(std::fs::File::from(ready_r).read(&mut byte), Ok(1));
    if !ready {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        return Err(format!(
            "slirp4netns failed to set up the container's network: {}",
            text.trim()
        ));
    }
    Ok(out)
}
