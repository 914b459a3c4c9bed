//! Cache keys: blake3 over a canonical, versioned encoding of a step (its parent's key
//! and its resolved inputs). Bump [`VERSION`] whenever the encoding or the meaning of a
//! step's result changes, so old cache entries can never be mistaken for new ones.

/// The version of the key encoding.
pub const VERSION: &str = "kiln-step-v1";

/// A step's cache key.
pub type Key = [u8; 32];

/// One named input of a step: what the miss report names when it changed
/// (`file src/app.py`, `build-arg V`, `base image`, `instruction`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Input {
    pub label: String,
    /// blake3 of the input's value, hex.
    pub digest: String,
}

/// Collects a step's inputs, then makes its key.
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    hasher: blake3::Hasher,
    inputs: Vec<Input>,
}

impl KeyBuilder {
    /// Start a key for a step of kind `kind` (e.g. "COPY") below `parent`.
    pub fn new(parent: &Key, kind: &str) -> Self {
        let mut hasher = blake3::Hasher::new();
        field(&mut hasher, VERSION.as_bytes());
        field(&mut hasher, parent);
        field(&mut hasher, kind.as_bytes());
        KeyBuilder {
            hasher,
            inputs: Vec::new(),
        }
    }

    /// Add an input that counts in the key and is reported by name when it changes.
    pub fn input(&mut self, label: impl Into<String>, value: &[u8]) -> &mut Self {
        let label = label.into();
        field(&mut self.hasher, label.as_bytes());
        field(&mut self.hasher, value);
        self.inputs.push(Input {
            digest: blake3::hash(value).to_hex().to_string(),
            label,
        });
        self
    }

    /// Add an input that counts in the key but is too detailed to report alone (the
    /// per-file inputs are reported separately through [`KeyBuilder::detail`]).
    pub fn hidden(&mut self, label: &str, value: &[u8]) -> &mut Self {
        field(&mut self.hasher, label.as_bytes());
        field(&mut self.hasher, value);
        self
    }

    /// Record an input for miss reports without adding it to the key (its content is
    /// already in the key through a digest of the whole set).
    pub fn detail(&mut self, label: impl Into<String>, digest: &[u8]) -> &mut Self {
        self.inputs.push(Input {
            label: label.into(),
            digest: hex(digest),
        });
        self
    }

    pub fn finish(self) -> (Key, Vec<Input>) {
        (*self.hasher.finalize().as_bytes(), self.inputs)
    }
}

/// Length-prefixed so that no two different field sequences encode alike.
fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Why a step missed, from its inputs now and at its previous build: the first input
/// that changed, was added, or went away.
pub fn miss_reason(now: &[Input], before: &[Input]) -> Option<String> {
    let old: std::collections::HashMap<&str, &str> = before
        .iter()
        .map(|i| (i.label.as_str(), i.digest.as_str()))
        .collect();
    for i in now {
        match old.get(i.label.as_str()) {
            Some(d) if *d == i.digest => {}
            Some(_) => return Some(describe(&i.label, "changed")),
            None => return Some(describe(&i.label, "added")),
        }
    }
    let new: std::collections::HashSet<&str> = now.iter().map(|i| i.label.as_str()).collect();
    before
        .iter()
        .find(|i| !new.contains(i.label.as_str()))
        .map(|i| describe(&i.label, "removed"))
}

fn describe(label: &str, what: &str) -> String {
    match label.strip_prefix("file ") {
        Some(path) => format!("{path} {what}"),
        None => format!("{label} {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_parent_kind_and_inputs() {
        let p = [0u8; 32];
        let k = |parent: &Key, kind: &str, v: &[u8]| {
            let mut b = KeyBuilder::new(parent, kind);
            b.input("x", v);
            b.finish().0
        };
        assert_eq!(k(&p, "COPY", b"a"), k(&p, "COPY", b"a"));
        assert_ne!(k(&p, "COPY", b"a"), k(&p, "COPY", b"b"));
        assert_ne!(k(&p, "COPY", b"a"), k(&p, "ADD", b"a"));
        assert_ne!(k(&p, "COPY", b"a"), k(&[1; 32], "COPY", b"a"));
        // Field boundaries are part of the encoding.
        let mut a = KeyBuilder::new(&p, "K");
        a.input("ab", b"c");
        let mut b = KeyBuilder::new(&p, "K");
        b.input("a", b"bc");
        assert_ne!(a.finish().0, b.finish().0);
    }

    #[test]
    fn reasons_name_the_first_changed_input() {
        let i = |l: &str, d: &str| Input {
            label: l.into(),
            digest: d.into(),
        };
        let before = vec![
            i("instruction", "1"),
            i("file src/a.py", "2"),
            i("file src/late.py", "3"),
        ];
        let now = vec![
            i("instruction", "1"),
            i("file src/a.py", "2"),
            i("file src/late.py", "4"),
        ];
        assert_eq!(miss_reason(&now, &before).unwrap(), "src/late.py changed");
        let now = vec![i("instruction", "1"), i("file src/a.py", "2")];
        assert_eq!(miss_reason(&now, &before).unwrap(), "src/late.py removed");
        let now = vec![i("build-arg V", "9")];
        assert_eq!(
            miss_reason(&now, &[i("build-arg V", "8")]).unwrap(),
            "build-arg V changed"
        );
        assert_eq!(miss_reason(&before, &before), None);
    }
}
