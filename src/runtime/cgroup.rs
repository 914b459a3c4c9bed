//! Resource limits (`--memory`, `--cpus`, `--pids-limit`) through a cgroup per container:
//! cgroup v2 where the caller has a delegated subtree, else, for root on a v1 or hybrid
//! host, the v1 memory, cpu and pids controllers (a `kiln/<id>` group in each). kiln moves
//! the keeper into the group before the command starts and removes the group afterwards.
//! When neither is possible the limits are refused with the reason, never silently dropped.
//!
//! The decision (which hierarchy, which directory, which files) is [`plan`], a function of
//! what the host shows through [`HostView`], so it is tested with a fake host.

use std::path::{Path, PathBuf};

/// Limits asked for; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Bytes of memory (swap is not allowed beyond it).
    pub memory: Option<u64>,
    /// CPU time in millionths of a CPU per 100 ms period, i.e. microseconds of quota.
    pub cpu_quota_us: Option<u64>,
    pub pids: Option<u64>,
}

/// The CFS period the quota is relative to (docker's).
pub const CPU_PERIOD_US: u64 = 100_000;

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpu_quota_us.is_none() && self.pids.is_none()
    }

    fn controllers(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.memory.is_some() {
            c.push("memory");
        }
        if self.cpu_quota_us.is_some() {
            c.push("cpu");
        }
        if self.pids.is_some() {
            c.push("pids");
        }
        c
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid {flag} value \"{value}\": {why}")]
    Invalid {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("cannot apply {what}: {why}")]
    Unavailable { what: String, why: String },
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `--memory`: a number with an optional unit b, k, m, g (docker's; case-insensitive, an
/// optional trailing `b`); at least 6 MiB, as docker requires.
pub fn parse_memory(s: &str) -> Result<u64, CgroupError> {
    let bad = |why: &str| CgroupError::Invalid {
        flag: "--memory",
        value: s.to_string(),
        why: why.to_string(),
    };
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        Some((i, 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| bad("expected a size such as 512m or 2g"))?;
    let bytes = n.checked_mul(mult).ok_or_else(|| bad("too large"))?;
    if bytes < 6 << 20 {
        return Err(bad("the minimum memory limit is 6m"));
    }
    Ok(bytes)
}

/// `--cpus`: a decimal number of CPUs, from 0.01 up to the CPUs this host has.
pub fn parse_cpus(s: &str, host_cpus: usize) -> Result<u64, CgroupError> {
    let bad = |why: String| CgroupError::Invalid {
        flag: "--cpus",
        value: s.to_string(),
        why,
    };
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| bad("expected a number such as 1.5".into()))?;
    #[allow(clippy::cast_precision_loss)]
    let max = host_cpus as f64;
    if !(0.01..=max).contains(&n) {
        return Err(bad(format!(
            "the range of CPUs is from 0.01 to {host_cpus}"
        )));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let quota = (n * CPU_PERIOD_US as f64).round() as u64;
    Ok(quota)
}

/// `--pids-limit`: docker reads 0 and negative numbers as unlimited.
pub fn parse_pids(s: &str) -> Result<Option<u64>, CgroupError> {
    let n: i64 = s.trim().parse().map_err(|_| CgroupError::Invalid {
        flag: "--pids-limit",
        value: s.to_string(),
        why: "expected a whole number".into(),
    })?;
    Ok(u64::try_from(n).ok().filter(|n| *n > 0))
}

/// What kiln reads from the host to decide; the real one reads files, tests fake it.
pub trait HostView {
    fn read(&self, path: &Path) -> Option<String>;
    fn writable(&self, path: &Path) -> bool;
    fn is_root(&self) -> bool;
}

/// The running host.
pub struct RealHost;

impl HostView for RealHost {
    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn writable(&self, path: &Path) -> bool {
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: access on a valid C string.
        unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
    }

    fn is_root(&self) -> bool {
        nix::unistd::geteuid().is_root()
    }
}

/// One directory to create and the files to write in it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDir {
    pub dir: PathBuf,
    pub files: Vec<(&'static str, String)>,
}

/// A cgroup mount: its mount point, the hierarchy path it shows, and (v1) its controllers.
#[derive(Debug)]
struct CgMount {
    point: PathBuf,
    root: String,
    v2: bool,
    controllers: Vec<String>,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<CgMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (l.get(3), l.get(4), r.first()) else {
            continue;
        };
        let v2 = *fstype == "cgroup2";
        if !v2 && *fstype != "cgroup" {
            continue;
        }
        let controllers = r
            .get(2)
            .map(|o| o.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        out.push(CgMount {
            point: PathBuf::from(point.replace("\\040", " ")),
            root: (*root).to_string(),
            v2,
            controllers,
        });
    }
    out
}

/// The directory of the caller's own cgroup `own` in a mount of the hierarchy.
fn own_dir(m: &CgMount, own: &str) -> PathBuf {
    let rel = own
        .strip_prefix(m.root.as_str())
        .unwrap_or(own)
        .trim_start_matches('/');
    m.point.join(rel)
}

fn files_v2(l: &Limits) -> Vec<(&'static str, String)> {
    let mut f = Vec::new();
    if let Some(m) = l.memory {
        f.push(("memory.max", m.to_string()));
        f.push(("memory.swap.max", "0".into()));
    }
    if let Some(q) = l.cpu_quota_us {
        f.push(("cpu.max", format!("{q} {CPU_PERIOD_US}")));
    }
    if let Some(p) = l.pids {
        f.push(("pids.max", p.to_string()));
    }
    f
}

/// Decide where the container's group goes and what is written there (empty when no limit
/// is asked for). `id` names the group.
pub fn plan(limits: &Limits, id: &str, host: &dyn HostView) -> Result<Vec<GroupDir>, CgroupError> {
    if limits.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = limits.controllers();
    let what = {
        let mut w = Vec::new();
        if limits.memory.is_some() {
            w.push("--memory");
        }
        if limits.cpu_quota_us.is_some() {
            w.push("--cpus");
        }
        if limits.pids.is_some() {
            w.push("--pids-limit");
        }
        w.join(", ")
    };
    let unavailable = |why: String| CgroupError::Unavailable {
        what: what.clone(),
        why,
    };
    let own_text = host
        .read(Path::new("/proc/self/cgroup"))
        .ok_or_else(|| unavailable("/proc/self/cgroup is unreadable".into()))?;
    let mounts = cgroup_mounts(
        &host
            .read(Path::new("/proc/self/mountinfo"))
            .unwrap_or_default(),
    );
    let mut v2_why = "no cgroup2 filesystem is mounted".to_string();
    // cgroup v2: the nearest enclosing group kiln may write whose subtree has the
    // controllers; the container's group is made below it.
    let own_v2 = own_text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string);
    if let (Some(own), Some(m)) = (&own_v2, mounts.iter().find(|m| m.v2)) {
        let mut dir = own_dir(m, own);
        let found = loop {
            let enabled = host
                .read(&dir.join("cgroup.subtree_control"))
                .unwrap_or_default();
            let has = wanted
                .iter()
                .all(|c| enabled.split_whitespace().any(|e| e == *c));
            if has && host.writable(&dir) && host.writable(&dir.join("cgroup.procs")) {
                break Some(dir);
            }
            if dir == m.point || !dir.pop() || !dir.starts_with(&m.point) {
                break None;
            }
        };
        match found {
            Some(d) => {
                return Ok(vec![GroupDir {
                    dir: d.join(format!("kiln-{id}")),
                    files: files_v2(limits),
                }])
            }
            None => {
                let avail = host
                    .read(&m.point.join("cgroup.controllers"))
                    .unwrap_or_default();
                v2_why = format!(
                    "no cgroup v2 group delegated to you enables {} (controllers at {}: {})",
                    wanted.join(" and "),
                    m.point.display(),
                    if avail.trim().is_empty() {
                        "none"
                    } else {
                        avail.trim()
                    }
                );
            }
        }
    }
    // cgroup v1: one hierarchy per controller, writable by root only.
    let v1: Vec<(&str, &CgMount)> = wanted
        .iter()
        .filter_map(|c| {
            mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|x| x == c))
                .map(|m| (*c, m))
        })
        .collect();
    if v1.is_empty() {
        return Err(unavailable(format!(
            "{v2_why}, and there are no cgroup v1 controllers for them. Run kiln where you \
             have a delegated cgroup v2 subtree (e.g. `systemd-run --user --scope -p \
             Delegate=yes kiln run ...`)"
        )));
    }
    if !host.is_root() {
        return Err(unavailable(format!(
            "{v2_why}; this host has cgroup v1 controllers, which only root may use. Run \
             kiln as root, or on a cgroup v2 host with a delegated subtree (e.g. \
             `systemd-run --user --scope -p Delegate=yes kiln run ...`)"
        )));
    }
    if v1.len() < wanted.len() {
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|c| !v1.iter().any(|(x, _)| x == *c))
            .copied()
            .collect();
        return Err(unavailable(format!(
            "the cgroup v1 controller(s) {} are not mounted",
            missing.join(", ")
        )));
    }
    let mut out = Vec::new();
    for (ctrl, m) in v1 {
        let own = own_text
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, names, path) = (f.next()?, f.next()?, f.next()?);
                names
                    .split(',')
                    .any(|n| n == ctrl)
                    .then(|| path.to_string())
            })
            .unwrap_or_else(|| "/".into());
        let files = match ctrl {
            "memory" => {
                let m = limits.memory.unwrap_or_default().to_string();
                vec![
                    ("memory.limit_in_bytes", m.clone()),
                    ("memory.memsw.limit_in_bytes", m),
                ]
            }
            "cpu" => vec![
                ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                (
                    "cpu.cfs_quota_us",
                    limits.cpu_quota_us.unwrap_or_default().to_string(),
                ),
            ],
            _ => vec![("pids.max", limits.pids.unwrap_or_default().to_string())],
        };
        let base = own_dir(m, &own);
        if !host.writable(&base) {
            return Err(unavailable(format!(
                "{} is not writable: the cgroup v1 hierarchies belong to the host's root \
                 (kiln's root here is not, e.g. inside a user namespace)",
                base.display()
            )));
        }
        out.push(GroupDir {
            dir: base.join("kiln").join(id),
            files,
        });
    }
    Ok(out)
}

/// The container's groups, removed on drop (once the processes in them have ended).
#[derive(Debug, Default)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

/// The pid of the kiln that made a group, from its name (`...-<pid>`, see [`group_name`]).
pub fn owner_pid(name: &str) -> Option<u32> {
    name.rsplit_once('-')?.1.parse().ok()
}

/// A group name unique on the host, ending in kiln's pid so that leftovers can be told.
pub fn group_name(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// Remove the groups beside `dir` that a kiln killed before its cleanup left behind: those
/// whose kiln is gone (rmdir fails, harmlessly, on a group still in use).
fn sweep(dir: &Path) {
    let (Some(parent), Some(own)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let own = own.to_string_lossy();
    let prefix = own.split_once("kiln-").map_or("", |_| "kiln-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) || name == own {
            continue;
        }
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid != 0 && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

impl Cgroup {
    /// Make the groups of `plan` and write their limits.
    pub fn create(plan: &[GroupDir]) -> Result<Cgroup, CgroupError> {
        let mut cg = Cgroup::default();
        for g in plan {
            sweep(&g.dir);
            std::fs::create_dir_all(&g.dir).map_err(|e| CgroupError::Io {
                path: g.dir.clone(),
                source: e,
            })?;
            cg.dirs.push(g.dir.clone());
            for (name, value) in &g.files {
                let path = g.dir.join(name);
                // memsw and swap.max exist only with swap accounting; without it there is
                // no swap to limit.
                let optional = matches!(*name, "memory.memsw.limit_in_bytes" | "memory.swap.max");
                if optional && !path.exists() {
                    continue;
                }
                std::fs::write(&path, value).map_err(|e| CgroupError::Io { path, source: e })?;
            }
        }
        Ok(cg)
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Move process `pid` (and, for a new process, everything it will fork) into the groups.
    pub fn add(&self, pid: libc::pid_t) -> Result<(), CgroupError> {
        for d in &self.dirs {
            let path = d.join("cgroup.procs");
            std::fs::write(&path, pid.to_string())
                .map_err(|e| CgroupError::Io { path, source: e })?;
        }
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // The last processes of a PID namespace may still be exiting for a moment.
            for _ in 0..100 {
                match std::fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        files: HashMap<PathBuf, String>,
        writable: Vec<PathBuf>,
        root: bool,
    }

    impl HostView for Fake {
        fn read(&self, p: &Path) -> Option<String> {
            self.files.get(p).cloned()
        }
        fn writable(&self, p: &Path) -> bool {
            self.writable.iter().any(|w| p.starts_with(w))
        }
        fn is_root(&self) -> bool {
            self.root
        }
    }

    const HYBRID_MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/pids rw,relatime shared:10 - cgroup cgroup rw,pids
32 25 0:28 / /sys/fs/cgroup/cpu rw,relatime shared:11 - cgroup cgroup rw,cpu
33 25 0:29 / /sys/fs/cgroup/unified rw,relatime shared:12 - cgroup2 cgroup2 rw
";

    fn hybrid(root: bool) -> Fake {
        let mut files = HashMap::new();
        files.insert(
            PathBuf::from("/proc/self/cgroup"),
            "8:pids:/\n4:memory:/job/7\n1:cpu:/\n0::/\n".to_string(),
        );
        files.insert(PathBuf::from("/proc/self/mountinfo"), HYBRID_MOUNTS.into());
        files.insert(
            PathBuf::from("/sys/fs/cgroup/unified/cgroup.controllers"),
            String::new(),
        );
        Fake {
            files,
            writable: if root {
                vec![PathBuf::from("/")]
            } else {
                vec![]
            },
            root,
        }
    }

    fn limits() -> Limits {
        Limits {
            memory: Some(32 << 20),
            cpu_quota_us: None,
            pids: Some(20),
        }
    }

    #[test]
    fn root_on_a_hybrid_host_gets_v1_groups_under_its_own() {
        let p = plan(&limits(), "abc", &hybrid(true)).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].dir,
            PathBuf::from("/sys/fs/cgroup/memory/job/7/kiln/abc")
        );
        assert_eq!(
            p[0].files[0],
            ("memory.limit_in_bytes", "33554432".to_string())
        );
        assert_eq!(p[1].dir, PathBuf::from("/sys/fs/cgroup/pids/kiln/abc"));
        assert_eq!(p[1].files, vec![("pids.max", "20".to_string())]);
    }

    #[test]
    fn without_root_or_delegation_the_reason_is_given() {
        let e = plan(&limits(), "abc", &hybrid(false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--memory, --pids-limit"), "{e}");
        assert!(e.contains("only root"), "{e}");
        assert!(
            e.contains("controllers at /sys/fs/cgroup/unified: none"),
            "{e}"
        );
    }

    #[test]
    fn root_of_a_user_namespace_cannot_write_v1_groups_and_is_told() {
        let mut h = hybrid(true);
        h.writable.clear();
        let e = plan(&limits(), "abc", &h).unwrap_err().to_string();
        assert!(
            e.contains("/sys/fs/cgroup/memory/job/7 is not writable"),
            "{e}"
        );
    }

    #[test]
    fn a_delegated_v2_subtree_is_used_from_the_nearest_enabled_ancestor() {
        let user = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service";
        let mut files = HashMap::new();
        files.insert(
            PathBuf::from("/proc/self/cgroup"),
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/term.scope\n".into(),
        );
        files.insert(
            PathBuf::from("/proc/self/mountinfo"),
            "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n".into(),
        );
        files.insert(
            PathBuf::from(format!("{user}/cgroup.subtree_control")),
            "cpu memory pids\n".into(),
        );
        let fake = Fake {
            files,
            writable: vec![PathBuf::from(user)],
            root: false,
        };
        let p = plan(&limits(), "abc", &fake).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].dir, PathBuf::from(format!("{user}/kiln-abc")));
        assert!(p[0].files.contains(&("memory.max", "33554432".to_string())));
        assert!(p[0].files.contains(&("pids.max", "20".to_string())));
    }

    #[test]
    fn leftover_groups_are_told_by_their_kilns_pid() {
        assert_eq!(owner_pid("ctr-a1b2-4242"), Some(4242));
        assert_eq!(owner_pid("kiln-run-x-7"), Some(7));
        assert_eq!(owner_pid("nopid"), None);
        assert!(group_name("ctr-x").ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn no_limits_no_groups() {
        assert!(plan(&Limits::default(), "x", &hybrid(false))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn sizes_cpus_and_pids_as_docker_reads_them() {
        assert_eq!(parse_memory("32m").unwrap(), 32 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("64mb").unwrap(), 64 << 20);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        assert!(parse_memory("1k").unwrap_err().to_string().contains("6m"));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("99999999999999g").is_err());
        assert_eq!(parse_cpus("1.5", 2).unwrap(), 150_000);
        assert_eq!(parse_cpus("0.25", 2).unwrap(), 25_000);
        assert!(parse_cpus("3", 2)
            .unwrap_err()
            .to_string()
            .contains("0.01 to 2"));
        assert!(parse_cpus("0", 2).is_err());
        assert_eq!(parse_pids("20").unwrap(), Some(20));
        assert_eq!(parse_pids("-1").unwrap(), None);
        assert!(parse_pids("x").is_err());
    }
}
