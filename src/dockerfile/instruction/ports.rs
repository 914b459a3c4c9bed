//! EXPOSE port specs (`80`, `53/udp`, `8000-8002/tcp`, and the `ip:hostPort:port`
//! forms docker's `-p` accepts), turned into the `port/proto` keys of an image config.

use super::text::go_quote;
use crate::dockerfile::Error;
use std::fmt;
use std::net::IpAddr;

/// A transport protocol of an exposed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One exposed port; displays as the image-config key `80/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExposedPort {
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for ExposedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.as_str())
    }
}

/// `ip`, `hostPort`, `containerPort` of `[ip:[hostPort]:]containerPort`; an IPv6
/// address may contain colons, so everything before the last two parts is the ip.
fn split_parts(spec: &str) -> (String, &str, &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [] => (String::new(), "", ""),
        [c] => (String::new(), "", c),
        [h, c] => (String::new(), h, c),
        [ip @ .., h, c] => (ip.join(":"), h, c),
    }
}

/// Splits `port/proto`; an empty port yields nothing, a missing proto means tcp.
fn split_proto_port(raw: &str) -> (&str, &str) {
    let mut parts = raw.split('/');
    let port = parts.next().unwrap_or_default();
    if port.is_empty() {
        return ("", "");
    }
    match parts.next() {
        None | Some("") => ("tcp", port),
        Some(proto) => (proto, port),
    }
}

/// Go's `strconv.ParseUint(s, 10, 16)`.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    match s.split_once('-') {
        None => parse_port(s).map(|p| (p, p)),
        Some((a, b)) => {
            // Anything after a second `-` is ignored, as docker's parser does.
            let b = b.split('-').next().unwrap_or_default();
            let (start, end) = (parse_port(a)?, parse_port(b)?);
            (end >= start).then_some((start, end))
        }
    }
}

/// Parses one EXPOSE spec into its ports, ranges expanded in order.
pub fn parse_port_spec(spec: &str) -> Result<Vec<ExposedPort>, Error> {
    let fail = |why: String| Error::new(0, format!("invalid port: {}: {why}", go_quote(spec)));
    let (ip, host_port, container) = split_parts(spec);
    let (proto, container_port) = split_proto_port(container);

    let mut ip = ip.as_str();
    if let Some(inner) = ip.strip_prefix('[') {
        ip = inner
            .strip_suffix(']')
            .ok_or_else(|| fail(format!("invalid IP address {ip}")))?;
    }
    if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
        return Err(fail(format!("invalid IP address: {ip}")));
    }
    if container_port.is_empty() {
        return Err(fail("no port specified".to_string()));
    }
    let (start, end) = parse_range(container_port)
        .ok_or_else(|| fail(format!("invalid containerPort: {container_port}")))?;
    if !host_port.is_empty() {
        let (host_start, host_end) =
            parse_range(host_port).ok_or_else(|| fail(format!("invalid hostPort: {host_port}")))?;
        // A host range is allowed for a single container port (a pool to pick from).
        if end - start != host_end - host_start && start != end {
            return Err(fail(format!(
                "invalid ranges specified for container and host Ports: {container_port} and {host_port}"
            )));
        }
    }
    let protocol = match proto.to_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        _ => return Err(fail(format!("invalid proto: {proto}"))),
    };
    Ok((start..=end)
        .map(|port| ExposedPort { port, protocol })
        .collect())
}

/// Parses every spec of an EXPOSE (after expansion), concatenating their ports.
pub fn parse_port_specs<S: AsRef<str>>(specs: &[S]) -> Result<Vec<ExposedPort>, Error> {
    let mut ports = Vec::new();
    for spec in specs {
        ports.extend(parse_port_spec(spec.as_ref())?);
    }
    Ok(ports)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn keys(spec: &str) -> Vec<String> {
        parse_port_spec(spec)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn simple_and_ranges() {
        assert_eq!(keys("80"), ["80/tcp"]);
        assert_eq!(keys("53/UDP"), ["53/udp"]);
        assert_eq!(keys("8000-8002"), ["8000/tcp", "8001/tcp", "8002/tcp"]);
        assert_eq!(keys("8080:80"), ["80/tcp"]);
        assert_eq!(keys("8000-8010:80"), ["80/tcp"]);
        assert_eq!(keys("[::1]:80:80"), ["80/tcp"]);
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "x",
            "70000",
            "80/icmp",
            "2-1",
            "1-2:5-7",
            "localhost:1:1",
            "[::1:80:80",
        ] {
            assert!(parse_port_spec(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_port_spec("").unwrap_err().message,
            "invalid port: \"\": no port specified"
        );
    }
}
