//! COPY and ADD semantics: which source entries an instruction reads, and where each one
//! lands in the stage's filesystem with which owner and mode.
//!
//! The rules are BuildKit's (../shared/conformance/buildkit-behaviours.md, COPY and ADD):
//! a directory source copies its contents; wildcards match per path component and may
//! match nothing when other sources exist; a symlinked top-level source is dereferenced
//! but links inside copied trees stay links; a trailing `/`, `.`, an empty destination or
//! several sources make the destination a directory; relative destinations resolve
//! against WORKDIR; a destination that is a symlink to a directory is followed, inside
//! the root; directories the copy creates are 0:0 (or `--chown`) and get `--chmod`'s mode;
//! context files are owned by 0:0 unless `--chown`, files from a stage keep their owners.
//!
//! Selection ([`select`]) is separate from placement ([`place`]) so that the planner can
//! hash exactly the files a step reads before anything runs.

use crate::context::ignore::PatternMatcher;
use crate::context::walk::{Kind as CtxKind, Listing};
use crate::layer::index::{self, clean, name_of, parent_of, resolve_in_root, Node, View};
use std::path::PathBuf;
use std::sync::Arc;

/// An error in a COPY or ADD; the caller adds the Dockerfile line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyError {
    #[error("\"{0}\" not found in build context")]
    NotFoundInContext(String),
    #[error("\"{0}\" not found in stage {1}")]
    NotFoundInStage(String, String),
    #[error("\"{0}\" is outside the build context")]
    OutsideContext(String),
    #[error("no files matched {0}")]
    NothingMatched(String),
    #[error("When using COPY with more than one source file, the destination must be a directory and end with a /")]
    DestNotDir,
    #[error("invalid chmod parameter: '{0}'. it should be octal string and between 0 and 07777")]
    BadChmod(String),
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("{0}")]
    Pattern(String),
    #[error("{0}")]
    Read(String),
}

impl From<index::IndexError> for CopyError {
    fn from(e: index::IndexError) -> Self {
        CopyError::Read(e.to_string())
    }
}

/// Where a source entry's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A file on disk (a context file).
    Disk(PathBuf),
    /// A byte range of a layer tar (a file of a stage or image).
    Tar {
        tar: PathBuf,
        offset: u64,
        size: u64,
    },
    /// Inline bytes (a heredoc).
    Bytes(Arc<Vec<u8>>),
}

/// The kind of a source entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrcKind {
    File(Data),
    Dir,
    Symlink(String),
}

/// One entry a COPY reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrcEntry {
    /// Cleaned path in the source tree.
    pub path: String,
    pub kind: SrcKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
}

/// A tree COPY can read from: the build context, or a stage's or image's filesystem.
pub trait SourceFs {
    /// The entry at `path` after resolving symlinks among its parents (and the last
    /// component when `follow`), or None.
    fn stat(&self, path: &str, follow: bool) -> Result<Option<SrcEntry>, CopyError>;
    /// Every entry strictly below directory `dir` (a resolved path), not following links,
    /// in path order.
    fn walk(&self, dir: &str) -> Result<Vec<SrcEntry>, CopyError>;
    /// The names in directory `dir` (a resolved path).
    fn names(&self, dir: &str) -> Result<Vec<String>, CopyError>;
    /// Whether sources are context paths (errors say "build context").
    fn is_context(&self) -> bool;
}

/// The build context as a [`SourceFs`].
pub struct ContextFs<'a> {
    pub listing: &'a Listing,
}

fn mtime_secs(ns: i128) -> u64 {
    if ns <= 0 {
        0
    } else {
        (ns / 1_000_000_000) as u64
    }
}

impl ContextFs<'_> {
    fn node(&self, p: &str) -> Option<Node> {
        match self.listing.get(p) {
            Some(e) => Some(match &e.kind {
                CtxKind::Dir => Node::Dir,
                CtxKind::Symlink(t) => Node::Symlink(t.to_string_lossy().into_owned()),
                _ => Node::Other,
            }),
            // A directory excluded by .dockerignore whose children were re-included is
            // not listed itself, but it exists as their parent.
            None if self.listing.subtree(p).next().is_some() => Some(Node::Dir),
            None => None,
        }
    }

    fn entry(&self, p: &str) -> Option<SrcEntry> {
        if let Some(e) = self.listing.get(p) {
            let kind = match &e.kind {
                CtxKind::File => SrcKind::File(Data::Disk(self.listing.disk_path(&e.path))),
                CtxKind::Dir => SrcKind::Dir,
                CtxKind::Symlink(t) => SrcKind::Symlink(t.to_string_lossy().into_owned()),
                // Sockets, FIFOs and devices are copied as empty regular files, as
                // BuildKit does for a socket in the context.
                CtxKind::Other => SrcKind::File(Data::Bytes(Arc::new(Vec::new()))),
            };
            let size = if e.kind == CtxKind::File { e.size } else { 0 };
            return Some(SrcEntry {
                path: e.path.clone(),
                kind,
                mode: e.mode & 0o7777,
                uid: 0,
                gid: 0,
                size,
                mtime: mtime_secs(e.mtime_ns),
            });
        }
        if p.is_empty() || self.listing.subtree(p).next().is_some() {
            return Some(SrcEntry {
                path: p.to_string(),
                kind: SrcKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: 0,
            });
        }
        None
    }
}

impl SourceFs for ContextFs<'_> {
    fn stat(&self, path: &str, follow: bool) -> Result<Option<SrcEntry>, CopyError> {
        let resolved = resolve_in_root(path, follow, |p| self.node(p))?;
        Ok(resolved.and_then(|p| self.entry(&p)))
    }

    fn walk(&self, dir: &str) -> Result<Vec<SrcEntry>, CopyError> {
        Ok(self
            .listing
            .subtree(dir)
            .filter(|e| e.path != dir)
            .filter_map(|e| self.entry(&e.path))
            .collect())
    }

    fn names(&self, dir: &str) -> Result<Vec<String>, CopyError> {
        let mut out: Vec<String> = self
            .listing
            .subtree(dir)
            .filter(|e| e.path != dir)
            .filter_map(|e| {
                let rest = if dir.is_empty() {
                    e.path.as_str()
                } else {
                    &e.path[dir.len() + 1..]
                };
                rest.split('/').next().map(str::to_string)
            })
            .collect();
        out.dedup();
        Ok(out)
    }

    fn is_context(&self) -> bool {
        true
    }
}

/// A stage's or image's filesystem as a [`SourceFs`].
pub struct ViewFs<'a> {
    pub view: &'a View,
    /// The stage or image name, for errors.
    pub name: String,
}

impl ViewFs<'_> {
    fn entry(&self, found: &index::Found<'_>) -> SrcEntry {
        let m = found.meta;
        let kind = match &m.kind {
            index::Kind::Dir => SrcKind::Dir,
            index::Kind::Symlink(t) => SrcKind::Symlink(t.clone()),
            index::Kind::File | index::Kind::Hardlink(_) => {
                let (tar, offset, size) = self.view.data_location(found);
                SrcKind::File(Data::Tar {
                    tar: tar.to_path_buf(),
                    offset,
                    size,
                })
            }
            // Device nodes and FIFOs are not copied out of a stage as content.
            _ => SrcKind::File(Data::Bytes(Arc::new(Vec::new()))),
        };
        let size = match &kind {
            SrcKind::File(Data::Tar { size, .. }) => *size,
            _ => 0,
        };
        SrcEntry {
            path: found.path.clone(),
            kind,
            mode: m.mode & 0o7777,
            uid: m.uid,
            gid: m.gid,
            size,
            mtime: m.mtime,
        }
    }
}

impl SourceFs for ViewFs<'_> {
    fn stat(&self, path: &str, follow: bool) -> Result<Option<SrcEntry>, CopyError> {
        Ok(self.view.resolve(path, follow)?.map(|f| self.entry(&f)))
    }

    fn walk(&self, dir: &str) -> Result<Vec<SrcEntry>, CopyError> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_string()];
        while let Some(d) = stack.pop() {
            let mut children = Vec::new();
            for name in self.view.read_dir(&d) {
                let p = if d.is_empty() {
                    name
                } else {
                    format!("{d}/{name}")
                };
                if let Some(found) = self.view.resolve(&p, false)? {
                    let e = self.entry(&found);
                    if e.kind == SrcKind::Dir {
                        children.push(p.clone());
                    }
                    out.push(SrcEntry { path: p, ..e });
                }
            }
            stack.extend(children.into_iter().rev());
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn names(&self, dir: &str) -> Result<Vec<String>, CopyError> {
        Ok(self.view.read_dir(dir))
    }

    fn is_context(&self) -> bool {
        false
    }
}

/// One source entry chosen by a COPY, with its path relative to the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub entry: SrcEntry,
    /// Where it goes, relative to the destination directory (or "" when the destination
    /// names the file itself).
    pub rel: String,
    /// The source argument it came from (for errors and cache-miss reasons).
    pub source: String,
    /// The name a top-level file source has in the destination directory: the name it
    /// was asked by (a dereferenced symlink keeps the link's name).
    pub name: String,
}

/// What a COPY reads, and whether the destination must be a directory.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub items: Vec<Selected>,
    /// True when the destination is a directory because of what was selected (a
    /// directory source).
    pub dest_is_dir: bool,
    /// How many top-level sources were matched (wildcards expanded, heredocs counted):
    /// more than one needs a destination ending in `/`.
    pub sources: usize,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Match one path component against a glob (Go's filepath.Match: `*`, `?`, `[...]`,
/// `[^...]`, `\` escapes).
pub fn glob_component(pattern: &str, name: &str) -> Result<bool, CopyError> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn class(p: &[char], mut i: usize, c: char) -> Result<(bool, usize), CopyError> {
        let bad = || CopyError::Pattern("syntax error in pattern".into());
        let negate = p.get(i) == Some(&'^') || p.get(i) == Some(&'!');
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        loop {
            let Some(&ch) = p.get(i) else {
                return Err(bad());
            };
            if ch == ']' && !first {
                return Ok((matched != negate, i + 1));
            }
            first = false;
            let mut lo = ch;
            i += 1;
            if lo == '\\' {
                lo = *p.get(i).ok_or_else(bad)?;
                i += 1;
            }
            let mut hi = lo;
            if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
                hi = p[i + 1];
                i += 2;
                if hi == '\\' {
                    hi = *p.get(i).ok_or_else(bad)?;
                    i += 1;
                }
            }
            if lo <= c && c <= hi {
                matched = true;
            }
        }
    }
    fn go(p: &[char], n: &[char]) -> Result<bool, CopyError> {
        let (mut pi, mut ni) = (0, 0);
        let (mut star_p, mut star_n) = (usize::MAX, 0);
        while ni < n.len() {
            if pi < p.len() {
                match p[pi] {
                    '*' => {
                        star_p = pi;
                        star_n = ni;
                        pi += 1;
                        continue;
                    }
                    '?' => {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                    '[' => {
                        let (ok, next) = class(p, pi + 1, n[ni])?;
                        if ok {
                            pi = next;
                            ni += 1;
                            continue;
                        }
                    }
                    '\\' if pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                        pi += 2;
                        ni += 1;
                        continue;
                    }
                    '\\' if pi + 1 < p.len() => {}
                    c if c == n[ni] => {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            if star_p != usize::MAX {
                pi = star_p + 1;
                star_n += 1;
                ni = star_n;
                continue;
            }
            return Ok(false);
        }
        while pi < p.len() && p[pi] == '*' {
            pi += 1;
        }
        Ok(pi == p.len())
    }
    go(&p, &n)
}

/// Expand a source with wildcards into the matching paths, component by component.
fn glob(fs: &dyn SourceFs, pattern: &str) -> Result<Vec<String>, CopyError> {
    let mut current = vec![String::new()];
    for comp in clean(pattern).split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &current {
            if has_glob(comp) {
                let Some(dir) = fs.stat(base, true)? else {
                    continue;
                };
                if dir.kind != SrcKind::Dir {
                    continue;
                }
                for name in fs.names(&dir.path)? {
                    if glob_component(comp, &name)? {
                        next.push(join(base, &name));
                    }
                }
            } else {
                next.push(join(base, comp));
            }
        }
        current = next;
    }
    let mut out = Vec::new();
    for p in current {
        if fs.stat(&p, false)?.is_some() {
            out.push(p);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// Check a context source path: `..` may not climb out of the context.
fn check_context_path(src: &str) -> Result<(), CopyError> {
    let mut depth: i64 = 0;
    for c in src.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(CopyError::OutsideContext(src.to_string()));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// For `--parents`: the part of a source path that is kept under the destination. A
/// `/./` marks where it starts; otherwise the whole path is kept.
fn parents_base(src: &str) -> Option<String> {
    src.find("/./").map(|i| clean(&src[..i]))
}

/// Choose the entries a COPY reads from `fs`.
pub fn select(
    fs: &dyn SourceFs,
    sources: &[String],
    parents: bool,
    exclude: Option<&PatternMatcher>,
) -> Result<Selection, CopyError> {
    // No path sources is fine: a COPY of heredocs only selects nothing here.
    let mut sel = Selection::default();
    let mut any_glob_matched = false;
    let mut had_glob = false;
    for src in sources {
        if fs.is_context() {
            check_context_path(src)?;
        }
        let matches = if has_glob(src) {
            had_glob = true;
            // One match with no trailing slash names the file; several need a directory.
            let m = glob(fs, src)?;
            any_glob_matched |= !m.is_empty();
            m
        } else {
            vec![clean(src)]
        };
        let keep_base = if parents { parents_base(src) } else { None };
        sel.sources += matches.len();
        for path in matches {
            // The named source itself is dereferenced; links inside it are not.
            let Some(top) = fs.stat(&path, true)? else {
                return Err(if fs.is_context() {
                    CopyError::NotFoundInContext(src.clone())
                } else {
                    CopyError::NotFoundInStage(src.clone(), String::new())
                });
            };
            let prefix = if parents {
                match &keep_base {
                    Some(base) => path
                        .strip_prefix(base.as_str())
                        .map(|r| r.trim_start_matches('/').to_string())
                        .unwrap_or_else(|| path.clone()),
                    None => path.clone(),
                }
            } else {
                String::new()
            };
            let excluded = |rel: &str| -> Result<bool, CopyError> {
                match exclude {
                    Some(m) => m
                        .matches_or_parent_matches(rel)
                        .map_err(|e| CopyError::Pattern(e.to_string())),
                    None => Ok(false),
                }
            };
            if top.kind == SrcKind::Dir {
                sel.dest_is_dir = true;
                if parents && !prefix.is_empty() {
                    sel.items.push(Selected {
                        entry: top.clone(),
                        rel: prefix.clone(),
                        source: src.clone(),
                        name: name_of(&path).to_string(),
                    });
                }
                for e in fs.walk(&top.path)? {
                    let below = &e.path[top.path.len()..].trim_start_matches('/').to_string();
                    if excluded(below)? {
                        continue;
                    }
                    sel.items.push(Selected {
                        rel: join(&prefix, below),
                        name: name_of(&e.path).to_string(),
                        entry: e,
                        source: src.clone(),
                    });
                }
            } else {
                let name = name_of(&path).to_string();
                if excluded(&name)? {
                    continue;
                }
                // Empty: the destination decides (a directory gets `name`, else the
                // destination is the file's new name).
                let rel = if parents {
                    prefix.clone()
                } else {
                    String::new()
                };
                sel.items.push(Selected {
                    entry: top,
                    rel,
                    source: src.clone(),
                    name,
                });
            }
        }
    }
    if had_glob && !any_glob_matched && sel.items.is_empty() {
        return Err(CopyError::NothingMatched(sources.join(" ")));
    }
    // A single file source into a directory destination is named after itself; that
    // is decided in `place`, which knows the destination.
    Ok(sel)
}

/// A file's new mode from `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    /// chmod(1)-style clauses applied to the source mode.
    Symbolic(Vec<SymClause>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymClause {
    who: u32,
    ops: Vec<(char, u32, bool)>,
}

impl Chmod {
    /// Parse an octal (`0644`, `777`) or symbolic (`u=rw,g=r,o=r`, `a+X`) mode.
    pub fn parse(s: &str) -> Result<Chmod, CopyError> {
        let bad = || CopyError::BadChmod(s.to_string());
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let v = u32::from_str_radix(s, 8).map_err(|_| bad())?;
            if v > 0o7777 {
                return Err(bad());
            }
            return Ok(Chmod::Octal(v));
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let mut chars = clause.chars().peekable();
            let mut who = 0;
            while let Some(&c) = chars.peek() {
                let bits = match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => break,
                };
                who |= bits;
                chars.next();
            }
            let mut ops = Vec::new();
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return Err(bad());
                }
                let mut perm = 0;
                let mut big_x = false;
                while let Some(&c) = chars.peek() {
                    match c {
                        'r' => perm |= 0o444,
                        'w' => perm |= 0o222,
                        'x' => perm |= 0o111,
                        'X' => big_x = true,
                        's' => perm |= 0o6000,
                        't' => perm |= 0o1000,
                        _ => break,
                    }
                    chars.next();
                }
                ops.push((op, perm, big_x));
            }
            if ops.is_empty() {
                return Err(bad());
            }
            clauses.push(SymClause { who, ops });
        }
        if clauses.is_empty() {
            return Err(bad());
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode for an entry whose current mode is `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    // No who means "a", minus nothing (umask is not applied in builds).
                    let who = if c.who == 0 { 0o7777 } else { c.who };
                    for &(op, perm, big_x) in &c.ops {
                        let mut p = perm;
                        if big_x && (is_dir || m & 0o111 != 0) {
                            p |= 0o111;
                        }
                        let p = p & who;
                        match op {
                            '+' => m |= p,
                            '-' => m &= !p,
                            _ => m = (m & !who) | p,
                        }
                    }
                }
                m
            }
        }
    }
}

/// Resolved `--chown` ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
}

fn lookup_db(db: Option<&[u8]>, name: &str, field: usize) -> Option<(u64, Option<u64>)> {
    let text = String::from_utf8_lossy(db?);
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.first() == Some(&name) {
            let id = f.get(field)?.parse().ok()?;
            let gid = f.get(3).and_then(|g| g.parse().ok());
            return Some((id, gid));
        }
    }
    None
}

/// Resolve `--chown=user[:group]` against a stage's /etc/passwd and /etc/group. A
/// numeric user without a group uses the same number for the group; a user name without
/// a group uses that user's primary group.
pub fn resolve_chown(
    spec: &str,
    passwd: Option<&[u8]>,
    group: Option<&[u8]>,
) -> Result<Owner, CopyError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match user.parse::<u64>() {
        Ok(n) => (n, None),
        Err(_) => {
            let (uid, gid) = lookup_db(passwd, user, 2)
                .ok_or_else(|| CopyError::UnknownUser(user.to_string()))?;
            (uid, gid)
        }
    };
    let gid = match grp {
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => lookup_db(group, g, 2)
                .map(|(id, _)| id)
                .ok_or_else(|| CopyError::UnknownGroup(g.to_string()))?,
        },
        None => primary.unwrap_or(uid),
    };
    Ok(Owner { uid, gid })
}

/// What a COPY writes: one entry of the new layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Cleaned path in the stage's filesystem.
    pub path: String,
    pub kind: SrcKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

/// How a COPY writes what it selected.
#[derive(Debug, Clone, Default)]
pub struct Placement<'a> {
    /// The destination as written (expanded).
    pub dest: &'a str,
    /// The stage's WORKDIR (absolute).
    pub workdir: &'a str,
    pub chown: Option<Owner>,
    pub chmod: Option<&'a Chmod>,
    /// Times used for directories the copy creates (SOURCE_DATE_EPOCH, or 0).
    pub created_mtime: u64,
}

/// Lay the selected entries out under the destination, in the stage's filesystem
/// `target`. Returns the layer's entries in path order, parents first.
pub fn place(sel: &Selection, how: &Placement<'_>, target: &View) -> Result<Vec<Item>, CopyError> {
    let dest_raw = how.dest;
    let dest_abs = if dest_raw.starts_with('/') {
        dest_raw.to_string()
    } else {
        format!("{}/{}", how.workdir, dest_raw)
    };
    let trailing_dir = dest_raw.is_empty()
        || dest_raw == "."
        || dest_raw.ends_with('/')
        || dest_raw.ends_with("/.")
        || dest_raw.ends_with("/..")
        || dest_raw == "..";
    // Follow symlinks in the destination's parents inside the stage's root; an existing
    // directory (or a link to one) as the destination makes it a directory.
    let cleaned = clean(&dest_abs);
    let existing = target.resolve(&cleaned, true)?;
    let exists_as_dir = existing.as_ref().is_some_and(|f| f.meta.is_dir());
    if sel.sources > 1 && !trailing_dir {
        return Err(CopyError::DestNotDir);
    }
    let dest_dir_mode = sel.dest_is_dir || trailing_dir || exists_as_dir;
    let dest = match &existing {
        Some(f) => f.path.clone(),
        None => resolve_parent(target, &cleaned)?,
    };

    let mut items: Vec<Item> = Vec::new();
    let mut created_dirs: std::collections::BTreeSet<String> = Default::default();
    let owner = |e: &SrcEntry| match how.chown {
        Some(o) => (o.uid, o.gid),
        None => (e.uid, e.gid),
    };
    // Parent directories the copy has to create: 0:0 (or --chown), mode 0755 (or --chmod).
    let ensure_dirs = |path: &str,
                       items: &mut Vec<Item>,
                       created: &mut std::collections::BTreeSet<String>|
     -> Result<(), CopyError> {
        let mut p = parent_of(path);
        let mut missing = Vec::new();
        while !p.is_empty() && !created.contains(p) {
            match target.resolve(p, true)? {
                Some(f) if f.meta.is_dir() => break,
                _ => missing.push(p.to_string()),
            }
            p = parent_of(p);
        }
        for d in missing.into_iter().rev() {
            created.insert(d.clone());
            let (uid, gid) = how.chown.map(|o| (o.uid, o.gid)).unwrap_or((0, 0));
            items.push(Item {
                path: d,
                kind: SrcKind::Dir,
                mode: how.chmod.map(|c| c.apply(0o755, true)).unwrap_or(0o755),
                uid,
                gid,
                mtime: how.created_mtime,
            });
        }
        Ok(())
    };

    if dest_dir_mode && existing.is_none() && !dest.is_empty() {
        // The destination directory itself is created.
        let probe = format!("{dest}/x");
        ensure_dirs(&probe, &mut items, &mut created_dirs)?;
    }
    for s in &sel.items {
        let rel = if s.rel.is_empty() && dest_dir_mode {
            s.name.clone()
        } else {
            s.rel.clone()
        };
        let path = if rel.is_empty() {
            dest.clone()
        } else {
            join(&dest, &rel)
        };
        if path.is_empty() {
            continue;
        }
        ensure_dirs(&path, &mut items, &mut created_dirs)?;
        let (uid, gid) = owner(&s.entry);
        let is_dir = s.entry.kind == SrcKind::Dir;
        let mode = match (how.chmod, &s.entry.kind) {
            (_, SrcKind::Symlink(_)) => 0o777,
            (Some(c), _) => c.apply(s.entry.mode, is_dir),
            (None, _) => s.entry.mode,
        };
        if is_dir {
            created_dirs.insert(path.clone());
        }
        items.push(Item {
            path,
            kind: s.entry.kind.clone(),
            mode,
            uid,
            gid,
            mtime: s.entry.mtime,
        });
    }
    // Later sources overwrite earlier ones at the same path; the layer holds the last.
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Item> = items
        .into_iter()
        .rev()
        .filter(|i| seen.insert(i.path.clone()))
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The destination path with symlinks among its existing parents resolved.
fn resolve_parent(target: &View, path: &str) -> Result<String, CopyError> {
    let parent = parent_of(path);
    let name = name_of(path);
    if parent.is_empty() {
        return Ok(name.to_string());
    }
    match target.resolve(parent, true)? {
        Some(f) => Ok(join(&f.path, name)),
        None => Ok(join(&resolve_parent(target, parent)?, name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::index::{Layer, LayerIndex};

    fn ctx(files: &[(&str, &str)]) -> (tempfile::TempDir, Listing) {
        let d = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        let m = PatternMatcher::new(&[] as &[&str]).unwrap();
        let l = Listing::scan(d.path(), &m).unwrap();
        (d, l)
    }

    /// A view with one layer holding `dirs` and `links` (path → target).
    fn view(dirs: &[&str], links: &[(&str, &str)]) -> (tempfile::TempDir, View) {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for dir in dirs {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o750);
            h.set_uid(500);
            h.set_gid(600);
            h.set_size(0);
            b.append_data(&mut h, dir, &[][..]).unwrap();
        }
        for (p, t) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, p, t).unwrap();
        }
        let tar = d.path().join("l.tar");
        std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
        let index = std::sync::Arc::new(LayerIndex::read_file(&tar).unwrap());
        (d, View::new(vec![Layer { index, tar }]))
    }

    fn paths(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.path.as_str()).collect()
    }

    fn copy(l: &Listing, srcs: &[&str], dest: &str, target: &View) -> Result<Vec<Item>, CopyError> {
        let fs = ContextFs { listing: l };
        let srcs: Vec<String> = srcs.iter().map(|s| s.to_string()).collect();
        let sel = select(&fs, &srcs, false, None)?;
        place(
            &sel,
            &Placement {
                dest,
                workdir: "/work",
                ..Default::default()
            },
            target,
        )
    }

    #[test]
    fn directory_sources_copy_their_contents() {
        let (_d, l) = ctx(&[("sub/dir1/dir2/foo", "x")]);
        let (_v, v) = view(&[], &[]);
        for src in ["sub/dir1", "sub/dir1/", "sub/dir1/."] {
            let items = copy(&l, &[src], "/dest", &v).unwrap();
            assert_eq!(
                paths(&items),
                vec!["dest", "dest/dir2", "dest/dir2/foo"],
                "{src}"
            );
        }
        let items = copy(&l, &["sub/*"], "/w/", &v).unwrap();
        assert_eq!(paths(&items), vec!["w", "w/dir2", "w/dir2/foo"]);
    }

    #[test]
    fn file_destinations_and_trailing_slashes() {
        let (_d, l) = ctx(&[("a.go", "a"), ("b.go", "b"), ("f1.go", "f")]);
        let (_v, v) = view(&[], &[]);
        assert_eq!(
            paths(&copy(&l, &["a.go"], "/x/y", &v).unwrap()),
            vec!["x", "x/y"]
        );
        assert_eq!(
            paths(&copy(&l, &["a.go"], "/x/y/", &v).unwrap()),
            vec!["x", "x/y", "x/y/a.go"]
        );
        // One wildcard match without a trailing slash names the file.
        assert_eq!(
            paths(&copy(&l, &["f*.go"], "/foo2.go", &v).unwrap()),
            vec!["foo2.go"]
        );
        // Relative destinations resolve against WORKDIR; `.` is WORKDIR itself.
        assert_eq!(
            paths(&copy(&l, &["a.go"], ".", &v).unwrap()),
            vec!["work", "work/a.go"]
        );
        assert_eq!(
            copy(&l, &["a.go", "b.go"], "/x", &v).unwrap_err(),
            CopyError::DestNotDir
        );
        assert_eq!(
            paths(&copy(&l, &["*.go"], "/g/", &v).unwrap()),
            vec!["g", "g/a.go", "g/b.go", "g/f1.go"]
        );
    }

    #[test]
    fn missing_sources_and_escapes_are_errors() {
        let (_d, l) = ctx(&[("foo", "x")]);
        let (_v, v) = view(&[], &[]);
        assert_eq!(
            copy(&l, &["nope"], "/", &v).unwrap_err(),
            CopyError::NotFoundInContext("nope".into())
        );
        assert_eq!(
            copy(&l, &["../x"], "/", &v).unwrap_err(),
            CopyError::OutsideContext("../x".into())
        );
        // A wildcard that matches nothing is fine beside other sources.
        assert_eq!(
            paths(&copy(&l, &["foo", "nomatch*"], "/d/", &v).unwrap()),
            vec!["d", "d/foo"]
        );
        assert!(matches!(
            copy(&l, &["nomatch*"], "/d/", &v).unwrap_err(),
            CopyError::NothingMatched(_)
        ));
    }

    #[test]
    fn symlinked_sources_are_dereferenced_at_the_top_only() {
        let (d, _) = ctx(&[("bar", "content"), ("sub/x", "x")]);
        std::os::unix::fs::symlink("bar", d.path().join("foo")).unwrap();
        std::os::unix::fs::symlink("../bar", d.path().join("sub/link")).unwrap();
        let l = Listing::scan(d.path(), &PatternMatcher::new(&[] as &[&str]).unwrap()).unwrap();
        let (_v, v) = view(&[], &[]);
        let items = copy(&l, &["foo"], "/", &v).unwrap();
        assert_eq!(paths(&items), vec!["foo"]);
        assert!(matches!(items[0].kind, SrcKind::File(_)));
        let items = copy(&l, &["sub"], "/s", &v).unwrap();
        let link = items.iter().find(|i| i.path == "s/link").unwrap();
        assert_eq!(link.kind, SrcKind::Symlink("../bar".into()));
    }

    #[test]
    fn destinations_follow_symlinks_inside_the_root_and_keep_existing_dirs() {
        let (_d, l) = ctx(&[("foo", "x")]);
        let (_v, v) = view(
            &["tmp", "tmp/symlink-target", "existing"],
            &[("symlink", "../tmp/symlink-target")],
        );
        let items = copy(&l, &["foo"], "/symlink/", &v).unwrap();
        assert_eq!(paths(&items), vec!["tmp/symlink-target/foo"]);
        // An existing directory is not re-emitted (its owner stays 500:600).
        let items = copy(&l, &["foo"], "/existing/new/", &v).unwrap();
        assert_eq!(paths(&items), vec!["existing/new", "existing/new/foo"]);
        assert_eq!((items[0].uid, items[0].gid, items[0].mode), (0, 0, 0o755));
    }

    #[test]
    fn chown_and_chmod_apply_to_entries_and_created_dirs() {
        let (_d, l) = ctx(&[("foo", "x")]);
        let (_v, v) = view(&[], &[]);
        let fs = ContextFs { listing: &l };
        let sel = select(&fs, &["foo".to_string()], false, None).unwrap();
        let chmod = Chmod::parse("777").unwrap();
        let items = place(
            &sel,
            &Placement {
                dest: "/parent/foo",
                workdir: "/",
                chown: Some(Owner { uid: 300, gid: 400 }),
                chmod: Some(&chmod),
                created_mtime: 0,
            },
            &v,
        )
        .unwrap();
        for i in &items {
            assert_eq!((i.uid, i.gid, i.mode), (300, 400, 0o777), "{}", i.path);
        }
    }

    #[test]
    fn chmod_parses_octal_and_symbolic_modes() {
        assert_eq!(Chmod::parse("0644").unwrap().apply(0o700, false), 0o644);
        assert_eq!(Chmod::parse("0").unwrap().apply(0o700, false), 0);
        assert_eq!(Chmod::parse("go-w").unwrap().apply(0o666, false), 0o644);
        assert_eq!(
            Chmod::parse("u=rw,g=r,o=r").unwrap().apply(0o777, false),
            0o644
        );
        assert_eq!(Chmod::parse("a+X").unwrap().apply(0o644, true), 0o755);
        assert_eq!(Chmod::parse("a+X").unwrap().apply(0o644, false), 0o644);
        assert_eq!(Chmod::parse("a+X").unwrap().apply(0o744, false), 0o755);
        assert_eq!(
            Chmod::parse("u+rw,g+r,o-x,o+w")
                .unwrap()
                .apply(0o701, false),
            0o742
        );
        for bad in ["64a", "10000", "", "u*x"] {
            assert_eq!(
                Chmod::parse(bad).unwrap_err(),
                CopyError::BadChmod(bad.into())
            );
        }
        assert_eq!(
            CopyError::BadChmod("64a".into()).to_string(),
            "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777"
        );
    }

    #[test]
    fn chown_resolves_names_from_passwd_and_group() {
        let passwd =
            b"root:x:0:0::/root:/bin/sh\ndaemon:x:1:1::/:/bin/false\napp:x:1000:1000::/:/bin/sh\n";
        let group = b"root:x:0:\nnobody:x:65534:\nstaff:x:50:\n";
        let r = |s| resolve_chown(s, Some(passwd), Some(group));
        assert_eq!(r("daemon").unwrap(), Owner { uid: 1, gid: 1 });
        assert_eq!(
            r("1000:nobody").unwrap(),
            Owner {
                uid: 1000,
                gid: 65534
            }
        );
        assert_eq!(r("app:staff").unwrap(), Owner { uid: 1000, gid: 50 });
        assert_eq!(r("42").unwrap(), Owner { uid: 42, gid: 42 });
        assert_eq!(
            r("ghost").unwrap_err(),
            CopyError::UnknownUser("ghost".into())
        );
        assert_eq!(
            r("app:ghosts").unwrap_err(),
            CopyError::UnknownGroup("ghosts".into())
        );
    }

    #[test]
    fn globs_match_like_go_filepath_match() {
        let m = |p, n| glob_component(p, n).unwrap();
        assert!(m("*.go", "a.go"));
        assert!(!m("*.go", "a.goo"));
        assert!(m("f?o", "foo"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[^a-c]x", "bx"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(glob_component("[", "a").is_err());
    }

    #[test]
    fn parents_keep_the_source_path() {
        let (_d, l) = ctx(&[("foo1/foo2/bar", "x"), ("test/a/b/c/d", "y")]);
        let (_v, v) = view(&[], &[]);
        let fs = ContextFs { listing: &l };
        let sel = select(&fs, &["foo1/foo2/bar".to_string()], true, None).unwrap();
        let items = place(
            &sel,
            &Placement {
                dest: "/",
                workdir: "/",
                ..Default::default()
            },
            &v,
        )
        .unwrap();
        assert_eq!(paths(&items), vec!["foo1", "foo1/foo2", "foo1/foo2/bar"]);
        let sel = select(&fs, &["test/a/b/./c/d".to_string()], true, None).unwrap();
        let items = place(
            &sel,
            &Placement {
                dest: "/out/",
                workdir: "/",
                ..Default::default()
            },
            &v,
        )
        .unwrap();
        assert_eq!(paths(&items), vec!["out", "out/c", "out/c/d"]);
    }

    #[test]
    fn excludes_drop_matching_paths() {
        let (_d, l) = ctx(&[("a/x.png", "1"), ("a/y.txt", "2"), ("b.png", "3")]);
        let (_v, v) = view(&[], &[]);
        let fs = ContextFs { listing: &l };
        let ex = PatternMatcher::new(&["*/*.png", "*.png"]).unwrap();
        let sel = select(&fs, &[".".to_string()], false, Some(&ex)).unwrap();
        let items = place(
            &sel,
            &Placement {
                dest: "/d/",
                workdir: "/",
                ..Default::default()
            },
            &v,
        )
        .unwrap();
        assert_eq!(paths(&items), vec!["d", "d/a", "d/a/y.txt"]);
    }
}
