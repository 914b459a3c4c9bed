//! Credentials: docker's `config.json` (`auths`, base64 `user:pass`, or a credential helper
//! it names), the server names it is keyed by, and the `WWW-Authenticate` challenges of the
//! distribution token flow.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;

use super::error::{io_err, RegistryError, Result};

/// The key docker uses in `auths` for Docker Hub.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the secret, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where docker keeps its client config: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn default_config_path() -> PathBuf {
    config_path_from(
        std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()),
        std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(std::env::home_dir),
    )
}

fn config_path_from(docker_config: Option<std::ffi::OsString>, home: Option<PathBuf>) -> PathBuf {
    match docker_config {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => home
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(".docker")
            .join("config.json"),
    }
}

/// The registry host a server name given by a user or found in `auths` stands for:
/// `https://index.docker.io/v1/` → `docker.io`, `http://localhost:5000/` → `localhost:5000`.
pub fn normalize_server(server: &str) -> String {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or_default().to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::image::reference::DEFAULT_REGISTRY.to_string()
        }
        _ => host,
    }
}

/// The `auths` key docker writes for a registry host.
pub fn auth_key(registry: &str) -> String {
    if registry == crate::image::reference::DEFAULT_REGISTRY {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// Reads the config as loose JSON, so fields kiln does not know survive a rewrite. A missing
/// file is an empty config.
fn read_config(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(serde_json::Map::new()),
        Err(e) => return Err(io_err("reading", path)(e)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| RegistryError::Config {
        op: "parsing",
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The credential helper (`NAME` of `docker-credential-NAME`) the config at `path` names for
/// `registry`, if any: where `login` puts the secret.
pub fn credential_helper(path: &Path, registry: &str) -> Result<Option<String>> {
    Ok(super::helper::helper_for(&read_config(path)?, registry))
}

/// The credentials `config.json` at `path` holds for `registry` (a normalised host).
#[cfg(test)]
fn lookup(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    Ok(lookup_with_source(path, registry)?.0)
}

/// The credentials `config.json` at `path` holds for `registry` (a normalised host), and where
/// the answer came from (for errors that say what was tried): the
/// credential helper the config names for the registry, else its `auths`.
pub(crate) fn lookup_with_source(
    path: &Path,
    registry: &str,
) -> Result<(Option<Credentials>, String)> {
    let config = read_config(path)?;
    if let Some(helper) = super::helper::helper_for(&config, registry) {
        let found = super::helper::get(&helper, &auth_key(registry))?;
        let source = format!("docker-credential-{helper} (named in {})", path.display());
        // A helper that knows nothing leaves the plain `auths` entry, as docker reads it.
        if found.is_some() {
            return Ok((found, source));
        }
    }
    Ok((
        lookup_auths(&config, path, registry)?,
        path.display().to_string(),
    ))
}

fn lookup_auths(
    config: &serde_json::Map<String, serde_json::Value>,
    path: &Path,
    registry: &str,
) -> Result<Option<Credentials>> {
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    // Exact key first, then any spelling (scheme, path) of the same host.
    let entry = auths.get(&auth_key(registry)).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| normalize_server(k) == registry)
            .map(|(_, v)| v)
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    let bad = |message: String| RegistryError::Config {
        op: "reading credentials from",
        path: path.to_path_buf(),
        message,
    };
    if let Some(auth) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(format!("auth of {registry} is not base64: {e}")))?;
        let raw =
            String::from_utf8(raw).map_err(|_| bad(format!("auth of {registry} is not UTF-8")))?;
        let Some((user, pass)) = raw.split_once(':') else {
            return Err(bad(format!("auth of {registry} is not user:password")));
        };
        return Ok(Some(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
        }));
    }
    let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    if !field("username").is_empty() {
        return Ok(Some(Credentials {
            username: field("username").to_string(),
            password: field("password").to_string(),
        }));
    }
    Ok(None)
}

/// Writes `creds` for `registry` into the config at `path` (created 0600, its directory
/// 0700), keeping every other field. Atomic: a temp file renamed over the old one. When the
/// config names a credential helper for the registry, the secret goes to the helper and
/// `auths` keeps only an empty entry (as docker writes it).
pub fn store_credentials(path: &Path, registry: &str, creds: &Credentials) -> Result<()> {
    let mut config = read_config(path)?;
    let helper = super::helper::helper_for(&config, registry);
    if let Some(h) = &helper {
        super::helper::store(h, &auth_key(registry), creds)?;
    }
    let auths = config
        .entry("auths")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if !auths.is_object() {
        *auths = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(map) = auths.as_object_mut() {
        // Drop other spellings of the same host so lookup cannot find a stale one.
        map.retain(|k, _| normalize_server(k) != registry);
        let mut entry = serde_json::Map::new();
        if helper.is_none() {
            let raw = format!("{}:{}", creds.username, creds.password);
            entry.insert(
                "auth".to_string(),
                base64::engine::general_purpose::STANDARD.encode(raw).into(),
            );
        }
        map.insert(auth_key(registry), serde_json::Value::Object(entry));
    }
    write_config(path, &config)
}

/// Removes the credentials of `registry` (from its credential helper too, when the config
/// names one); false if there were none.
pub fn remove_credentials(path: &Path, registry: &str) -> Result<bool> {
    let mut config = read_config(path)?;
    let erased = match super::helper::helper_for(&config, registry) {
        Some(h) => super::helper::erase(&h, &auth_key(registry))?,
        None => false,
    };
    let Some(map) = config.get_mut("auths").and_then(|a| a.as_object_mut()) else {
        return Ok(erased);
    };
    let before = map.len();
    map.retain(|k, _| normalize_server(k) != registry);
    if map.len() == before {
        return Ok(erased);
    }
    write_config(path, &config)?;
    Ok(true)
}

fn write_config(path: &Path, config: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("setting mode of", &dir))?;
    }
    let mut bytes = serde_json::to_vec_pretty(config).map_err(|e| RegistryError::Config {
        op: "serializing",
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    let tmp = dir.join(format!(".config.json.kiln-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("creating", &tmp))?;
    // The mode of an existing temp file is not changed by open; secrets must not leak.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("setting mode of", &tmp))?;
    f.write_all(&bytes).map_err(io_err("writing", &tmp))?;
    f.sync_all().map_err(io_err("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("renaming to", path))?;
    Ok(())
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Other(String),
}

/// Parses `Bearer realm="https://auth.example/token",service="registry",scope="..."` (or
/// `Basic realm="..."`).
pub fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Challenge::Basic,
        "bearer" => match params.get("realm") {
            Some(realm) => Challenge::Bearer {
                realm: realm.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            },
            None => Challenge::Other(header.to_string()),
        },
        _ => Challenge::Other(header.to_string()),
    }
}

/// `k="v", k2=v2` pairs; quoted values may contain commas and `\"`.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#
            ),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            }
        );
        assert_eq!(parse_challenge(r#"Basic realm="x""#), Challenge::Basic);
        assert_eq!(
            parse_challenge("bearer realm=http://h/t"),
            Challenge::Bearer {
                realm: "http://h/t".into(),
                service: None,
                scope: None
            }
        );
        assert!(matches!(parse_challenge("Bearer"), Challenge::Other(_)));
        assert!(matches!(parse_challenge("Negotiate"), Challenge::Other(_)));
    }

    #[test]
    fn server_names() {
        assert_eq!(normalize_server(DOCKER_HUB_AUTH_KEY), "docker.io");
        assert_eq!(normalize_server("docker.io"), "docker.io");
        assert_eq!(
            normalize_server("http://LocalHost:5000/v2/"),
            "localhost:5000"
        );
        assert_eq!(normalize_server("127.0.0.1:5001"), "127.0.0.1:5001");
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("r.example:5000"), "r.example:5000");
    }

    #[test]
    fn config_path() {
        assert_eq!(
            config_path_from(Some("/d".into()), Some("/h".into())),
            PathBuf::from("/d/config.json")
        );
        assert_eq!(
            config_path_from(None, Some("/h".into())),
            PathBuf::from("/h/.docker/config.json")
        );
    }

    #[test]
    fn store_lookup_remove_keeps_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"https://r.example:5000/v1/":{"auth":"b2xkOm9sZA=="},"other.example":{"username":"u","password":"p"}},"psFormat":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            lookup(&path, "r.example:5000").unwrap(),
            Some(Credentials {
                username: "old".into(),
                password: "old".into()
            })
        );
        assert_eq!(
            lookup(&path, "other.example").unwrap().unwrap().password,
            "p"
        );
        assert_eq!(lookup(&path, "none.example").unwrap(), None);
        let creds = Credentials {
            username: "me".into(),
            password: "s:e:cret".into(),
        };
        store_credentials(&path, "r.example:5000", &creds).unwrap();
        assert_eq!(lookup(&path, "r.example:5000").unwrap(), Some(creds));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(v["auths"].as_object().unwrap().len(), 2);
        assert!(remove_credentials(&path, "r.example:5000").unwrap());
        assert!(!remove_credentials(&path, "r.example:5000").unwrap());
        assert_eq!(lookup(&path, "r.example:5000").unwrap(), None);
        assert!(lookup(&path, "other.example").unwrap().is_some());
    }

    #[test]
    fn missing_or_bad_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(lookup(&path, "x").unwrap(), None);
        assert!(!remove_credentials(&path, "x").unwrap());
        std::fs::write(&path, "{not json").unwrap();
        let err = lookup(&path, "x").unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(&path, r#"{"auths":{"x":{"auth":"!!"}}}"#).unwrap();
        assert!(lookup(&path, "x").is_err());
    }

    #[test]
    fn basic_header_and_debug_hide_nothing_they_should_not() {
        let c = Credentials {
            username: "a".into(),
            password: "hunter2".into(),
        };
        assert_eq!(c.basic_header(), "Basic YTpodW50ZXIy");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
