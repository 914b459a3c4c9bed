//! `kiln login` / `kiln logout`: credentials checked against the registry's `/v2/`, then kept
//! in (or removed from) docker's `config.json`.

use super::auth::{self, Credentials};
use super::client::Client;
use super::error::{RegistryError, Result};
use super::RegistryOptions;

/// The registry host a `login`/`logout` argument names (default: Docker Hub).
fn server_host(server: Option<&str>) -> Result<String> {
    let host = auth::normalize_server(server.unwrap_or(crate::image::reference::DEFAULT_REGISTRY));
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(RegistryError::Usage(format!(
            "invalid registry name {:?}",
            server.unwrap_or_default()
        )));
    }
    Ok(host)
}

/// Checks `creds` against `server` and stores them. Returns the registry host.
pub fn login(server: Option<&str>, creds: &Credentials, opts: &RegistryOptions) -> Result<String> {
    let host = server_host(server)?;
    if creds.username.is_empty() {
        return Err(RegistryError::Usage("a user name is required".to_string()));
    }
    let client = Client::with_credentials(&host, "", false, Some(creds.clone()), opts);
    client.check_login()?;
    auth::store_credentials(&opts.docker_config, &host, creds)?;
    Ok(host)
}

/// Removes the stored credentials of `server`. Returns the host, and whether there were any.
pub fn logout(server: Option<&str>, opts: &RegistryOptions) -> Result<(String, bool)> {
    let host = server_host(server)?;
    let removed = auth::remove_credentials(&opts.docker_config, &host)?;
    Ok((host, removed))
}
