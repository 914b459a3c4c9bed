#![allow(clippy::unwrap_used, clippy::expect_used)]
//! kiln against a lying or broken registry: a small HTTP/1.1 server of the tests' own on
//! loopback serves one image and misbehaves on cue (wrong bytes, short bodies, huge
//! manifests, redirects to another host, 429/5xx, silence). Every fault must end in a clear
//! error and exit code 1 with nothing stored, or, where a retry is the answer, in a correct
//! image.

mod common;

use common::Kiln;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    /// Header names lowercased.
    headers: HashMap<String, String>,
    /// How many requests with the same method and path came before this one.
    nth: usize,
}

enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// 200 announcing `announce` bytes, sending `body` (fewer), then closing.
    Truncated { body: Vec<u8>, announce: u64 },
    /// 200 with zeros for as long as the client reads (`announce`: a Content-Length, else
    /// the body ends at close); the bytes written are added to the server's `sent`.
    Endless { announce: Option<u64> },
    /// Headers announcing `announce` bytes, `body` (fewer), then silence.
    StallBody { body: Vec<u8>, announce: u64 },
    /// Silence after the request.
    Stall,
}

impl Reply {
    fn ok(content_type: &str, body: Vec<u8>) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    fn status(status: u16, headers: &[(&str, &str)]) -> Reply {
        Reply::Full {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: format!("{{\"errors\":[{{\"code\":\"TEST\",\"message\":\"status {status}\"}}]}}")
                .into_bytes(),
        }
    }
}

type Handler = dyn Fn(&Req) -> Reply + Send + Sync;

/// The fake server: its address, what it was asked, and how many body bytes `Endless`
/// replies got out.
struct Fake {
    host: String,
    log: Arc<Mutex<Vec<Req>>>,
    sent: Arc<AtomicU64>,
}

impl Fake {
    fn start(ip: &str, handler: Arc<Handler>) -> Fake {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let host = format!("{ip}:{}", listener.local_addr().unwrap().port());
        let log: Arc<Mutex<Vec<Req>>> = Arc::default();
        let sent = Arc::new(AtomicU64::new(0));
        let (l, s) = (log.clone(), sent.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (h, l, s) = (handler.clone(), l.clone(), s.clone());
                std::thread::spawn(move || serve(conn, &*h, &l, &s));
            }
        });
        Fake { host, log, sent }
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, method: &str, path_start: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(path_start))
            .count()
    }
}

fn serve(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>, sent: &AtomicU64) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: u64 = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = Vec::new();
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            if read_chunked(&mut reader, &mut body).is_err() {
                return;
            }
        } else if (&mut reader).take(len).read_to_end(&mut body).is_err() {
            return;
        }
        let req = {
            let mut log = log.lock().unwrap();
            let nth = log
                .iter()
                .filter(|r| r.method == method && r.path == path)
                .count();
            let req = Req {
                method,
                path,
                headers,
                nth,
            };
            log.push(req.clone());
            req
        };
        let head = req.method == "HEAD";
        let keep = match handler(&req) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut text = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in headers {
                    text.push_str(&format!("{k}: {v}\r\n"));
                }
                text.push_str("\r\n");
                let mut all = text.into_bytes();
                if !head {
                    all.extend_from_slice(&body);
                }
                out.write_all(&all).is_ok()
            }
            Reply::Truncated { body, announce } => {
                let _ = out.write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {announce}\r\n\r\n").as_bytes(),
                );
                let _ = out.write_all(&body);
                false
            }
            Reply::Endless { announce } => {
                let length = announce
                    .map(|n| format!("Content-Length: {n}\r\n"))
                    .unwrap_or_else(|| "Connection: close\r\n".to_string());
                let _ = out.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n{length}\r\n"
                    )
                    .as_bytes(),
                );
                let chunk = vec![b' '; 64 << 10];
                while out.write_all(&chunk).is_ok() {
                    sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                false
            }
            Reply::StallBody { body, announce } => {
                let _ = out.write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {announce}\r\n\r\n").as_bytes(),
                );
                let _ = out.write_all(&body);
                std::thread::sleep(Duration::from_secs(60));
                false
            }
            Reply::Stall => {
                std::thread::sleep(Duration::from_secs(60));
                false
            }
        };
        if !keep {
            return;
        }
    }
}

/// A chunked request body (`SIZE\r\nDATA\r\n` ... `0\r\n\r\n`).
fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A one-layer image (uncompressed layer, so its digest is its diffID).
#[derive(Clone)]
struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_digest: String,
    layer: Vec<u8>,
    layer_digest: String,
}

fn image() -> Image {
    let mut b = tar::Builder::new(Vec::new());
    let data = b"served by a fake registry\n".repeat(20_000);
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, "hello.txt", &data[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let diff_id = sha256(&layer);
    image_of(layer, "application/vnd.oci.image.layer.v1.tar", diff_id)
}

/// An image of one layer blob of type `media_type` whose config claims `diff_id`.
fn image_of(layer: Vec<u8>, media_type: &str, diff_id: String) -> Image {
    let layer_digest = sha256(&layer);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "fake"}],
    }))
    .unwrap();
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": media_type,
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .unwrap();
    Image {
        manifest,
        config,
        config_digest,
        layer,
        layer_digest,
    }
}

const REPO: &str = "/v2/faulty/img";

/// The well-behaved answers: `/v2/`, the manifest by tag, the two blobs.
fn honest(img: &Image, req: &Req) -> Reply {
    if req.path == "/v2/" {
        return Reply::ok("application/json", b"{}".to_vec());
    }
    if req.path == format!("{REPO}/manifests/v1") {
        let digest = sha256(&img.manifest);
        return Reply::Full {
            status: 200,
            headers: vec![
                (
                    "Content-Type".into(),
                    "application/vnd.oci.image.manifest.v1+json".into(),
                ),
                ("Docker-Content-Digest".into(), digest),
            ],
            body: img.manifest.clone(),
        };
    }
    if req.path == format!("{REPO}/blobs/{}", img.config_digest) {
        return Reply::ok("application/octet-stream", img.config.clone());
    }
    if req.path == format!("{REPO}/blobs/{}", img.layer_digest) {
        return Reply::ok("application/octet-stream", img.layer.clone());
    }
    Reply::status(404, &[])
}

/// A kiln with an empty docker config and a short timeout, and its own store.
struct Client {
    kiln: Kiln,
    config: tempfile::TempDir,
}

impl Client {
    fn new() -> Client {
        Client {
            kiln: Kiln::new(),
            config: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut c = self.kiln.cmd();
        c.env("DOCKER_CONFIG", self.config.path())
            .env("KILN_REGISTRY_TIMEOUT", "1")
            .env_remove("KILN_INSECURE_REGISTRIES");
        c
    }

    fn pull(&self, host: &str) -> std::process::Output {
        self.cmd()
            .args(["pull", &format!("{host}/faulty/img:v1")])
            .output()
            .unwrap()
    }

    /// `kiln pull` must fail with exit 1; returns stderr.
    fn pull_fails(&self, host: &str) -> String {
        let out = self.pull(host);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "pull should fail:\n{err}");
        assert!(err.starts_with("error:"), "{err}");
        err
    }

    fn pull_ok(&self, host: &str) -> String {
        let out = self.pull(host);
        assert!(
            out.status.success(),
            "pull failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Files in the store's blob directory and its temp directory: the fault left nothing.
    fn assert_nothing_stored(&self) {
        for dir in ["blobs/sha256", "tmp"] {
            let names: Vec<_> = std::fs::read_dir(self.kiln.root().join(dir))
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(names.is_empty(), "{dir} holds {names:?}");
        }
        let out = self.cmd().args(["images", "-q"]).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    }

    /// The pulled image is the served one, with the layer's bytes.
    fn assert_pulled(&self, host: &str, img: &Image) {
        let v: serde_json::Value = serde_json::from_str(
            &String::from_utf8(
                self.cmd()
                    .args(["inspect", &format!("{host}/faulty/img:v1")])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(v[0]["Id"], img.config_digest.as_str(), "{v}");
        assert_eq!(
            v[0]["RootFS"]["Layers"][0],
            img.layer_digest.as_str(),
            "{v}"
        );
    }
}

fn fake(
    img: &Image,
    fault: impl Fn(&Image, &Req) -> Option<Reply> + Send + Sync + 'static,
) -> Fake {
    let img = img.clone();
    Fake::start(
        "127.0.0.1",
        Arc::new(move |req: &Req| fault(&img, req).unwrap_or_else(|| honest(&img, req))),
    )
}

fn is_layer(img: &Image, req: &Req) -> bool {
    req.method == "GET" && req.path == format!("{REPO}/blobs/{}", img.layer_digest)
}

#[test]
fn an_honest_fake_is_pulled_with_docker_s_layer_lines() {
    let img = image();
    let f = fake(&img, |_, _| None);
    let c = Client::new();
    let out = c.pull_ok(&f.host);
    let id = &img.layer_digest["sha256:".len()..][..12];
    let lines: Vec<&str> = out.lines().collect();
    let at = |s: &str| {
        lines
            .iter()
            .position(|l| *l == format!("{id}: {s}"))
            .unwrap_or_else(|| panic!("no {s:?} line in:\n{out}"))
    };
    assert!(at("Pulling fs layer") < at("Download complete"), "{out}");
    assert!(at("Download complete") < at("Pull complete"), "{out}");
    c.assert_pulled(&f.host, &img);
    // Pulled again: the layer is there already, and said so.
    let again = c.pull_ok(&f.host);
    assert!(again.contains(&format!("{id}: Already exists")), "{again}");
    assert!(again.contains("Image is up to date"), "{again}");
}

#[test]
fn a_layer_whose_bytes_do_not_match_its_digest_is_refused() {
    let img = image();
    let f = fake(&img, |img, req| {
        is_layer(img, req).then(|| {
            let mut bad = img.layer.clone();
            bad[600] ^= 1;
            Reply::ok("application/octet-stream", bad)
        })
    });
    let c = Client::new();
    let err = c.pull_fails(&f.host);
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(err.contains(&img.layer_digest), "{err}");
    c.assert_nothing_stored();
}

#[test]
fn a_config_whose_bytes_do_not_match_its_digest_is_refused() {
    let img = image();
    let f = fake(&img, |img, req| {
        (req.path == format!("{REPO}/blobs/{}", img.config_digest)).then(|| {
            let bad = String::from_utf8(img.config.clone())
                .unwrap()
                .replace("fake", "evil");
            Reply::ok("application/octet-stream", bad.into_bytes())
        })
    });
    let c = Client::new();
    let err = c.pull_fails(&f.host);
    assert!(err.contains("digest mismatch for config"), "{err}");
    c.assert_nothing_stored();
}

#[test]
fn a_truncated_layer_is_retried_then_refused() {
    let img = image();
    let f = fake(&img, |img, req| {
        is_layer(img, req).then(|| Reply::Truncated {
            body: img.layer[..img.layer.len() / 2].to_vec(),
            announce: img.layer.len() as u64,
        })
    });
    let c = Client::new();
    let err = c.pull_fails(&f.host);
    assert!(err.contains("downloading"), "{err}");
    assert!(err.contains(&img.layer_digest), "{err}");
    // One try and the bounded retries, no more.
    let gets = f.count("GET", &format!("{REPO}/blobs/{}", img.layer_digest));
    assert_eq!(gets, 5, "{:?}", f.requests());
    c.assert_nothing_stored();
}

#[test]
fn a_layer_cut_once_is_downloaded_again_and_stored_whole() {
    let img = image();
    let f = fake(&img, |img, req| {
        (is_layer(img, req) && req.nth == 0).then(|| Reply::Truncated {
            body: img.layer[..1000].to_vec(),
            announce: img.layer.len() as u64,
        })
    });
    let c = Client::new();
    c.pull_ok(&f.host);
    c.assert_pulled(&f.host, &img);
}

#[test]
fn a_manifest_over_the_limit_is_refused_without_reading_it() {
    let img = image();
    // Announced: refused on the header.
    let f = fake(&img, |_, req| {
        req.path
            .ends_with("/manifests/v1")
            .then_some(Reply::Endless {
                announce: Some(1 << 30),
            })
    });
    let c = Client::new();
    let err = c.pull_fails(&f.host);
    assert!(err.contains("more than the 4194304 bytes"), "{err}");
    assert!(f.sent.load(Ordering::Relaxed) < 64 << 20);
    c.assert_nothing_stored();

    // Not announced (the body ends at close): read up to the limit, then refused.
    let f = fake(&img, |_, req| {
        req.path
            .ends_with("/manifests/v1")
            .then_some(Reply::Endless { announce: None })
    });
    let err = c.pull_fails(&f.host);
    assert!(err.contains("answer larger than 4194304 bytes"), "{err}");
    assert!(f.sent.load(Ordering::Relaxed) < 64 << 20);
    c.assert_nothing_stored();
}

#[test]
fn credentials_do_not_follow_a_redirect_to_another_host() {
    let img = image();
    // The blob store: another address, which serves the layer to anyone.
    let storage = {
        let img = img.clone();
        Fake::start(
            "127.0.0.2",
            Arc::new(move |_: &Req| Reply::ok("application/octet-stream", img.layer.clone())),
        )
    };
    let target = format!("http://{}/bucket/layer?signature=x", storage.host);
    // The registry wants basic auth for everything, and redirects the layer.
    let f = fake(&img, move |img, req| {
        if req.headers.get("authorization").map(String::as_str) != Some("Basic dXNlcjpzM2NyZXQ=") {
            return Some(Reply::status(
                401,
                &[("WWW-Authenticate", "Basic realm=\"fake\"")],
            ));
        }
        is_layer(img, req).then(|| Reply::status(307, &[("Location", &target)]))
    });
    let c = Client::new();
    std::fs::write(
        c.config.path().join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"dXNlcjpzM2NyZXQ=\"}}}}}}",
            f.host
        ),
    )
    .unwrap();
    c.pull_ok(&f.host);
    c.assert_pulled(&f.host, &img);
    let at_storage = storage.requests();
    assert_eq!(at_storage.len(), 1, "{at_storage:?}");
    assert!(
        !at_storage[0].headers.contains_key("authorization"),
        "credentials leaked to {}: {:?}",
        storage.host,
        at_storage[0]
    );
    // The registry itself did get them.
    assert!(f
        .requests()
        .iter()
        .any(|r| r.headers.contains_key("authorization")));
}

#[test]
fn answers_429_and_503_are_retried_and_retry_after_is_capped() {
    let img = image();
    let f = fake(&img, |img, req| {
        if req.path.ends_with("/manifests/v1") && req.nth < 2 {
            return Some(Reply::status(503, &[]));
        }
        // An hour: kiln waits at most its timeout (1 s here), then asks again.
        if is_layer(img, req) && req.nth == 0 {
            return Some(Reply::status(429, &[("Retry-After", "3600")]));
        }
        None
    });
    let c = Client::new();
    c.pull_ok(&f.host);
    c.assert_pulled(&f.host, &img);
    assert_eq!(f.count("GET", &format!("{REPO}/manifests/v1")), 3);
    assert_eq!(
        f.count("GET", &format!("{REPO}/blobs/{}", img.layer_digest)),
        2
    );
}

#[test]
fn a_registry_failing_for_good_is_given_up_after_bounded_retries() {
    let img = image();
    let f = fake(&img, |img, req| {
        is_layer(img, req).then(|| Reply::status(500, &[]))
    });
    let c = Client::new();
    let err = c.pull_fails(&f.host);
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(err.contains(&f.host), "{err}");
    assert_eq!(
        f.count("GET", &format!("{REPO}/blobs/{}", img.layer_digest)),
        5
    );
    c.assert_nothing_stored();
}

#[test]
fn a_registry_that_stalls_times_out() {
    let img = image();
    // Silent mid-layer.
    let f = fake(&img, |img, req| {
        is_layer(img, req).then(|| Reply::StallBody {
            body: img.layer[..4096].to_vec(),
            announce: img.layer.len() as u64,
        })
    });
    let c = Client::new();
    let err = c.pull_fails(&f.host);
    assert!(err.contains("timed out"), "{err}");
    c.assert_nothing_stored();

    // Silent before answering at all.
    let f = fake(&img, |_, req| {
        req.path.ends_with("/manifests/v1").then_some(Reply::Stall)
    });
    let err = c.pull_fails(&f.host);
    assert!(err.contains(&f.host), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("KILN_REGISTRY_TIMEOUT"), "{err}");
    assert_eq!(f.count("GET", &format!("{REPO}/manifests/v1")), 5);
    c.assert_nothing_stored();
}

#[test]
fn an_unreachable_registry_is_named() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Client::new();
    let host = format!("127.0.0.1:{port}");
    let err = c.pull_fails(&host);
    assert!(
        err.contains(&format!("registry http://{host} is unreachable")),
        "{err}"
    );
    c.assert_nothing_stored();
}

#[test]
fn a_bad_timeout_setting_is_a_clear_error() {
    let c = Client::new();
    let out = c
        .cmd()
        .env("KILN_REGISTRY_TIMEOUT", "soon")
        .args(["pull", "127.0.0.1:9/x:y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KILN_REGISTRY_TIMEOUT \"soon\""), "{err}");
}

#[test]
fn an_upload_location_on_another_host_gets_no_credentials() {
    // The other host takes the upload (PATCH, then the closing PUT) from anyone.
    let storage = Fake::start(
        "127.0.0.2",
        Arc::new(|req: &Req| match req.method.as_str() {
            "PATCH" => Reply::status(202, &[("Location", "/upload/1")]),
            "PUT" => Reply::status(201, &[]),
            _ => Reply::status(405, &[]),
        }),
    );
    let location = format!("http://{}/upload/1", storage.host);
    let registry = Fake::start(
        "127.0.0.1",
        Arc::new(move |req: &Req| {
            if req.headers.get("authorization").map(String::as_str)
                != Some("Basic dXNlcjpzM2NyZXQ=")
            {
                return Reply::status(401, &[("WWW-Authenticate", "Basic realm=\"fake\"")]);
            }
            match req.method.as_str() {
                "POST" => Reply::status(202, &[("Location", &location)]),
                "PUT" if req.path.contains("/manifests/") => Reply::status(201, &[]),
                _ => Reply::status(404, &[]),
            }
        }),
    );
    let c = Client::new();
    std::fs::write(
        c.config.path().join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"dXNlcjpzM2NyZXQ=\"}}}}}}",
            registry.host
        ),
    )
    .unwrap();
    c.kiln.import_busybox("bb");
    let out = c
        .cmd()
        .args(["push", "bb", &format!("{}/faulty/img:v1", registry.host)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at_storage = storage.requests();
    assert!(
        at_storage
            .iter()
            .any(|r| r.method == "PATCH" || r.method == "PUT"),
        "{at_storage:?}"
    );
    for r in &at_storage {
        assert!(
            !r.headers.contains_key("authorization"),
            "credentials leaked to {}: {r:?}",
            storage.host
        );
    }
    assert_eq!(registry.count("PUT", "/v2/faulty/img/manifests/v1"), 1);
}

#[test]
fn a_manifest_not_matching_the_pulled_digest_is_refused() {
    let img = image();
    let wanted = sha256(&img.manifest);
    // Asked by digest, the registry answers other bytes (a valid manifest, but not that one).
    let f = fake(&img, |img, req| {
        req.path.contains("/manifests/sha256:").then(|| {
            let mut other = img.manifest.clone();
            other.extend_from_slice(b"\n");
            Reply::ok("application/vnd.oci.image.manifest.v1+json", other)
        })
    });
    let c = Client::new();
    let out = c
        .cmd()
        .args(["pull", &format!("{}/faulty/img@{wanted}", f.host)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("digest mismatch for manifest"), "{err}");
    assert!(err.contains(&wanted), "{err}");
    c.assert_nothing_stored();
}

#[test]
fn a_compressed_layer_whose_content_is_not_the_config_s_diff_id_is_refused() {
    // The gzip blob matches its own digest, but unpacks to other bytes than the config says.
    let plain = image();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain.layer).unwrap();
    let wrong_diff_id = sha256(b"some other layer");
    let img = image_of(
        gz.finish().unwrap(),
        "application/vnd.oci.image.layer.v1.tar+gzip",
        wrong_diff_id.clone(),
    );
    let f = fake(&img, |_, _| None);
    let c = Client::new();
    let err = c.pull_fails(&f.host);
    assert!(err.contains("diff_id"), "{err}");
    assert!(err.contains(&wrong_diff_id), "{err}");
    c.assert_nothing_stored();
}

#[test]
fn a_layer_with_names_leaving_the_root_is_refused() {
    // A tar whose entry climbs out of the root: the digests are honest, the content hostile.
    let mut layer = Vec::new();
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"../../escape");
    h.set_cksum();
    layer.extend_from_slice(h.as_bytes());
    layer.extend_from_slice(b"pwn\n");
    layer.resize(layer.len() + 508 + 1024, 0);
    let diff_id = sha256(&layer);
    let img = image_of(layer, "application/vnd.oci.image.layer.v1.tar", diff_id);
    let f = fake(&img, |_, _| None);
    let c = Client::new();
    let err = c.pull_fails(&f.host);
    assert!(err.contains("is refused"), "{err}");
    assert!(err.contains("escape"), "{err}");
    c.assert_nothing_stored();
}
