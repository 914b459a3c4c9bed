//! Image references (`[registry/]repository[:tag][@digest]`), parsed and normalised the way
//! docker's distribution/reference does: `busybox` is `docker.io/library/busybox:latest`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::digest::{is_sha256_hex, Digest, DigestError};

/// The registry of unqualified names.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag added to references that have neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_MAX_LEN: usize = 255;
const TAG_MAX_LEN: usize = 128;

/// Why a string is not an image reference. Messages follow docker's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format: repository name must have at least one component")]
    Empty,
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexIdentifier(String),
    #[error("invalid reference format: repository name ({name}) must be lowercase")]
    Uppercase { input: String, name: String },
    #[error("invalid reference format {input:?}: {reason}")]
    InvalidFormat { input: String, reason: &'static str },
    #[error(
        "invalid reference format {input:?}: repository name must not be more than 255 characters"
    )]
    NameTooLong { input: String },
    #[error("invalid reference format {input:?}: invalid tag {tag:?} (tags match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")]
    InvalidTag { input: String, tag: String },
    #[error("invalid reference format {input:?}: {source}")]
    InvalidDigest { input: String, source: DigestError },
}

/// A fully qualified image reference: registry, repository path, and tag and/or digest.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `s`, adding the `latest` tag when it names neither tag nor digest
    /// (docker's `ParseNormalizedNamed` followed by `TagNameOnly`).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let mut r = Self::parse_normalized(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Parses and normalises `s` without adding a default tag.
    pub fn parse_normalized(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if is_sha256_hex(s) {
            return Err(ReferenceError::HexIdentifier(s.to_string()));
        }
        let invalid = |reason| ReferenceError::InvalidFormat {
            input: s.to_string(),
            reason,
        };

        let (registry, remainder) = split_registry(s);
        // Uppercase is checked before the grammar so the user gets the helpful message.
        let remote_name = remainder.split(':').next().unwrap_or_default();
        if remote_name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                input: s.to_string(),
                name: remote_name.to_string(),
            });
        }

        let (before_digest, digest) = match remainder.as_str().split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (remainder.as_str(), None),
        };
        // Path components cannot contain ':', so the first one starts the tag.
        let (repository, tag) = match before_digest.split_once(':') {
            Some((repo, tag)) => (repo, Some(tag)),
            None => (before_digest, None),
        };

        if !is_valid_registry(&registry) {
            return Err(invalid("invalid registry host"));
        }
        if repository.is_empty() {
            return Err(invalid("repository name must have at least one component"));
        }
        if !repository.split('/').all(is_path_component) {
            return Err(invalid(
                "repository path components must be lowercase letters and digits separated by '.', '_', '__' or '-'",
            ));
        }
        if registry.len() + 1 + repository.len() > NAME_MAX_LEN {
            return Err(ReferenceError::NameTooLong {
                input: s.to_string(),
            });
        }
        if let Some(tag) = tag {
            if !is_valid_tag(tag) {
                return Err(ReferenceError::InvalidTag {
                    input: s.to_string(),
                    tag: tag.to_string(),
                });
            }
        }
        let digest = match digest {
            Some(d) => Some(
                Digest::parse(d).map_err(|source| ReferenceError::InvalidDigest {
                    input: s.to_string(),
                    source,
                })?,
            ),
            None => None,
        };

        Ok(Reference {
            repository: repository.to_string(),
            registry,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The registry host (with port), e.g. `docker.io` or `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name as docker shows it: `busybox`, `user/app`, `localhost:5000/a`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            match self.repository.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The whole reference as docker shows it: `busybox:latest`, `user/app:1`.
    pub fn familiar(&self) -> String {
        self.with_suffix(self.familiar_name())
    }

    /// The same repository with another tag (any digest is dropped: it named the old content).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::InvalidTag {
                input: format!("{}:{tag}", self.name()),
                tag: tag.to_string(),
            });
        }
        Ok(Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The same reference pinned to `digest`.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    fn with_suffix(&self, mut s: String) -> String {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

/// Splits off the registry host, as docker does: the first path element is a host when it is
/// `localhost`, contains `.` or `:`, or has uppercase letters (repository paths cannot). Official
/// Docker Hub images live under `library/`, so one-element Hub names get that prefix.
fn split_registry(s: &str) -> (String, String) {
    let (registry, remainder) = match s.split_once('/') {
        None => (DEFAULT_REGISTRY, s),
        Some((first, rest)) => {
            if first == LEGACY_DEFAULT_REGISTRY {
                (DEFAULT_REGISTRY, rest)
            } else if first == "localhost"
                || first.contains(['.', ':'])
                || first.bytes().any(|b| b.is_ascii_uppercase())
            {
                (first, rest)
            } else {
                (DEFAULT_REGISTRY, s)
            }
        }
    };
    let remainder = if registry == DEFAULT_REGISTRY && !remainder.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{remainder}")
    } else {
        remainder.to_string()
    };
    (registry.to_string(), remainder)
}

fn is_valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, port),
            None => (registry, ""),
        }
    };
    let host_ok =
        host.is_empty() && registry.starts_with('[') || host.split('.').all(is_domain_component);
    let port_ok = port.is_empty() && !registry.ends_with(':')
        || (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        }
        _ => false,
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < b.len() {
        let Some(&x) = b.get(i) else { break };
        if alnum(x) {
            expect_alnum = false;
            i += 1;
            continue;
        }
        if expect_alnum {
            return false;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let run_end = b.get(i..).map_or(i, |rest| {
            i + rest.iter().take_while(|&&y| !alnum(y)).count()
        });
        let sep = b.get(i..run_end).unwrap_or_default();
        let ok = matches!(sep, b"." | b"_" | b"__")
            || (!sep.is_empty() && sep.iter().all(|&y| y == b'-'));
        if !ok {
            return false;
        }
        i = run_end;
        expect_alnum = true;
    }
    !b.is_empty() && !expect_alnum
}

/// `[\w][\w.-]{0,127}`
pub fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    match b.first() {
        Some(&first) => {
            word(first)
                && b.len() <= TAG_MAX_LEN
                && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
        }
        None => false,
    }
}

impl fmt::Display for Reference {
    /// The full normalised form, e.g. `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(self.name()))
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Reference::parse_normalized(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn full(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => r.to_string(),
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn normalises_like_docker() {
        let d = format!("sha256:{HEX}");
        let cases: Vec<(String, String, &str)> = vec![
            (
                "busybox".into(),
                "docker.io/library/busybox:latest".into(),
                "busybox:latest",
            ),
            (
                "busybox:1.36".into(),
                "docker.io/library/busybox:1.36".into(),
                "busybox:1.36",
            ),
            (
                "user/app".into(),
                "docker.io/user/app:latest".into(),
                "user/app:latest",
            ),
            (
                "user/app:1".into(),
                "docker.io/user/app:1".into(),
                "user/app:1",
            ),
            (
                "docker.io/busybox".into(),
                "docker.io/library/busybox:latest".into(),
                "busybox:latest",
            ),
            (
                "index.docker.io/busybox".into(),
                "docker.io/library/busybox:latest".into(),
                "busybox:latest",
            ),
            (
                "docker.io/library/busybox:x".into(),
                "docker.io/library/busybox:x".into(),
                "busybox:x",
            ),
            (
                "docker.io/library/a/b".into(),
                "docker.io/library/a/b:latest".into(),
                "library/a/b:latest",
            ),
            (
                "localhost/a".into(),
                "localhost/a:latest".into(),
                "localhost/a:latest",
            ),
            (
                "localhost:5000/a".into(),
                "localhost:5000/a:latest".into(),
                "localhost:5000/a:latest",
            ),
            (
                "127.0.0.1:5000/busybox:latest".into(),
                "127.0.0.1:5000/busybox:latest".into(),
                "127.0.0.1:5000/busybox:latest",
            ),
            (
                "registry.example.com/x/y:tag".into(),
                "registry.example.com/x/y:tag".into(),
                "registry.example.com/x/y:tag",
            ),
            (
                "[::1]:5000/foo".into(),
                "[::1]:5000/foo:latest".into(),
                "[::1]:5000/foo:latest",
            ),
            (
                "[fe80::1]/foo".into(),
                "[fe80::1]/foo:latest".into(),
                "[fe80::1]/foo:latest",
            ),
            (
                "myregistry:5000/a/b/c".into(),
                "myregistry:5000/a/b/c:latest".into(),
                "myregistry:5000/a/b/c:latest",
            ),
            ("Foo/bar".into(), "Foo/bar:latest".into(), "Foo/bar:latest"),
            (
                "localhost".into(),
                "docker.io/library/localhost:latest".into(),
                "localhost:latest",
            ),
            (
                "localhost:5000".into(),
                "docker.io/library/localhost:5000".into(),
                "localhost:5000",
            ),
            (
                "a.b-c__d_e".into(),
                "docker.io/library/a.b-c__d_e:latest".into(),
                "a.b-c__d_e:latest",
            ),
            (
                "a--b---c".into(),
                "docker.io/library/a--b---c:latest".into(),
                "a--b---c:latest",
            ),
            (
                "x:Tag_1.0-rc".into(),
                "docker.io/library/x:Tag_1.0-rc".into(),
                "x:Tag_1.0-rc",
            ),
            ("x:_".into(), "docker.io/library/x:_".into(), "x:_"),
            (
                format!("busybox@{d}"),
                format!("docker.io/library/busybox@{d}"),
                "",
            ),
            (
                format!("busybox:1@{d}"),
                format!("docker.io/library/busybox:1@{d}"),
                "",
            ),
            (
                format!("localhost:5000/a:t@{d}"),
                format!("localhost:5000/a:t@{d}"),
                "",
            ),
        ];
        for (input, want_full, want_familiar) in &cases {
            assert_eq!(&full(input), want_full, "full form of {input:?}");
            if !want_familiar.is_empty() {
                assert_eq!(
                    Reference::parse(input).unwrap().familiar(),
                    *want_familiar,
                    "familiar of {input:?}"
                );
            }
        }
    }

    #[test]
    fn parts() {
        let r = Reference::parse(&format!("localhost:5000/team/app:v1@sha256:{HEX}")).unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest().map(Digest::hex), Some(HEX));
        assert_eq!(r.name(), "localhost:5000/team/app");

        let r = Reference::parse(&format!("busybox@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag(), None, "a digest reference gets no default tag");
        assert_eq!(r.familiar(), format!("busybox@sha256:{HEX}"));

        let r = Reference::parse_normalized("busybox").unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), "docker.io/library/busybox");
        assert_eq!(r.familiar_name(), "busybox");
    }

    #[test]
    fn with_tag_and_digest() {
        let r = Reference::parse("busybox").unwrap();
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        let pinned = r.with_digest(d);
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/busybox:latest@sha256:{HEX}")
        );
        let retagged = pinned.with_tag("2").unwrap();
        assert_eq!(retagged.to_string(), "docker.io/library/busybox:2");
        assert!(r.with_tag("-bad").is_err());
    }

    #[test]
    fn serde_as_string() {
        let r = Reference::parse("user/app:1").unwrap();
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, "\"docker.io/user/app:1\"");
        assert_eq!(serde_json::from_str::<Reference>(&j).unwrap(), r);
    }

    type ErrorCheck = fn(&ReferenceError) -> bool;

    #[test]
    fn rejects_invalid() {
        let long_tag = format!("a:{}", "t".repeat(129));
        let ok_tag = format!("a:{}", "t".repeat(128));
        assert!(Reference::parse(&ok_tag).is_ok());
        let long_name = format!("{}/x", "a".repeat(250));
        let cases: Vec<(String, ErrorCheck)> = vec![
            ("".into(), |e| matches!(e, ReferenceError::Empty)),
            (HEX.into(), |e| {
                matches!(e, ReferenceError::HexIdentifier(_))
            }),
            ("Busybox".into(), |e| {
                matches!(e, ReferenceError::Uppercase { .. })
            }),
            ("docker.io/Busybox".into(), |e| {
                matches!(e, ReferenceError::Uppercase { .. })
            }),
            ("user/App:1".into(), |e| {
                matches!(e, ReferenceError::Uppercase { .. })
            }),
            ("localhost:5000/A".into(), |e| {
                matches!(e, ReferenceError::Uppercase { .. })
            }),
            ("a:-tag".into(), |e| {
                matches!(e, ReferenceError::InvalidTag { .. })
            }),
            ("a:.tag".into(), |e| {
                matches!(e, ReferenceError::InvalidTag { .. })
            }),
            ("a:".into(), |e| {
                matches!(e, ReferenceError::InvalidTag { .. })
            }),
            ("a:t:u".into(), |e| {
                matches!(e, ReferenceError::InvalidTag { .. })
            }),
            ("a:t/u".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            (long_tag, |e| matches!(e, ReferenceError::InvalidTag { .. })),
            (long_name, |e| {
                matches!(e, ReferenceError::NameTooLong { .. })
            }),
            ("a@sha256:abc".into(), |e| {
                matches!(e, ReferenceError::InvalidDigest { .. })
            }),
            ("a@sha512:abcd".into(), |e| {
                matches!(e, ReferenceError::InvalidDigest { .. })
            }),
            ("a@".into(), |e| {
                matches!(e, ReferenceError::InvalidDigest { .. })
            }),
            (format!("a@sha256:{HEX}@x"), |e| {
                matches!(e, ReferenceError::InvalidDigest { .. })
            }),
            ("a b".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("/a".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("a/".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("a//b".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("localhost/".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("-a".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("a-".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("a..b".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("a___b".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("a_.b".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("a.-b".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("foo:bar/baz".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("-reg.io/a".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("reg..io/a".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("reg.io:/a".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("reg.io:50a/a".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("[::1/a".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("[]:5000/a".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("[::1]x/a".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("@sha256:abc".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            (":tag".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
            ("a/b@c".into(), |e| {
                matches!(e, ReferenceError::InvalidDigest { .. })
            }),
            ("ä".into(), |e| {
                matches!(e, ReferenceError::InvalidFormat { .. })
            }),
        ];
        let mut wrong = Vec::new();
        for (input, expected) in &cases {
            match Reference::parse(input) {
                Ok(r) => wrong.push(format!("{input:?} parsed as {r}")),
                Err(e) if !expected(&e) => wrong.push(format!("{input:?}: unexpected error {e:?}")),
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn error_messages_match_docker_wording() {
        let e = Reference::parse("Busybox").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid reference format: repository name (library/Busybox) must be lowercase"
        );
        let e = Reference::parse(HEX).unwrap_err();
        assert!(e
            .to_string()
            .contains("cannot specify 64-byte hexadecimal strings"));
    }
}
