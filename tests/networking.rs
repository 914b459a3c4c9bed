#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `kiln run --network` and `-p` through the real binary, as root and as an unprivileged
//! user with subordinate ids: slirp4netns where /dev/net/tun is usable, loopback and one
//! warning where it is not, published TCP ports reached from the host.

mod common;

use common::env::{modes, As, Env};
use common::{have, is_root, TEST_USER as USER};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What these tests add to the shared [`Env`].
trait NetEnv {
    /// Whether this test's user may open /dev/net/tun (slirp4netns needs it).
    fn tun_usable(&self) -> bool;
    /// Run, assert success, return (stdout, stderr).
    fn ok_both(&self, args: &[&str]) -> (String, String);
}

impl NetEnv for Env {
    fn tun_usable(&self) -> bool {
        let mut c = if self.who == As::Rootless && is_root() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--reuid", USER, "--regid", USER, "--init-groups", "sh"]);
            c
        } else {
            Command::new("sh")
        };
        c.args(["-c", "test -r /dev/net/tun -a -w /dev/net/tun"]);
        c.status().unwrap().success() && have("slirp4netns")
    }

    fn ok_both(&self, args: &[&str]) -> (String, String) {
        let out = self.kiln(args);
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "{:?} kiln {args:?} failed:\n{o}{e}",
            self.who
        );
        (o, e)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const NO_TUN: &str = "the container has no outbound network; use --network host";

#[test]
fn private_network_gets_slirp_where_tun_is_usable_else_loopback_and_one_warning() {
    for who in modes() {
        let e = Env::new(who);
        let script = "mkdir /www; echo loop > /www/index.html; httpd -p 127.0.0.1:80 -h /www \
                      && wget -qO- http://127.0.0.1/; ip -o -4 addr; cat /etc/resolv.conf";
        // private is the default; docker's `bridge` is the same.
        for net in [None, Some("bridge")] {
            let mut args = vec!["run", "--rm"];
            if let Some(n) = net {
                args.extend(["--network", n]);
            }
            args.extend(["busybox", "sh", "-c", script]);
            let (out, err) = e.ok_both(&args);
            assert!(out.starts_with("loop\n"), "{who:?}: loopback: {out}");
            if e.tun_usable() {
                assert!(
                    out.contains("tap0") && out.contains("inet 10.0.2.100/"),
                    "{out}"
                );
                assert!(out.contains("nameserver 10.0.2.3"), "{out}");
                assert!(!err.contains("WARNING"), "{err}");
            } else {
                assert!(!out.contains("tap0"), "{out}");
                assert_eq!(err.matches(NO_TUN).count(), 1, "{who:?}: {err}");
                assert!(
                    err.contains("/dev/net/tun is not accessible to uid"),
                    "{err}"
                );
            }
        }
    }
}

#[test]
fn network_none_has_loopback_only_and_no_warning() {
    for who in modes() {
        let e = Env::new(who);
        let (out, err) = e.ok_both(&["run", "--network", "none", "busybox", "ip", "-o", "link"]);
        let links: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(str::trim)
            .collect();
        assert_eq!(links, ["lo"], "{who:?}: {out}");
        assert!(!err.contains("WARNING"), "{err}");
    }
}

#[test]
fn host_network_shares_the_hosts_interfaces_and_ignores_published_ports() {
    let names = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_string())
            .collect();
        v.sort();
        v
    };
    let host_now = || names(&std::fs::read_to_string("/proc/net/dev").unwrap());
    assert!(host_now().len() > 1, "the host has more than loopback");
    for who in modes() {
        // Other programs may add or remove interfaces meanwhile: the container must see
        // those present throughout, and nothing the host never had.
        let before = host_now();
        let e = Env::new(who);
        let port = free_port().to_string();
        let spec = format!("127.0.0.1:{port}:80");
        let (out, err) = e.ok_both(&[
            "run",
            "--network",
            "host",
            "-p",
            &spec,
            "busybox",
            "cat",
            "/proc/net/dev",
        ]);
        let after = host_now();
        let seen = names(&out);
        for n in &before {
            assert!(
                seen.contains(n) || !after.contains(n),
                "{who:?}: {n} missing: {seen:?}"
            );
        }
        for n in &seen {
            assert!(
                before.contains(n) || after.contains(n),
                "{who:?}: {n} is not the host's"
            );
        }
        assert!(
            err.contains("published ports are discarded when using host network mode"),
            "{err}"
        );
        assert!(!err.contains(NO_TUN), "{err}");
    }
}

/// The processes whose parent is `ppid` and whose command name is `name`.
fn children_named(ppid: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let parent = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        if comm.ends_with(&format!("({name}")) && parent == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

/// GET / through the published port until the server in the container answers (it may
/// still be starting); None when it never does.
fn http_get(port: u16) -> Option<String> {
    for _ in 0..300 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut body = String::new();
            if s.read_to_string(&mut body).is_ok() && body.starts_with("HTTP/1.") {
                return Some(body);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn a_published_tcp_port_reaches_busybox_httpd_in_the_container() {
    for who in modes() {
        let e = Env::new(who);
        let port = free_port();
        let spec = format!("127.0.0.1:{port}:80");
        let mut child = e
            .command(&[
                "run",
                "-p",
                &spec,
                "busybox",
                "sh",
                "-c",
                "mkdir /www; echo hi > /www/index.html; exec httpd -f -p 80 -h /www",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let got = http_get(port);
        // A second request: the forwarder serves more than one connection.
        let again = http_get(port);
        let slirps = children_named(child.id(), "slirp4netns");
        if e.tun_usable() {
            assert_eq!(slirps.len(), 1, "{who:?}: kiln runs one slirp4netns");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let got = got.unwrap_or_else(|| panic!("{who:?}: no answer on port {port}"));
        assert!(got.starts_with("HTTP/1.") && got.contains(" 200 "), "{got}");
        assert!(got.ends_with("\r\n\r\nhi\n"), "{got}");
        assert!(again.is_some_and(|b| b.ends_with("hi\n")));
        // Everything that held the port went with kiln.
        // slirp4netns goes too, though kiln had no chance to stop it.
        let mut gone = false;
        for _ in 0..300 {
            if slirps
                .iter()
                .all(|p| !Path::new(&format!("/proc/{p}/cmdline")).exists())
            {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(gone, "{who:?}: slirp4netns {slirps:?} outlived kiln");
        let mut freed = false;
        for _ in 0..300 {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                freed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            freed,
            "{who:?}: port {port} still held after kiln was killed"
        );
    }
}

#[test]
fn a_port_in_use_fails_before_the_container_starts() {
    for who in modes() {
        let e = Env::new(who);
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let mark = e.path().join("mark");
        std::fs::create_dir(&mark).unwrap();
        std::fs::set_permissions(&mark, std::fs::Permissions::from_mode(0o777)).unwrap();
        let spec = format!("127.0.0.1:{port}:80");
        let vol = format!("{}:/mark", mark.display());
        let tmp = e.path().join("store/tmp");
        let count = || std::fs::read_dir(&tmp).map_or(0, |d| d.count());
        let before = count();
        let out = e.kiln(&[
            "run",
            "-p",
            &spec,
            "-v",
            &vol,
            "busybox",
            "touch",
            "/mark/ran",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{who:?}: {err}");
        assert!(
            err.contains(&format!(
                "cannot publish 127.0.0.1:{port}->80/tcp: the host port is already in use"
            )),
            "{err}"
        );
        assert!(!mark.join("ran").exists(), "the container ran");
        assert_eq!(count(), before, "scratch left in {}", tmp.display());
    }
}

#[test]
fn a_privileged_host_port_rootless_is_a_clear_error() {
    if !is_root() {
        return;
    }
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if start <= 1 {
        return;
    }
    let e = Env::new(As::Rootless);
    let spec = format!("127.0.0.1:{}:80", start - 1);
    let out = e.kiln(&["run", "-p", &spec, "busybox", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!(
            "cannot publish 127.0.0.1:{}->80/tcp: host ports below {start} need root",
            start - 1
        )),
        "{err}"
    );
}

#[test]
fn bad_publish_specs_are_clear_errors() {
    let e = Env::new(As::Root);
    for (spec, want) in [
        ("80/sctp", "unknown protocol 'sctp'"),
        ("8080:http", "container port 'http' is not a port number"),
        ("1.2.3:80:80", "'1.2.3' is not an IP address"),
    ] {
        let out = e.kiln(&["run", "-p", spec, "busybox", "true"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{spec}: {err}");
        assert!(
            err.contains(&format!("invalid port specification '{spec}'")) && err.contains(want),
            "{spec}: {err}"
        );
    }
}

/// A UDP echo server in the container: busybox has none, so the host's python3 runs in it
/// (the host's /usr bound in read-only).
const UDP_ECHO: &str = "import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('127.0.0.1', 9999))\n\
while True:\n    d, a = s.recvfrom(2048)\n    s.sendto(d.upper(), a)\n";

#[test]
fn a_published_udp_port_reaches_a_server_in_the_container() {
    if !have("python3") {
        return;
    }
    for who in modes() {
        let e = Env::new(who);
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = format!("127.0.0.1:{port}:9999/udp");
        let mut child = e
            .command(&[
                "run",
                "-p",
                &spec,
                "-v",
                "/usr:/usr:ro",
                "-v",
                "/usr/lib:/lib:ro",
                "-v",
                "/usr/lib64:/lib64:ro",
                "busybox",
                "python3",
                "-c",
                UDP_ECHO,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        // Datagrams sent before the server is up are lost: send until one comes back.
        let mut answers = Vec::new();
        for msg in ["ping", "again"] {
            let mut buf = [0u8; 64];
            for _ in 0..120 {
                client.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
                // A late answer to an earlier resend of the previous message is skipped.
                if let Ok((n, from)) = client.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if text == msg.to_uppercase() {
                        answers.push((text, from.port()));
                        break;
                    }
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            answers,
            [("PING".to_string(), port), ("AGAIN".to_string(), port)],
            "{who:?}"
        );
    }
}

#[test]
fn a_failing_slirp4netns_is_a_clear_error_and_the_command_never_runs() {
    let e = Env::new(As::Root);
    if !e.tun_usable() {
        return;
    }
    let bin = e.path().join("fakebin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("slirp4netns");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'cannot open tun: simulated' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mark = e.path().join("mark");
    std::fs::create_dir(&mark).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let vol = format!("{}:/mark", mark.display());
    let out = e
        .command(&["run", "-v", &vol, "busybox", "touch", "/mark/ran"])
        .env("PATH", path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(
            "slirp4netns failed to set up the container's network: cannot open tun: simulated"
        ),
        "{err}"
    );
    assert!(
        !mark.join("ran").exists(),
        "the command ran without its network"
    );
}
