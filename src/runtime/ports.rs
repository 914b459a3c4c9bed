//! Published ports (`-p`): docker's flag syntax, the host sockets, and the userspace
//! forwarder that carries TCP connections and UDP datagrams from them into the container's
//! network namespace.
//!
//! No tun device and no privilege is needed: kiln binds the listening sockets in the host's
//! namespace before the container exists (a socket stays in the namespace it was made in, so
//! a bind error is reported before anything runs), and the keeper forks a forwarder after it
//! has entered the container's namespace; the forwarder accepts on the host sockets and
//! connects sockets it makes there to the container's loopback.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket,
};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A bad `-p` value, or a host port that cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid port specification '{spec}': {reason}")]
    Invalid { spec: String, reason: String },
    #[error("cannot publish {mapping}: the host port is already in use")]
    InUse { mapping: PortMapping },
    #[error(
        "cannot publish {mapping}: host ports below {start} need root \
         (sysctl net.ipv4.ip_unprivileged_port_start sets the limit); use a higher host port"
    )]
    Privileged { mapping: PortMapping, start: u16 },
    #[error("cannot publish {mapping}: {source}")]
    Bind {
        mapping: PortMapping,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port. `host_port` 0 asks for a free port; once bound (see
/// [`Listener::published`]) it is the real one. Displays as docker's `ps` shows it:
/// `0.0.0.0:8080->80/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = SocketAddr::new(self.host_ip, self.host_port);
        write!(f, "{host}->{}/{}", self.container_port, self.proto)
    }
}

/// docker's PORTS column of `ps`: the published ports, `, `-separated.
pub fn ports_column(ports: &[PortMapping]) -> String {
    ports
        .iter()
        .map(PortMapping::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parse one `-p` value: `CPORT`, `HOSTPORT:CPORT`, `IP:HOSTPORT:CPORT`, `IP::CPORT`, each
/// with an optional `/tcp` or `/udp`; an IPv6 address in brackets (`[::1]:8080:80`).
pub fn parse_publish(spec: &str) -> Result<PortMapping, PortError> {
    let bad = |reason: &str| PortError::Invalid {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, "tcp")) => (a, Proto::Tcp),
        Some((a, "udp")) => (a, Proto::Udp),
        Some((_, p)) => return Err(bad(&format!("unknown protocol '{p}' (tcp or udp)"))),
        None => (spec, Proto::Tcp),
    };
    // An IPv6 host address is bracketed; take it off before splitting on ':'.
    let (ip_text, rest) = match addr.strip_prefix('[') {
        Some(r) => {
            let (ip, after) = r
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' around the host address"))?;
            let after = after
                .strip_prefix(':')
                .ok_or_else(|| bad("expected ':' after the host address"))?;
            (Some(ip), after)
        }
        None => (None, addr),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, ctr) = match (ip_text, parts.as_slice()) {
        (None, [c]) => (None, "", *c),
        (None, [h, c]) => (None, *h, *c),
        (None, [i, h, c]) => (Some(*i), *h, *c),
        (Some(i), [h, c]) => (Some(i), *h, *c),
        _ => return Err(bad("expected [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]")),
    };
    let port = |text: &str, what: &str| -> Result<u16, PortError> {
        if text.contains('-') {
            return Err(bad("port ranges are not supported"));
        }
        match text.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(bad(&format!(
                "{what} '{text}' is not a port number (1-65535)"
            ))),
        }
    };
    let host_ip = match ip {
        None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(i) => i
            .parse()
            .map_err(|_| bad(&format!("'{i}' is not an IP address")))?,
    };
    Ok(PortMapping {
        host_ip,
        host_port: if host.is_empty() {
            0
        } else {
            port(host, "host port")?
        },
        container_port: port(ctr, "container port")?,
        proto,
    })
}

#[derive(Debug, Clone)]
enum Socket {
    Tcp(Arc<TcpListener>),
    Udp(Arc<UdpSocket>),
}

/// A bound host socket for one published port. Cloning shares the socket.
#[derive(Debug, Clone)]
pub struct Listener {
    mapping: PortMapping,
    socket: Socket,
}

impl Listener {
    /// The mapping with the port the kernel gave (for `-p CPORT`, a free one).
    pub fn published(&self) -> PortMapping {
        self.mapping
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        match &self.socket {
            Socket::Tcp(l) => l.as_raw_fd(),
            Socket::Udp(u) => u.as_raw_fd(),
        }
    }
}

/// Bind every mapping on the host (close-on-exec sockets, so the container's command never
/// holds them). All or nothing: an error drops what was bound before it.
pub fn bind(mappings: &[PortMapping]) -> Result<Vec<Listener>, PortError> {
    let mut out = Vec::with_capacity(mappings.len());
    for m in mappings {
        let addr = SocketAddr::new(m.host_ip, m.host_port);
        let fail = |source: std::io::Error| {
            let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
                .unwrap_or(1024);
            if source.kind() == std::io::ErrorKind::AddrInUse {
                PortError::InUse { mapping: *m }
            } else if source.kind() == std::io::ErrorKind::PermissionDenied && m.host_port < start {
                PortError::Privileged { mapping: *m, start }
            } else {
                PortError::Bind {
                    mapping: *m,
                    source,
                }
            }
        };
        let (socket, local) = match m.proto {
            Proto::Tcp => {
                let l = TcpListener::bind(addr).map_err(fail)?;
                let local = l.local_addr().map_err(fail)?;
                (Socket::Tcp(Arc::new(l)), local)
            }
            Proto::Udp => {
                let u = UdpSocket::bind(addr).map_err(fail)?;
                let local = u.local_addr().map_err(fail)?;
                (Socket::Udp(Arc::new(u)), local)
            }
        };
        out.push(Listener {
            mapping: PortMapping {
                host_port: local.port(),
                ..*m
            },
            socket,
        });
    }
    Ok(out)
}

/// Fork the forwarder from the keeper, once the keeper is in the container's network
/// namespace (and before its pid namespace, so the command stays PID 1). It dies with the
/// keeper; the keeper kills it when the command has ended.
pub(crate) fn spawn_forwarder(listeners: &[Listener]) -> Result<libc::pid_t, String> {
    // SAFETY: the child only closes descriptors, starts threads that forward sockets, and
    // ends in _exit; the keeper it is forked from is single-threaded.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(super::os_err("fork (port forwarder)"));
    }
    if pid == 0 {
        // SAFETY: plain syscalls in the child.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() == 1 {
                libc::_exit(0);
            }
        }
        let keep: Vec<RawFd> = listeners.iter().map(Listener::raw_fd).collect();
        super::close_other_fds(&keep);
        serve(listeners);
        // SAFETY: ends the forked child.
        unsafe { libc::_exit(0) };
    }
    Ok(pid)
}

/// How long a UDP client may stay silent (both ways) before its socket is dropped.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// At most this many UDP clients per port at once; datagrams of further ones are dropped.
const UDP_CLIENTS: usize = 1024;
/// A client may connect just before the command listens: retry a refused connect this
/// many times, 50 ms apart.
const CONNECT_TRIES: u32 = 40;
/// At most this many TCP connections per port at once; further ones are closed at once.
const TCP_CONNECTIONS: usize = 1024;
/// Each connection has two threads, each with one buffer: small stacks keep many cheap.
const STACK: usize = 128 * 1024;

/// A thread with a small stack; `None` when the system cannot make one (the caller drops
/// the work rather than failing the forwarder).
fn spawn<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<std::thread::JoinHandle<T>> {
    std::thread::Builder::new().stack_size(STACK).spawn(f).ok()
}

/// The forwarder's work, in the process that runs in the container's network namespace:
/// forwards every listener to 127.0.0.1 there, until the process is killed.
pub(crate) fn serve(listeners: &[Listener]) {
    let mut threads = Vec::new();
    for l in listeners {
        let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), l.mapping.container_port);
        match &l.socket {
            Socket::Tcp(t) => {
                let t = Arc::clone(t);
                threads.extend(spawn(move || serve_tcp(&t, target)));
            }
            Socket::Udp(u) => {
                let u = Arc::clone(u);
                threads.extend(spawn(move || serve_udp(&u, target)));
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

fn serve_tcp(listener: &TcpListener, target: SocketAddr) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        match listener.accept() {
            Ok((client, _)) => {
                if open.fetch_add(1, Ordering::AcqRel) >= TCP_CONNECTIONS {
                    open.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let count = Arc::clone(&open);
                let spawned = spawn(move || {
                    tcp_connection(client, target);
                    count.fetch_sub(1, Ordering::AcqRel);
                });
                if spawned.is_none() {
                    open.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Out of descriptors or memory: wait instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn connect(target: SocketAddr) -> Option<TcpStream> {
    for _ in 0..CONNECT_TRIES {
        match TcpStream::connect(target) {
            Ok(s) => return Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => return None,
        }
    }
    None
}

fn tcp_connection(client: TcpStream, target: SocketAddr) {
    // Nothing listens in the container: the client sees its connection closed, as with
    // docker's proxy.
    let Some(inner) = connect(target) else {
        return;
    };
    let (Ok(client2), Ok(inner2)) = (client.try_clone(), inner.try_clone()) else {
        return;
    };
    let Some(up) = spawn(move || pump(client2, inner2)) else {
        return;
    };
    pump(inner, client);
    let _ = up.join();
}

/// Copy `from` to `to` through a fixed buffer until EOF, then pass the EOF on (half close),
/// so request/response protocols that shut down their write side work.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Read);
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct UdpClient {
    socket: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
}

fn serve_udp(host: &Arc<UdpSocket>, target: SocketAddr) {
    let clients: Arc<Mutex<HashMap<SocketAddr, UdpClient>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match host.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Ok(mut table) = clients.lock() else {
            return;
        };
        if !table.contains_key(&from) {
            if table.len() >= UDP_CLIENTS {
                continue;
            }
            let Some(c) = udp_client(host, &clients, from, target) else {
                continue;
            };
            table.insert(from, c);
        }
        if let Some(c) = table.get(&from) {
            c.last.store(now_secs(), Ordering::Relaxed);
            let _ = c.socket.send(&buf[..n]);
        }
    }
}

/// A socket in the container's namespace for one client, and a thread that sends the
/// replies back from the host socket and drops the client when it has been idle too long.
fn udp_client(
    host: &Arc<UdpSocket>,
    clients: &Arc<Mutex<HashMap<SocketAddr, UdpClient>>>,
    from: SocketAddr,
    target: SocketAddr,
) -> Option<UdpClient> {
    let bind = ("127.0.0.1", 0).to_socket_addrs().ok()?.next()?;
    let inner = UdpSocket::bind(bind).ok()?;
    inner.connect(target).ok()?;
    inner.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let inner = Arc::new(inner);
    let last = Arc::new(AtomicU64::new(now_secs()));
    let (h, i, l, table) = (
        Arc::clone(host),
        Arc::clone(&inner),
        Arc::clone(&last),
        Arc::clone(clients),
    );
    spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            match i.recv(&mut buf) {
                Ok(n) => {
                    l.store(now_secs(), Ordering::Relaxed);
                    let _ = h.send_to(&buf[..n], from);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    if now_secs().saturating_sub(l.load(Ordering::Relaxed)) >= UDP_IDLE.as_secs() {
                        break;
                    }
                }
                // ECONNREFUSED from an earlier datagram nobody took: keep the client.
                Err(_) => {}
            }
        }
        if let Ok(mut t) = table.lock() {
            t.remove(&from);
        }
    })?;
    Some(UdpClient {
        socket: inner,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ip: &str, h: u16, c: u16, p: Proto) -> PortMapping {
        PortMapping {
            host_ip: ip.parse().unwrap(),
            host_port: h,
            container_port: c,
            proto: p,
        }
    }

    #[test]
    fn docker_forms_parse() {
        assert_eq!(
            parse_publish("80").unwrap(),
            m("0.0.0.0", 0, 80, Proto::Tcp)
        );
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            m("0.0.0.0", 8080, 80, Proto::Tcp)
        );
        assert_eq!(
            parse_publish("127.0.0.1:8080:80/udp").unwrap(),
            m("127.0.0.1", 8080, 80, Proto::Udp)
        );
        assert_eq!(
            parse_publish("127.0.0.1::53/udp").unwrap(),
            m("127.0.0.1", 0, 53, Proto::Udp)
        );
        assert_eq!(
            parse_publish("[::1]:8080:80").unwrap(),
            m("::1", 8080, 80, Proto::Tcp)
        );
        assert_eq!(
            m("0.0.0.0", 8080, 80, Proto::Tcp).to_string(),
            "0.0.0.0:8080->80/tcp"
        );
        assert_eq!(m("::1", 1, 2, Proto::Udp).to_string(), "[::1]:1->2/udp");
        assert_eq!(
            ports_column(&[
                m("0.0.0.0", 8080, 80, Proto::Tcp),
                m("127.0.0.1", 53, 53, Proto::Udp)
            ]),
            "0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp"
        );
        let json = serde_json::to_string(&m("0.0.0.0", 8080, 80, Proto::Tcp)).unwrap();
        assert_eq!(
            json,
            r#"{"host_ip":"0.0.0.0","host_port":8080,"container_port":80,"proto":"tcp"}"#
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, want) in [
            ("80/sctp", "unknown protocol"),
            ("x:80", "host port 'x'"),
            ("8080:0", "container port '0'"),
            ("1.2.3:80:80", "not an IP address"),
            ("8000-8010:80", "ranges"),
            ("a:b:c:d", "expected"),
            ("[::1:80:80", "unclosed"),
        ] {
            let e = parse_publish(spec).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(spec), "{spec}: {e}");
        }
    }

    #[test]
    fn binding_a_used_port_is_a_clear_error_and_port_zero_gets_a_free_one() {
        let bound = bind(&[m("127.0.0.1", 0, 80, Proto::Tcp)]).unwrap();
        let port = bound[0].published().host_port;
        assert_ne!(port, 0);
        let e = bind(&[m("127.0.0.1", port, 80, Proto::Tcp)]).unwrap_err();
        assert!(matches!(e, PortError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("already in use"), "{e}");
    }

    #[test]
    fn the_forwarder_carries_tcp_and_udp_to_loopback() {
        // A TCP echo and a UDP echo stand in for the container's servers.
        let tcp_srv = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp_srv = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tp, up) = (
            tcp_srv.local_addr().unwrap().port(),
            udp_srv.local_addr().unwrap().port(),
        );
        std::thread::spawn(move || {
            for c in tcp_srv.incoming() {
                let mut c = c.unwrap();
                let mut s = String::new();
                c.read_to_string(&mut s).unwrap();
                c.write_all(s.to_uppercase().as_bytes()).unwrap();
            }
        });
        std::thread::spawn(move || {
            let mut b = [0u8; 100];
            loop {
                let (n, from) = udp_srv.recv_from(&mut b).unwrap();
                udp_srv.send_to(&b[..n], from).unwrap();
            }
        });
        let ls = bind(&[
            m("127.0.0.1", 0, tp, Proto::Tcp),
            m("127.0.0.1", 0, up, Proto::Udp),
        ])
        .unwrap();
        let (ht, hu) = (ls[0].published().host_port, ls[1].published().host_port);
        std::thread::spawn(move || serve(&ls));
        let mut c = TcpStream::connect(("127.0.0.1", ht)).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, "HELLO");
        // More than any buffer on the way, both directions, through the bounded pumps.
        let big: String = (0..3 << 20)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        let mut c = TcpStream::connect(("127.0.0.1", ht)).unwrap();
        let mut w = c.try_clone().unwrap();
        let sent = big.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(sent.as_bytes()).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        writer.join().unwrap();
        assert_eq!(s.len(), big.len());
        assert!(s == big.to_uppercase());
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        u.send_to(b"ping", ("127.0.0.1", hu)).unwrap();
        let mut b = [0u8; 10];
        let n = u.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"ping");
    }
}
