//! Listing the build context: every entry that `.dockerignore` keeps, in byte order of
//! its slash-separated path relative to the context root.
//!
//! Entries are `lstat`ed, never followed: a symlink is listed as a symlink with its
//! target, so nothing outside the context is ever read through one. An excluded
//! directory is skipped whole unless the patterns have `!` exceptions, which may
//! re-include something beneath it (Docker's rule).

use super::ignore::{MatchInfo, PatternMatcher};
use super::ContextError;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What kind of file an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(PathBuf),
    /// FIFOs, sockets and devices: listed so a COPY can report them, never read.
    Other,
}

/// One entry of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Slash-separated path relative to the context root (no leading `./` or `/`).
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl Entry {
    fn from_metadata(path: String, md: &fs::Metadata, kind: Kind) -> Self {
        Entry {
            path,
            kind,
            mode: md.mode(),
            size: md.size(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
            ino: md.ino(),
            dev: md.dev(),
        }
    }
}

/// The listed context.
#[derive(Debug, Clone)]
pub struct Listing {
    pub root: PathBuf,
    /// Sorted by `path`.
    pub entries: Vec<Entry>,
}

impl Listing {
    /// Walk `root`, keeping what `matcher` does not exclude.
    pub fn scan(root: &Path, matcher: &PatternMatcher) -> Result<Listing, ContextError> {
        let md = fs::metadata(root).map_err(|e| ContextError::io(root, e))?;
        if !md.is_dir() {
            return Err(ContextError::NotADirectory(root.to_path_buf()));
        }
        let mut entries = Vec::new();
        walk_dir(
            root,
            "",
            MatchInfo::default(),
            matcher,
            matcher.exclusions(),
            &mut entries,
        )?;
        Ok(Listing {
            root: root.to_path_buf(),
            entries,
        })
    }

    /// The entry at `path` (slash-separated, relative), if the context has it.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Every entry at or below `dir` ("" for the whole context), in order: `dir` itself,
    /// then the entries under `dir/`, which are contiguous in byte order (though not
    /// next to `dir`: `a.b` sorts between `a` and `a/x`).
    pub fn subtree<'a>(&'a self, dir: &'a str) -> Box<dyn Iterator<Item = &'a Entry> + 'a> {
        if dir.is_empty() {
            return Box::new(self.entries.iter());
        }
        let prefix = format!("{dir}/");
        let start = self
            .entries
            .partition_point(|e| e.path.as_str() < prefix.as_str());
        let below = self.entries[start..]
            .iter()
            .take_while(move |e| e.path.starts_with(&prefix));
        Box::new(self.get(dir).into_iter().chain(below))
    }

    /// The absolute path of an entry on disk.
    pub fn disk_path(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

fn walk_dir(
    root: &Path,
    rel: &str,
    parent: MatchInfo,
    matcher: &PatternMatcher,
    has_exceptions: bool,
    out: &mut Vec<Entry>,
) -> Result<(), ContextError> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(|e| ContextError::io(&dir, e))?
        .map(|r| r.map(|d| d.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| ContextError::io(&dir, e))?;
    // Byte order of the full path equals byte order of names within one directory
    // only if children sort right after their parent: "a/b" < "a.c" would break it,
    // so the caller sorts once at the end instead.
    names.sort();
    for name in names {
        let name_str = name.to_string_lossy();
        let child_rel = if rel.is_empty() {
            name_str.into_owned()
        } else {
            format!("{rel}/{name_str}")
        };
        let child_path = dir.join(&name);
        let md = fs::symlink_metadata(&child_path).map_err(|e| ContextError::io(&child_path, e))?;
        let (excluded, info) = matcher.matches_using_parent_results(&child_rel, parent)?;
        let ft = md.file_type();
        let skipped = excluded && (!ft.is_dir() || !has_exceptions);
        if name.to_str().is_none() && !skipped {
            return Err(ContextError::NonUtf8Name(dir.join(&name)));
        }
        if ft.is_dir() {
            if excluded && !has_exceptions {
                continue;
            }
            if !excluded {
                out.push(Entry::from_metadata(child_rel.clone(), &md, Kind::Dir));
            }
            walk_dir(root, &child_rel, info, matcher, has_exceptions, out)?;
            continue;
        }
        if excluded {
            continue;
        }
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            let target =
                fs::read_link(&child_path).map_err(|e| ContextError::io(&child_path, e))?;
            Kind::Symlink(target)
        } else {
            Kind::Other
        };
        out.push(Entry::from_metadata(child_rel, &md, kind));
    }
    if rel.is_empty() {
        out.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(())
}
