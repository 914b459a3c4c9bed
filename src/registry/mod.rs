//! Images to and from OCI registries: `pull` (manifests and indexes, platform choice, every
//! blob verified before it is stored, layers kept uncompressed as the store wants them),
//! `push` (HEAD before upload, gzip layers cached in the store, monolithic or chunked
//! uploads), `login`/`logout` (docker's `config.json`), and the registry as a shared build
//! cache (`export_cache`, [`RegistryCache`]).
//!
//! The HTTP client is `ureq` (blocking): transfers run on a few scoped threads, which is all
//! the parallelism a registry transfer needs, without an async runtime in the binary.

mod auth;
mod cache;
mod client;
mod error;
mod helper;
mod login;
mod pull;
mod push;
mod sources;

use std::path::PathBuf;
use std::time::Duration;

use crate::image::Platform;

pub use auth::{credential_helper, default_config_path, normalize_server, Credentials};
pub use cache::{
    export_cache, CacheExported, CacheMode, RegistryCache, CACHE_ARTIFACT, CACHE_CONFIG,
};
pub use client::is_insecure;
pub use error::{RegistryError, Result};
pub use login::{login, logout};
pub use pull::{pull, Pulled};
pub use push::{push, push_with, Pushed};

/// How kiln talks to registries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) reached over plain http; loopback hosts always are.
    pub insecure: Vec<String>,
    /// The docker client config holding credentials.
    pub docker_config: PathBuf,
    /// Retries after a connection failure, 429 or 5xx (with exponential backoff).
    pub retries: u32,
    /// Blobs transferred at once.
    pub threads: usize,
    /// How long a connection may stay silent (connecting, or between reads and writes)
    /// before the attempt counts as failed; it also caps how long a `Retry-After` is obeyed.
    pub timeout: Duration,
}

/// The silence after which a transfer is given up (and retried) when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// `$KILN_REGISTRY_TIMEOUT`: seconds (fractions allowed) a registry may stay silent.
/// `Ok(None)` when unset; an error names the bad value.
pub fn timeout_from_env() -> Result<Option<Duration>> {
    let Ok(v) = std::env::var("KILN_REGISTRY_TIMEOUT") else {
        return Ok(None);
    };
    parse_timeout(&v).map(Some)
}

fn parse_timeout(v: &str) -> Result<Duration> {
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(RegistryError::Usage(format!(
            "invalid KILN_REGISTRY_TIMEOUT {v:?}: expected seconds, more than 0 and at most 86400"
        ))),
    }
}

impl RegistryOptions {
    /// Defaults from the environment: `$KILN_INSECURE_REGISTRIES` (comma- or space-separated),
    /// `$DOCKER_CONFIG`, 4 retries, 4 transfers at once, `$KILN_REGISTRY_TIMEOUT` (an
    /// unusable value falls back to [`DEFAULT_TIMEOUT`]; the CLI rejects it through
    /// [`timeout_from_env`] first).
    pub fn from_env() -> Self {
        let insecure = std::env::var("KILN_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        RegistryOptions {
            insecure,
            docker_config: default_config_path(),
            retries: 4,
            threads: 4,
            timeout: timeout_from_env().ok().flatten().unwrap_or(DEFAULT_TIMEOUT),
        }
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self::from_env()
    }
}

/// The platform images are pulled for when none is asked: linux on the host's architecture.
pub fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    Platform::new("linux", arch, None)
}

/// Parses `os/arch[/variant]` (`linux/amd64`, `linux/arm/v7`).
pub fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.trim().split('/').collect();
    let bad = || {
        RegistryError::Usage(format!(
            "invalid platform {s:?}: expected os/arch[/variant]"
        ))
    };
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform::new(
            os.to_ascii_lowercase(),
            arch.to_ascii_lowercase(),
            None,
        )),
        [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
            Ok(Platform::new(
                os.to_ascii_lowercase(),
                arch.to_ascii_lowercase(),
                Some(variant.to_ascii_lowercase()),
            ))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        assert_eq!(
            parse_platform("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            parse_platform("Linux/ARM/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        for bad in ["linux", "", "linux/", "/amd64", "a/b/c/d", "linux/arm/"] {
            assert!(parse_platform(bad).is_err(), "{bad}");
        }
        assert_eq!(host_platform().os, "linux");
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_timeout(" 0.5 ").unwrap(), Duration::from_millis(500));
        for bad in ["", "0", "-1", "abc", "inf", "NaN", "1e9"] {
            let e = parse_timeout(bad).unwrap_err().to_string();
            assert!(e.contains("KILN_REGISTRY_TIMEOUT"), "{e}");
        }
    }
}
