//! docker's credential helpers: `credHelpers` (per registry) and `credsStore` (for all) in
//! `config.json` name a `docker-credential-NAME` program that keeps the secrets; kiln speaks
//! its protocol (`get`/`store`/`erase`, the server on stdin, JSON on stdout).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::auth::Credentials;
use super::error::{RegistryError, Result};

/// The answer of `get` (and the request of `store`), as the helpers spell it.
#[derive(serde::Serialize, serde::Deserialize)]
struct HelperCredentials {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// What helpers print when they hold nothing for a server (docker's `errCredentialsNotFound`).
const NOT_FOUND: &str = "credentials not found in native keychain";

/// The helper `config` names for `registry`: `credHelpers` first (any spelling of the host),
/// then `credsStore`.
pub(crate) fn helper_for(
    config: &serde_json::Map<String, serde_json::Value>,
    registry: &str,
) -> Option<String> {
    let per_registry = config
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| super::auth::normalize_server(k) == registry)
                .and_then(|(_, v)| v.as_str())
        });
    let global = config.get("credsStore").and_then(|s| s.as_str());
    per_registry
        .or(global)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

fn program(helper: &str) -> String {
    format!("docker-credential-{helper}")
}

/// Runs `docker-credential-HELPER ACTION` with `input` on stdin: (success, stdout, stderr).
fn call(helper: &str, action: &str, input: &[u8]) -> Result<(bool, String, String)> {
    let name = program(helper);
    // A helper name is a suffix of a program name, never a path.
    if helper.contains('/') || helper.contains(char::is_whitespace) {
        return Err(RegistryError::Usage(format!(
            "invalid credential helper name {helper:?}"
        )));
    }
    let failed = |message: String| RegistryError::Config {
        op: "running credential helper",
        path: Path::new(&name).to_path_buf(),
        message,
    };
    let mut child = Command::new(&name)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("{e} (is {name} on PATH?)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its exit status.
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

/// The credentials `helper` holds for `server` (the `auths` key), or `None`.
pub(crate) fn get(helper: &str, server: &str) -> Result<Option<Credentials>> {
    let (ok, stdout, stderr) = call(helper, "get", server.as_bytes())?;
    if !ok {
        if stdout.contains(NOT_FOUND) || stderr.contains(NOT_FOUND) {
            return Ok(None);
        }
        return Err(RegistryError::Config {
            op: "getting credentials from",
            path: program(helper).into(),
            message: format!(
                "for {server}: {}",
                if stderr.is_empty() { stdout } else { stderr }
            ),
        });
    }
    let c: HelperCredentials =
        serde_json::from_str(&stdout).map_err(|e| RegistryError::Config {
            op: "getting credentials from",
            path: program(helper).into(),
            message: format!("for {server}: its answer is not the helper JSON: {e}"),
        })?;
    if c.username.is_empty() && c.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: c.username,
        password: c.secret,
    }))
}

/// Hands `creds` for `server` to `helper`.
pub(crate) fn store(helper: &str, server: &str, creds: &Credentials) -> Result<()> {
    let body = serde_json::to_vec(&HelperCredentials {
        server_url: server.to_string(),
        username: creds.username.clone(),
        secret: creds.password.clone(),
    })
    .map_err(|e| RegistryError::Usage(e.to_string()))?;
    let (ok, stdout, stderr) = call(helper, "store", &body)?;
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Config {
            op: "storing credentials with",
            path: program(helper).into(),
            message: format!(
                "for {server}: {}",
                if stderr.is_empty() { stdout } else { stderr }
            ),
        })
    }
}

/// Asks `helper` to forget `server`; false when it held nothing.
pub(crate) fn erase(helper: &str, server: &str) -> Result<bool> {
    let (ok, stdout, stderr) = call(helper, "erase", server.as_bytes())?;
    if ok {
        return Ok(true);
    }
    if stdout.contains(NOT_FOUND) || stderr.contains(NOT_FOUND) {
        return Ok(false);
    }
    Err(RegistryError::Config {
        op: "erasing credentials with",
        path: program(helper).into(),
        message: format!(
            "for {server}: {}",
            if stderr.is_empty() { stdout } else { stderr }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_of_a_registry() {
        let config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"credsStore":"desktop","credHelpers":{"https://r.lan:5000":"pass","gcr.io":""}}"#,
        )
        .unwrap();
        assert_eq!(helper_for(&config, "r.lan:5000").as_deref(), Some("pass"));
        assert_eq!(helper_for(&config, "docker.io").as_deref(), Some("desktop"));
        // An empty per-registry name means no helper at all, not the global one.
        assert_eq!(helper_for(&config, "gcr.io"), None);
        let none = serde_json::Map::new();
        assert_eq!(helper_for(&none, "docker.io"), None);
    }

    #[test]
    fn a_missing_helper_or_a_path_is_an_error() {
        assert!(get("kiln-test-no-such-helper", "x").is_err());
        assert!(get("../evil", "x").is_err());
    }
}
