//! The HTTP side of the distribution API: one [`Client`] per registry repository, which picks
//! http or https, answers authentication challenges (basic, or the bearer-token flow scoped
//! to the repository) and retries connection failures, 429 and 5xx with bounded backoff.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use super::auth::{self, Challenge, Credentials};
use super::error::{io_err, RegistryError, Result};
use super::RegistryOptions;

/// The largest config or token answer kiln reads.
pub(crate) const MAX_JSON: u64 = 8 << 20;

/// The largest manifest or index kiln reads: the distribution server refuses to store bigger
/// ones, so a bigger answer is a broken or hostile registry, not an image.
pub(crate) const MAX_MANIFEST: u64 = 4 << 20;

/// The longest `Retry-After` obeyed (the configured timeout caps it further): a server asking
/// for an hour is treated as failing now rather than hanging a CI job.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What a request sends. Bodies are re-readable so a retried request sends them again.
pub(crate) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of the file at `path` starting at `offset`.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
    /// Bytes made while they are sent (chunked transfer encoding). The one body that cannot
    /// be sent twice: a request that would resend it fails instead.
    Stream(&'a Mutex<Option<Box<dyn Read + Send>>>),
}

/// A client for one repository of one registry.
pub(crate) struct Client {
    agent: ureq::Agent,
    /// The registry as references name it (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// `scheme://host[:port]` of the API.
    pub base: String,
    pub repository: String,
    /// `pull` or `pull,push`: what a bearer token is asked for.
    actions: &'static str,
    creds: Option<Credentials>,
    /// Where the credentials were looked up (a config file or a credential helper).
    creds_source: String,
    /// The `Authorization` value that last worked (or was last issued).
    authorization: Mutex<Option<String>>,
    retries: u32,
    retry_after_cap: Duration,
    timeout: Duration,
}

/// Whether plain http is used: loopback hosts (as docker allows) and the registries the user
/// declared insecure.
pub fn is_insecure(registry: &str, insecure: &[String]) -> bool {
    let host = host_without_port(registry);
    if host == "localhost" || host == "::1" || host.starts_with("127.") {
        return true;
    }
    insecure
        .iter()
        .map(|s| auth::normalize_server(s))
        .any(|s| s == registry || s == host)
}

fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    registry.split(':').next().unwrap_or_default()
}

/// The host serving the API of a registry name (Docker Hub's differs from its name).
fn api_host(registry: &str) -> &str {
    if registry == crate::image::reference::DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        registry
    }
}

impl Client {
    /// A client for `repository` on `registry`, with the credentials of the docker config.
    pub fn new(
        registry: &str,
        repository: &str,
        push: bool,
        opts: &RegistryOptions,
    ) -> Result<Client> {
        let (creds, source) = auth::lookup_with_source(&opts.docker_config, registry)?;
        let mut c = Self::with_credentials(registry, repository, push, creds, opts);
        c.creds_source = source;
        Ok(c)
    }

    pub fn with_credentials(
        registry: &str,
        repository: &str,
        push: bool,
        creds: Option<Credentials>,
        opts: &RegistryOptions,
    ) -> Client {
        let scheme = if is_insecure(registry, &opts.insecure) {
            "http"
        } else {
            "https"
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(opts.timeout.min(Duration::from_secs(15)))
            .timeout_read(opts.timeout)
            .timeout_write(opts.timeout)
            .max_idle_connections_per_host(32)
            // Registries redirect blob GETs to storage (S3, a CDN) on other hosts: those get
            // no credentials, which belong to the registry alone.
            .redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent,
            registry: registry.to_string(),
            base: format!("{scheme}://{}", api_host(registry)),
            repository: repository.to_string(),
            actions: if push { "pull,push" } else { "pull" },
            creds,
            creds_source: opts.docker_config.display().to_string(),
            authorization: Mutex::new(None),
            retries: opts.retries,
            retry_after_cap: opts.timeout.min(MAX_RETRY_AFTER),
            timeout: opts.timeout,
        }
    }

    /// Whether `url` is on the registry's own origin (scheme, host and port): only there are
    /// its credentials and tokens sent.
    fn same_origin(&self, url: &str) -> bool {
        url.strip_prefix(self.base.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
    }

    /// `base/v2/<repository>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// An upload `Location`, which may be relative to the URL `answered` that gave it (the
    /// registry, or the host an earlier `Location` sent the upload to).
    pub fn resolve_location(&self, answered: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            return location.to_string();
        }
        let origin = answered
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| {
                let end = answered
                    .get(start..)?
                    .find(['/', '?'])
                    .map_or(answered.len(), |e| start + e);
                answered.get(..end)
            })
            .unwrap_or(self.base.as_str());
        if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            format!("{origin}/{location}")
        }
    }

    fn tried(&self) -> String {
        match &self.creds {
            Some(c) => format!(
                "tried the credentials of user {:?} from {}",
                c.username, self.creds_source
            ),
            None => format!(
                "tried anonymously (no credentials for {} in {})",
                self.registry, self.creds_source
            ),
        }
    }

    fn unauthorized(&self, operation: &str, status: u16) -> RegistryError {
        RegistryError::Unauthorized {
            host: self.registry.clone(),
            login: self.registry.clone(),
            operation: operation.to_string(),
            status,
            tried: self.tried(),
        }
    }

    /// Sends a request, authenticating when challenged. Returns every answer except 401/403
    /// (an [`RegistryError::Unauthorized`]) and connection failures (retried, then
    /// [`RegistryError::Unreachable`]); 429 and 5xx are retried and returned if they persist.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
        operation: &str,
    ) -> Result<ureq::Response> {
        let mut challenged = false;
        let own = self.same_origin(url);
        loop {
            let authz = if own {
                self.authorization
                    .lock()
                    .map(|a| a.clone())
                    .unwrap_or_default()
            } else {
                None
            };
            let mut all: Vec<(&str, &str)> = headers.to_vec();
            if let Some(a) = authz.as_deref() {
                all.push(("Authorization", a));
            }
            let resp = self.send_with_retries(method, url, &all, body)?;
            let status = resp.status();
            if status != 401 && status != 403 {
                return Ok(resp);
            }
            // Another host (an upload Location elsewhere) asking for credentials gets none.
            if challenged || status == 403 || !own {
                return Err(self.unauthorized(operation, status));
            }
            challenged = true;
            let challenge = resp
                .header("WWW-Authenticate")
                .map(auth::parse_challenge)
                .unwrap_or(Challenge::Other(String::new()));
            let value = self.answer(&challenge, operation, true)?;
            if let Ok(mut a) = self.authorization.lock() {
                *a = Some(value);
            }
        }
    }

    /// The `Authorization` value that answers `challenge`. `scoped`: ask the token server
    /// for this repository (login asks for no scope).
    fn answer(&self, challenge: &Challenge, operation: &str, scoped: bool) -> Result<String> {
        match challenge {
            Challenge::Basic => match &self.creds {
                Some(c) => Ok(c.basic_header()),
                None => Err(self.unauthorized(operation, 401)),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let mut url = realm.clone();
                let mut sep = if url.contains('?') { '&' } else { '?' };
                let mut add = |k: &str, v: &str| {
                    url.push(sep);
                    url.push_str(k);
                    url.push('=');
                    url.push_str(&query_escape(v));
                    sep = '&';
                };
                if let Some(s) = service {
                    add("service", s);
                }
                if scoped {
                    let own = (!self.repository.is_empty())
                        .then(|| format!("repository:{}:{}", self.repository, self.actions));
                    for s in token_scopes(own, scope.as_deref()) {
                        add("scope", &s);
                    }
                }
                if let Some(c) = &self.creds {
                    add("account", &c.username);
                }
                let basic = self.creds.as_ref().map(Credentials::basic_header);
                let mut headers = Vec::new();
                if let Some(b) = basic.as_deref() {
                    headers.push(("Authorization", b));
                }
                let resp = self.send_with_retries("GET", &url, &headers, &Body::Empty)?;
                match resp.status() {
                    200 => {}
                    401 | 403 => return Err(self.unauthorized(operation, resp.status())),
                    s => {
                        return Err(RegistryError::Http {
                            host: self.registry.clone(),
                            operation: format!("getting a token from {realm}"),
                            status: s,
                            message: error_message(resp),
                        })
                    }
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    #[serde(default)]
                    token: String,
                    #[serde(default)]
                    access_token: String,
                }
                let bytes = read_limited(resp, MAX_JSON).map_err(|e| self.invalid(e))?;
                let t: Token = serde_json::from_slice(&bytes)
                    .map_err(|e| self.invalid(format!("token answer: {e}")))?;
                let token = if t.token.is_empty() {
                    t.access_token
                } else {
                    t.token
                };
                if token.is_empty() {
                    return Err(self.invalid("the token server gave an empty token".into()));
                }
                Ok(format!("Bearer {token}"))
            }
            Challenge::Other(h) => Err(RegistryError::Http {
                host: self.registry.clone(),
                operation: operation.to_string(),
                status: 401,
                message: format!("unsupported authentication challenge {h:?}"),
            }),
        }
    }

    /// Checks the client's credentials against `/v2/` (for `kiln login`).
    pub fn check_login(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let resp = self.send_with_retries("GET", &url, &[], &Body::Empty)?;
        let status = resp.status();
        if status == 200 {
            return Ok(());
        }
        if status != 401 {
            return Err(self.http_error("checking /v2/", resp));
        }
        let challenge = resp
            .header("WWW-Authenticate")
            .map(auth::parse_challenge)
            .unwrap_or(Challenge::Other(String::new()));
        let failed = |message: &str| RegistryError::LoginFailed {
            host: self.registry.clone(),
            message: message.to_string(),
        };
        let value = match self.answer(&challenge, "login", false) {
            Ok(v) => v,
            Err(RegistryError::Unauthorized { .. }) => {
                return Err(failed("unauthorized: incorrect username or password"))
            }
            Err(e) => return Err(e),
        };
        let resp =
            self.send_with_retries("GET", &url, &[("Authorization", &value)], &Body::Empty)?;
        match resp.status() {
            200 => Ok(()),
            401 | 403 => Err(failed("unauthorized: incorrect username or password")),
            _ => Err(self.http_error("checking /v2/", resp)),
        }
    }

    fn invalid(&self, message: String) -> RegistryError {
        RegistryError::Invalid {
            host: self.registry.clone(),
            message,
        }
    }

    /// An error for an answer the caller did not expect.
    pub fn http_error(&self, operation: &str, resp: ureq::Response) -> RegistryError {
        RegistryError::Http {
            host: self.registry.clone(),
            operation: operation.to_string(),
            status: resp.status(),
            message: error_message(resp),
        }
    }

    fn send_with_retries(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
    ) -> Result<ureq::Response> {
        let mut attempt = 0u32;
        loop {
            let (retry_after, outcome) = match self.send_once(method, url, headers, body)? {
                Ok(resp) if resp.status() == 429 || resp.status() >= 500 => {
                    let after = resp
                        .header("Retry-After")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(self.retry_after_cap));
                    (after, Ok(resp))
                }
                Ok(resp) => return Ok(resp),
                Err(message) => (None, Err(message)),
            };
            if attempt >= self.retries {
                return match outcome {
                    Ok(resp) => Ok(resp),
                    Err(mut message) => {
                        if message.contains("timed out") {
                            message.push_str(&format!(
                                " (after {:.1} s of silence; KILN_REGISTRY_TIMEOUT sets how long)",
                                self.timeout.as_secs_f64()
                            ));
                        }
                        Err(RegistryError::Unreachable {
                            host: self.base.clone(),
                            attempts: attempt + 1,
                            message,
                        })
                    }
                };
            }
            let backoff = Duration::from_millis(100u64 << attempt.min(5));
            std::thread::sleep(retry_after.unwrap_or(backoff).max(backoff));
            attempt += 1;
        }
    }

    /// One try: `Ok(Ok(response))` for any HTTP answer, `Ok(Err(message))` for a transport
    /// failure worth retrying, `Err` for a local failure (a body file that cannot be read).
    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
    ) -> Result<std::result::Result<ureq::Response, String>> {
        let mut req = self.agent.request(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Body::Empty => req.call(),
            Body::Bytes(b) => req.send_bytes(b),
            Body::File { path, offset, len } => {
                let mut f = std::fs::File::open(path).map_err(io_err("opening", *path))?;
                f.seek(SeekFrom::Start(*offset))
                    .map_err(io_err("reading", *path))?;
                req.set("Content-Length", &len.to_string())
                    .send(std::io::BufReader::with_capacity(1 << 20, f.take(*len)))
            }
            Body::Stream(cell) => match cell.lock().ok().and_then(|mut r| r.take()) {
                Some(reader) => req.send(reader),
                None => {
                    return Err(RegistryError::Invalid {
                        host: self.registry.clone(),
                        message: format!(
                            "{method} of a streamed upload was answered in a way that needs it \
                             sent again (retry or authentication), which a stream cannot be"
                        ),
                    })
                }
            },
        };
        Ok(match result {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(_, resp)) => Ok(resp),
            Err(ureq::Error::Transport(t)) => Err(t.to_string()),
        })
    }
}

/// The registry's own words from an error answer (`{"errors":[{"code":..,"message":..}]}`).
pub(crate) fn error_message(resp: ureq::Response) -> String {
    let status = resp.status_text().to_string();
    let Ok(bytes) = read_limited(resp, 64 * 1024) else {
        return status;
    };
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(&bytes) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|i| format!("{}: {}", i.code, i.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if text.is_empty() {
                status
            } else {
                text.chars().take(300).collect()
            }
        }
    }
}

/// Reads at most `limit` bytes of a body; more is an error rather than unbounded memory.
pub(crate) fn read_limited(
    resp: ureq::Response,
    limit: u64,
) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the answer: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("answer larger than {limit} bytes"));
    }
    Ok(bytes)
}

/// The scopes a token is asked for: the client's own, and whatever else the challenge names
/// (a cross-repository mount needs pull access to the source repository too; asking only for
/// the client's repository there gets a token that is refused again).
fn token_scopes(own: Option<String>, challenge: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = own.into_iter().collect();
    for s in challenge.unwrap_or_default().split_whitespace() {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    out
}

/// Percent-encodes a query value.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn plain_http_only_for_loopback_and_declared_registries() {
        let none: Vec<String> = Vec::new();
        assert!(is_insecure("localhost:5000", &none));
        assert!(is_insecure("127.0.0.1:5000", &none));
        assert!(is_insecure("127.3.2.1", &none));
        assert!(is_insecure("[::1]:5000", &none));
        assert!(!is_insecure("docker.io", &none));
        assert!(!is_insecure("128.0.0.1:5000", &none));
        let list = vec!["r.lan:5000".to_string(), "http://other.lan".to_string()];
        assert!(is_insecure("r.lan:5000", &list));
        assert!(!is_insecure("r.lan:6000", &list));
        assert!(is_insecure("other.lan:443", &list));
    }

    #[test]
    fn urls() {
        let opts = RegistryOptions {
            insecure: Vec::new(),
            docker_config: PathBuf::from("/nonexistent/config.json"),
            retries: 0,
            threads: 1,
            timeout: crate::registry::DEFAULT_TIMEOUT,
        };
        let c = Client::with_credentials("127.0.0.1:5000", "a/b", false, None, &opts);
        assert_eq!(c.url("tags/list"), "http://127.0.0.1:5000/v2/a/b/tags/list");
        assert_eq!(
            c.resolve_location(&c.url("blobs/uploads/"), "/v2/a/b/blobs/uploads/x?y=1"),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/x?y=1"
        );
        assert_eq!(
            c.resolve_location("http://127.0.0.2:81/up/1?x", "/up/2"),
            "http://127.0.0.2:81/up/2"
        );
        assert_eq!(
            c.resolve_location("http://127.0.0.2:81", "up/2"),
            "http://127.0.0.2:81/up/2"
        );
        assert_eq!(
            c.resolve_location("", "/v2/x"),
            "http://127.0.0.1:5000/v2/x"
        );
        assert_eq!(c.resolve_location("x", "https://s3/x"), "https://s3/x");
        assert!(c.same_origin("http://127.0.0.1:5000/v2/a/b/blobs/uploads/x"));
        assert!(!c.same_origin("http://127.0.0.1:50001/v2/"));
        assert!(!c.same_origin("http://127.0.0.1:5000.evil/v2/"));
        assert!(!c.same_origin("https://127.0.0.1:5000/v2/"));
        assert!(!c.same_origin("http://localhost:5000/v2/"));
        let hub = Client::with_credentials("docker.io", "library/busybox", false, None, &opts);
        assert_eq!(hub.base, "https://registry-1.docker.io");
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn tokens_are_asked_for_the_challenge_scopes_too() {
        let own = Some("repository:b:pull,push".to_string());
        assert_eq!(
            token_scopes(own.clone(), None),
            vec!["repository:b:pull,push"]
        );
        assert_eq!(
            token_scopes(
                own.clone(),
                Some("repository:b:pull,push repository:a:pull")
            ),
            vec!["repository:b:pull,push", "repository:a:pull"]
        );
        assert_eq!(
            token_scopes(None, Some("repository:a:pull")),
            vec!["repository:a:pull"]
        );
    }

    #[test]
    fn unreachable_names_the_host_after_retries() {
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = RegistryOptions {
            insecure: Vec::new(),
            docker_config: PathBuf::from("/nonexistent/config.json"),
            retries: 2,
            threads: 1,
            timeout: crate::registry::DEFAULT_TIMEOUT,
        };
        let reg = format!("127.0.0.1:{port}");
        let c = Client::with_credentials(&reg, "a", false, None, &opts);
        let err = c
            .request("GET", &c.url("tags/list"), &[], &Body::Empty, "listing")
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::Unreachable { attempts: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&reg), "{err}");
    }
}
