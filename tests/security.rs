#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Runtime confinement through the real binary, checked from inside the container:
//! capabilities, no_new_privs, seccomp (`kiln run` and RUN), the `--init` reaper, cgroup
//! limits, and `--isolation=chroot` where user namespaces are refused.

mod common;

use common::env::{As, Env};
use common::{is_root, run, TEST_USER as USER};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What these tests add to the shared [`Env`].
trait SecurityEnv {
    fn sh(&self, flags: &[&str], script: &str) -> (i32, String, String);
}

impl SecurityEnv for Env {
    /// Run `script` with busybox sh in a container; returns (exit code, stdout, stderr).
    fn sh(&self, flags: &[&str], script: &str) -> (i32, String, String) {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "sh", "-c", script]);
        let out = self.kiln(&args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} not in:\n{status}"))
        .trim()
}

const DOCKER_CAPS: &str = "00000000a80425fb";

fn default_confinement(who: As) {
    let e = Env::new(who);
    let (code, out, err) = e.sh(
        &[],
        "cat /proc/self/status; unshare -U true 2>&1; echo unshare=$?",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(field(&out, "CapEff"), DOCKER_CAPS, "{out}");
    assert_eq!(field(&out, "CapPrm"), DOCKER_CAPS);
    assert_eq!(field(&out, "CapBnd"), DOCKER_CAPS);
    assert_eq!(field(&out, "CapInh"), "0000000000000000");
    assert_eq!(field(&out, "NoNewPrivs"), "1");
    assert_eq!(field(&out, "Seccomp"), "2");
    // A new user namespace needs no capability: only the filter stops it.
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("unshare=1"), "{out}");
}

#[test]
fn the_default_is_dockers_capabilities_no_new_privs_and_seccomp_as_root() {
    default_confinement(As::Root);
}

#[test]
fn the_default_is_dockers_capabilities_no_new_privs_and_seccomp_rootless() {
    default_confinement(As::Rootless);
}

#[test]
fn flags_change_capabilities_and_turn_the_filter_and_no_new_privs_off() {
    let e = Env::new(As::Rootless);
    let (code, out, err) = e.sh(&[], "chown 1:1 /tmp && echo chowned");
    assert_eq!((code, out.as_str()), (0, "chowned\n"), "{err}");
    let (code, out, _) = e.sh(&["--cap-drop", "CHOWN"], "chown 1:1 /tmp 2>&1");
    assert_eq!(code, 1);
    assert!(out.contains("Operation not permitted"), "{out}");
    let (_, out, _) = e.sh(&["--cap-drop", "CHOWN"], "cat /proc/self/status");
    assert_eq!(field(&out, "CapEff"), "00000000a80425fa");
    let (_, out, _) = e.sh(
        &["--cap-drop", "ALL", "--cap-add", "cap_kill"],
        "cat /proc/self/status",
    );
    assert_eq!(field(&out, "CapBnd"), "0000000000000020");
    let (_, out, _) = e.sh(&["--cap-add", "ALL"], "cat /proc/self/status");
    assert_eq!(field(&out, "CapEff"), field(&out, "CapBnd"));
    assert!(u64::from_str_radix(field(&out, "CapEff"), 16).unwrap() > 0xffff_ffff);
    let (_, out, _) = e.sh(&["--cap-add", "NET_ADMIN"], "cat /proc/self/status");
    assert_eq!(field(&out, "CapEff"), "00000000a80435fb");
    let (code, out, err) = e.sh(
        &[
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "no-new-privileges=false",
        ],
        "cat /proc/self/status; unshare -U true && echo unshared",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(field(&out, "Seccomp"), "0");
    assert_eq!(field(&out, "NoNewPrivs"), "0");
    assert!(out.contains("unshared"), "{out}");
    // The filter without no_new_privs is installed while the command still holds
    // CAP_SYS_ADMIN in its namespace.
    let (_, out, _) = e.sh(
        &["-u", "1000", "--security-opt", "no-new-privileges=false"],
        "cat /proc/self/status",
    );
    assert_eq!(field(&out, "NoNewPrivs"), "0");
    assert_eq!(field(&out, "Seccomp"), "2");
    let (_, out, _) = e.sh(
        &["--security-opt", "no-new-privileges"],
        "cat /proc/self/status",
    );
    assert_eq!(field(&out, "NoNewPrivs"), "1");
}

#[test]
fn a_non_root_user_has_no_effective_capabilities() {
    let e = Env::new(As::Root);
    let (code, out, err) = e.sh(&["-u", "1000:1000"], "cat /proc/self/status");
    assert_eq!(code, 0, "{err}");
    assert_eq!(field(&out, "CapEff"), "0000000000000000");
    assert_eq!(field(&out, "CapPrm"), "0000000000000000");
    assert_eq!(field(&out, "CapBnd"), DOCKER_CAPS);
    assert_eq!(field(&out, "Uid"), "1000\t1000\t1000\t1000");
}

#[test]
fn bad_security_flags_are_refused_by_name() {
    let e = Env::new(As::Root);
    for (flags, says) in [
        (
            vec!["--cap-add", "NET_ADMN"],
            "unknown capability: \"NET_ADMN\"",
        ),
        (vec!["--security-opt", "seccomp=/p.json"], "seccomp=/p.json"),
        (vec!["--memory", "lots"], "invalid --memory value \"lots\""),
        (vec!["--cpus", "99"], "the range of CPUs is from 0.01 to"),
        (vec!["--pids-limit", "x"], "invalid --pids-limit value"),
    ] {
        let (code, _, err) = e.sh(&flags, "true");
        assert_eq!(code, 125, "{flags:?}: {err}");
        assert!(err.contains(says), "{flags:?}: {err}");
    }
}

#[test]
fn run_steps_are_confined_too() {
    let e = Env::new(As::Rootless);
    let ctx = e.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status && \
         chown 1:1 /etc/passwd && ! unshare -U true\n",
    )
    .unwrap();
    if is_root() {
        run(Command::new("chown").arg("-R").arg(USER).arg(&ctx));
    }
    let out = e.kiln(&["build", "--progress", "plain", "ctx"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("CapEff:\t{DOCKER_CAPS}")), "{err}");
    assert!(err.contains("NoNewPrivs:\t1"), "{err}");
    assert!(err.contains("Seccomp:\t2"), "{err}");
}

#[test]
fn init_is_a_reaper_of_kilns_own_as_pid_1() {
    let e = Env::new(As::Rootless);
    // Orphans are reparented to PID 1; the loop waits (bounded) for them to be reaped.
    let script = "tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/1/comm; \
        echo env=$(tr -d '\\0' < /proc/1/environ | wc -c); echo self=$$; \
        for i in 1 2 3 4 5; do (true &); done; i=0; \
        while [ $i -lt 200 ]; do z=$(cat /proc/[0-9]*/stat | awk '$3 == \"Z\"' | wc -l); \
        [ $z = 0 ] && break; sleep 0.05; i=$((i+1)); done; echo zombies=$z; exit 7";
    let (code, out, err) = e.sh(&["--init"], script);
    assert_eq!(code, 7, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "kiln-init", "{out}");
    assert_eq!(lines[1], "kiln-init");
    // kiln's own environment (tokens, paths) must not show through the reaper.
    assert_eq!(lines[2], "env=0");
    // The reaper is not dumpable: its memory is closed even to CAP_SYS_PTRACE in the
    // container (the memory belongs to kiln's namespace, not the container's).
    let (code, out, err) = e.sh(
        &["--init", "--cap-add", "SYS_PTRACE"],
        "cat /proc/1/environ; head -c 1 /proc/1/mem",
    );
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(err.matches("Permission denied").count(), 2, "{err}");
    assert_eq!(lines[3], "self=2");
    assert_eq!(lines[4], "zombies=0");
    // A signal PID 1 receives goes to the command.
    let (code, out, _) = e.sh(
        &["--init"],
        "trap 'echo forwarded; exit 3' TERM; kill -TERM 1; i=0; \
         while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; exit 9",
    );
    assert_eq!((code, out.as_str()), (3, "forwarded\n"));
    let (code, _, _) = e.sh(&["--init"], "kill -9 $$");
    assert_eq!(code, 137);
    let out = e.kiln(&["run", "--init", "busybox", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-command"));
    let (code, out, _) = e.sh(&[], "echo $$");
    assert_eq!(
        (code, out.as_str()),
        (0, "1\n"),
        "without --init the command is PID 1"
    );
}

/// The container's cgroup dir for `controller` (v1), from its own /proc/self/cgroup line.
fn group_of(out: &str, controller: &str) -> PathBuf {
    let line = out
        .lines()
        .find(|l| l.split(':').nth(1) == Some(controller))
        .unwrap_or_else(|| panic!("no {controller} line in {out}"));
    // Without a cgroup namespace the container sees the full path, as the test does.
    let rel = line.splitn(3, ':').nth(2).unwrap().trim_start_matches('/');
    Path::new("/sys/fs/cgroup").join(controller).join(rel)
}

fn v1_host() -> bool {
    Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists()
        && Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
}

#[test]
fn limits_are_enforced_through_cgroups_as_root() {
    if !is_root() || !v1_host() {
        return; // The rootless refusal is tested below; v2 delegation needs systemd.
    }
    let e = Env::new(As::Root);
    let (code, out, err) = e.sh(
        &["--pids-limit", "20"],
        "cat /proc/self/cgroup; n=0; for i in $(seq 50); do \
         if (sleep 30 &) 2>/dev/null; then n=$((n+1)); fi; done; echo started=$n",
    );
    assert_eq!(code, 0, "{out}{err}");
    let started: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("started="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(started > 0 && started < 20, "{out}");
    let group = group_of(&out, "pids");
    assert!(
        group.to_string_lossy().contains("/kiln/"),
        "{}",
        group.display()
    );
    assert!(!group.exists(), "{} left behind", group.display());
    // A group left by a kiln that was killed (its pid, above pid_max, is gone) is swept by
    // the next one.
    let ghost = group.parent().unwrap().join("ctr-ghost-4194304");
    std::fs::create_dir(&ghost).unwrap();
    let (code, _, err) = e.sh(&["--pids-limit", "5"], "true");
    assert_eq!(code, 0, "{err}");
    assert!(!ghost.exists(), "the leftover group was not swept");

    let (code, out, err) = e.sh(
        &["--memory", "32m"],
        "cat /proc/self/cgroup; head -c 100m /dev/zero | tail",
    );
    assert_eq!(code, 137, "{out}{err}");
    assert!(!group_of(&out, "memory").exists());

    let (code, out, err) = e.sh(
        &["--cpus", "0.5"],
        "g=$(grep ':cpu:' /proc/self/cgroup | cut -d: -f3); \
         cat /sys/fs/cgroup/cpu$g/cpu.cfs_quota_us /sys/fs/cgroup/cpu$g/cpu.cfs_period_us",
    );
    assert_eq!((code, out.as_str()), (0, "50000\n100000\n"), "{err}");
}

#[test]
fn limits_without_a_usable_cgroup_are_refused_not_ignored() {
    if !v1_host() {
        return; // Elsewhere a delegated v2 subtree may legitimately exist.
    }
    let e = Env::new(As::Rootless);
    let (code, out, err) = e.sh(&["--memory", "32m", "--pids-limit", "5"], "echo ran");
    assert_eq!(code, 125, "{out}{err}");
    assert!(!out.contains("ran"));
    assert!(err.contains("cannot apply --memory, --pids-limit"), "{err}");
    assert!(err.contains("only root"), "{err}");
}

/// Run `script` as root in a user namespace of its own whose user-namespace limit is 0,
/// so kiln cannot make one (as in CI containers that forbid them).
fn without_user_namespaces(e: &Env, script: &str) -> Output {
    let full = format!("echo 0 > /proc/sys/user/max_user_namespaces && {script}");
    Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c", &full])
        .current_dir(e.path())
        .env(
            "K",
            format!("./kiln --root {}", e.path().join("store").display()),
        )
        .output()
        .unwrap()
}

#[test]
fn refused_user_namespaces_are_explained_and_chroot_isolation_works() {
    if !is_root() {
        return; // The test user cannot write the sysctl of a namespace it maps as root.
    }
    let e = Env::new(As::Root);
    let out = without_user_namespaces(&e, "$K run --rm busybox true");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("max_user_namespaces"), "{err}");
    assert!(err.contains("--isolation=chroot"), "{err}");

    let out = without_user_namespaces(
        &e,
        "$K run --rm --isolation=chroot busybox sh -c 'echo pid=$$; id -u; \
         grep -E \"CapEff|Seccomp:\" /proc/self/status'",
    );
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{err}");
    assert!(err.contains("WARNING: --isolation=chroot"), "{err}");
    assert!(err.contains("isolates less"), "{err}");
    assert!(stdout.contains("pid=1\n0\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("CapEff:\t{DOCKER_CAPS}")),
        "{stdout}"
    );
    assert!(stdout.contains("Seccomp:\t2"), "{stdout}");

    let ctx = e.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo built > /marker && rm /bin/true\n",
    )
    .unwrap();
    let out = without_user_namespaces(&e, "$K build -q -t chrooted --isolation=chroot ctx");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("WARNING: --isolation=chroot"), "{err}");
    let out = without_user_namespaces(
        &e,
        "$K run --rm --isolation=chroot chrooted sh -c 'cat /marker; ls /bin/true 2>&1'",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("built\n"), "{stdout}");
    assert!(stdout.contains("No such file"), "{stdout}");
}

#[test]
fn chroot_isolation_without_cap_sys_admin_is_refused_by_name() {
    if !is_root() {
        return; // Root without CAP_SYS_ADMIN, as in a docker container with default caps.
    }
    let e = Env::new(As::Root);
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin"])
        .arg(e.path().join("kiln"))
        .arg("--root")
        .arg(e.path().join("store"))
        .args(["run", "--isolation=chroot", "busybox", "echo", "ran"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("lacks CAP_SYS_ADMIN"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ran"));
}

#[test]
fn chroot_isolation_needs_root() {
    let e = Env::new(As::Rootless);
    let (code, out, err) = e.sh(&["--isolation", "chroot"], "echo ran");
    assert_eq!(code, 125, "{out}{err}");
    assert!(err.contains("WARNING: --isolation=chroot"), "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert!(!out.contains("ran"));
}
