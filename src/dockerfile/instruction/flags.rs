//! The `--flag` parser of instructions (BuildKit's `BFlags`): each instruction declares
//! its flags with a type and default, then the words the AST parser extracted are
//! checked against that schema, so a typo is an error and not silently ignored.

use super::text::suggest;
use crate::dockerfile::Error;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--x`, `--x=true` or `--x=false` (any case).
    Bool,
    /// `--x=value`; given at most once.
    String,
    /// `--x=value`, repeatable; values kept in order.
    Strings,
}

#[derive(Debug, Clone)]
struct FlagDef {
    name: String,
    kind: FlagKind,
    /// Current value of a `Bool` or `String` flag (`"true"`/`"false"` for bools).
    value: String,
    values: Vec<String>,
    used: bool,
}

/// A flag schema, then the values parsed against it.
#[derive(Debug, Clone, Default)]
pub struct BuilderFlags {
    defs: Vec<FlagDef>,
    /// A flag defined twice is a bug in the schema; it is reported by [`Self::parse`]
    /// rather than panicking while the schema is built.
    setup_error: Option<String>,
}

impl BuilderFlags {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_bool(&mut self, name: &str, default: bool) {
        let value = if default { "true" } else { "false" };
        self.add(name, FlagKind::Bool, value);
    }

    pub fn add_string(&mut self, name: &str, default: &str) {
        self.add(name, FlagKind::String, default);
    }

    pub fn add_strings(&mut self, name: &str) {
        self.add(name, FlagKind::Strings, "");
    }

    fn add(&mut self, name: &str, kind: FlagKind, value: &str) {
        if self.def(name).is_some() {
            self.setup_error = Some(format!("Duplicate flag defined: {name}"));
            return;
        }
        self.defs.push(FlagDef {
            name: name.to_string(),
            kind,
            value: value.to_string(),
            values: Vec::new(),
            used: false,
        });
    }

    fn def(&self, name: &str) -> Option<&FlagDef> {
        self.defs.iter().find(|d| d.name == name)
    }

    /// Parses `args` (each `--name` or `--name=value`) against the schema. A lone `--`
    /// ends the flags. Errors carry line 0; the caller names the line.
    pub fn parse(&mut self, args: &[String]) -> Result<(), Error> {
        if let Some(e) = &self.setup_error {
            return Err(Error::new(0, format!("error setting up flags: {e}")));
        }
        for arg in args {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(Error::new(0, format!("arg should start with -- : {arg}")));
            };
            if body.is_empty() {
                return Ok(());
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let names: Vec<&str> = self.defs.iter().map(|d| d.name.as_str()).collect();
            let suggestion = suggest(name, &names).map(str::to_string);
            let Some(def) = self.defs.iter_mut().find(|d| d.name == name) else {
                let e = Error::new(0, format!("unknown flag: --{name}"));
                return Err(match suggestion {
                    Some(s) => e.with_suggestion(s),
                    None => e,
                });
            };
            if def.used && def.kind != FlagKind::Strings {
                return Err(Error::new(0, format!("duplicate flag specified: {name}")));
            }
            def.used = true;
            match def.kind {
                FlagKind::Bool => {
                    let lowered = value.map(str::to_lowercase);
                    def.value = match lowered.as_deref() {
                        None => "true".to_string(),
                        Some("") => {
                            return Err(Error::new(0, format!("missing a value on flag: {name}")))
                        }
                        Some("true") => "true".to_string(),
                        Some("false") => "false".to_string(),
                        Some(_) => {
                            let raw = value.unwrap_or_default();
                            return Err(Error::new(
                                0,
                                format!("expecting boolean value for flag {name}, not: {raw}"),
                            ));
                        }
                    };
                }
                FlagKind::String | FlagKind::Strings => {
                    let Some(value) = value else {
                        return Err(Error::new(0, format!("missing a value on flag: {name}")));
                    };
                    if def.kind == FlagKind::String {
                        def.value = value.to_string();
                    } else {
                        def.values.push(value.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    /// The value of a bool flag (its default when not given); false for an unknown name.
    pub fn bool_value(&self, name: &str) -> bool {
        self.def(name)
            .is_some_and(|d| d.kind == FlagKind::Bool && d.value == "true")
    }

    /// The value of a string flag (its default when not given).
    pub fn string_value(&self, name: &str) -> Option<&str> {
        self.def(name)
            .filter(|d| d.kind == FlagKind::String)
            .map(|d| d.value.as_str())
    }

    /// The value of a string flag only if it was given.
    pub fn given_string(&self, name: &str) -> Option<&str> {
        self.def(name)
            .filter(|d| d.used && d.kind == FlagKind::String)
            .map(|d| d.value.as_str())
    }

    /// The value of a bool flag only if it was given.
    pub fn given_bool(&self, name: &str) -> Option<bool> {
        self.def(name)
            .filter(|d| d.used && d.kind == FlagKind::Bool)
            .map(|d| d.value == "true")
    }

    /// Every value of a repeatable flag, in order.
    pub fn string_values(&self, name: &str) -> &[String] {
        self.def(name).map(|d| d.values.as_slice()).unwrap_or(&[])
    }

    /// The kind of a defined flag.
    pub fn kind(&self, name: &str) -> Option<FlagKind> {
        self.def(name).map(|d| d.kind)
    }

    pub fn is_used(&self, name: &str) -> bool {
        self.def(name).is_some_and(|d| d.used)
    }

    /// Names of the flags that were given, sorted.
    pub fn used(&self) -> Vec<String> {
        let mut used: Vec<String> = self
            .defs
            .iter()
            .filter(|d| d.used)
            .map(|d| d.name.clone())
            .collect();
        used.sort();
        used
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_and_defaults() {
        let mut f = BuilderFlags::new();
        f.add_string("str1", "HI");
        f.add_bool("bool1", false);
        f.add_strings("exclude");
        f.parse(&args(&["--bool1", "--exclude=a", "--exclude=b"]))
            .unwrap();
        assert!(f.bool_value("bool1"));
        assert_eq!(f.string_value("str1"), Some("HI"));
        assert_eq!(f.given_string("str1"), None);
        assert_eq!(f.string_values("exclude"), ["a", "b"]);
        assert_eq!(f.used(), ["bool1", "exclude"]);
    }

    #[test]
    fn errors() {
        let mut f = BuilderFlags::new();
        f.add_string("from", "");
        f.add_bool("link", false);
        let e = f.parse(&args(&["--form=x"])).unwrap_err();
        assert_eq!(e.message, "unknown flag: --form");
        assert_eq!(e.suggestion.as_deref(), Some("from"));
        let mut g = f.clone();
        assert_eq!(
            g.parse(&args(&["--from=a", "--from=b"]))
                .unwrap_err()
                .message,
            "duplicate flag specified: from"
        );
        let mut g = f.clone();
        assert_eq!(
            g.parse(&args(&["--link=yes"])).unwrap_err().message,
            "expecting boolean value for flag link, not: yes"
        );
        let mut g = f.clone();
        assert!(g.parse(&args(&["--link="])).is_err());
        let mut g = f.clone();
        assert!(g.parse(&args(&["--from"])).is_err());
        // `--` ends the flags, whatever follows.
        let mut g = f.clone();
        assert!(g.parse(&args(&["--", "--bogus"])).is_ok());
    }

    #[test]
    fn duplicate_definition_reported_at_parse() {
        let mut f = BuilderFlags::new();
        f.add_bool("x", false);
        f.add_string("x", "");
        assert!(f.parse(&[]).is_err());
    }
}
