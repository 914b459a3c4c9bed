//! Reading images without unpacking them: an index of each layer tar (path → header
//! metadata and data offset), and a union [`View`] over a stack of indexed layers that
//! applies OCI whiteouts and resolves symlinks inside the root, never outside it.
//!
//! Builds read a stage's filesystem for `COPY --from`, for `--chown` names (the stage's
//! /etc/passwd and /etc/group) and to see what a destination already is; an index makes
//! those reads cost a header scan and a seek, with no snapshot on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The kind of a tar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(String),
    /// A hard link to another path of the same layer.
    Hardlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One entry's metadata, and where its data starts in the tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky (no file-type bits).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub data_offset: u64,
}

impl Meta {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

/// An error reading a layer, naming it.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("reading layer {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
}

/// The entries of one uncompressed layer tar.
#[derive(Debug, Default, Clone)]
pub struct LayerIndex {
    pub entries: BTreeMap<String, Meta>,
    /// Paths deleted by this layer (`.wh.name`).
    pub whiteouts: BTreeSet<String>,
    /// Directories whose lower contents this layer hides (`.wh..wh..opq`).
    pub opaque: BTreeSet<String>,
}

/// Normalise a tar or user path to the index's form: no leading `/` or `./`, no trailing
/// `/`, no `.` components, `..` clamped at the root (it can never leave it).
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// The parent of a cleaned path ("" for a top-level name).
pub fn parent_of(path: &str) -> &str {
    path.rfind('/').map(|i| &path[..i]).unwrap_or("")
}

/// The last component of a cleaned path.
pub fn name_of(path: &str) -> &str {
    path.rfind('/').map(|i| &path[i + 1..]).unwrap_or(path)
}

impl LayerIndex {
    /// Index the tar at `path` (uncompressed).
    pub fn read_file(path: &Path) -> Result<LayerIndex, IndexError> {
        let err = |source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = File::open(path).map_err(err)?;
        let len = f.metadata().map_err(err)?.len();
        // Seek over file data: indexing a layer with a 1 GiB file reads a few headers.
        let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 16, f));
        let idx = Self::from_entries(archive.entries_with_seek().map_err(err)?).map_err(err)?;
        // Seeking never reads the data, so a header promising more than the file holds (a
        // truncated or lying tar) would otherwise only show when a copy comes up short.
        for (name, meta) in &idx.entries {
            let end = meta.data_offset.checked_add(meta.size);
            if end.is_none_or(|end| end > len) {
                return Err(err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{name}: the header promises {} bytes, past the end of the tar",
                        meta.size
                    ),
                )));
            }
        }
        Ok(idx)
    }

    /// Index a tar stream (later entries for the same path replace earlier ones).
    pub fn read<R: Read>(reader: R) -> io::Result<LayerIndex> {
        let mut archive = tar::Archive::new(reader);
        Self::from_entries(archive.entries()?)
    }

    fn from_entries<'a, R: Read + 'a>(
        entries: impl Iterator<Item = io::Result<tar::Entry<'a, R>>>,
    ) -> io::Result<LayerIndex> {
        let mut idx = LayerIndex::default();
        for entry in entries {
            let mut entry = entry?;
            let raw = entry.path_bytes().into_owned();
            let path = clean(&String::from_utf8_lossy(&raw));
            if path.is_empty() && !entry.header().entry_type().is_dir() {
                continue;
            }
            let name = name_of(&path);
            if name == ".wh..wh..opq" {
                idx.opaque.insert(parent_of(&path).to_string());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let parent = parent_of(&path);
                let target = if parent.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{parent}/{hidden}")
                };
                idx.whiteouts.insert(target);
                continue;
            }
            let h = entry.header();
            let link = || {
                h.link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            let dev = || {
                (
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                )
            };
            use tar::EntryType as T;
            let kind = match h.entry_type() {
                T::Directory => Kind::Dir,
                T::Symlink => Kind::Symlink(link()),
                T::Link => Kind::Hardlink(clean(&link())),
                T::Char => {
                    let (a, b) = dev();
                    Kind::Char(a, b)
                }
                T::Block => {
                    let (a, b) = dev();
                    Kind::Block(a, b)
                }
                T::Fifo => Kind::Fifo,
                // pax/gnu extension records are consumed by the reader; anything else
                // with data is a regular file.
                _ => Kind::File,
            };
            let mut xattrs = Vec::new();
            if let Ok(Some(exts)) = entry.pax_extensions() {
                for ext in exts.flatten() {
                    if let Ok(k) = ext.key() {
                        if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                            xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
            let h = entry.header();
            let meta = Meta {
                kind,
                mode: h.mode().unwrap_or(0o644) & 0o7777,
                uid: h.uid().unwrap_or(0),
                gid: h.gid().unwrap_or(0),
                size: entry.size(),
                mtime: h.mtime().unwrap_or(0),
                xattrs,
                data_offset: entry.raw_file_position(),
            };
            // A path replaced later in the same tar: the last one wins, as on extraction.
            idx.whiteouts.remove(&path);
            idx.entries.insert(path, meta);
        }
        Ok(idx)
    }

    /// Whether this layer hides `path` of the layers below it.
    fn hides(&self, path: &str) -> bool {
        if self.whiteouts.contains(path) {
            return true;
        }
        let mut p = path;
        while !p.is_empty() {
            p = parent_of(p);
            if self.whiteouts.contains(p) || (self.opaque.contains(p) && p != path) {
                return true;
            }
            // A non-directory in this layer at an ancestor replaces the whole subtree.
            if let Some(m) = self.entries.get(p) {
                if !m.is_dir() {
                    return true;
                }
            }
        }
        false
    }
}

/// One layer of a view: its index and the tar it reads data from.
#[derive(Debug, Clone)]
pub struct Layer {
    pub index: Arc<LayerIndex>,
    pub tar: PathBuf,
}

/// The merged filesystem of a stack of layers (bottom first).
#[derive(Debug, Clone, Default)]
pub struct View {
    pub layers: Vec<Layer>,
}

/// A resolved entry of a view.
#[derive(Debug, Clone)]
pub struct Found<'a> {
    /// The path after symlink resolution.
    pub path: String,
    pub meta: &'a Meta,
    layer: usize,
}

const MAX_LINKS: usize = 40;

impl View {
    pub fn new(layers: Vec<Layer>) -> Self {
        View { layers }
    }

    /// The entry at exactly `path` (already cleaned; no symlink resolution).
    pub fn lookup(&self, path: &str) -> Option<(usize, &Meta)> {
        if path.is_empty() {
            // The root always exists as a directory, even in an empty view.
            for (i, l) in self.layers.iter().enumerate().rev() {
                if let Some(m) = l.index.entries.get("") {
                    return Some((i, m));
                }
            }
            return Some((usize::MAX, &ROOT_META));
        }
        for (i, l) in self.layers.iter().enumerate().rev() {
            if let Some(m) = l.index.entries.get(path) {
                return Some((i, m));
            }
            if l.index.hides(path) {
                return None;
            }
        }
        None
    }

    /// Resolve `path` inside the root: every symlink among its parents is followed (an
    /// absolute target restarts at the root, `..` stops at the root), and the last
    /// component too when `follow_last`.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Option<Found<'_>>, IndexError> {
        let resolved = resolve_in_root(path, follow_last, |p| {
            self.lookup(p).map(|(_, m)| match &m.kind {
                Kind::Symlink(t) => Node::Symlink(t.clone()),
                Kind::Dir => Node::Dir,
                _ => Node::Other,
            })
        })?;
        Ok(resolved.and_then(|p| {
            self.lookup(&p).map(|(layer, meta)| Found {
                path: p,
                meta,
                layer,
            })
        }))
    }

    /// Where the data of a file found in this view lives: (tar, offset, size).
    pub fn data_location(&self, found: &Found<'_>) -> (&Path, u64, u64) {
        let layer = &self.layers[found.layer.min(self.layers.len().saturating_sub(1))];
        let (offset, size) = match &found.meta.kind {
            Kind::Hardlink(target) => match layer.index.entries.get(target) {
                Some(m) => (m.data_offset, m.size),
                None => (0, 0),
            },
            _ => (found.meta.data_offset, found.meta.size),
        };
        (&layer.tar, offset, size)
    }

    /// The names in directory `dir` (a resolved, cleaned path), merged over the layers.
    pub fn read_dir(&self, dir: &str) -> Vec<String> {
        let mut names = BTreeSet::new();
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        for l in self.layers.iter().rev() {
            for (p, _) in l.index.entries.range(prefix.clone()..) {
                if !p.starts_with(&prefix) {
                    break;
                }
                let rest = &p[prefix.len()..];
                if rest.is_empty() || rest.contains('/') {
                    continue;
                }
                names.insert(rest.to_string());
            }
            if l.index.opaque.contains(dir) || l.index.hides(dir) {
                break;
            }
        }
        names
            .into_iter()
            .filter(|n| {
                let p = format!("{prefix}{n}");
                self.lookup(&p).is_some()
            })
            .collect()
    }

    /// Open the data of a regular file (or a hard link to one) found in this view.
    pub fn open(&self, found: &Found<'_>) -> Result<impl Read, IndexError> {
        let (tar, offset, size) = self.data_location(found);
        let err = |source| IndexError::Io {
            path: tar.to_path_buf(),
            source,
        };
        let mut f = File::open(tar).map_err(err)?;
        f.seek(SeekFrom::Start(offset)).map_err(err)?;
        Ok(f.take(size))
    }

    /// Read a whole small file (e.g. /etc/passwd); None when absent or not a file.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let Some(found) = self.resolve(path, true)? else {
            return Ok(None);
        };
        if !matches!(found.meta.kind, Kind::File | Kind::Hardlink(_)) {
            return Ok(None);
        }
        let mut buf = Vec::new();
        self.open(&found)?
            .read_to_end(&mut buf)
            .map_err(|source| IndexError::Io {
                path: PathBuf::from(path),
                source,
            })?;
        Ok(Some(buf))
    }
}

/// What a path is, for [`resolve_in_root`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    Symlink(String),
    Other,
}

/// Resolve `path` in a tree reached through `lookup` as if the tree were the root
/// filesystem: symlinks among the parents are followed (and the last component when
/// `follow_last`), absolute targets restart at the root and `..` never climbs above it.
/// Returns the resolved, cleaned path, or None when a component is missing or a
/// non-directory has children asked of it.
pub fn resolve_in_root(
    path: &str,
    follow_last: bool,
    lookup: impl Fn(&str) -> Option<Node>,
) -> Result<Option<String>, IndexError> {
    let mut todo: Vec<String> = clean(path)
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .rev()
        .collect();
    let mut cur = String::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        let next = if c == ".." {
            parent_of(&cur).to_string()
        } else if cur.is_empty() {
            c
        } else {
            format!("{cur}/{c}")
        };
        let Some(node) = lookup(&next) else {
            return Ok(None);
        };
        if let Node::Symlink(target) = &node {
            if !todo.is_empty() || follow_last {
                hops += 1;
                if hops > MAX_LINKS {
                    return Err(IndexError::SymlinkLoop {
                        path: path.to_string(),
                    });
                }
                if target.starts_with('/') {
                    cur = String::new();
                }
                for t in target
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .rev()
                {
                    todo.push(t.to_string());
                }
                continue;
            }
        }
        if !todo.is_empty() && node != Node::Dir {
            return Ok(None);
        }
        cur = next;
    }
    Ok(Some(cur))
}

static ROOT_META: Meta = Meta {
    kind: Kind::Dir,
    mode: 0o755,
    uid: 0,
    gid: 0,
    size: 0,
    mtime: 0,
    xattrs: Vec::new(),
    data_offset: 0,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn view(layers: &[Vec<u8>]) -> (tempfile::TempDir, View) {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Vec::new();
        for (i, bytes) in layers.iter().enumerate() {
            let p = dir.path().join(format!("l{i}.tar"));
            std::fs::write(&p, bytes).unwrap();
            v.push(Layer {
                index: Arc::new(LayerIndex::read_file(&p).unwrap()),
                tar: p,
            });
        }
        (dir, View::new(v))
    }

    use tar::EntryType as T;

    #[test]
    fn upper_layers_win_and_whiteouts_delete() {
        let (_d, v) = view(&[
            tar_of(&[
                ("etc", T::Directory, ""),
                ("etc/passwd", T::Regular, "root:x:0:0\n"),
                ("etc/group", T::Regular, "root:x:0:\n"),
                ("data", T::Directory, ""),
                ("data/a", T::Regular, "a"),
                ("data/b", T::Regular, "b"),
            ]),
            tar_of(&[
                ("etc/passwd", T::Regular, "root:x:0:0\napp:x:1000:1000\n"),
                ("etc/.wh.group", T::Regular, ""),
                ("data/.wh..wh..opq", T::Regular, ""),
                ("data/c", T::Regular, "c"),
            ]),
        ]);
        assert_eq!(
            v.read_file("/etc/passwd").unwrap().unwrap(),
            b"root:x:0:0\napp:x:1000:1000\n"
        );
        assert!(v.read_file("etc/group").unwrap().is_none());
        assert_eq!(v.read_dir("data"), vec!["c".to_string()]);
        assert_eq!(v.read_dir("etc"), vec!["passwd".to_string()]);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let (_d, v) = view(&[tar_of(&[
            ("out", T::Directory, ""),
            ("out/sub", T::Directory, ""),
            ("out/sub/foo", T::Regular, "foo"),
            ("sub", T::Symlink, "/out/sub"),
            ("rel", T::Symlink, "out/sub"),
            ("escape", T::Symlink, "../../../../out"),
            ("loop", T::Symlink, "loop"),
        ])]);
        assert_eq!(v.read_file("sub/foo").unwrap().unwrap(), b"foo");
        assert_eq!(v.read_file("rel/foo").unwrap().unwrap(), b"foo");
        // `..` above the root stays at the root.
        assert_eq!(v.read_file("escape/sub/foo").unwrap().unwrap(), b"foo");
        assert!(v.resolve("loop", true).is_err());
        let f = v.resolve("sub", false).unwrap().unwrap();
        assert!(matches!(f.meta.kind, Kind::Symlink(_)));
    }

    #[test]
    fn hardlinks_read_their_target() {
        let (_d, v) = view(&[tar_of(&[("a", T::Regular, "data"), ("b", T::Link, "a")])]);
        assert_eq!(v.read_file("b").unwrap().unwrap(), b"data");
    }

    #[test]
    fn clean_never_leaves_the_root() {
        assert_eq!(clean("/a/./b/../c/"), "a/c");
        assert_eq!(clean("../../x"), "x");
        assert_eq!(clean("./"), "");
    }
}
