#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `kiln run` in the foreground, through the real binary, as root and as an unprivileged
//! user with subordinate ids: docker's command rules, streams, exit codes, isolation.

mod common;

use common::env::{As, Env};

/// busybox, and `app` built from a Dockerfile with ENV, WORKDIR and CMD (and an env file).
fn setup(who: As) -> Env {
    let e = Env::new(who);
    e.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox:latest\nENV GREETING=hello PATH=/usr/bin:/bin\nWORKDIR /srv\n\
                 CMD [\"echo\", \"from-cmd\"]\n",
            ),
            (
                "env.list",
                "# a comment\n\nFROM_FILE=yes\nGREETING=overridden\n",
            ),
        ],
    );
    e.ok(&["build", "-q", "-t", "app", "ctx"]);
    e
}

/// (what, args, stdin, expected exit code, expected stdout (exact), text stderr must hold)
type Case<'a> = (
    &'a str,
    Vec<&'a str>,
    Option<&'a [u8]>,
    i32,
    Option<&'a str>,
    &'a str,
);

fn cases<'a>() -> Vec<Case<'a>> {
    vec![
        (
            "echo",
            vec!["run", "--rm", "busybox", "echo", "hi"],
            None,
            0,
            Some("hi\n"),
            "",
        ),
        (
            "exit code",
            vec!["run", "--rm", "busybox", "sh", "-c", "exit 7"],
            None,
            7,
            Some(""),
            "",
        ),
        (
            "stderr is kiln's stderr",
            vec!["run", "busybox", "sh", "-c", "echo out; echo err >&2"],
            None,
            0,
            Some("out\n"),
            "err",
        ),
        (
            "missing command",
            vec!["run", "--rm", "busybox", "no-such-command"],
            None,
            127,
            Some(""),
            "no-such-command: executable file not found in $PATH",
        ),
        (
            "not executable",
            vec!["run", "busybox", "/etc/passwd"],
            None,
            126,
            Some(""),
            "/etc/passwd",
        ),
        (
            "-e and image ENV",
            vec![
                "run",
                "-e",
                "FOO=bar",
                "app",
                "sh",
                "-c",
                "echo $FOO $GREETING $PATH",
            ],
            None,
            0,
            Some("bar hello /usr/bin:/bin\n"),
            "",
        ),
        (
            "-e overrides image ENV",
            vec![
                "run",
                "-e",
                "GREETING=bye",
                "app",
                "sh",
                "-c",
                "echo $GREETING",
            ],
            None,
            0,
            Some("bye\n"),
            "",
        ),
        (
            "--env-file",
            vec![
                "run",
                "--env-file",
                "ctx/env.list",
                "app",
                "sh",
                "-c",
                "echo $FROM_FILE $GREETING",
            ],
            None,
            0,
            Some("yes overridden\n"),
            "",
        ),
        (
            "default PATH",
            vec!["run", "busybox", "sh", "-c", "echo $PATH"],
            None,
            0,
            Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
            "",
        ),
        (
            "image WORKDIR",
            vec!["run", "app", "pwd"],
            None,
            0,
            Some("/srv\n"),
            "",
        ),
        (
            "-w",
            vec!["run", "-w", "/etc", "app", "pwd"],
            None,
            0,
            Some("/etc\n"),
            "",
        ),
        (
            "-u 1000",
            vec!["run", "-u", "1000", "busybox", "id", "-u"],
            None,
            0,
            Some("1000\n"),
            "",
        ),
        (
            "root by default",
            vec!["run", "busybox", "id", "-u"],
            None,
            0,
            Some("0\n"),
            "",
        ),
        (
            "image CMD",
            vec!["run", "--rm", "app"],
            None,
            0,
            Some("from-cmd\n"),
            "",
        ),
        (
            "args replace CMD",
            vec!["run", "app", "echo", "replaced"],
            None,
            0,
            Some("replaced\n"),
            "",
        ),
        (
            "--entrypoint clears CMD",
            vec!["run", "--entrypoint", "echo", "app"],
            None,
            0,
            Some("\n"),
            "",
        ),
        (
            "--entrypoint with args",
            vec!["run", "--entrypoint", "/bin/echo", "app", "-n", "a", "b"],
            None,
            0,
            Some("a b"),
            "",
        ),
        (
            "PID 1",
            vec!["run", "busybox", "sh", "-c", "echo $$"],
            None,
            0,
            Some("1\n"),
            "",
        ),
        (
            "no host processes",
            vec!["run", "busybox", "sh", "-c", "echo /proc/[0-9]*"],
            None,
            0,
            Some("/proc/1\n"),
            "",
        ),
        (
            "--hostname",
            vec!["run", "--hostname", "box", "busybox", "hostname"],
            None,
            0,
            Some("box\n"),
            "",
        ),
        (
            "--network none has only lo",
            vec![
                "run",
                "--network",
                "none",
                "busybox",
                "sh",
                "-c",
                "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
            ],
            None,
            0,
            Some("lo\n"),
            "",
        ),
        (
            "-i passes stdin",
            vec!["run", "-i", "busybox", "cat"],
            Some(b"data\n"),
            0,
            Some("data\n"),
            "",
        ),
        (
            "without -i stdin is empty",
            vec!["run", "busybox", "cat"],
            Some(b"data\n"),
            0,
            Some(""),
            "",
        ),
        (
            "unknown image",
            vec!["run", "localhost:1/no-such-image", "true"],
            None,
            125,
            Some(""),
            "unable to find image 'localhost:1/no-such-image'",
        ),
        (
            "bad flag value",
            vec!["run", "--network", "bogus", "busybox", "true"],
            None,
            125,
            Some(""),
            "bogus",
        ),
        (
            "relative -w",
            vec!["run", "-w", "etc", "busybox", "true"],
            None,
            125,
            Some(""),
            "absolute",
        ),
        (
            "unknown user",
            vec!["run", "-u", "nobody-here", "busybox", "true"],
            None,
            125,
            Some(""),
            "nobody-here",
        ),
    ]
}

fn check(who: As) {
    let e = setup(who);
    let mut failures = Vec::new();
    for (what, args, stdin, code, stdout, stderr) in cases() {
        let out = e.kiln_with(&args, &[], stdin);
        let got_out = String::from_utf8_lossy(&out.stdout);
        let got_err = String::from_utf8_lossy(&out.stderr);
        let good = out.status.code() == Some(code)
            && stdout.is_none_or(|s| got_out == s)
            && got_err.contains(stderr);
        if !good {
            failures.push(format!(
                "{who:?} {what}: kiln {args:?}: exit {:?} (want {code}), stdout {got_out:?} (want {stdout:?}), stderr {got_err:?} (want it to hold {stderr:?})",
                out.status.code()
            ));
        }
    }
    // The hostname defaults to a short random ID, different per container.
    let a = e.ok(&["run", "busybox", "hostname"]);
    let b = e.ok(&["run", "busybox", "hostname"]);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let is_id = |h: &str| h.trim().len() == 12 && h.trim().bytes().all(|c| c.is_ascii_hexdigit());
    if !is_id(&a) || a == b || a == host {
        failures.push(format!(
            "{who:?} default hostname: {a:?}, {b:?} (host {host:?})"
        ));
    }
    // Nothing of the containers is left behind in the store's tmp.
    let tmp = e.path().join("store/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| {
            d.filter_map(|x| x.ok())
                .map(|x| x.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ctr-"))
                .collect()
        })
        .unwrap_or_default();
    if !left.is_empty() {
        failures.push(format!("{who:?} scratch dirs left behind: {left:?}"));
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn foreground_run_as_root() {
    check(As::Root);
}

#[test]
fn foreground_run_rootless() {
    check(As::Rootless);
}
