//! `.dockerignore` files and the path patterns they hold (also used by `COPY --exclude`).
//!
//! The rules are those of moby/patternmatcher and its `ignorefile` reader, the code
//! BuildKit runs; they are not gitignore rules. A pattern is anchored at the context
//! root, `*` and `?` never cross `/`, `**` spans any number of directories, a pattern
//! that matches a directory also matches everything below it, and the last matching
//! pattern decides (`!` re-includes).
//!
//! Upstream turns each pattern into a Go regexp. We compile the same pattern into a
//! small token program instead, classified as upstream does (exact / prefix / suffix
//! fast paths, else a glob), and keep the regexp's observable quirks: `**` not followed
//! by `/` still needs a `/` (`a**b` does not match `axb`), the `.*` behind `**` does
//! not cross a newline, an unescaped `^` outside a class is a start anchor, and a class
//! range such as `[z-a]` or an escaped non-ASCII character passes `new()` but fails
//! every match. Two places differ on purpose, because upstream there builds regexps
//! nobody intends: `\` before an ASCII letter or digit escapes it literally (upstream
//! gives it its regexp meaning, `\d` = digit), and `*` or `?` inside `[...]` are literal
//! class members (upstream splices `[^/]*` into the class).

use std::cell::RefCell;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Errors of the ignore module.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A malformed pattern (Go's `filepath.ErrBadPattern`).
    #[error("syntax error in pattern: {pattern}")]
    BadPattern { pattern: String },
    /// A pattern that is only `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclusion,
    /// A [`MatchInfo`] from another matcher, or from a path that is not an ancestor.
    #[error("parent match info comes from another matcher or a non-ancestor path (matcher has {patterns} patterns)")]
    ParentInfoMismatch { patterns: usize },
    /// Reading an ignore file failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How a pattern is matched, as upstream classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    /// The path must equal the pattern.
    Exact,
    /// `dir/**`: the path must start with the text before `**`.
    Prefix,
    /// A leading `**` and nothing special after it: the path must end with the rest.
    Suffix,
    /// Everything else (upstream's regexp).
    Regexp,
}

/// The patterns of a `.dockerignore` file, cleaned as upstream's `ignorefile.ReadAll`:
/// BOM stripped, `#` comments in column 1 dropped, lines trimmed, blank lines dropped,
/// each pattern path-cleaned with one leading `/` removed, and `! x` turned into `!x`.
/// A lone `!` is kept; [`PatternMatcher::new`] rejects it.
pub fn read_dockerignore(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        // The comment test comes before trimming, so an indented `#` is a pattern.
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (invert, rest) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let mut pattern = String::new();
        if !rest.is_empty() {
            pattern = clean(rest);
            if pattern.len() > 1 {
                if let Some(relative) = pattern.strip_prefix('/') {
                    pattern = relative.to_owned();
                }
            }
        }
        out.push(if invert {
            format!("!{pattern}")
        } else {
            pattern
        });
    }
    out
}

/// The ignore patterns for a build: `<Dockerfile name>.dockerignore` beside the
/// Dockerfile if it exists, else `<context>/.dockerignore`, else none.
///
/// `dockerfile` is the path the Dockerfile is read from (not joined to `context`).
pub fn load_for_build(context: &Path, dockerfile: &Path) -> Result<Vec<String>, IgnoreError> {
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        if let Some(text) = read_if_present(&dockerfile.with_file_name(specific))? {
            return Ok(read_dockerignore(&text));
        }
    }
    match read_if_present(&context.join(".dockerignore"))? {
        Some(text) => Ok(read_dockerignore(&text)),
        None => Ok(Vec::new()),
    }
}

fn read_if_present(path: &Path) -> Result<Option<String>, IgnoreError> {
    match fs::read(path) {
        // Upstream reads bytes; invalid UTF-8 can only match paths that are also
        // invalid, which our `&str` paths never are, so a lossy decode loses nothing.
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IgnoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Upstream's deprecated one-shot `Matches`: it cleans `path`, never excludes `.`, and
/// checks only the one parent directory that has as many components as the pattern.
/// Kept for the conformance table; use [`PatternMatcher`] for real work.
pub fn matches(path: &str, patterns: &[impl AsRef<str>]) -> Result<bool, IgnoreError> {
    let matcher = PatternMatcher::new(patterns)?;
    let path = clean(path);
    if path == "." {
        return Ok(false);
    }
    matcher.matches_one_parent_level(&path)
}

/// One cleaned pattern of a [`PatternMatcher`].
#[derive(Debug, Clone)]
pub struct Pattern {
    /// Cleaned, without the leading `!`.
    text: String,
    exclusion: bool,
    /// Number of `/`-separated components, for the legacy one-level parent check.
    components: usize,
    /// `None`: the pattern passed the syntax check but cannot be compiled; upstream
    /// finds this on first use and fails every match, so we report it the same way.
    compiled: Option<Compiled>,
}

impl Pattern {
    fn new(text: String, exclusion: bool) -> Self {
        let components = text.split('/').count();
        let compiled = compile(&text);
        Pattern {
            text,
            exclusion,
            components,
            compiled,
        }
    }

    /// The cleaned pattern, without its `!`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True for a `!` pattern (it re-includes what earlier patterns excluded).
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// How the pattern matches; `None` when it cannot be compiled.
    pub fn match_type(&self) -> Option<MatchType> {
        self.compiled.as_ref().map(|c| match c {
            Compiled::Exact => MatchType::Exact,
            Compiled::Prefix(_) => MatchType::Prefix,
            Compiled::Suffix(_) => MatchType::Suffix,
            Compiled::Glob(_) => MatchType::Regexp,
        })
    }

    /// Does this pattern match `path` itself (parents not considered)?
    pub fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        match &self.compiled {
            None => Err(IgnoreError::BadPattern {
                pattern: self.text.clone(),
            }),
            Some(Compiled::Exact) => Ok(path == self.text),
            Some(Compiled::Prefix(prefix)) => Ok(path.starts_with(&**prefix)),
            Some(Compiled::Suffix(suffix)) => Ok(path.ends_with(&**suffix)
                || suffix.strip_prefix('/').is_some_and(|rest| rest == path)),
            Some(Compiled::Glob(glob)) => Ok(glob.is_match(path)),
        }
    }

    /// Does the pattern match any ancestor listed in `parent` (a cleaned directory,
    /// never `.`)? Upstream ignores errors here: the pattern already matched once.
    fn matches_a_parent(&self, parent: &str) -> bool {
        parent
            .match_indices('/')
            .map(|(i, _)| parent.get(..i).unwrap_or(""))
            .chain(std::iter::once(parent))
            .any(|dir| self.matches(dir).unwrap_or(false))
    }
}

/// The results of each pattern for one directory, handed to its children by a walker
/// so that each entry costs one match per pattern. `MatchInfo::default()` means "no
/// information": the parents are then checked from the path itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchInfo {
    repr: InfoRepr,
}

/// Results of this many patterns fit in a `MatchInfo` by value.
const INLINE_PATTERNS: usize = 256;
const INLINE_WORDS: usize = INLINE_PATTERNS / 64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum InfoRepr {
    #[default]
    Unknown,
    Inline {
        patterns: u16,
        bits: [u64; INLINE_WORDS],
    },
    /// Too many patterns to carry: the parent results are recomputed from the
    /// ancestors of the path, starting at the one first seen without information
    /// (`origin` components long), exactly as the walk computed them.
    Replay { origin: usize },
}

/// A compiled list of ignore patterns.
#[derive(Debug, Clone)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Clean and check `patterns` as upstream's `New()`: each is trimmed, empty ones are
    /// dropped, the rest path-cleaned; a leading `!` marks an exclusion, and a lone `!`
    /// or a malformed pattern is an error.
    pub fn new(patterns: &[impl AsRef<str>]) -> Result<Self, IgnoreError> {
        let mut out = Vec::with_capacity(patterns.len());
        let mut exclusions = false;
        for raw in patterns {
            let trimmed = raw.as_ref().trim();
            if trimmed.is_empty() {
                continue;
            }
            // Cleaning happens before the `!` test, as upstream does (so `!a/..` is `.`).
            let cleaned = clean(trimmed);
            let (text, exclusion) = match cleaned.strip_prefix('!') {
                Some("") => return Err(IgnoreError::LoneExclusion),
                Some(rest) => (rest.to_owned(), true),
                None => (cleaned, false),
            };
            if !valid_syntax(&text) {
                return Err(IgnoreError::BadPattern { pattern: text });
            }
            exclusions |= exclusion;
            out.push(Pattern::new(text, exclusion));
        }
        Ok(PatternMatcher {
            patterns: out,
            exclusions,
        })
    }

    /// The cleaned patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// True if any pattern is a `!` exclusion. Without one, a walker may skip an
    /// excluded directory entirely: nothing below it can come back.
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// Is `path` (slash-separated, relative to the context root) excluded? A pattern
    /// matching any parent directory counts as matching the path.
    pub fn matches_or_parent_matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let mut matched = false;
        let mut parent: Option<String> = None;
        for pattern in &self.patterns {
            // An inclusion cannot change an excluded path, nor an exclusion an
            // included one.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(path)?;
            if !hit {
                let parent = parent.get_or_insert_with(|| dir(path));
                if parent != "." {
                    hit = pattern.matches_a_parent(parent);
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Is `path` excluded, given the results for its parent directory? Returns the
    /// answer and the results to hand to `path`'s own children. Pass
    /// `MatchInfo::default()` for entries of the context root (or when the parent's
    /// results are unknown).
    ///
    /// This is upstream's `MatchesUsingParentResults`, which BuildKit's walker uses, and
    /// it keeps that function's rules: a pattern that matched the parent matches the
    /// child; a pattern that was skipped for the parent is tried on the child alone.
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: MatchInfo,
    ) -> Result<(bool, MatchInfo), IgnoreError> {
        let n = self.patterns.len();
        let words = n.div_ceil(64);
        if n <= INLINE_PATTERNS {
            let parent_bits = match parent.repr {
                InfoRepr::Unknown => None,
                InfoRepr::Inline { patterns, bits } if usize::from(patterns) == n => Some(bits),
                InfoRepr::Inline { .. } => {
                    return Err(IgnoreError::ParentInfoMismatch { patterns: n })
                }
                InfoRepr::Replay { .. } => {
                    return Err(IgnoreError::ParentInfoMismatch { patterns: n })
                }
            };
            let mut bits = [0u64; INLINE_WORDS];
            let matched = self.eval(
                path,
                parent_bits.as_ref().map(|b| &b[..words]),
                &mut bits[..words],
            )?;
            let patterns = u16::try_from(n).unwrap_or(u16::MAX);
            return Ok((
                matched,
                MatchInfo {
                    repr: InfoRepr::Inline { patterns, bits },
                },
            ));
        }
        let mut out = vec![0u64; words];
        match parent.repr {
            InfoRepr::Unknown => {
                let matched = self.eval(path, None, &mut out)?;
                let origin = path.split('/').count();
                Ok((
                    matched,
                    MatchInfo {
                        repr: InfoRepr::Replay { origin },
                    },
                ))
            }
            InfoRepr::Replay { origin } => {
                let parent_bits = self.replay(path, origin, words)?;
                let matched = self.eval(path, Some(&parent_bits), &mut out)?;
                Ok((matched, parent))
            }
            InfoRepr::Inline { .. } => Err(IgnoreError::ParentInfoMismatch { patterns: n }),
        }
    }

    /// Upstream's deprecated `MatchesUsingParentResult`: `parent_matched` is the
    /// parent's answer, and patterns are tried on `path` alone. Exact only without
    /// exclusions; kept for the conformance table.
    pub fn matches_using_parent_result(
        &self,
        path: &str,
        parent_matched: bool,
    ) -> Result<bool, IgnoreError> {
        let mut matched = parent_matched;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches(path)? {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// The results of the ancestors of `path`, recomputed as a walk from the ancestor
    /// `origin` components long (which had no parent information) down to the parent.
    fn replay(&self, path: &str, origin: usize, words: usize) -> Result<Vec<u64>, IgnoreError> {
        let ancestors: Vec<&str> = path
            .match_indices('/')
            .map(|(i, _)| path.get(..i).unwrap_or(""))
            .collect();
        let n = self.patterns.len();
        let Some(chain) = origin
            .checked_sub(1)
            .and_then(|first| ancestors.get(first..))
        else {
            return Err(IgnoreError::ParentInfoMismatch { patterns: n });
        };
        let mut prev: Option<Vec<u64>> = None;
        for ancestor in chain {
            let mut bits = vec![0u64; words];
            self.eval(ancestor, prev.as_deref(), &mut bits)?;
            prev = Some(bits);
        }
        prev.ok_or(IgnoreError::ParentInfoMismatch { patterns: n })
    }

    /// The body of `MatchesUsingParentResults`: `out` receives, per pattern, whether it
    /// matched `path` or an ancestor (false when skipped).
    fn eval(
        &self,
        path: &str,
        parent: Option<&[u64]>,
        out: &mut [u64],
    ) -> Result<bool, IgnoreError> {
        let mut matched = false;
        let mut parent_dir: Option<String> = None;
        for (i, pattern) in self.patterns.iter().enumerate() {
            let (word, mask) = (i / 64, 1u64 << (i % 64));
            let mut hit = parent.is_some_and(|p| p.get(word).is_some_and(|w| w & mask != 0));
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.matches(path)?;
                if !hit && parent.is_none() {
                    let dir = parent_dir.get_or_insert_with(|| dir(path));
                    if dir != "." {
                        hit = pattern.matches_a_parent(dir);
                    }
                }
            }
            if hit {
                if let Some(w) = out.get_mut(word) {
                    *w |= mask;
                }
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// The deprecated method `Matches` behind [`matches`].
    fn matches_one_parent_level(&self, path: &str) -> Result<bool, IgnoreError> {
        let parent = dir(path);
        let parent_components: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(path)?;
            if !hit && parent != "." && pattern.components <= parent_components.len() {
                let level = parent_components
                    .get(..pattern.components)
                    .map(|c| c.join("/"))
                    .unwrap_or_default();
                hit = pattern.matches(&level).unwrap_or(false);
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for element in path.split('/') {
        match element {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// Go's `filepath.Dir`: everything before the last `/`, cleaned; `.` when none.
fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(path.get(..=i).unwrap_or("")),
        None => ".".to_owned(),
    }
}

/// The syntax check of Go's `filepath.Match` (Unix rules), which upstream's `New()`
/// runs on every pattern: classes must close, be non-empty, and not start a range
/// item with `-` or `]`; a `\` must escape something.
fn valid_syntax(pattern: &str) -> bool {
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        rest = rest.get(c.len_utf8()..).unwrap_or("");
        match c {
            '\\' => match rest.chars().next() {
                Some(escaped) => rest = rest.get(escaped.len_utf8()..).unwrap_or(""),
                None => return false,
            },
            '[' => match scan_class(rest) {
                Some((_, after)) => rest = after,
                None => return false,
            },
            _ => {}
        }
    }
    true
}

/// One parsed class: negation and inclusive ranges, in pattern order.
#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    ranges: Box<[(char, char)]>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// Parse a class body (after `[`) with `filepath.Match`'s grammar; returns the class
/// and the text after its `]`, or `None` when malformed.
fn scan_class(body: &str) -> Option<(Class, &str)> {
    let (negated, mut rest) = match body.strip_prefix('^') {
        Some(r) => (true, r),
        None => (false, body),
    };
    let mut ranges = Vec::new();
    loop {
        if !ranges.is_empty() {
            if let Some(after) = rest.strip_prefix(']') {
                let class = Class {
                    negated,
                    ranges: ranges.into_boxed_slice(),
                };
                return Some((class, after));
            }
        }
        let (lo, after) = class_char(rest)?;
        rest = after;
        let mut hi = lo;
        if let Some(after) = rest.strip_prefix('-') {
            let (h, after) = class_char(after)?;
            hi = h;
            rest = after;
        }
        ranges.push((lo, hi));
    }
}

/// `getEsc` of `filepath.Match`: one possibly escaped class character, which must be
/// followed by more pattern text.
fn class_char(s: &str) -> Option<(char, &str)> {
    let mut chars = s.chars();
    let mut c = chars.next()?;
    if c == '-' || c == ']' {
        return None;
    }
    if c == '\\' {
        c = chars.next()?;
    }
    let rest = chars.as_str();
    if rest.is_empty() {
        return None;
    }
    Some((c, rest))
}

#[derive(Debug, Clone)]
enum Compiled {
    Exact,
    Prefix(Box<str>),
    Suffix(Box<str>),
    Glob(Glob),
}

/// Classify and compile a pattern that passed [`valid_syntax`], following upstream's
/// translation to a regexp character by character. `None` when upstream's regexp
/// would not compile.
fn compile(text: &str) -> Option<Compiled> {
    let mut kind = MatchType::Exact;
    let mut program = Program::default();
    let mut rest = text;
    let mut first = true;
    while let Some(c) = rest.chars().next() {
        rest = rest.get(c.len_utf8()..).unwrap_or("");
        match c {
            '*' if rest.starts_with('*') => {
                rest = rest.get(1..).unwrap_or("");
                // `**/` is treated as `**`.
                rest = rest.strip_prefix('/').unwrap_or(rest);
                if !rest.is_empty() {
                    program.push(Tok::DirStar);
                    kind = MatchType::Regexp;
                } else if kind == MatchType::Exact {
                    kind = MatchType::Prefix;
                } else {
                    program.push(Tok::TailStar);
                    kind = MatchType::Regexp;
                }
                if first {
                    kind = MatchType::Suffix;
                }
            }
            '*' => {
                program.push(Tok::Star);
                kind = MatchType::Regexp;
            }
            '?' => {
                program.push(Tok::Any);
                kind = MatchType::Regexp;
            }
            '\\' => {
                match rest.chars().next() {
                    // Go's regexp rejects escaping a non-ASCII character.
                    Some(e) if !e.is_ascii() => return None,
                    Some(e) => {
                        rest = rest.get(1..).unwrap_or("");
                        program.literal(e);
                    }
                    None => program.literal('\\'),
                }
                kind = MatchType::Regexp;
            }
            '[' => {
                let (class, after) = scan_class(rest)?;
                // Go's regexp rejects a reversed range and an escaped non-ASCII one.
                if class.ranges.iter().any(|&(lo, hi)| lo > hi) || escapes_non_ascii(rest, after) {
                    return None;
                }
                rest = after;
                program.push(Tok::Class(class));
                kind = MatchType::Regexp;
            }
            ']' => {
                program.literal(']');
                kind = MatchType::Regexp;
            }
            // Not escaped upstream (it must stay special inside `[^...]`), so outside a
            // class it is the regexp's start anchor.
            '^' => program.push(Tok::Anchor),
            other => program.literal(other),
        }
        first = false;
    }
    Some(match kind {
        MatchType::Exact => Compiled::Exact,
        MatchType::Prefix => Compiled::Prefix(text.strip_suffix("**")?.into()),
        MatchType::Suffix => Compiled::Suffix(text.get(2..)?.into()),
        MatchType::Regexp => Compiled::Glob(program.finish()),
    })
}

/// Does the class text between `body` and `after` escape a non-ASCII character?
fn escapes_non_ascii(body: &str, after: &str) -> bool {
    let inner = body
        .get(..body.len().saturating_sub(after.len()))
        .unwrap_or("");
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.next().is_some_and(|e| !e.is_ascii()) {
            return true;
        }
    }
    false
}

/// One step of a glob program.
#[derive(Debug, Clone)]
enum Tok {
    /// These exact characters.
    Lit(Box<str>),
    /// `?`: one character other than `/`.
    Any,
    /// `[...]`: one character (any, `/` included, as in the regexp).
    Class(Class),
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` not at the end: nothing, or any characters ending with `/` (the regexp
    /// `(.*/)?`). Always followed by `DirIn`, its state after the first character.
    DirStar,
    DirIn,
    /// `**` at the end: any characters but a newline (`.*`).
    TailStar,
    /// `^`: only at the start of the path.
    Anchor,
}

#[derive(Default)]
struct Program {
    toks: Vec<Tok>,
    literal: String,
}

impl Program {
    fn literal(&mut self, c: char) {
        self.literal.push(c);
    }

    fn push(&mut self, tok: Tok) {
        self.flush();
        let dir_star = matches!(tok, Tok::DirStar);
        self.toks.push(tok);
        if dir_star {
            self.toks.push(Tok::DirIn);
        }
    }

    fn flush(&mut self) {
        if !self.literal.is_empty() {
            let lit = std::mem::take(&mut self.literal);
            self.toks.push(Tok::Lit(lit.into_boxed_str()));
        }
    }

    fn finish(mut self) -> Glob {
        self.flush();
        let toks = self.toks;
        let mut min_len = 0;
        let mut branches = 0;
        for tok in &toks {
            match tok {
                Tok::Lit(s) => min_len += s.len(),
                Tok::Any | Tok::Class(_) => min_len += 1,
                Tok::Star | Tok::DirStar | Tok::TailStar => branches += 1,
                Tok::DirIn | Tok::Anchor => {}
            }
        }
        let prefix = match toks.first() {
            Some(Tok::Lit(s)) => Some(s.clone()),
            _ => None,
        };
        let suffix = match toks.last() {
            Some(Tok::Lit(s)) if toks.len() > 1 => Some(s.clone()),
            _ => None,
        };
        let inner = toks.get(1..toks.len().saturating_sub(1)).unwrap_or(&[]);
        let needle = inner
            .iter()
            .filter_map(|t| match t {
                Tok::Lit(s) if s.len() > 1 => Some(s),
                _ => None,
            })
            .max_by_key(|s| s.len())
            .cloned();
        Glob {
            toks: toks.into_boxed_slice(),
            min_len,
            prefix,
            suffix,
            needle,
            branches,
        }
    }
}

/// A compiled glob: a token program plus cheap tests that reject most paths before
/// the search runs.
#[derive(Debug, Clone)]
struct Glob {
    toks: Box<[Tok]>,
    /// Fewest bytes a matching path has.
    min_len: usize,
    prefix: Option<Box<str>>,
    suffix: Option<Box<str>>,
    /// The longest literal in the middle; a match must contain it.
    needle: Option<Box<str>>,
    /// Number of tokens that can match varying lengths.
    branches: usize,
}

/// Reused search buffers, so matching allocates nothing in steady state.
#[derive(Default)]
struct Scratch {
    stack: Vec<(usize, usize)>,
    seen: Vec<u64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Glob {
    fn is_match(&self, path: &str) -> bool {
        if path.len() < self.min_len
            || self.prefix.as_deref().is_some_and(|p| !path.starts_with(p))
            || self.suffix.as_deref().is_some_and(|s| !path.ends_with(s))
            || self.needle.as_deref().is_some_and(|n| !path.contains(n))
        {
            return false;
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.search(path, &mut scratch),
            Err(_) => self.search(path, &mut Scratch::default()),
        })
    }

    /// Depth-first search over (token, byte offset) states. With two or more
    /// variable-length tokens the same state can be reached many ways, so visited
    /// states are remembered: the search is then O(tokens × path length).
    fn search(&self, path: &str, scratch: &mut Scratch) -> bool {
        let n = self.toks.len();
        let stride = path.len() + 1;
        let remember = self.branches >= 2;
        let Scratch { stack, seen } = scratch;
        stack.clear();
        seen.clear();
        if remember {
            seen.resize(((n + 1) * stride).div_ceil(64), 0);
        }
        stack.push((0, 0));
        while let Some((ti, pos)) = stack.pop() {
            if remember {
                let bit = ti * stride + pos;
                let Some(word) = seen.get_mut(bit / 64) else {
                    continue;
                };
                let mask = 1u64 << (bit % 64);
                if *word & mask != 0 {
                    continue;
                }
                *word |= mask;
            }
            let Some(tok) = self.toks.get(ti) else {
                if pos == path.len() {
                    return true;
                }
                continue;
            };
            let rest = path.get(pos..).unwrap_or("");
            let next = rest.chars().next();
            let after = pos + next.map_or(0, char::len_utf8);
            match tok {
                Tok::Lit(s) => {
                    if rest.starts_with(&**s) {
                        stack.push((ti + 1, pos + s.len()));
                    }
                }
                Tok::Any => {
                    if next.is_some_and(|c| c != '/') {
                        stack.push((ti + 1, after));
                    }
                }
                Tok::Class(class) => {
                    if next.is_some_and(|c| class.matches(c)) {
                        stack.push((ti + 1, after));
                    }
                }
                Tok::Star => {
                    if next.is_some_and(|c| c != '/') {
                        stack.push((ti, after));
                    }
                    stack.push((ti + 1, pos));
                }
                Tok::DirStar => {
                    stack.push((ti + 1, pos));
                    stack.push((ti + 2, pos));
                }
                Tok::DirIn => {
                    if next.is_some_and(|c| c != '\n') {
                        stack.push((ti, after));
                    }
                    if next == Some('/') {
                        stack.push((ti + 1, after));
                    }
                }
                Tok::TailStar => {
                    if next.is_some_and(|c| c != '\n') {
                        stack.push((ti, after));
                    }
                    stack.push((ti + 1, pos));
                }
                Tok::Anchor => {
                    if pos == 0 {
                        stack.push((ti + 1, pos));
                    }
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str], path: &str) -> bool {
        let pm = PatternMatcher::new(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"));
        pm.matches_or_parent_matches(path)
            .unwrap_or_else(|e| panic!("{patterns:?} {path}: {e}"))
    }

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("a/./b/../c", "a/c"),
            ("/", "/"),
            ("//a//b/", "/a/b"),
            ("/../a", "/a"),
            ("../../a", "../../a"),
            ("a/../..", ".."),
            ("./", "."),
            ("!a/..", "."),
        ] {
            assert_eq!(clean(input), want, "{input}");
        }
        assert_eq!(dir("a/b/c"), "a/b");
        assert_eq!(dir("file/"), "file");
        assert_eq!(dir("/"), "/");
        assert_eq!(dir("x"), ".");
        assert_eq!(dir("./x"), ".");
    }

    #[test]
    fn syntax_check_is_go_filepath_match() {
        for good in [
            "a", "[a]", "[^a]", "[a-c]", "[\\]a]", "[\\-]", "*[*]", "a\\*", "[[]", "]",
        ] {
            assert!(valid_syntax(good), "{good}");
        }
        for bad in [
            "[", "[]", "[]a]", "[-]", "[x-]", "[-x]", "[a-b-c]", "[^", "[^]", "a\\", "[a\\", "[a",
        ] {
            assert!(!valid_syntax(bad), "{bad}");
        }
    }

    #[test]
    fn glob_keeps_upstream_regexp_quirks() {
        // `**` not followed by `/` still requires a `/` (`(.*/)?`).
        assert!(m(&["a**b"], "ab"));
        assert!(m(&["a**b"], "ax/b"));
        assert!(!m(&["a**b"], "axb"));
        // The regexp's `.` does not cross a newline; `*` (`[^/]*`) does.
        assert!(!m(&["x?/**"], "xy/a\nb"));
        assert!(m(&["x?/*"], "xy/a\nb"));
        // `^` outside a class anchors (only meaningful in a glob).
        assert!(m(&["^ab*"], "abc"));
        assert!(!m(&["^ab*"], "^abc"));
        assert!(m(&["^ab"], "^ab"));
        // Negated classes match `/`.
        assert!(m(&["a[^x]b"], "a/b"));
        // Literal characters that are special in a regexp.
        assert!(m(&["a+b*"], "a+bc"));
        assert!(m(&["f(o)o.{1}$|*"], "f(o)o.{1}$|x"));
        assert!(!m(&["a.b*"], "axb"));
    }

    #[test]
    fn late_errors_fail_every_match() {
        for pattern in ["[z-a]", "x/[Local-Only]", "caf\\é*", "[\\é]"] {
            let pm = PatternMatcher::new(&[pattern]).unwrap();
            assert_eq!(pm.patterns()[0].match_type(), None, "{pattern}");
            for _ in 0..2 {
                let err = pm.matches_or_parent_matches("x").unwrap_err();
                assert!(err.to_string().contains("syntax error in pattern"));
            }
        }
        // An exclusion is only compiled when reached, as upstream.
        let pm = PatternMatcher::new(&["a", "![z-a]"]).unwrap();
        assert!(!pm.matches_or_parent_matches("b").unwrap());
        assert!(pm.matches_or_parent_matches("a").is_err());
    }

    #[test]
    fn new_cleans_and_rejects() {
        assert!(matches!(
            PatternMatcher::new(&["!"]),
            Err(IgnoreError::LoneExclusion)
        ));
        assert!(matches!(
            PatternMatcher::new(&["!/"]),
            Err(IgnoreError::LoneExclusion)
        ));
        assert!(matches!(
            PatternMatcher::new(&["a", "[x-]"]),
            Err(IgnoreError::BadPattern { pattern }) if pattern == "[x-]"
        ));
        let pm = PatternMatcher::new(&["  ", "  !a/./b/  ", "c/"]).unwrap();
        assert_eq!(pm.patterns().len(), 2);
        assert_eq!(pm.patterns()[0].text(), "a/b");
        assert!(pm.patterns()[0].is_exclusion());
        assert_eq!(pm.patterns()[1].text(), "c");
        assert!(pm.exclusions());
    }

    #[test]
    fn reader_rules() {
        let got = read_dockerignore("\u{feff}#c\r\n  #x\n/\n!  /a/../b\r\n\n ./c/ \n!\n");
        assert_eq!(got, ["#x", "/", "!b", "c", "!"]);
    }

    #[test]
    fn parent_results_follow_upstream_walk() {
        // Pattern 1 is skipped at `a` (nothing matched yet), so at `a/b/c` it is tried
        // on the path alone: the walk keeps `a/b/c` excluded where the full parent
        // check re-includes it. BuildKit walks, so the walk's answer is the one to keep.
        let pm = PatternMatcher::new(&["a/b", "!a"]).unwrap();
        let (_, a) = pm
            .matches_using_parent_results("a", MatchInfo::default())
            .unwrap();
        let (_, ab) = pm.matches_using_parent_results("a/b", a).unwrap();
        let (abc, _) = pm.matches_using_parent_results("a/b/c", ab).unwrap();
        assert!(abc);
        assert!(!pm.matches_or_parent_matches("a/b/c").unwrap());
    }

    #[test]
    fn many_patterns_replay_the_walk() {
        let tail = ["a/b", "!a", "d/**", "!d/keep", "**/z"];
        let mut patterns: Vec<String> = (0..300).map(|i| format!("p{i}/*.x")).collect();
        patterns.extend(tail.iter().map(|s| s.to_string()));
        let big = PatternMatcher::new(&patterns).unwrap();
        let small = PatternMatcher::new(&tail).unwrap();
        let walk = |pm: &PatternMatcher, path: &str| {
            let mut info = MatchInfo::default();
            let mut result = false;
            let parts: Vec<&str> = path.split('/').collect();
            for i in 1..=parts.len() {
                let (r, next) = pm
                    .matches_using_parent_results(&parts[..i].join("/"), info)
                    .unwrap();
                result = r;
                info = next;
            }
            result
        };
        assert!(walk(&big, "p7/q.x"));
        assert!(!walk(&big, "p7/q.y"));
        for path in [
            "a", "a/b", "a/b/c", "a/b/c/d", "d", "d/x/y", "d/keep", "d/keep/y", "q/z/w", "z",
        ] {
            assert_eq!(walk(&big, path), walk(&small, path), "{path}");
        }
        assert!(walk(&big, "a/b/c"));
        assert!(!walk(&big, "d/keep/y"));
        assert!(walk(&big, "q/z/w"));
    }

    #[test]
    fn mismatched_info_is_an_error() {
        let one = PatternMatcher::new(&["a"]).unwrap();
        let two = PatternMatcher::new(&["a", "b"]).unwrap();
        let (_, info) = one
            .matches_using_parent_results("x", MatchInfo::default())
            .unwrap();
        assert!(matches!(
            two.matches_using_parent_results("x/y", info),
            Err(IgnoreError::ParentInfoMismatch { patterns: 2 })
        ));
    }

    #[test]
    fn star_heavy_patterns_stay_fast() {
        let pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let path = "a".repeat(200);
        assert!(!m(&[pattern], &path));
        let deep = format!("{}x", "d/".repeat(200));
        assert!(m(&["**/**/**/**/**/x"], &deep));
        assert!(!m(&["**/**/**/**/**/y"], &deep));
    }

    #[test]
    fn load_prefers_dockerfile_specific_file() {
        let ctx = tempfile::tempdir().unwrap();
        let df = ctx.path().join("Dockerfile2");
        assert!(load_for_build(ctx.path(), &df).unwrap().is_empty());
        fs::write(ctx.path().join(".dockerignore"), "a\n").unwrap();
        assert_eq!(load_for_build(ctx.path(), &df).unwrap(), ["a"]);
        fs::write(ctx.path().join("Dockerfile2.dockerignore"), "b\n").unwrap();
        assert_eq!(load_for_build(ctx.path(), &df).unwrap(), ["b"]);
        // Another Dockerfile name does not see Dockerfile2's file.
        let other = ctx.path().join("Dockerfile");
        assert_eq!(load_for_build(ctx.path(), &other).unwrap(), ["a"]);
        // A file that exists but cannot be read names its path.
        fs::create_dir(ctx.path().join("Dockerfile.dockerignore")).unwrap();
        let err = load_for_build(ctx.path(), &other).unwrap_err();
        assert!(err.to_string().contains("Dockerfile.dockerignore"), "{err}");
    }
}
