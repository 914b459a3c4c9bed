//! The image configuration blob: the OCI image config plus the fields docker and BuildKit add
//! (`Healthcheck`, `OnBuild`, `Shell`, `ArgsEscaped`). JSON names, field order and omission of
//! empty values follow what docker writes, so kiln's configs look like BuildKit's. Fields written
//! by other tools that kiln does not model are kept in `extra` and written back unchanged.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::digest::Digest;
use super::oci::Platform;

/// The `{}` value of docker's set-like maps (`ExposedPorts`, `Volumes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        serializer.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for EmptyObject {
    // Some tools write `null` or `true` instead of `{}`; only the key matters.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(EmptyObject)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn none_or_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

/// `null` in a list-valued field means "absent", as in Go.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The whole config blob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time, kept as text so other tools' precision round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub config: ContainerConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub history: Vec<History>,
    /// Top-level fields kiln does not model (`container`, `docker_version`, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ImageConfig {
    /// The platform this config declares.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            variant: self.variant.clone(),
        }
    }

    /// Canonical bytes: compact JSON in struct field order; equal configs give equal digests.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The runtime defaults (`config` in the JSON), docker's capitalised field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(
        rename = "User",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub user: String,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    #[serde(
        rename = "Env",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub env: Vec<String>,
    /// `None` and `Some(vec![])` both serialize as absent (docker's omitempty), but the build
    /// engine can still tell "never set" from "reset".
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "none_or_empty")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "none_or_empty")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Volumes",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub volumes: BTreeMap<String, EmptyObject>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub working_dir: String,
    #[serde(
        rename = "Labels",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub stop_signal: String,
    #[serde(
        rename = "ArgsEscaped",
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "null_as_empty"
    )]
    pub args_escaped: bool,
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<Healthcheck>,
    #[serde(
        rename = "OnBuild",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub on_build: Vec<String>,
    #[serde(
        rename = "Shell",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub shell: Vec<String>,
    /// Fields of docker's container config kiln does not model (`Hostname`, `Image`, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `HEALTHCHECK` settings; durations are nanoseconds, as docker stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(
        rename = "Test",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub test: Vec<String>,
    #[serde(
        rename = "Interval",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_empty"
    )]
    pub interval: i64,
    #[serde(
        rename = "Timeout",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_empty"
    )]
    pub timeout: i64,
    #[serde(
        rename = "StartPeriod",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_empty"
    )]
    pub start_period: i64,
    #[serde(
        rename = "StartInterval",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_empty"
    )]
    pub start_interval: i64,
    #[serde(
        rename = "Retries",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_empty"
    )]
    pub retries: i64,
}

/// The ordered list of layer diffIDs (sha256 of each uncompressed layer tar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// One build step in the image's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True for steps that changed only metadata; they have no entry in `rootfs.diff_ids`.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "null_as_empty"
    )]
    pub empty_layer: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_serializes_minimal() {
        let c = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(c.to_json().unwrap()).unwrap(),
            r#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#
        );
    }

    #[test]
    fn full_config_field_names_order_and_omission() {
        let mut c = ImageConfig {
            created: Some("2024-01-02T03:04:05.123456789Z".into()),
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
            ..Default::default()
        };
        c.config.user = "app".into();
        c.config.exposed_ports.insert("80/tcp".into(), EmptyObject);
        c.config.env = vec!["PATH=/bin".into()];
        c.config.entrypoint = Some(vec![]);
        c.config.cmd = Some(vec!["sh".into()]);
        c.config.volumes.insert("/data".into(), EmptyObject);
        c.config.working_dir = "/app".into();
        c.config.labels.insert("b".into(), "2".into());
        c.config.labels.insert("a".into(), "1".into());
        c.config.stop_signal = "SIGTERM".into();
        c.config.args_escaped = true;
        c.config.healthcheck = Some(Healthcheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: 30_000_000_000,
            retries: 3,
            ..Default::default()
        });
        c.config.on_build = vec!["RUN x".into()];
        c.config.shell = vec!["/bin/sh".into(), "-c".into()];
        c.rootfs.diff_ids.push(Digest::sha256_of(b""));
        c.history.push(History {
            created_by: Some("CMD [\"sh\"]".into()),
            empty_layer: true,
            ..Default::default()
        });
        let json = String::from_utf8(c.to_json().unwrap()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"created":"2024-01-02T03:04:05.123456789Z","architecture":"arm64","os":"linux","variant":"v8","#,
                r#""config":{"User":"app","ExposedPorts":{"80/tcp":{}},"Env":["PATH=/bin"],"Cmd":["sh"],"#,
                r#""Volumes":{"/data":{}},"WorkingDir":"/app","Labels":{"a":"1","b":"2"},"StopSignal":"SIGTERM","#,
                r#""ArgsEscaped":true,"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":30000000000,"Retries":3},"#,
                r#""OnBuild":["RUN x"],"Shell":["/bin/sh","-c"]},"#,
                r#""rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},"#,
                r#""history":[{"created_by":"CMD [\"sh\"]","empty_layer":true}]}"#
            )
        );
        let back = ImageConfig::from_json(json.as_bytes()).unwrap();
        // Entrypoint [] is omitted, so it reads back as unset.
        assert_eq!(back.config.entrypoint, None);
        assert_eq!(back.to_json().unwrap(), c.to_json().unwrap());
    }

    #[test]
    fn reads_docker_config_with_nulls_and_unknown_fields() {
        let json = r##"{
          "architecture": "amd64",
          "config": {
            "Hostname": "", "AttachStdin": false, "Env": ["PATH=/usr/bin"],
            "Cmd": ["sh"], "Image": "sha256:abc", "Volumes": null, "Entrypoint": null,
            "OnBuild": null, "Labels": null, "ExposedPorts": {"53/udp": {}}
          },
          "container": "0123",
          "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"sh\"]"]},
          "created": "2023-05-19T20:19:26.522082305Z",
          "docker_version": "20.10.23",
          "history": [{"created": "2023-05-19T20:19:26Z", "created_by": "ADD file in / "}],
          "os": "linux",
          "rootfs": {"type": "layers", "diff_ids": ["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}
        }"##;
        let c = ImageConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(c.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(c.config.entrypoint, None);
        assert!(c.config.volumes.is_empty());
        assert!(c.config.exposed_ports.contains_key("53/udp"));
        assert_eq!(
            c.extra.get("docker_version").and_then(|v| v.as_str()),
            Some("20.10.23")
        );
        assert!(c.config.extra.contains_key("Hostname"));
        assert_eq!(c.rootfs.diff_ids.len(), 1);
        // Unknown fields survive a round trip.
        let again = ImageConfig::from_json(&c.to_json().unwrap()).unwrap();
        assert_eq!(again, c);
        let text = String::from_utf8(c.to_json().unwrap()).unwrap();
        assert!(text.contains("\"container_config\""));
        assert!(text.contains("\"Image\":\"sha256:abc\""));
    }

    #[test]
    fn platform_of_config() {
        let c = ImageConfig {
            architecture: "arm".into(),
            os: "linux".into(),
            variant: Some("v7".into()),
            ..Default::default()
        };
        assert_eq!(c.platform().to_string(), "linux/arm/v7");
    }
}
