//! Word expansion: the shell-like lexer BuildKit applies to instruction arguments (ARG and
//! ENV values, COPY paths, WORKDIR, FROM, EXPOSE, ...). It expands `$VAR` and the `${VAR...}`
//! forms, removes quotes, applies the escape character and, in word-splitting mode, splits
//! on unquoted whitespace. It never runs a shell. The rules are BuildKit's
//! (`frontend/dockerfile/shell`), not POSIX sh's: where the two differ, BuildKit wins,
//! because a Dockerfile must mean the same thing under kiln as under `docker build`.
//!
//! This module also owns the environment abstraction the lexer reads ([`Env`]) and the
//! shell-glob matcher behind `${V#p}`, `${V%p}` and `${V/p/r}`.

use super::dump::go_quote;
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash};

// ---------------------------------------------------------------------------------------
// Environments
// ---------------------------------------------------------------------------------------

/// Where the lexer looks variables up. A variable that is set to `""` is *set*: it must
/// return `Some("")`, because `${V-x}` and `${V:-x}` tell the two apart.
pub trait Env {
    fn lookup(&self, name: &str) -> Option<&str>;
}

/// Pairs in definition order; a later definition of the same key wins, as in a Dockerfile
/// where a second `ENV K=...` replaces the first.
impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Env for [(K, V); N] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<K, V, S> Env for HashMap<K, V, S>
where
    K: Borrow<str> + Hash + Eq,
    V: AsRef<str>,
    S: BuildHasher,
{
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(AsRef::as_ref)
    }
}

impl<K: Borrow<str> + Ord, V: AsRef<str>> Env for BTreeMap<K, V> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(AsRef::as_ref)
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// The environment with nothing set (the parser lexes heredoc words against it).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// Reads a BuildKit-style environment list (`KEY=VALUE` strings, as in an image config or
/// `--build-arg`). The key ends at the first `=`; a bare `KEY` and `KEY=` both define `KEY`
/// as `""`. Order is kept, so looking up in the result lets the last duplicate win.
pub fn env_from_key_values<I, S>(list: I) -> Vec<(String, String)>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    list.into_iter()
        .map(|entry| {
            let entry = entry.as_ref();
            match entry.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (entry.to_owned(), String::new()),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a word could not be expanded. The texts are BuildKit's, since users search for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(char),
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// The modifier as written after the name (`=`, `:=`, `:#`, ...).
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${NAME?message}` / `${NAME:?message}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    /// A glob pattern with an escape other than `\*`, `\?`, `\\`, `\}` or `\/`. `escaped` is
    /// the character after the backslash, U+FFFD when the pattern ends there.
    #[error("invalid pattern ({pattern}) in substitution: invalid escape '\\{escaped}'")]
    InvalidPattern { pattern: String, escaped: char },
}

/// A word that could not be expanded, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {kind}", go_quote(.word))]
pub struct ExpandError {
    /// The whole input of the failed call.
    pub word: String,
    pub kind: ExpandErrorKind,
}

// ---------------------------------------------------------------------------------------
// The lexer
// ---------------------------------------------------------------------------------------

/// The result of [`Lexer::process_word_with_matches`]: the value, and which variables the
/// word looked up, found (`matched`, including those set to `""`) or not (`unmatched`).
/// Every lookup counts, also one whose result was not used (`${SET:-$OTHER}` looks up
/// `OTHER`), as in BuildKit, whose linter and cache keys rely on these sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    pub value: String,
    pub matched: BTreeSet<String>,
    pub unmatched: BTreeSet<String>,
}

/// BuildKit's shell-word lexer. `escape` is `\` or `` ` `` (the `# escape=` directive).
/// The four switches are the modes BuildKit's own parser uses to read heredoc words; all
/// are off for ordinary expansion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the output (they still group words).
    pub fn with_raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output (they still escape).
    pub fn with_raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Treat `'` and `"` as ordinary characters.
    pub fn with_skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Leave references to unset variables as written (`${X:-a}` stays `${X:-a}`).
    pub fn with_skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// Single-word mode: expand, remove quotes, apply escapes; whitespace is kept.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        if self.is_plain(word) {
            return Ok(word.to_owned());
        }
        let mut scan = Scan::new(self, word, env, false);
        scan.run(None).map_err(|kind| ExpandError {
            word: word.to_owned(),
            kind,
        })
    }

    /// Word-splitting mode: as [`Lexer::process_word`], then split on whitespace that was
    /// neither quoted nor escaped, including whitespace that came out of an unquoted
    /// expansion. Empty words are dropped, so `""` alone gives no word at all.
    ///
    /// One deliberate difference from BuildKit at the corpus commit: there, reading the
    /// word of a `${V:-w}`-style modifier clears the word being built around it, so
    /// `a${X:-b}c` gives `["bc"]`. That is a side effect of a buffer-reuse optimisation
    /// (older BuildKit gives `["abc"]`, as kiln does); no corpus case depends on it.
    pub fn process_words(&self, line: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        let mut scan = Scan::new(self, line, env, false);
        let mut words = Words::default();
        scan.run(Some(&mut words)).map_err(|kind| ExpandError {
            word: line.to_owned(),
            kind,
        })?;
        Ok(words.finish())
    }

    /// Single-word mode, also reporting which variables were looked up.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<Expansion, ExpandError> {
        if self.is_plain(word) {
            return Ok(Expansion {
                value: word.to_owned(),
                ..Expansion::default()
            });
        }
        let mut scan = Scan::new(self, word, env, true);
        let value = scan.run(None).map_err(|kind| ExpandError {
            word: word.to_owned(),
            kind,
        })?;
        Ok(Expansion {
            value,
            matched: scan.matched,
            unmatched: scan.unmatched,
        })
    }

    /// True when single-word mode would return `word` unchanged, which is most words.
    fn is_plain(&self, word: &str) -> bool {
        let special = |c: char| {
            c == '$'
                || c == self.escape
                || c == '\u{feff}'
                || (!self.skip_process_quotes && (c == '\'' || c == '"'))
        };
        !word.contains(special)
    }
}

/// The words of word-splitting mode, built alongside the single-word result. Quoted text
/// (even `""`) joins the current word without splitting it; a word still empty at a split
/// point is dropped.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    current: String,
}

impl Words {
    /// A character that may split words (unquoted, unescaped, or from an unquoted `$`).
    fn add_char(&mut self, c: char) {
        if !c.is_whitespace() {
            self.current.push(c);
        } else if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.current.push(c);
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_str(&mut self, s: &str) {
        self.current.push_str(s);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

type Step<T> = Result<T, ExpandErrorKind>;

/// One call's cursor over its input.
struct Scan<'a> {
    lexer: Lexer,
    env: &'a dyn Env,
    src: &'a str,
    pos: usize,
    raw_escapes: bool,
    track: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a> Scan<'a> {
    fn new(lexer: &Lexer, src: &'a str, env: &'a dyn Env, track: bool) -> Self {
        // BuildKit reads the word through Go's text/scanner, which drops a leading BOM.
        let pos = if src.starts_with('\u{feff}') {
            '\u{feff}'.len_utf8()
        } else {
            0
        };
        Scan {
            lexer: *lexer,
            env,
            src,
            pos,
            raw_escapes: lexer.raw_escapes,
            track,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn run(&mut self, words: Option<&mut Words>) -> Step<String> {
        self.until(None, self.lexer.raw_escapes, words)
    }

    fn peek(&self) -> Option<char> {
        self.src
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn get_env(&mut self, name: &str) -> Option<&'a str> {
        let env = self.env;
        let found = env.lookup(name);
        if self.track {
            let set = if found.is_some() {
                &mut self.matched
            } else {
                &mut self.unmatched
            };
            if !set.contains(name) {
                set.insert(name.to_owned());
            }
        }
        found
    }

    /// Reads up to the unquoted, unescaped `stop` (consumed) or the end of input (`None`).
    /// Nested calls read the word of a `${...}` modifier; only the top level splits words.
    fn until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        words: Option<&mut Words>,
    ) -> Step<String> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.until_inner(stop, words);
        self.raw_escapes = saved;
        result
    }

    fn until_inner(&mut self, stop: Option<char>, mut words: Option<&mut Words>) -> Step<String> {
        let mut out = String::new();
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += c.len_utf8();
                return Ok(out);
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    out.push_str(&value);
                    if let Some(w) = words.as_deref_mut() {
                        w.add_str(&value);
                    }
                }
                '<' => {
                    let text = self.possible_heredoc();
                    out.push_str(text);
                    if let Some(w) = words.as_deref_mut() {
                        w.add_raw_str(text);
                    }
                }
                '\'' | '"' if quotes => {
                    let text = if c == '\'' {
                        self.single_quoted()?
                    } else {
                        self.double_quoted()?
                    };
                    out.push_str(&text);
                    if let Some(w) = words.as_deref_mut() {
                        w.add_raw_str(&text);
                    }
                }
                _ => {
                    self.pos += c.len_utf8();
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            out.push(c);
                            if let Some(w) = words.as_deref_mut() {
                                w.add_raw_char(c);
                            }
                        }
                        // A trailing escape character escapes nothing and vanishes.
                        let Some(escaped) = self.next_char() else {
                            break;
                        };
                        out.push(escaped);
                        if let Some(w) = words.as_deref_mut() {
                            w.add_raw_char(escaped);
                        }
                    } else {
                        out.push(c);
                        if let Some(w) = words.as_deref_mut() {
                            w.add_char(c);
                        }
                    }
                }
            }
        }
        match stop {
            Some(s) => Err(ExpandErrorKind::Unterminated(s)),
            None => Ok(out),
        }
    }

    /// `<<` and the blanks after it stay one piece, so that `<< EOF` is one word for the
    /// heredoc reader. A lone `<` is ordinary.
    fn possible_heredoc(&mut self) -> &'a str {
        let start = self.pos;
        self.pos += 1;
        if self.peek() == Some('<') {
            self.pos += 1;
            while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
                self.pos += 1;
            }
        }
        self.src.get(start..self.pos).unwrap_or_default()
    }

    fn single_quoted(&mut self) -> Step<String> {
        self.pos += 1;
        let mut out = String::new();
        if self.lexer.raw_quotes {
            out.push('\'');
        }
        loop {
            match self.next_char() {
                None => return Err(ExpandErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Step<String> {
        self.pos += 1;
        let mut out = String::new();
        if self.lexer.raw_quotes {
            out.push('"');
        }
        let escape = self.lexer.escape;
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.lexer.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    out.push_str(&value);
                }
                Some(c) => {
                    self.pos += c.len_utf8();
                    let mut c = c;
                    if c == escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        // Only `"`, `$` and the escape character itself can be escaped
                        // here; before anything else the escape character is literal
                        // (and so appears twice in raw-escapes mode, as upstream).
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == escape => {
                                self.pos += n.len_utf8();
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    /// A variable name after `$` or `${`: one run of digits (a positional parameter, never
    /// set), one special-parameter character, or letters, digits and `_`.
    fn name(&mut self) -> &'a str {
        let start = self.pos;
        match self.peek() {
            Some(c) if is_go_digit(c) => {
                while self.peek().is_some_and(is_go_digit) {
                    self.next_char();
                }
            }
            Some(c) if is_special_param(c) => {
                self.pos += c.len_utf8();
            }
            _ => {
                while self
                    .peek()
                    .is_some_and(|c| is_go_letter(c) || is_go_digit(c) || c == '_')
                {
                    self.next_char();
                }
            }
        }
        self.src.get(start..self.pos).unwrap_or_default()
    }

    fn dollar(&mut self) -> Step<String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.get_env(name) {
                Some(v) => v.to_owned(),
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let first = self.next_char();
        // Upstream renders end of input as U+FFFD in its messages.
        let mut modifier = String::from(first.unwrap_or('\u{fffd}'));
        match first {
            Some('}') => Ok(match self.get_env(name) {
                Some(v) => v.to_owned(),
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let null_is_unset = first == Some(':');
                let op = if null_is_unset {
                    let op = self.next_char();
                    modifier.push(op.unwrap_or('\u{fffd}'));
                    op
                } else {
                    first
                };
                let is_pattern = matches!(op, Some('#' | '%'));
                if null_is_unset && is_pattern {
                    return Err(ExpandErrorKind::UnsupportedModifier(modifier));
                }
                // The word is expanded before the variable is looked at, so its own
                // lookups (and errors) happen even when the word is not used.
                let word = self.until(Some('}'), is_pattern, None).map_err(|e| {
                    if self.at_end() {
                        ExpandErrorKind::MissingBrace
                    } else {
                        e
                    }
                })?;
                let value = self.get_env(name);
                if value.is_none() && self.lexer.skip_unset_env {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let unset = value.is_none() || (null_is_unset && value == Some(""));
                match op {
                    Some('-') => Ok(if unset {
                        word
                    } else {
                        value.unwrap_or_default().to_owned()
                    }),
                    Some('+') => Ok(if unset { String::new() } else { word }),
                    Some('?') => match value {
                        Some(v) if !unset => Ok(v.to_owned()),
                        _ => {
                            let message = if !word.is_empty() {
                                word
                            } else if value.is_none() {
                                "is not allowed to be unset".to_owned()
                            } else {
                                "is not allowed to be empty".to_owned()
                            };
                            Err(ExpandErrorKind::Required {
                                name: name.to_owned(),
                                message,
                            })
                        }
                    },
                    Some(c @ ('#' | '%')) => {
                        // A doubled operator (`##`, `%%`) asks for the longest match. The
                        // check is on the expanded word, as upstream does.
                        let (pattern, longest) = match word.strip_prefix(c) {
                            Some(rest) => (rest, true),
                            None => (word.as_str(), false),
                        };
                        let value = value.unwrap_or_default();
                        if c == '#' {
                            trim_prefix(pattern, value, longest)
                        } else {
                            trim_suffix(pattern, value, longest)
                        }
                    }
                    _ => Err(ExpandErrorKind::UnsupportedModifier(modifier)),
                }
            }
            Some('/') => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern = self.until(Some('/'), true, None).map_err(|e| {
                    if self.at_end() {
                        ExpandErrorKind::MissingSlash
                    } else {
                        e
                    }
                })?;
                let replacement = self.until(Some('}'), true, None).map_err(|e| {
                    if self.at_end() {
                        ExpandErrorKind::MissingBrace
                    } else {
                        e
                    }
                })?;
                let value = self.get_env(name);
                if value.is_none() && self.lexer.skip_unset_env {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let glob = Glob::compile(&pattern)?;
                let value = value.unwrap_or_default();
                Ok(if all {
                    glob.replace_all(value, &replacement)
                } else {
                    glob.replace_first(value, &replacement)
                })
            }
            _ => Err(ExpandErrorKind::UnsupportedModifier(modifier)),
        }
    }
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Go's `unicode.IsLetter` (category L). Rust has no category query; `is_alphabetic` is L
/// plus Nl and some combining vowel signs, and removing the numeric ones leaves only those
/// rare signs as a difference.
fn is_go_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        c.is_alphabetic() && !c.is_numeric()
    }
}

/// Go's `unicode.IsDigit`: category Nd (Unicode 15.0), not the other numerics (`²`, `Ⅻ`).
fn is_go_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    let c = u32::from(c);
    ND_RANGES
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Non-ASCII decimal digits (Unicode 15.0 category Nd), as inclusive ranges.
#[rustfmt::skip]
const ND_RANGES: &[(u32, u32)] = &[
    (0x660, 0x669), (0x6F0, 0x6F9), (0x7C0, 0x7C9), (0x966, 0x96F), (0x9E6, 0x9EF),
    (0xA66, 0xA6F), (0xAE6, 0xAEF), (0xB66, 0xB6F), (0xBE6, 0xBEF), (0xC66, 0xC6F),
    (0xCE6, 0xCEF), (0xD66, 0xD6F), (0xDE6, 0xDEF), (0xE50, 0xE59), (0xED0, 0xED9),
    (0xF20, 0xF29), (0x1040, 0x1049), (0x1090, 0x1099), (0x17E0, 0x17E9), (0x1810, 0x1819),
    (0x1946, 0x194F), (0x19D0, 0x19D9), (0x1A80, 0x1A89), (0x1A90, 0x1A99), (0x1B50, 0x1B59),
    (0x1BB0, 0x1BB9), (0x1C40, 0x1C49), (0x1C50, 0x1C59), (0xA620, 0xA629), (0xA8D0, 0xA8D9),
    (0xA900, 0xA909), (0xA9D0, 0xA9D9), (0xA9F0, 0xA9F9), (0xAA50, 0xAA59), (0xABF0, 0xABF9),
    (0xFF10, 0xFF19), (0x104A0, 0x104A9), (0x10D30, 0x10D39), (0x11066, 0x1106F),
    (0x110F0, 0x110F9), (0x11136, 0x1113F), (0x111D0, 0x111D9), (0x112F0, 0x112F9),
    (0x11450, 0x11459), (0x114D0, 0x114D9), (0x11650, 0x11659), (0x116C0, 0x116C9),
    (0x11730, 0x11739), (0x118E0, 0x118E9), (0x11950, 0x11959), (0x11C50, 0x11C59),
    (0x11D50, 0x11D59), (0x11DA0, 0x11DA9), (0x11F50, 0x11F59), (0x16A60, 0x16A69),
    (0x16AC0, 0x16AC9), (0x16B50, 0x16B59), (0x1D7CE, 0x1D7FF), (0x1E140, 0x1E149),
    (0x1E2F0, 0x1E2F9), (0x1E4F0, 0x1E4F9), (0x1E950, 0x1E959), (0x1FBF0, 0x1FBF9),
];

// ---------------------------------------------------------------------------------------
// Glob patterns of `${V#p}`, `${V%p}`, `${V/p/r}`
// ---------------------------------------------------------------------------------------
//
// Upstream turns the pattern into a Go regexp (`*` → `.*` or `.*?`, `?` → `.`). Two of
// its consequences are kept on purpose: `*` and `?` never match a newline (a regexp `.`
// does not), and `%` matches on the reversed value with a reversed pattern, which decides
// which escapes are rejected. With only `*`, `?` and literals, a regexp's greedy (lazy)
// preference equals the longest (shortest) match from a given start, which is what the
// matcher below computes without backtracking.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Star,
    Any,
    Lit(char),
}

#[derive(Debug)]
struct Glob {
    pieces: Vec<Piece>,
}

impl Glob {
    fn compile(pattern: &str) -> Step<Glob> {
        let body = pattern.strip_prefix('\u{feff}').unwrap_or(pattern);
        let mut chars = body.chars().peekable();
        let mut pieces = Vec::new();
        while let Some(c) = chars.next() {
            pieces.push(match c {
                '*' => Piece::Star,
                '?' => Piece::Any,
                '\\' => {
                    // `\}` and `\/` were escapes of the `${...}` syntax, not of the pattern.
                    if matches!(chars.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match chars.next() {
                        Some(e @ ('*' | '?' | '\\')) => Piece::Lit(e),
                        other => {
                            return Err(ExpandErrorKind::InvalidPattern {
                                pattern: pattern.to_owned(),
                                escaped: other.unwrap_or('\u{fffd}'),
                            })
                        }
                    }
                }
                c => Piece::Lit(c),
            });
        }
        Ok(Glob { pieces })
    }

    /// The end of the longest (or shortest) match of the whole pattern that starts at
    /// `start`, by simulating the pattern's automaton over the text.
    fn match_at(&self, text: &str, start: usize, longest: bool) -> Option<usize> {
        let n = self.pieces.len();
        let mut live = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        live[0] = true;
        self.close(&mut live);
        let mut best = None;
        let mut pos = start;
        let mut rest = text.get(start..).unwrap_or_default().chars();
        loop {
            if live[n] {
                best = Some(pos);
                if !longest {
                    break;
                }
            }
            let Some(c) = rest.next() else { break };
            next.iter_mut().for_each(|s| *s = false);
            let mut any = false;
            for (i, piece) in self.pieces.iter().enumerate() {
                if !live[i] {
                    continue;
                }
                let to = match piece {
                    Piece::Star if c != '\n' => i,
                    Piece::Any if c != '\n' => i + 1,
                    Piece::Lit(l) if *l == c => i + 1,
                    _ => continue,
                };
                next[to] = true;
                any = true;
            }
            if !any {
                break;
            }
            self.close(&mut next);
            std::mem::swap(&mut live, &mut next);
            pos += c.len_utf8();
        }
        best
    }

    /// Adds the states reachable by letting a `*` match nothing.
    fn close(&self, states: &mut [bool]) {
        for (i, piece) in self.pieces.iter().enumerate() {
            if states[i] && *piece == Piece::Star {
                states[i + 1] = true;
            }
        }
    }

    /// The leftmost match starting at or after `from`; at that start, the longest one.
    fn find(&self, text: &str, from: usize) -> Option<(usize, usize)> {
        let first = self.pieces.first().copied();
        let mut start = from;
        while start <= text.len() {
            let rest = text.get(start..)?;
            let step = rest.chars().next().map_or(1, char::len_utf8);
            let candidate = match first {
                Some(Piece::Lit(l)) => rest.starts_with(l),
                _ => true,
            };
            if candidate {
                if let Some(end) = self.match_at(text, start, true) {
                    return Some((start, end));
                }
                // A leading `*` that found nothing from here would have found anything
                // that starts later on the same line, so only the next line can match.
                if first == Some(Piece::Star) {
                    start += rest.find('\n')? + 1;
                    continue;
                }
            }
            start += step;
        }
        None
    }

    fn replace_first(&self, text: &str, replacement: &str) -> String {
        match self.find(text, 0) {
            Some((start, end)) => {
                let head = text.get(..start).unwrap_or_default();
                let tail = text.get(end..).unwrap_or_default();
                format!("{head}{replacement}{tail}")
            }
            None => text.to_owned(),
        }
    }

    /// Go's `Regexp.ReplaceAllString`: matches are found left to right, an empty match right
    /// after a previous match is skipped, and `$` in the replacement is a template.
    fn replace_all(&self, text: &str, replacement: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut last_end = 0;
        let mut search = 0;
        while search <= text.len() {
            let Some((start, end)) = self.find(text, search) else {
                break;
            };
            out.push_str(text.get(last_end..start).unwrap_or_default());
            if end > last_end || start == 0 {
                expand_template(
                    &mut out,
                    replacement,
                    text.get(start..end).unwrap_or_default(),
                );
            }
            last_end = end;
            let width = text
                .get(search..)
                .and_then(|t| t.chars().next())
                .map_or(1, char::len_utf8);
            search = if search + width > end {
                search + width
            } else {
                end
            };
        }
        out.push_str(text.get(last_end..).unwrap_or_default());
        out
    }
}

fn trim_prefix(pattern: &str, value: &str, longest: bool) -> Step<String> {
    let glob = Glob::compile(pattern)?;
    Ok(match glob.match_at(value, 0, longest) {
        Some(end) => value.get(end..).unwrap_or_default().to_owned(),
        None => value.to_owned(),
    })
}

fn trim_suffix(pattern: &str, value: &str, longest: bool) -> Step<String> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, longest)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern but keeps each backslash in front of the character it escapes:
/// `a\*c` → `c\*a`.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pieces: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        pieces.push(&chars[i..i + len]);
        i += len;
    }
    pieces.iter().rev().flat_map(|p| p.iter()).collect()
}

/// Go's `Regexp.Expand` for a pattern without groups: `$$` is `$`, `$0` / `${0}` is the
/// match, any other `$name` / `${name}` is empty, and a `$` that starts no name stays.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('$') {
        out.push_str(before);
        rest = after;
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let name_len: usize = body
            .chars()
            .take_while(|&c| is_go_letter(c) || is_go_digit(c) || c == '_')
            .map(char::len_utf8)
            .sum();
        let (name, after) = body.split_at_checked(name_len).unwrap_or((body, ""));
        let after = if braced {
            after.strip_prefix('}')
        } else {
            Some(after)
        };
        match after {
            Some(after) if !name.is_empty() => {
                if name == "0" {
                    out.push_str(matched);
                }
                rest = after;
            }
            _ => out.push('$'),
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(&'static str, &'static str)> {
        vec![("PWD", "/home"), ("EMPTY", ""), ("SP", "a  b")]
    }

    fn word(input: &str) -> Result<String, ExpandError> {
        Lexer::default().process_word(input, &env())
    }

    fn words(input: &str) -> Vec<String> {
        Lexer::default()
            .process_words(input, &env())
            .unwrap_or_default()
    }

    fn with(input: &str, pairs: &[(&str, &str)]) -> String {
        match Lexer::default().process_word(input, &pairs) {
            Ok(v) => v,
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(word(r#"a'b c'"d e""#).ok().as_deref(), Some("ab cd e"));
        assert_eq!(word(r#""x\ty\"\$\\""#).ok().as_deref(), Some(r#"x\ty"$\"#));
        assert_eq!(word(r"a\").ok().as_deref(), Some("a"));
        assert!(word("'open").is_err());
        assert!(word("\"open").is_err());
    }

    #[test]
    fn backtick_escape() {
        let lexer = Lexer::new('`');
        let e = env();
        assert_eq!(
            lexer.process_word(r"C:\dir`$PWD", &e).ok().as_deref(),
            Some(r"C:\dir$PWD")
        );
        assert_eq!(
            lexer.process_word("\"a`\"b\"", &e).ok().as_deref(),
            Some("a\"b")
        );
    }

    #[test]
    fn positional_and_special_are_empty() {
        assert_eq!(word("$12x").ok().as_deref(), Some("x"));
        assert_eq!(word("$$$").ok().as_deref(), Some("$"));
        assert_eq!(word("a$").ok().as_deref(), Some("a$"));
    }

    #[test]
    fn required_messages() {
        let err = word("${NOPE?}").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(r#"failed to process "${NOPE?}": NOPE: is not allowed to be unset"#)
        );
        let err = word("${EMPTY:?}").err().map(|e| e.kind);
        assert_eq!(
            err,
            Some(ExpandErrorKind::Required {
                name: "EMPTY".into(),
                message: "is not allowed to be empty".into()
            })
        );
    }

    #[test]
    fn word_of_an_unused_default_is_still_expanded() {
        let got = Lexer::default().process_word_with_matches("${PWD:-$OTHER}", &env());
        let got = got.unwrap_or_default();
        assert_eq!(got.value, "/home");
        assert!(got.unmatched.contains("OTHER"));
        assert!(word("${PWD:-${OTHER?}}").is_err());
    }

    #[test]
    fn prefix_and_suffix_trimming() {
        let v = [("V", "a.b.c")];
        assert_eq!(with("${V#*.}", &v), "b.c");
        assert_eq!(with("${V##*.}", &v), "c");
        assert_eq!(with("${V%.*}", &v), "a.b");
        assert_eq!(with("${V%%.*}", &v), "a");
        assert_eq!(with("${V#x}", &v), "a.b.c");
        assert_eq!(with("${V%?}", &v), "a.b.");
        // Globs never cross a newline, as upstream's regexp `.` does not.
        let nl = [("V", "a\nb")];
        assert_eq!(with("${V#*b}", &nl), "a\nb");
        assert_eq!(with("${V#a?}", &nl), "a\nb");
    }

    #[test]
    fn pattern_escapes() {
        let v = [("V", "x*y"), ("P", "\\q")];
        assert_eq!(with(r"${V#x\*}", &v), "y");
        assert!(with("${V#$P}", &v).starts_with("ERR"));
        assert!(with("${V%$P}", &v).starts_with("ERR"));
        assert_eq!(reverse_pattern(r"a\*c"), r"c\*a");
        assert_eq!(reverse_pattern(r"ab\"), r"\ba");
        assert_eq!(reverse_pattern(r"\\x"), r"x\\");
    }

    #[test]
    fn escapes_in_quoted_patterns_are_kept_raw() {
        // Inside a `#`/`%` word escapes are kept for the glob, and a double-quoted `\t`
        // (not an escape there) keeps its backslash twice: the glob sees `\\t`.
        assert_eq!(with(r#"${A#"\t"}"#, &[("A", r"\tx")]), "x");
        let raw = Lexer::default()
            .with_raw_quotes(true)
            .with_raw_escapes(true);
        let got = raw
            .process_words(r#""a\tb""#, &EmptyEnv)
            .unwrap_or_default();
        assert_eq!(got, [r#""a\\tb""#]);
    }

    #[test]
    fn replacement() {
        let v = [("V", "aXbXc"), ("E", "")];
        assert_eq!(with("${V/X/-}", &v), "a-bXc");
        assert_eq!(with("${V//X/-}", &v), "a-b-c");
        assert_eq!(with("${V//?/.}", &v), ".....");
        assert_eq!(with("${V/*X/-}", &v), "-c");
        assert_eq!(with("${V//$E/-}", &v), "-a-X-b-X-c-");
        assert_eq!(with("${V/zz/-}", &v), "aXbXc");
    }

    #[test]
    fn leading_star_search_skips_to_the_next_line() {
        let long = format!("{}\nz", "a".repeat(20_000));
        let v = [("V", long.as_str())];
        assert_eq!(with("${V/*z/-}", &v), format!("{}\n-", "a".repeat(20_000)));
        assert_eq!(with("${V//*q/-}", &v), long);
    }

    #[test]
    fn replace_all_uses_go_templates() {
        let v = [("V", "ab"), ("R", "<$0|$$|$x|${0}|$|${0>")];
        assert_eq!(with("${V//a/$R}", &v), "<a|$||a|$|${0>b");
        // Replacing only the first match inserts the text as it is.
        assert_eq!(with("${V/a/$R}", &v), "<$0|$$|$x|${0}|$|${0>b");
    }

    #[test]
    fn splitting() {
        assert_eq!(words("x${SP}y"), ["xa", "by"]);
        assert_eq!(words("x\"${SP}\"y"), ["xa  by"]);
        assert_eq!(words("  \"\"  ''  "), Vec::<String>::new());
        assert_eq!(words(r"a\ b  c"), ["a b", "c"]);
        assert_eq!(words("cat <<  EOF x"), ["cat", "<<  EOF", "x"]);
        // A word interrupted by a `${...}` modifier keeps its start (see process_words).
        assert_eq!(words("x${NOPE:-1}y z"), ["x1y", "z"]);
    }

    #[test]
    fn heredoc_reader_modes() {
        let lexer = Lexer::default()
            .with_raw_quotes(true)
            .with_raw_escapes(true)
            .with_skip_unset_env(true);
        let got = lexer.process_words(r#"<<"EOF" \x ${A:-b} $B"#, &EmptyEnv);
        assert_eq!(
            got.unwrap_or_default(),
            [r#"<<"EOF""#, r"\x", "${A:-b}", "$B"]
        );
        let plain = Lexer::default().with_skip_process_quotes(true);
        assert_eq!(
            plain.process_word("'a'", &EmptyEnv).ok().as_deref(),
            Some("'a'")
        );
    }

    #[test]
    fn unicode_names() {
        let v = [("é1", "x"), ("A", "y")];
        assert_eq!(with("$é1.", &v), "x.");
        assert_eq!(with("$A²", &v), "y²");
        assert_eq!(with("$٣x", &v), "x");
    }

    #[test]
    fn leading_bom_is_dropped() {
        assert_eq!(word("\u{feff}$PWD").ok().as_deref(), Some("/home"));
    }

    #[test]
    fn env_lists() {
        let list = env_from_key_values(["A=1", "B", "C=", "A=2=3"]);
        assert_eq!(list.lookup("A"), Some("2=3"));
        assert_eq!(list.lookup("B"), Some(""));
        assert_eq!(list.lookup("C"), Some(""));
        assert_eq!(list.lookup("D"), None);
        let map: HashMap<String, String> = list.iter().cloned().collect();
        assert_eq!(map.lookup("C"), Some(""));
        let tree: BTreeMap<&str, &str> = [("K", "v")].into_iter().collect();
        assert_eq!(tree.lookup("K"), Some("v"));
    }

    #[test]
    fn go_quoting_in_messages() {
        assert_eq!(go_quote("a\"b\\\n\u{1}é\u{a0}"), r#""a\"b\\\n\x01é\u00a0""#);
    }
}
