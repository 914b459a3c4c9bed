#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Containers with a life of their own, through the real binary, as root and as an
//! unprivileged user with subordinate ids: `run -d` and its supervisor, records and names,
//! `ps`, `logs`, `exec`, `stop`, `kill`, `rm`, `wait`, `inspect`, ptys, signals, and `rmi`
//! refusing an image a container uses.

mod common;

use common::env::{spawn, As, Env};
use common::{is_root, run};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What these tests add to the shared [`Env`].
trait ContainerEnv {
    fn detach(&self, args: &[&str]) -> String;
    fn inspect(&self, c: &str) -> serde_json::Value;
    fn until(&self, what: &str, check: impl FnMut() -> bool);
    fn logs(&self, args: &[&str]) -> String;
    fn assert_nothing_mounted(&self);
}

impl ContainerEnv for Env {
    /// `kiln run -d ...`: the full ID printed.
    fn detach(&self, args: &[&str]) -> String {
        let mut a = vec!["run", "-d"];
        a.extend_from_slice(args);
        let id = self.ok(&a).trim().to_string();
        assert_eq!(id.len(), 64, "{id:?}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
        id
    }

    fn inspect(&self, c: &str) -> serde_json::Value {
        let text = self.ok(&["inspect", c]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v[0].clone()
    }

    /// Poll until `check` holds (generously bounded: a failure, not a timing assertion).
    fn until(&self, what: &str, mut check: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(60);
        while !check() {
            assert!(
                Instant::now() < end,
                "{:?}: never happened: {what}",
                self.who
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self, args: &[&str]) -> String {
        let mut a = vec!["logs"];
        a.extend_from_slice(args);
        self.ok(&a)
    }

    /// Nothing of this store is mounted anywhere.
    fn assert_nothing_mounted(&self) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let store = self.store();
        assert!(
            !info.contains(store.to_str().unwrap()),
            "{:?}: mounts left: {info}",
            self.who
        );
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn pid_alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// run -d, ps, logs, exec, stop, rm: the life of a detached container.
fn lifecycle(who: As) {
    let e = Env::new(who);
    let id = e.detach(&[
        "--name",
        "web",
        "busybox",
        "sh",
        "-c",
        "echo started; echo oops >&2; while true; do sleep 1; done",
    ]);
    let short = &id[..12];
    // ps: running, with docker's columns.
    let ps = e.ok(&["ps"]);
    let mut lines = ps.lines();
    let header = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{ps}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with(short), "{ps}");
    assert!(
        row.contains("busybox") && row.contains("Up ") && row.ends_with("web"),
        "{ps}"
    );
    assert_eq!(e.ok(&["ps", "-q"]).trim(), short);
    assert_eq!(e.ok(&["ps", "-q", "--no-trunc"]).trim(), id);
    // logs: both streams, in order per stream.
    // (The two streams are read apart: wait for both.)
    e.until("the output is logged", || {
        let o = e.kiln(&["logs", "web"]);
        String::from_utf8_lossy(&o.stdout).contains("started") && stderr(&o).contains("oops")
    });
    let out = e.kiln(&["logs", "web"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    assert!(stderr(&out).contains("oops"), "{}", stderr(&out));
    // exec: in the container's namespaces.
    let pid1 = e.ok(&["exec", "web", "cat", "/proc/1/cmdline"]);
    assert!(pid1.starts_with("sh\0-c\0echo started"), "{pid1:?}");
    assert_eq!(e.ok(&["exec", "web", "hostname"]).trim(), short);
    let pids = e.ok(&["exec", "web", "sh", "-c", "ls -d /proc/[0-9]*"]);
    let pids: Vec<u32> = pids
        .split_whitespace()
        .map(|p| p.trim_start_matches("/proc/").parse().unwrap())
        .collect();
    assert!(pids.contains(&1), "{pids:?}");
    assert!(
        pids.len() < 8 && pids.iter().all(|p| *p < 100),
        "{who:?}: host processes visible: {pids:?}"
    );
    // The container's PID 1 is not kiln's: a pid namespace of its own.
    let host_pid = e.inspect("web")["State"]["Pid"].as_i64().unwrap();
    assert!(host_pid > 1 && pid_alive(host_pid));
    let o = e.kiln(&["exec", "web", "sh", "-c", "exit 7"]);
    assert_eq!(code(&o), 7);
    let o = e.kiln(&["exec", "web", "no-such-tool"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    assert_eq!(
        e.ok(&[
            "exec",
            "-e",
            "A=1",
            "-w",
            "/etc",
            "web",
            "sh",
            "-c",
            "echo $A $PWD"
        ]),
        "1 /etc\n"
    );
    assert_eq!(
        e.ok(&["exec", "-u", "1000:1000", "web", "id", "-u"]),
        "1000\n"
    );
    let o = e.kiln_with(&["exec", "-i", "web", "cat"], &[], Some(b"through stdin"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "through stdin");
    // rm refuses a running container.
    let o = e.kiln(&["rm", "web"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("container is running"),
        "{}",
        stderr(&o)
    );
    // stop: PID 1 without a TERM handler ignores it (as in docker): killed after -t.
    assert_eq!(e.ok(&["stop", "-t", "1", "web"]).trim(), "web");
    let st = &e.inspect("web")["State"];
    assert_eq!(st["Status"], "exited", "{st}");
    assert_eq!(st["ExitCode"], 137, "{st}");
    assert!(!pid_alive(host_pid));
    let ps = e.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
    assert_eq!(e.ok(&["ps"]).lines().count(), 1, "only the header");
    let o = e.kiln(&["exec", "web", "true"]);
    assert_eq!(code(&o), 125, "exec in a stopped container");
    // The logs stay after the exit.
    assert!(e.logs(&["web"]).contains("started"));
    assert_eq!(e.ok(&["rm", "web"]).trim(), "web");
    assert_eq!(e.ok(&["ps", "-a", "-q"]), "");
    assert_eq!(code(&e.kiln(&["logs", "web"])), 1);
    // The name is free again.
    let id2 = e.detach(&["--name", "web", "busybox", "sleep", "300"]);
    assert_ne!(id, id2);
    e.ok(&["rm", "-f", "web"]);
    e.assert_nothing_mounted();
}

#[test]
fn lifecycle_as_root() {
    if !is_root() {
        eprintln!("note: not root; the root half of this test needs root");
        return;
    }
    lifecycle(As::Root);
}

#[test]
fn lifecycle_rootless() {
    lifecycle(As::Rootless);
}

#[test]
fn names_are_unique_and_generated_when_missing() {
    let e = Env::new(As::Root);
    e.detach(&["--name", "one", "busybox", "sleep", "300"]);
    let o = e.kiln(&["run", "-d", "--name", "one", "busybox", "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("is already in use"), "{}", stderr(&o));
    let o = e.kiln(&["run", "--name", "bad name", "busybox", "true"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    // A foreground run without --rm keeps its record, with a random adjective_surname.
    e.ok(&["run", "busybox", "true"]);
    let names: Vec<String> = e
        .ok(&["ps", "-a"])
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().last().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"one".to_string()));
    let other = names.iter().find(|n| *n != "one").unwrap();
    let (adj, sur) = other.split_once('_').unwrap();
    assert!(!adj.is_empty() && !sur.is_empty(), "{other}");
    // --rm leaves nothing; an unknown container is an error.
    e.ok(&["run", "--rm", "busybox", "true"]);
    assert_eq!(e.ok(&["ps", "-a", "-q"]).lines().count(), 2);
    let o = e.kiln(&["stop", "nope"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("No such container: nope"),
        "{}",
        stderr(&o)
    );
    let o = e.kiln(&["exec", "nope", "true"]);
    assert_eq!(code(&o), 125);
    // A command that cannot start fails `run -d` itself, as docker's does, leaving nothing.
    let before = e.ok(&["ps", "-a", "-q"]);
    let o = e.kiln(&["run", "-d", "busybox", "no-such-command"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-command: executable file not found"));
    let o = e.kiln(&["run", "-d", "-w", "/no/such/dir", "busybox", "true"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert_eq!(e.ok(&["ps", "-a", "-q"]), before);
    // docker's management-command spelling.
    assert_eq!(e.ok(&["container", "ls", "-a", "-q"]), before);
    // A detached --rm container removes itself when it exits.
    let id = e.detach(&["--rm", "busybox", "true"]);
    e.until("the --rm container is removed", || {
        !e.ok(&["ps", "-a", "-q", "--no-trunc"]).contains(&id)
    });
    // `kiln prune` (docker's system prune) removes the stopped containers, not running ones.
    let running = e.ok(&["ps", "-q", "--no-trunc"]);
    let all = e.ok(&["ps", "-a", "-q", "--no-trunc"]);
    let stopped: Vec<&str> = all.lines().filter(|l| !running.contains(l)).collect();
    assert_eq!(stopped.len(), 1, "{all}");
    let out = e.ok(&["prune", "-f"]);
    assert!(
        out.starts_with(&format!("Deleted Containers:\n{}\n", stopped[0])),
        "{out}"
    );
    assert_eq!(e.ok(&["ps", "-a", "-q", "--no-trunc"]), running);
    e.ok(&["rm", "-f", "one"]);
}

#[test]
fn stop_sends_the_stop_signal_and_honours_the_timeout() {
    let e = Env::new(As::Root);
    // A handler for TERM: stop ends it gracefully, with its own exit code.
    e.detach(&[
        "--name",
        "graceful",
        "busybox",
        "sh",
        "-c",
        "trap 'echo term; exit 3' TERM; while true; do sleep 0.1; done",
    ]);
    // No handler: TERM is ignored by PID 1, so only the timeout's SIGKILL ends it.
    e.detach(&["--name", "stubborn", "busybox", "sleep", "300"]);
    e.ok(&["stop", "-t", "30", "graceful"]);
    assert_eq!(e.inspect("graceful")["State"]["ExitCode"], 3);
    assert!(e.logs(&["graceful"]).contains("term"));
    e.ok(&["stop", "-t", "0", "stubborn"]);
    assert_eq!(e.inspect("stubborn")["State"]["ExitCode"], 137);
    // Stopping a stopped container is fine.
    e.ok(&["stop", "stubborn"]);
}

#[test]
fn kill_sends_signals_and_wait_reports_exit_codes() {
    let e = Env::new(As::Root);
    e.detach(&[
        "--name",
        "kk",
        "busybox",
        "sh",
        "-c",
        "trap 'echo usr1' USR1; while true; do sleep 0.1; done",
    ]);
    e.ok(&["kill", "-s", "USR1", "kk"]);
    e.until("USR1 is handled", || e.logs(&["kk"]).contains("usr1"));
    assert_eq!(e.inspect("kk")["State"]["Running"], true);
    e.ok(&["kill", "kk"]);
    assert_eq!(e.ok(&["wait", "kk"]), "137\n");
    let o = e.kiln(&["kill", "kk"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    let o = e.kiln(&["kill", "-s", "NOSUCHSIG", "kk"]);
    assert_eq!(code(&o), 1);
    e.detach(&["--name", "ww", "busybox", "sh", "-c", "sleep 0.3; exit 4"]);
    assert_eq!(e.ok(&["wait", "ww"]), "4\n");
    assert!(e.ok(&["ps", "-a"]).contains("Exited (4)"));
}

#[test]
fn logs_tail_timestamps_and_follow() {
    let e = Env::new(As::Root);
    e.detach(&[
        "--name",
        "ll",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; done; sleep 0.5; echo last",
    ]);
    // -f follows until the container exits, so it has everything.
    let all = e.logs(&["-f", "ll"]);
    assert_eq!(all, "line1\nline2\nline3\nline4\nline5\nlast\n");
    assert_eq!(e.logs(&["--tail", "2", "ll"]), "line5\nlast\n");
    assert_eq!(e.logs(&["--tail", "0", "ll"]), "");
    let ts = e.logs(&["-t", "--tail", "1", "ll"]);
    let (time, rest) = ts.split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "{ts}");
    assert_eq!(rest, "last\n");
    let o = e.kiln(&["logs", "--tail", "x", "ll"]);
    assert!(!o.status.success());
}

#[test]
fn inspect_shows_dockers_fields_and_prefixes_resolve() {
    let e = Env::new(As::Root);
    let id = e.detach(&[
        "--name", "insp", "-e", "A=b", "-w", "/tmp", "busybox", "sleep", "300",
    ]);
    let v = e.inspect(&id[..5]);
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["Name"], "/insp");
    assert_eq!(v["Path"], "sleep");
    assert_eq!(v["Args"], serde_json::json!(["300"]));
    assert_eq!(v["State"]["Status"], "running");
    assert_eq!(v["State"]["Running"], true);
    assert!(v["State"]["Pid"].as_i64().unwrap() > 1);
    assert!(v["State"]["StartedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["Config"]["Hostname"], &id[..12]);
    assert_eq!(v["Config"]["Image"], "busybox");
    assert_eq!(v["Config"]["WorkingDir"], "/tmp");
    assert_eq!(v["Config"]["Cmd"], serde_json::json!(["sleep", "300"]));
    assert_eq!(v["Config"]["Entrypoint"], serde_json::Value::Null);
    // docker's key order, not an alphabetical one.
    let text = e.ok(&["inspect", "insp"]);
    let pos = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
    assert!(
        pos("Id") < pos("Created") && pos("State") < pos("Image") && pos("Name") < pos("Config")
    );
    assert!(v["Config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("A=b")));
    assert!(v["Image"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        e.ok(&["inspect", "-f", "{{.State.Status}}", "insp"]),
        "running\n"
    );
    // An image still inspects as one.
    let img = e.inspect("busybox");
    assert!(img["RootFS"].is_object(), "{img}");
    e.ok(&["rm", "-f", "insp"]);
    let o = e.kiln(&["inspect", "insp"]);
    assert!(!o.status.success());
}

#[test]
fn rm_force_kills_a_running_container() {
    let e = Env::new(As::Root);
    e.detach(&["--name", "ff", "busybox", "sleep", "300"]);
    let pid = e.inspect("ff")["State"]["Pid"].as_i64().unwrap();
    assert!(pid_alive(pid));
    assert_eq!(e.ok(&["rm", "-f", "ff"]).trim(), "ff");
    assert!(!pid_alive(pid));
    assert_eq!(e.ok(&["ps", "-a", "-q"]), "");
    assert!(std::fs::read_dir(e.store().join("containers"))
        .unwrap()
        .all(|d| d.unwrap().file_name().len() != 64));
    e.assert_nothing_mounted();
}

#[test]
fn a_supervisor_killed_with_sigkill_shows_exited() {
    let e = Env::new(As::Root);
    let id = e.detach(&["--name", "ss", "busybox", "sleep", "300"]);
    let pid = e.inspect("ss")["State"]["Pid"].as_i64().unwrap();
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(e.store().join("containers").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    let sup = state["supervisor_pid"].as_i64().unwrap();
    assert!(sup > 1 && sup != pid);
    run(Command::new("kill").args(["-KILL", &sup.to_string()]));
    e.until("the container dies with its supervisor", || !pid_alive(pid));
    let ps = e.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited ("), "{ps}");
    assert_eq!(e.ok(&["ps", "-q"]), "");
    assert_eq!(e.inspect("ss")["State"]["Running"], false);
    e.ok(&["rm", "ss"]);
    e.assert_nothing_mounted();
}

#[test]
fn rmi_refuses_an_image_a_container_uses() {
    let e = Env::new(As::Root);
    let id = e.detach(&["--name", "user", "busybox", "true"]);
    e.ok(&["wait", "user"]);
    let o = e.kiln(&["rmi", "busybox"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("conflict: unable to remove repository reference \"busybox\"")
            && err.contains(&format!(
                "container {} is using its referenced image",
                &id[..12]
            )),
        "{err}"
    );
    assert!(e.ok(&["images"]).contains("busybox"));
    // prune -a removes the stopped container, then keeps the image a running one uses.
    e.detach(&["--name", "runner", "busybox", "sleep", "300"]);
    e.ok(&["prune", "-a", "-f"]);
    assert!(e.ok(&["images"]).contains("busybox"));
    assert!(!e.ok(&["ps", "-a"]).contains("user"));
    e.ok(&["rm", "-f", "runner"]);
    e.ok(&["rmi", "busybox"]);
}

#[test]
fn foreground_runs_forward_signals() {
    let e = Env::new(As::Root);
    let mut cmd = e.command(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got; exit 3' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(&mut cmd);
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // The record shows the running container while it runs.
    e.until("ps shows the foreground container", || {
        e.ok(&["ps", "-q"]).lines().count() == 1
    });
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got\n");
    assert_eq!(status.code(), Some(3));
    assert_eq!(e.ok(&["ps", "-a", "-q"]), "", "--rm removed the record");
}

#[test]
fn tty_gives_a_terminal() {
    let e = Env::new(As::Root);
    let out = e.ok(&[
        "run",
        "--rm",
        "-t",
        "busybox",
        "sh",
        "-c",
        "[ -t 0 ] && [ -t 1 ] && echo tty",
    ]);
    assert_eq!(out, "tty\r\n");
    let out = e.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "[ -t 1 ] || echo no-tty",
    ]);
    assert_eq!(out, "no-tty\n");
    e.detach(&[
        "--name",
        "tt",
        "-t",
        "busybox",
        "sh",
        "-c",
        "[ -t 1 ] && echo tty; sleep 300",
    ]);
    e.until("the pty output is logged", || e.logs(&["tt"]) == "tty\r\n");
    let out = e.ok(&["exec", "-t", "tt", "sh", "-c", "[ -t 0 ] && echo exec-tty"]);
    assert_eq!(out, "exec-tty\r\n");
    e.ok(&["rm", "-f", "tt"]);
}

/// A pty for kiln's own terminal: (master, slave).
fn open_pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut m, mut s) = (-1, -1);
    let ws = libc::winsize {
        ws_row: 41,
        ws_col: 103,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
    assert_eq!(r, 0);
    unsafe { (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s)) }
}

/// Read the pty master until `needle` shows (bounded: the child is killed on a hang, so
/// the test fails instead of waiting forever).
fn read_until(
    m: &mut std::fs::File,
    seen: &mut Vec<u8>,
    needle: &str,
    child: &mut std::process::Child,
) {
    use std::os::fd::AsRawFd;
    let end = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(seen).contains(needle) {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("never saw {needle:?}: {}", String::from_utf8_lossy(seen));
        }
        let mut pfd = libc::pollfd {
            fd: m.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        match std::io::Read::read(m, &mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => {
                let _ = child.kill();
                panic!(
                    "pty closed before {needle:?}: {}",
                    String::from_utf8_lossy(seen)
                );
            }
        }
    }
}

fn lflag(f: &std::fs::File) -> libc::tcflag_t {
    use std::os::fd::AsRawFd;
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::tcgetattr(f.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

#[test]
fn tty_copies_the_window_size_and_restores_the_terminal() {
    let e = Env::new(As::Root);
    let (master, slave) = open_pty();
    let before = lflag(&slave);
    assert_ne!(before & libc::ICANON, 0, "a fresh pty is cooked");
    let mut cmd = e.command(&[
        "run",
        "--rm",
        "-i",
        "-t",
        "busybox",
        "sh",
        "-c",
        "stty size; read x; echo got-$x",
    ]);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    let mut child = spawn(&mut cmd);
    let mut m = master;
    let mut seen = Vec::new();
    // The size line first; then a line typed into kiln's terminal reaches the container.
    read_until(&mut m, &mut seen, "41 103", &mut child);
    // While attached with -i, kiln's terminal is raw (no line editing, no echo).
    assert_eq!(lflag(&slave) & (libc::ICANON | libc::ECHO), 0);
    m.write_all(b"abc\r").unwrap();
    read_until(&mut m, &mut seen, "got-abc", &mut child);
    assert!(child.wait().unwrap().success());
    // kiln put its terminal back as it found it.
    assert_eq!(lflag(&slave), before);
}
