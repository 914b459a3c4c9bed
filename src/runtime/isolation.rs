//! How a container is isolated: in a user namespace of its own (the default), or with
//! `--isolation=chroot` (buildah's and kaniko's fallback) for CI containers that are already
//! the sandbox and refuse new user namespaces. Also the explanation kiln gives when a user
//! namespace is refused, by cause.
//!
//! `chroot` keeps everything but the user namespace: mount, PID, UTS and IPC namespaces, the
//! overlay root and pivot_root, capabilities, no_new_privs and seccomp. Without a user
//! namespace the container's ids are the host's, so its root is the host's root (less
//! capable, but a kernel hole or a shared mount is the host's problem): kiln warns on every
//! use and never chooses it by itself. It needs CAP_SYS_ADMIN (root has it, except in a
//! container with docker's default capabilities) to make those namespaces and mount the
//! overlay; where a mount namespace is refused kiln stops with that error rather than run
//! the command on the host's filesystem (a copied root without mounts is not implemented).

use super::RuntimeError;

/// How the container is isolated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Isolation {
    /// A user namespace of its own (rootless-capable).
    #[default]
    Namespaces,
    /// No new user namespace: host ids, the other namespaces kept.
    Chroot,
}

impl Isolation {
    pub fn user_namespace(self) -> bool {
        self == Isolation::Namespaces
    }
}

/// Said on every use of `--isolation=chroot`.
pub const CHROOT_WARNING: &str = "--isolation=chroot: no user namespace: the command runs with \
    the host's user ids (its root is the host's root, with docker's reduced capabilities and \
    seccomp filter); this isolates less than the default and is meant for CI containers that \
    are already the sandbox";

const CAP_SYS_ADMIN: u32 = 21;

/// The effective capability mask in a /proc/PID/status text.
pub fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// May this process use chroot isolation? It needs CAP_SYS_ADMIN (root normally has it) for
/// the mount namespace and the overlay.
pub fn check_chroot(euid: u32, status: Option<&str>) -> Result<(), RuntimeError> {
    let admin = match status.and_then(cap_eff) {
        Some(c) => c & (1 << CAP_SYS_ADMIN) != 0,
        None => euid == 0,
    };
    if admin {
        return Ok(());
    }
    Err(RuntimeError::Setup(if euid == 0 {
        "--isolation=chroot: root here lacks CAP_SYS_ADMIN (docker's default capabilities \
         drop it), which kiln needs for the container's mount namespace and overlay root; \
         give the CI container CAP_SYS_ADMIN (docker run --cap-add SYS_ADMIN, with a seccomp \
         profile that allows unshare and mount)"
            .into()
    } else {
        "--isolation=chroot needs root (or CAP_SYS_ADMIN) to make the container's mount \
         namespace and overlay root; as an ordinary user, use the default isolation (a user \
         namespace)"
            .into()
    }))
}

/// [`check_chroot`] for the running process.
pub fn check_chroot_here() -> Result<(), RuntimeError> {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    check_chroot(nix::unistd::geteuid().as_raw(), status.as_deref())
}

/// The errno in a message ending like std's "... (os error N)".
fn errno_of(msg: &str) -> Option<i32> {
    let tail = msg.rsplit_once("(os error ")?.1;
    tail.trim_end_matches(')').parse().ok()
}

/// A refused `unshare(CLONE_NEWUSER)`, explained by its cause, with the way out.
pub(crate) fn userns_refused(msg: &str) -> RuntimeError {
    let cause = match errno_of(msg) {
        Some(libc::ENOSPC) => {
            "the user namespace limit is reached: user.max_user_namespaces is 0 (or all are \
             in use) in this namespace; raise it with `sysctl user.max_user_namespaces=15000`"
        }
        Some(libc::EINVAL) => {
            "the kernel has no user namespaces (CONFIG_USER_NS), or kiln runs chrooted"
        }
        _ => {
            "this system does not allow unprivileged user namespaces (Ubuntu's AppArmor \
             restriction: sysctl kernel.apparmor_restrict_unprivileged_userns=0; \
             kernel.unprivileged_userns_clone=0; or a container's seccomp profile that \
             forbids unshare)"
        }
    };
    RuntimeError::UserNamespace(format!(
        "{msg}: {cause}. kiln needs a user namespace for RUN and `kiln run`; in a CI container \
         that is already the sandbox, run as root with --isolation=chroot (it isolates less)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_of_a_refusal_is_named() {
        let m = |e: i32| {
            let io = std::io::Error::from_raw_os_error(e);
            userns_refused(&format!("unshare(CLONE_NEWUSER): {io}")).to_string()
        };
        assert!(m(libc::ENOSPC).contains("max_user_namespaces"));
        assert!(m(libc::EPERM).contains("AppArmor"));
        assert!(m(libc::EINVAL).contains("CONFIG_USER_NS"));
        for e in [libc::ENOSPC, libc::EPERM, libc::EINVAL] {
            assert!(m(e).contains("--isolation=chroot"));
        }
    }

    #[test]
    fn chroot_needs_root_or_sys_admin() {
        assert!(check_chroot(0, None).is_ok());
        let root_without = check_chroot(0, Some("CapEff:\t00000000a80425fb\n"));
        assert!(root_without
            .unwrap_err()
            .to_string()
            .contains("lacks CAP_SYS_ADMIN"));
        let admin = "Name:\tx\nCapEff:\t0000000000200000\n";
        assert!(check_chroot(1000, Some(admin)).is_ok());
        let none = "CapEff:\t0000000000000000\n";
        let e = check_chroot(1000, Some(none)).unwrap_err().to_string();
        assert!(e.contains("needs root"), "{e}");
        assert_eq!(cap_eff("CapEff:\t00000000a80425fb"), Some(0xa80425fb));
    }
}
