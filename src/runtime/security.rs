//! What the command may do once it runs: its capability sets (docker's default set, changed
//! by `--cap-add`/`--cap-drop`), no_new_privs, and a seccomp filter close to docker's default
//! profile. The decisions (which capabilities, which syscalls) are plain functions of the
//! options, unit-tested here; `apply_*` make the kernel calls in the command process, just
//! before it changes identity and execs.
//!
//! Deliberate choices: no_new_privs is on by default (docker sets it only when asked), so
//! setuid binaries such as `su` or `sudo` run by a non-root USER do not gain privileges, and
//! file capabilities (Debian's `ping`) are not granted; `--security-opt
//! no-new-privileges=false` turns it off. The inheritable set stays empty and no ambient
//! capabilities are raised (as docker since CVE-2022-24769): a non-root USER ends with no
//! effective capabilities after exec.

/// Linux capability names, at their bit numbers.
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// docker's default capability set.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A set of capabilities, one bit per capability number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapSet(pub u64);

impl CapSet {
    pub fn all() -> CapSet {
        CapSet((1u64 << CAPABILITIES.len()) - 1)
    }

    pub fn docker_default() -> CapSet {
        let mut s = CapSet(0);
        for name in DEFAULT_CAPABILITIES {
            if let Some(bit) = cap_number(name) {
                s.0 |= 1 << bit;
            }
        }
        s
    }

    pub fn has(self, name: &str) -> bool {
        cap_number(name).is_some_and(|b| self.0 & (1 << b) != 0)
    }
}

/// The number of a capability named as docker accepts it: `chown`, `CHOWN`, `CAP_CHOWN`.
pub fn cap_number(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES
        .iter()
        .position(|c| *c == bare)
        .and_then(|i| u32::try_from(i).ok())
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("unknown capability: \"{0}\" (names as in capabilities(7), e.g. NET_ADMIN or CAP_NET_ADMIN, or ALL)")]
    UnknownCapability(String),
    #[error("invalid --security-opt \"{0}\": kiln accepts no-new-privileges[=true|false] and seccomp=unconfined")]
    BadOption(String),
}

/// How the command is confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Security {
    /// Bounding, permitted and effective set (inheritable and ambient stay empty).
    pub caps: CapSet,
    pub no_new_privs: bool,
    /// The default seccomp filter (`seccomp=unconfined` turns it off).
    pub seccomp: bool,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            caps: CapSet::docker_default(),
            no_new_privs: true,
            seccomp: true,
        }
    }
}

impl Security {
    /// From docker's flags: `--cap-add`, `--cap-drop` (each may be `ALL`) and `--security-opt`.
    pub fn from_flags(
        cap_add: &[String],
        cap_drop: &[String],
        security_opt: &[String],
    ) -> Result<Security, SecurityError> {
        let mut s = Security {
            caps: cap_set(cap_add, cap_drop)?,
            ..Security::default()
        };
        for opt in security_opt {
            let (key, value) = match opt.split_once(['=', ':']) {
                Some((k, v)) => (k, Some(v)),
                None => (opt.as_str(), None),
            };
            match (key, value) {
                ("no-new-privileges", None | Some("true")) => s.no_new_privs = true,
                ("no-new-privileges", Some("false")) => s.no_new_privs = false,
                ("seccomp", Some("unconfined")) => s.seccomp = false,
                _ => return Err(SecurityError::BadOption(opt.clone())),
            }
        }
        Ok(s)
    }
}

/// docker's rule: `--cap-add ALL` starts from every capability, `--cap-drop ALL` from none,
/// otherwise from the default set; then the named ones are added and the dropped removed.
pub fn cap_set(add: &[String], drop: &[String]) -> Result<CapSet, SecurityError> {
    let is_all = |v: &String| v.trim().eq_ignore_ascii_case("ALL");
    let bits = |names: &[String]| -> Result<u64, SecurityError> {
        let mut b = 0u64;
        for n in names.iter().filter(|n| !is_all(n)) {
            let bit =
                cap_number(n).ok_or_else(|| SecurityError::UnknownCapability(n.to_string()))?;
            b |= 1 << bit;
        }
        Ok(b)
    };
    let (add_bits, drop_bits) = (bits(add)?, bits(drop)?);
    let mut set = if add.iter().any(is_all) {
        CapSet::all().0
    } else if drop.iter().any(is_all) {
        0
    } else {
        CapSet::docker_default().0
    };
    if !add.iter().any(is_all) {
        set |= add_bits;
    }
    set &= !drop_bits;
    Ok(CapSet(set))
}

/// What a seccomp rule does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Fail with this errno.
    Errno(u32),
    /// Allowed only when the first argument is one of these (else EPERM): `personality`.
    ArgIn(&'static [u32]),
    /// Fails with EPERM when the first argument has any of these bits: `clone` with
    /// namespace flags.
    ArgHasNone(u32),
}

const E_PERM: u32 = libc::EPERM as u32;

/// The syscalls the filter blocks (and how) for a command with capabilities `caps`: the ones
/// docker's default profile leaves out, except where a capability the command holds lets
/// docker allow them.
pub fn seccomp_rules(caps: CapSet) -> Vec<(i64, Rule)> {
    use libc::*;
    let perm = Rule::Errno(E_PERM);
    let mut rules: Vec<(i64, Rule)> = vec![
        (SYS_keyctl, perm),
        (SYS_add_key, perm),
        (SYS_request_key, perm),
        (SYS_userfaultfd, perm),
        (SYS_io_uring_setup, perm),
        (SYS_io_uring_enter, perm),
        (SYS_io_uring_register, perm),
        (
            SYS_personality,
            Rule::ArgIn(&[0, 8, 0x20000, 0x20008, 0xffff_ffff]),
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    rules.extend([
        (SYS_uselib, perm),
        (SYS_ustat, perm),
        (SYS_sysfs, perm),
        (SYS__sysctl, perm),
        (SYS_nfsservctl, perm),
    ]);
    let mut unless = |cap: &str, calls: &[i64]| {
        if !caps.has(cap) {
            rules.extend(calls.iter().map(|c| (*c, perm)));
        }
    };
    unless(
        "SYS_ADMIN",
        &[
            SYS_mount,
            SYS_umount2,
            SYS_pivot_root,
            SYS_unshare,
            SYS_setns,
            SYS_swapon,
            SYS_swapoff,
            SYS_fsopen,
            SYS_fsconfig,
            SYS_fsmount,
            SYS_fspick,
            SYS_move_mount,
            SYS_open_tree,
            SYS_mount_setattr,
            SYS_quotactl,
            SYS_lookup_dcookie,
            SYS_fanotify_init,
        ],
    );
    unless(
        "SYS_MODULE",
        &[SYS_init_module, SYS_finit_module, SYS_delete_module],
    );
    unless(
        "SYS_BOOT",
        &[SYS_reboot, SYS_kexec_load, SYS_kexec_file_load],
    );
    unless(
        "SYS_TIME",
        &[SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime],
    );
    unless("SYS_PACCT", &[SYS_acct]);
    unless("SYS_PTRACE", &[SYS_kcmp]);
    unless(
        "SYS_NICE",
        &[
            SYS_get_mempolicy,
            SYS_set_mempolicy,
            SYS_mbind,
            SYS_move_pages,
        ],
    );
    unless("SYSLOG", &[SYS_syslog]);
    unless("SYS_TTY_CONFIG", &[SYS_vhangup]);
    unless("DAC_READ_SEARCH", &[SYS_open_by_handle_at]);
    #[cfg(target_arch = "x86_64")]
    unless("SYS_RAWIO", &[SYS_iopl, SYS_ioperm]);
    if !caps.has("SYS_ADMIN") {
        if !(caps.has("BPF")) {
            rules.push((SYS_bpf, perm));
        }
        if !(caps.has("PERFMON")) {
            rules.push((SYS_perf_event_open, perm));
        }
        let ns = CLONE_NEWNS
            | CLONE_NEWUTS
            | CLONE_NEWIPC
            | CLONE_NEWUSER
            | CLONE_NEWPID
            | CLONE_NEWNET
            | CLONE_NEWCGROUP;
        #[allow(clippy::cast_sign_loss)]
        rules.push((SYS_clone, Rule::ArgHasNone(ns as u32)));
        // clone3's flags are behind a pointer the filter cannot read: ENOSYS makes glibc
        // fall back to clone, whose flags it can (docker does the same).
        rules.push((SYS_clone3, Rule::Errno(ENOSYS as u32)));
    }
    rules
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("kiln's seccomp filter knows the syscall numbers of x86_64 and aarch64 only");

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// The low 32 bits of the first argument (little-endian targets only).
const OFF_ARG0: u32 = 16;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The rules as a classic BPF program: a foreign architecture is killed, x32 syscalls (which
/// would dodge the numbers below) fail, each rule is a compare-and-return.
pub fn seccomp_program(rules: &[(i64, Rule)]) -> Vec<libc::sock_filter> {
    let mut p = vec![
        insn(LD_W_ABS, 0, 0, OFF_ARCH),
        insn(JEQ_K, 1, 0, AUDIT_ARCH),
        insn(RET_K, 0, 0, RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.extend([
        insn(JSET_K, 0, 1, 0x4000_0000),
        insn(RET_K, 0, 0, RET_ERRNO | E_PERM),
    ]);
    for (nr, rule) in rules {
        let Ok(nr) = u32::try_from(*nr) else { continue };
        let body: Vec<libc::sock_filter> = match rule {
            Rule::Errno(e) => vec![insn(RET_K, 0, 0, RET_ERRNO | e)],
            Rule::ArgIn(allowed) => {
                let mut b = vec![insn(LD_W_ABS, 0, 0, OFF_ARG0)];
                for v in allowed.iter() {
                    b.push(insn(JEQ_K, 0, 1, *v));
                    b.push(insn(RET_K, 0, 0, RET_ALLOW));
                }
                b.push(insn(RET_K, 0, 0, RET_ERRNO | E_PERM));
                b
            }
            Rule::ArgHasNone(bits) => vec![
                insn(LD_W_ABS, 0, 0, OFF_ARG0),
                insn(JSET_K, 0, 1, *bits),
                insn(RET_K, 0, 0, RET_ERRNO | E_PERM),
                insn(RET_K, 0, 0, RET_ALLOW),
            ],
        };
        // Every body ends in a return, so a match never falls through into the next rule.
        let skip = u8::try_from(body.len()).unwrap_or(u8::MAX);
        p.push(insn(JEQ_K, 0, skip, nr));
        p.extend(body);
    }
    p.push(insn(RET_K, 0, 0, RET_ALLOW));
    p
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// no_new_privs and the seccomp filter, installed while the process still holds every
/// capability of its namespace (a filter without no_new_privs needs CAP_SYS_ADMIN).
/// `program` is made before fork.
pub(crate) fn apply_filter(sec: &Security, program: &[libc::sock_filter]) -> Result<(), String> {
    if sec.no_new_privs {
        // SAFETY: a prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(os_err("setting no_new_privs"));
        }
    }
    if sec.seccomp {
        let prog = libc::sock_fprog {
            len: u16::try_from(program.len()).map_err(|_| "seccomp program too long")?,
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: prog points at `program`, alive for the call; the kernel copies it.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(os_err("installing the seccomp filter"));
        }
    }
    Ok(())
}

/// Before the identity changes: keep the permitted set across setuid, and shrink the
/// bounding set (which needs CAP_SETPCAP, still held here).
pub(crate) fn apply_bounding(caps: CapSet) -> Result<(), String> {
    // SAFETY: prctls with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(os_err("PR_SET_KEEPCAPS"));
        }
        for bit in 0..64u32 {
            if caps.0 & (1u64 << bit) != 0 {
                continue;
            }
            if libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(bit), 0, 0, 0) != 0 {
                // EINVAL: a capability this kernel does not know; nothing to drop.
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(os_err("dropping capabilities from the bounding set"));
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// After the identity changed: the final permitted and effective sets, empty inheritable
/// and ambient ones. A non-root user then gets no effective capabilities from exec.
pub(crate) fn apply_caps(caps: CapSet) -> Result<(), String> {
    let header = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut held = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget fills two data structs for a version-3 header.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &header as *const CapHeader,
            held.as_mut_ptr(),
        )
    } != 0
    {
        return Err(os_err("capget"));
    }
    // `ALL` on an older kernel names capabilities it does not have; asking for them fails.
    let caps = caps.0 & (u64::from(held[0].permitted) | (u64::from(held[1].permitted) << 32));
    #[allow(clippy::cast_possible_truncation)]
    let (lo, hi) = (caps as u32, (caps >> 32) as u32);
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a version-3 header and two data structs, as the ABI defines.
    unsafe {
        if libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) != 0 {
            return Err(os_err("capset"));
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    Ok(())
}

/// Everything about how a command is confined and limited; the default is docker's
/// (capabilities, no_new_privs, seccomp), no `--init`, no limits, a user namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Confinement {
    pub security: Security,
    /// PID 1 is kiln's reaper and the command PID 2 (`--init`).
    pub init: bool,
    /// cgroup limits (`--memory`, `--cpus`, `--pids-limit`).
    pub limits: super::Limits,
    pub isolation: super::Isolation,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_default_set_is_dockers() {
        assert_eq!(CapSet::docker_default().0, 0xa80425fb);
        assert_eq!(Security::default().caps, CapSet::docker_default());
        assert!(Security::default().no_new_privs && Security::default().seccomp);
    }

    #[test]
    fn add_and_drop_follow_dockers_rules() {
        let d = CapSet::docker_default();
        let c = cap_set(&s(&["net_admin"]), &s(&["CAP_CHOWN"])).unwrap();
        assert!(c.has("NET_ADMIN") && !c.has("CHOWN") && c.has("SETUID"));
        assert_eq!(cap_set(&[], &s(&["ALL"])).unwrap().0, 0);
        let only = cap_set(&s(&["KILL"]), &s(&["all"])).unwrap();
        assert_eq!(only.0, 1 << 5);
        let most = cap_set(&s(&["ALL"]), &s(&["SYS_ADMIN"])).unwrap();
        assert_eq!(most.0, CapSet::all().0 & !(1 << 21));
        assert_eq!(cap_set(&[], &[]).unwrap(), d);
        let e = cap_set(&s(&["NET_ADMN"]), &[]).unwrap_err().to_string();
        assert!(e.contains("NET_ADMN"), "{e}");
    }

    #[test]
    fn security_opts_as_docker_spells_them() {
        let o = |v: &[&str]| Security::from_flags(&[], &[], &s(v));
        assert!(o(&["no-new-privileges"]).unwrap().no_new_privs);
        assert!(!o(&["no-new-privileges=false"]).unwrap().no_new_privs);
        assert!(!o(&["no-new-privileges:false"]).unwrap().no_new_privs);
        assert!(!o(&["seccomp=unconfined"]).unwrap().seccomp);
        assert!(o(&["seccomp=/x.json"]).is_err());
        assert!(o(&["apparmor=foo"]).is_err());
    }

    #[test]
    fn capabilities_relax_the_filter_as_docker_does() {
        let blocked = |caps: CapSet, nr: i64| seccomp_rules(caps).iter().any(|(n, _)| *n == nr);
        let d = CapSet::docker_default();
        for nr in [
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_keyctl,
            libc::SYS_bpf,
        ] {
            assert!(blocked(d, nr), "{nr}");
        }
        let admin = cap_set(&s(&["SYS_ADMIN"]), &[]).unwrap();
        assert!(!blocked(admin, libc::SYS_mount));
        assert!(!blocked(admin, libc::SYS_clone));
        assert!(blocked(admin, libc::SYS_keyctl));
        assert!(!blocked(d, libc::SYS_ptrace));
        assert!(!blocked(d, libc::SYS_read));
    }

    /// A tiny interpreter of the instructions the program uses, to check what it decides.
    fn eval(p: &[libc::sock_filter], arch: u32, nr: u32, arg0: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0 => arg0,
                        k => panic!("load {k}"),
                    }
                }
                JEQ_K | JSET_K => {
                    let hit = if i.code == JEQ_K {
                        acc == i.k
                    } else {
                        acc & i.k != 0
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                c => panic!("op {c}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn the_program_decides_as_the_rules_say() {
        let p = seccomp_program(&seccomp_rules(CapSet::docker_default()));
        let nr = |n: i64| u32::try_from(n).unwrap();
        let eperm = RET_ERRNO | E_PERM;
        assert_eq!(eval(&p, AUDIT_ARCH, nr(libc::SYS_read), 0), RET_ALLOW);
        assert_eq!(eval(&p, AUDIT_ARCH, nr(libc::SYS_keyctl), 0), eperm);
        assert_eq!(eval(&p, AUDIT_ARCH, nr(libc::SYS_unshare), 0), eperm);
        assert_eq!(
            eval(&p, 0x4000_0003, nr(libc::SYS_read), 0),
            RET_KILL_PROCESS
        );
        assert_eq!(
            eval(&p, AUDIT_ARCH, nr(libc::SYS_personality), 8),
            RET_ALLOW
        );
        assert_eq!(
            eval(&p, AUDIT_ARCH, nr(libc::SYS_personality), 0x40000),
            eperm
        );
        let newuser = libc::CLONE_NEWUSER as u32;
        assert_eq!(eval(&p, AUDIT_ARCH, nr(libc::SYS_clone), newuser), eperm);
        assert_eq!(eval(&p, AUDIT_ARCH, nr(libc::SYS_clone), 0x11), RET_ALLOW);
        assert_eq!(
            eval(&p, AUDIT_ARCH, nr(libc::SYS_clone3), 0),
            RET_ERRNO | libc::ENOSYS as u32
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            eval(&p, AUDIT_ARCH, 0x4000_0000 | nr(libc::SYS_read), 0),
            eperm
        );
    }
}
