//! The values of `RUN --mount=` and `RUN --device=`: a CSV list of `key=value` options,
//! read into typed mounts with BuildKit's keys, aliases, defaults and checks.

use super::text::{go_quote, parse_go_bool, suggest};
use crate::dockerfile::Error;

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// `type=bind` (the default type): a directory of the context, a stage or an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Where it appears; relative paths and `""` resolve against the WORKDIR.
    pub target: String,
    /// Path inside `from` (its root when absent).
    pub source: Option<String>,
    /// Stage name, stage index or image; the build context when absent.
    pub from: Option<String>,
    /// Read-only unless `rw`/`readwrite` was given.
    pub readonly: bool,
}

/// `type=cache`: a directory kept between builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMount {
    pub target: String,
    /// The cache's identity; BuildKit uses the target when absent ([`Self::cache_id`]).
    pub id: Option<String>,
    pub sharing: CacheSharing,
    /// A stage or image whose content seeds an empty cache.
    pub from: Option<String>,
    pub source: Option<String>,
    /// Mode of the cache directory when created (BuildKit: 0755).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Writable unless `ro`/`readonly` was given.
    pub readonly: bool,
}

impl CacheMount {
    pub fn cache_id(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.target)
    }
}

/// `type=tmpfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    pub target: String,
    /// Size limit in bytes (`size=128m`).
    pub size: Option<u64>,
}

/// `type=secret`: a secret given to the build, as a file and/or an env variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMount {
    /// `id=` (or `source=`); BuildKit falls back to the target's base name.
    pub id: Option<String>,
    /// File path; `/run/secrets/<id>` when absent and no `env` is given.
    pub target: Option<String>,
    /// Expose the secret as this environment variable.
    pub env: Option<String>,
    /// Fail when the secret is not provided.
    pub required: bool,
    /// File mode (BuildKit: 0400), owner (0:0).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl SecretMount {
    /// The secret's id: `id=`, else the base name of the target.
    pub fn secret_id(&self) -> Option<&str> {
        if let Some(id) = &self.id {
            return Some(id);
        }
        let target = self.target.as_deref()?.trim_end_matches('/');
        target.rsplit('/').next().filter(|s| !s.is_empty())
    }
}

/// `type=ssh`: an SSH agent socket forwarded from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshMount {
    /// `id=` (or `source=`); `default` when absent.
    pub id: Option<String>,
    /// Socket path; BuildKit picks `/run/buildkit/ssh_agent.<n>` when absent.
    pub target: Option<String>,
    pub required: bool,
    /// Socket mode (BuildKit: 0600), owner (0:0).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl SshMount {
    pub fn ssh_id(&self) -> &str {
        self.id.as_deref().unwrap_or("default")
    }
}

/// One `RUN --mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Bind(BindMount),
    Cache(CacheMount),
    Tmpfs(TmpfsMount),
    Secret(SecretMount),
    Ssh(SshMount),
}

const MOUNT_TYPES: [&str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];

const MOUNT_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Splits one CSV record as Go's `encoding/csv` does with its defaults: `,` separates,
/// a field that starts with `"` is quoted (`""` inside is a quote), and a quote inside
/// an unquoted field is an error.
pub(crate) fn split_csv(input: &str) -> Result<Vec<String>, String> {
    if input.is_empty() {
        return Err("EOF".to_string());
    }
    let mut fields = Vec::new();
    let mut chars = input.chars().peekable();
    let mut column = 0usize;
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            column += 1;
            loop {
                column += 1;
                match chars.next() {
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            column += 1;
                            field.push('"');
                        }
                        Some(',') | None => break,
                        Some(_) => {
                            return Err(format!(
                                "parse error on line 1, column {column}: extraneous or missing \" in quoted-field"
                            ))
                        }
                    },
                    Some(c) => field.push(c),
                    None => {
                        return Err(format!(
                            "parse error on line 1, column {column}: extraneous or missing \" in quoted-field"
                        ))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                column += 1;
                if c == '"' {
                    return Err(format!(
                        "parse error on line 1, column {column}: bare \" in non-quoted-field"
                    ));
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(_) => column += 1,
            None => return Ok(fields),
        }
    }
}

/// Go's `strconv.ParseUint(s, base, 32)`.
fn parse_u32(s: &str, radix: u32) -> Option<u32> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(s, radix).ok()
}

/// docker's `RAMInBytes`: a number with an optional binary unit (`128m`, `1.5GiB`, `64 k`).
pub(crate) fn parse_ram_bytes(s: &str) -> Option<u64> {
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, rest) = s.split_at(num_len);
    let int_part = number.split('.').next().unwrap_or_default();
    if int_part.is_empty() || number.ends_with('.') || number.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut unit_chars = rest.chars();
    let mut multiplier: u64 = 1;
    let mut tail = rest;
    if let Some(c) = unit_chars.next() {
        let exponent = match c.to_ascii_lowercase() {
            'k' => Some(1),
            'm' => Some(2),
            'g' => Some(3),
            't' => Some(4),
            'p' => Some(5),
            _ => None,
        };
        if let Some(e) = exponent {
            multiplier = 1024u64.pow(e);
            tail = unit_chars.as_str();
        }
    }
    let tail = tail.strip_prefix(['i', 'I']).unwrap_or(tail);
    let tail = tail.strip_prefix(['b', 'B']).unwrap_or(tail);
    if !tail.is_empty() {
        return None;
    }
    let bytes = value * multiplier as f64;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn mount_error(message: String) -> Error {
    Error::new(0, message)
}

/// BuildKit's checks on a mount spec before variables are expanded: options without a
/// value must be flags, and `from` must not use a variable (stages are resolved before
/// any expansion happens).
pub(crate) fn check_unexpanded_mount(spec: &str) -> Result<(), Error> {
    let fields =
        split_csv(spec).map_err(|e| mount_error(format!("failed to parse csv mounts: {e}")))?;
    for field in &fields {
        match field.split_once('=') {
            None => {
                let key = field.to_lowercase();
                if !matches!(
                    key.as_str(),
                    "readonly" | "ro" | "readwrite" | "rw" | "required"
                ) {
                    return Err(mount_error(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
            }
            Some((key, value)) => {
                if key.eq_ignore_ascii_case("from") {
                    if let Some(i) = value.find('$') {
                        if i + 1 != value.len() {
                            return Err(mount_error(
                                "'from' doesn't support variable expansion, define alias stage instead"
                                    .to_string(),
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Parses a `--mount` value, passing every option value through `expand` first.
pub fn parse_mount_with(
    spec: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, Error>,
) -> Result<Mount, Error> {
    check_unexpanded_mount(spec)?;
    let fields =
        split_csv(spec).map_err(|e| mount_error(format!("failed to parse csv mounts: {e}")))?;

    let mut kind = "bind".to_string();
    let mut from = None;
    let mut source = None;
    let mut target = None;
    let mut readonly: Option<bool> = None;
    let mut required: Option<bool> = None;
    let mut size: Option<u64> = None;
    let mut id = None;
    let mut sharing: Option<CacheSharing> = None;
    let mut mode = None;
    let mut uid = None;
    let mut gid = None;
    let mut env = None;

    for field in &fields {
        let Some((key, raw)) = field.split_once('=') else {
            match field.to_lowercase().as_str() {
                "readonly" | "ro" => readonly = Some(true),
                "readwrite" | "rw" => readonly = Some(false),
                // check_unexpanded_mount let nothing else through.
                _ => required = Some(true),
            }
            continue;
        };
        let key = key.to_lowercase();
        let value = expand(raw)?;
        let bool_value = || {
            parse_go_bool(&value)
                .ok_or_else(|| mount_error(format!("invalid value for {key}: {value}")))
        };
        match key.as_str() {
            "type" => {
                let lower = value.to_lowercase();
                if !MOUNT_TYPES.contains(&lower.as_str()) {
                    let e = mount_error(format!("unsupported mount type {}", go_quote(&value)));
                    return Err(match suggest(&value, &MOUNT_TYPES) {
                        Some(s) => e.with_suggestion(s),
                        None => e,
                    });
                }
                kind = lower;
            }
            "from" => from = Some(value),
            "source" | "src" => source = Some(value),
            "target" | "dst" | "destination" | "dest" => target = Some(value),
            "readonly" | "ro" => readonly = Some(bool_value()?),
            "readwrite" | "rw" => readonly = Some(!bool_value()?),
            "required" => required = Some(bool_value()?),
            "size" => {
                size = Some(
                    parse_ram_bytes(&value)
                        .ok_or_else(|| mount_error(format!("invalid size: '{value}'")))?,
                )
            }
            "id" => id = Some(value),
            "sharing" => {
                sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(mount_error(format!(
                            "unsupported sharing value {}",
                            go_quote(&value)
                        )))
                    }
                })
            }
            "mode" => {
                mode = Some(
                    parse_u32(&value, 8)
                        .ok_or_else(|| mount_error(format!("invalid value {value} for mode")))?,
                )
            }
            "uid" => {
                uid = Some(
                    parse_u32(&value, 10)
                        .ok_or_else(|| mount_error(format!("invalid value {value} for uid")))?,
                )
            }
            "gid" => {
                gid = Some(
                    parse_u32(&value, 10)
                        .ok_or_else(|| mount_error(format!("invalid value {value} for gid")))?,
                )
            }
            "env" => env = Some(value),
            _ => {
                let e = mount_error(format!("unexpected key '{key}' in '{field}'"));
                return Err(match suggest(&key, &MOUNT_KEYS) {
                    Some(s) => e.with_suggestion(s),
                    None => e,
                });
            }
        }
    }

    let unexpected =
        |key: &str| mount_error(format!("unexpected key '{key}' for mount type '{kind}'"));
    let file_info_allowed = matches!(kind.as_str(), "cache" | "secret" | "ssh");
    if !file_info_allowed {
        for (name, given) in [
            ("mode", mode.is_some()),
            ("uid", uid.is_some()),
            ("gid", gid.is_some()),
        ] {
            if given {
                return Err(mount_error(format!(
                    "{name} not allowed for {} type mounts",
                    go_quote(&kind)
                )));
            }
        }
    }
    if required.is_some() && !matches!(kind.as_str(), "secret" | "ssh") {
        return Err(unexpected("required"));
    }
    if size.is_some() && kind != "tmpfs" {
        return Err(unexpected("size"));
    }
    if env.is_some() && kind != "secret" {
        return Err(unexpected("env"));
    }
    if sharing.is_some() && kind != "cache" {
        return Err(mount_error(format!(
            "invalid cache sharing set for {kind} mount"
        )));
    }
    if from.is_some() && matches!(kind.as_str(), "secret" | "ssh") {
        return Err(mount_error(format!("{kind} mount should not have a from")));
    }

    let target_or_empty = target.clone().unwrap_or_default();
    Ok(match kind.as_str() {
        "cache" => Mount::Cache(CacheMount {
            target: target_or_empty,
            id,
            sharing: sharing.unwrap_or_default(),
            from,
            source,
            mode,
            uid,
            gid,
            readonly: readonly.unwrap_or(false),
        }),
        "tmpfs" => Mount::Tmpfs(TmpfsMount {
            target: target_or_empty,
            size,
        }),
        "secret" => Mount::Secret(SecretMount {
            id: id.or(source),
            target,
            env,
            required: required.unwrap_or(false),
            mode,
            uid,
            gid,
        }),
        "ssh" => Mount::Ssh(SshMount {
            id: id.or(source),
            target,
            required: required.unwrap_or(false),
            mode,
            uid,
            gid,
        }),
        _ => Mount::Bind(BindMount {
            target: target_or_empty,
            source,
            from,
            readonly: readonly.unwrap_or(true),
        }),
    })
}

/// Parses a `--mount` value literally (no variable expansion).
pub fn parse_mount(spec: &str) -> Result<Mount, Error> {
    parse_mount_with(spec, &mut |v| Ok(v.to_string()))
}

/// One `RUN --device`: a CDI device name, optionally `required`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub required: bool,
}

/// Parses a `--device` value: `name` (or `name=<name>`), then optional `required[=bool]`.
pub fn parse_device(value: &str) -> Result<Device, Error> {
    let fields =
        split_csv(value).map_err(|e| mount_error(format!("failed to parse csv device: {e}")))?;
    let mut device = Device {
        name: String::new(),
        required: false,
    };
    for field in fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        match (key.as_str(), val) {
            ("required", None) => device.required = true,
            ("required", Some(v)) => {
                device.required = parse_go_bool(v)
                    .ok_or_else(|| mount_error(format!("invalid value for {key}: {v}")))?;
            }
            _ => {
                if !device.name.is_empty() {
                    return Err(mount_error(format!(
                        "device name already set to {}",
                        device.name
                    )));
                }
                device.name = match (key.as_str(), val) {
                    ("name", Some(v)) => v.to_string(),
                    _ => field.clone(),
                };
            }
        }
    }
    Ok(device)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn csv() {
        assert_eq!(split_csv("a,b=c").unwrap(), ["a", "b=c"]);
        assert_eq!(split_csv("\"a,b\",c").unwrap(), ["a,b", "c"]);
        assert_eq!(split_csv("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert_eq!(split_csv("a,").unwrap(), ["a", ""]);
        assert!(split_csv("").is_err());
        assert!(split_csv("a\"b").is_err());
        assert!(split_csv("\"ab").is_err());
        assert!(split_csv("\"a\"b").is_err());
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(parse_ram_bytes("128m"), Some(128 << 20));
        assert_eq!(parse_ram_bytes("1024"), Some(1024));
        assert_eq!(parse_ram_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_ram_bytes("64 kb"), Some(64 << 10));
        assert_eq!(parse_ram_bytes("1i"), Some(1));
        assert_eq!(parse_ram_bytes("m"), None);
        assert_eq!(parse_ram_bytes("12x"), None);
        assert_eq!(parse_ram_bytes("1.2.3"), None);
    }

    #[test]
    fn default_bind() {
        let m = parse_mount("target=/ctx").unwrap();
        assert_eq!(
            m,
            Mount::Bind(BindMount {
                target: "/ctx".into(),
                source: None,
                from: None,
                readonly: true
            })
        );
        let Mount::Bind(b) = parse_mount("type=bind,src=a,dst=/b,from=build,rw").unwrap() else {
            panic!()
        };
        assert!(!b.readonly);
        assert_eq!(b.from.as_deref(), Some("build"));
        assert_eq!(b.source.as_deref(), Some("a"));
    }

    #[test]
    fn cache() {
        let Mount::Cache(c) =
            parse_mount("type=cache,target=/root/.cache,sharing=locked,mode=0755,uid=1000")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(c.sharing, CacheSharing::Locked);
        assert_eq!(c.mode, Some(0o755));
        assert_eq!(c.uid, Some(1000));
        assert!(!c.readonly);
        assert_eq!(c.cache_id(), "/root/.cache");
    }

    #[test]
    fn tmpfs_secret_ssh() {
        assert_eq!(
            parse_mount("type=tmpfs,target=/t,size=128m").unwrap(),
            Mount::Tmpfs(TmpfsMount {
                target: "/t".into(),
                size: Some(128 << 20)
            })
        );
        let Mount::Secret(s) = parse_mount("type=secret,target=/run/x/tok,required").unwrap()
        else {
            panic!()
        };
        assert!(s.required);
        assert_eq!(s.secret_id(), Some("tok"));
        let Mount::Secret(s) = parse_mount("type=secret,id=x,env=VAR").unwrap() else {
            panic!()
        };
        assert_eq!(s.env.as_deref(), Some("VAR"));
        let Mount::Ssh(s) = parse_mount("type=ssh,required=false").unwrap() else {
            panic!()
        };
        assert_eq!(s.ssh_id(), "default");
    }

    #[test]
    fn errors() {
        let e = parse_mount("type=tmp,target=/x").unwrap_err();
        assert_eq!(e.message, "unsupported mount type \"tmp\"");
        assert_eq!(e.suggestion.as_deref(), Some("tmpfs"));
        let e = parse_mount("typ=cache").unwrap_err();
        assert_eq!(e.message, "unexpected key 'typ' in 'typ=cache'");
        assert_eq!(e.suggestion.as_deref(), Some("type"));
        assert!(parse_mount("target=/x,mode=0755").is_err());
        assert!(parse_mount("type=cache,target=/x,mode=9").is_err());
        assert!(parse_mount("target=/x,required").is_err());
        assert!(parse_mount("type=cache,size=1m").is_err());
        assert!(parse_mount("type=bind,sharing=private").is_err());
        assert!(parse_mount("type=secret,from=x").is_err());
        assert!(parse_mount("target").is_err());
        assert!(parse_mount("ro=maybe").is_err());
        assert!(parse_mount("").is_err());
        let e = parse_mount("from=$X,target=/x").unwrap_err();
        assert!(e
            .message
            .contains("'from' doesn't support variable expansion"));
        // A trailing `$` is not a variable.
        assert!(parse_mount("from=x$,target=/x").is_ok());
    }

    #[test]
    fn expansion_applies_to_values() {
        let m = parse_mount_with("type=$T,target=${DIR}", &mut |v| {
            Ok(v.replace("$T", "cache").replace("${DIR}", "/c"))
        })
        .unwrap();
        assert!(matches!(m, Mount::Cache(c) if c.target == "/c"));
    }

    #[test]
    fn devices() {
        assert_eq!(
            parse_device("vendor1.com/device=foo,required").unwrap(),
            Device {
                name: "vendor1.com/device=foo".into(),
                required: true
            }
        );
        assert!(parse_device("a,required=maybe").is_err());
    }
}
