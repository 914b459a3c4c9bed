//! What `RUN --mount` and build secrets need on the host: filtered copies of the context,
//! a stage's root unpacked, persistent cache directories, secret files in memory-backed
//! storage; and the rules for secrets (`--secret` specs, secret-looking build-arg names).
//! Everything here lives only while its RUN runs, except cache directories, which persist
//! under [`cache_mounts_dir`] until `kiln builder prune`.

use crate::context::walk::{Kind, Listing};
use crate::dockerfile::instruction::CacheSharing;
use crate::image::Digest;
use crate::runtime::IdPlan;
use crate::store::{FileLock, Store};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where cache mounts persist: `<store>/cache-mounts/<blake3(id)>/`, each with a
/// `<blake3(id)>.lock` beside it (shared while a RUN uses the cache, exclusive for
/// `sharing=locked` and `private`). A remover that takes the exclusive lock with
/// [`FileLock::try_exclusive`] knows the cache is not in use.
pub fn cache_mounts_dir(store: &Store) -> PathBuf {
    store.root().join("cache-mounts")
}

/// Where a build secret comes from (`kiln build --secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    /// An environment variable of kiln's own process.
    Env(String),
}

impl SecretSource {
    /// The secret's bytes; `None` when an env source is unset (the secret is then not given).
    pub fn read(&self) -> Result<Option<Vec<u8>>, String> {
        match self {
            SecretSource::File(p) => fs::read(p)
                .map(Some)
                .map_err(|e| format!("reading secret file {}: {e}", p.display())),
            SecretSource::Env(v) => Ok(std::env::var_os(v).map(|s| {
                use std::os::unix::ffi::OsStringExt;
                s.into_vec()
            })),
        }
    }
}

/// One `--secret` value, as docker buildx reads it: `id=x,src=FILE` (`source=`),
/// `id=x,env=VAR`, `type=file|env`, or `id=x` alone, which reads the environment variable `x`.
pub fn parse_secret(spec: &str) -> Result<(String, SecretSource), String> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut kind = None;
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("--secret {spec:?}: expected key=value, got {field:?}"))?;
        match k.trim().to_ascii_lowercase().as_str() {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" => match v {
                "file" | "env" => kind = Some(v.to_string()),
                other => {
                    return Err(format!(
                        "--secret {spec:?}: unsupported type {other:?} (file or env)"
                    ))
                }
            },
            other => return Err(format!("--secret {spec:?}: unexpected key {other:?}")),
        }
    }
    let id = match id {
        Some(id) if !id.is_empty() => id,
        // buildx names a secret after its file when no id is given.
        _ => match src.as_deref().and_then(|s| Path::new(s).file_name()) {
            Some(n) => n.to_string_lossy().into_owned(),
            None => return Err(format!("--secret {spec:?}: an id=NAME is required")),
        },
    };
    let source = match (kind.as_deref(), src, env) {
        (_, Some(_), Some(_)) => {
            return Err(format!(
                "--secret {spec:?}: give either src= or env=, not both"
            ))
        }
        (Some("env"), Some(v), None) | (_, None, Some(v)) => SecretSource::Env(v),
        (_, Some(f), None) => SecretSource::File(PathBuf::from(f)),
        (Some("file"), None, None) => SecretSource::File(PathBuf::from(&id)),
        (_, None, None) => SecretSource::Env(id.clone()),
    };
    Ok((id, source))
}

/// Whether an ARG or ENV name looks like it holds a secret: one of its `_`-separated words
/// is a secret word, and none is `public` (BuildKit's SecretsUsedInArgOrEnv rule).
pub fn looks_secret(name: &str) -> bool {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower.split('_').collect();
    words.iter().any(|w| DENY.contains(w)) && !words.contains(&"public")
}

/// `text` with every occurrence of each of `values` (non-empty) replaced by `<redacted>`.
pub fn redact(text: &str, values: &[&str]) -> String {
    let mut out = text.to_string();
    let mut values: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
    // Longest first, so a value containing another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values {
        out = out.replace(v, "<redacted>");
    }
    out
}

/// A directory made for one RUN (or one build), removed when dropped. Trees a rootless
/// command wrote as other container users are removed from inside a user namespace.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
    /// Held on the directory itself: the store's gc leaves locked `tmp/` entries alone, so a
    /// stage root kept for a long build is not swept from under it.
    _lock: Option<FileLock>,
}

impl Scratch {
    /// A new private directory under `parent`.
    pub(crate) fn new(parent: &Path, prefix: &str) -> Result<Scratch, String> {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(parent)
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        let path = dir.keep();
        let lock = fs::File::open(&path)
            .ok()
            .and_then(|f| FileLock::try_from_file(f, path.clone()).ok().flatten());
        Ok(Scratch { path, _lock: lock })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if fs::remove_dir_all(&self.path).is_err() && self.path.exists() {
            let _ = crate::runtime::remove_foreign_tree(&self.path);
        }
    }
}

/// Where secret files are written: memory-backed `/dev/shm` when it can be used, so a secret
/// never touches the disk, else the store's tmp.
pub(crate) fn secret_dir(store: &Store) -> Result<Scratch, String> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(s) = Scratch::new(shm, "kiln-secret-") {
            return Ok(s);
        }
    }
    Scratch::new(&store.root().join("tmp"), "secret-")
}

/// Run `f` as container root would: directly as root (ids map one to one), inside a user
/// namespace mapped as the containers are when rootless with subordinate ids, else directly
/// (ownership then stays the caller's, which is container root).
pub(crate) fn as_container_root(
    ids: &IdPlan,
    f: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), String> {
    if nix::unistd::geteuid().is_root() || !ids.helpers {
        return f();
    }
    crate::runtime::in_user_namespace(ids, f).map_err(|e| e.to_string())
}

/// Write a secret file `name` in `dir` with `mode`, owned by container `uid:gid`.
pub(crate) fn write_secret(
    dir: &Path,
    name: &str,
    data: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
    ids: &IdPlan,
) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    drop(f);
    set_owner_mode(&path, mode, uid, gid, ids)?;
    Ok(path)
}

/// chown (in container ids) and chmod; the chown is skipped when it would change nothing.
fn set_owner_mode(path: &Path, mode: u32, uid: u32, gid: u32, ids: &IdPlan) -> Result<(), String> {
    let p = path.to_path_buf();
    let md = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let is_root = nix::unistd::geteuid().is_root();
    // Rootless, files kiln makes are container root's already.
    let unchanged = if is_root {
        md.uid() == uid && md.gid() == gid
    } else {
        uid == 0 && gid == 0
    };
    if !unchanged {
        if !is_root && !ids.helpers {
            return Err(format!(
                "cannot give {} to {uid}:{gid}: only the caller's own id is mapped (no subordinate ids)",
                p.display()
            ));
        }
        as_container_root(ids, &mut || {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", p.display()))
        })?;
    }
    // chmod after chown: chown clears setuid bits.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .or_else(|e| {
            if is_root {
                return Err(e.to_string());
            }
            // Rootless, a file now owned by another container id is chmodded there.
            let p = path.to_path_buf();
            as_container_root(ids, &mut || {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
            })
        })
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Lay out the context entries at or below `source` ("" for the whole context) in `dest`
/// (which must not exist): hard links when `link` (a read-only mount: nothing can write
/// through them), copies otherwise, so the user's files are never written. Files the
/// `.dockerignore` excludes are not in the listing, so not in the tree. Returns the path to
/// bind: `dest` itself, or the single file when `source` is a file.
pub(crate) fn context_tree(
    listing: &Listing,
    source: &str,
    dest: &Path,
    link: bool,
) -> Result<PathBuf, String> {
    let top = listing
        .get(source)
        .filter(|_| !source.is_empty())
        .map(|e| e.kind.clone());
    if !source.is_empty() && top.is_none() {
        return Err(format!("\"{source}\" not found in build context"));
    }
    let place = |from: &Path, to: &Path| -> Result<(), String> {
        if link && fs::hard_link(from, to).is_ok() {
            return Ok(());
        }
        fs::copy(from, to)
            .map(drop)
            .map_err(|e| format!("{}: {e}", from.display()))
    };
    if let Some(Kind::File) = top {
        place(&listing.disk_path(source), dest)?;
        return Ok(dest.to_path_buf());
    }
    if let Some(Kind::Symlink(_) | Kind::Other) = top {
        return Err(format!(
            "\"{source}\" in the build context is not a file or directory"
        ));
    }
    fs::create_dir(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let prefix = if source.is_empty() {
        String::new()
    } else {
        format!("{source}/")
    };
    let mut dirs = Vec::new();
    for e in listing.subtree(source) {
        let Some(rel) = e.path.strip_prefix(&prefix) else {
            continue;
        };
        if rel.is_empty() {
            continue;
        }
        let to = dest.join(rel);
        match &e.kind {
            Kind::Dir => {
                fs::create_dir(&to).map_err(|err| format!("{}: {err}", to.display()))?;
                dirs.push((to, e.mode));
            }
            Kind::File => place(&listing.disk_path(&e.path), &to)?,
            Kind::Symlink(target) => std::os::unix::fs::symlink(target, &to)
                .map_err(|err| format!("{}: {err}", to.display()))?,
            Kind::Other => {}
        }
    }
    // Modes last: a read-only directory could not have been filled.
    for (d, mode) in dirs.iter().rev() {
        let _ = fs::set_permissions(d, fs::Permissions::from_mode(mode & 0o7777));
    }
    Ok(dest.to_path_buf())
}

/// Unpack a stage's layers (uncompressed tars, bottom first) into `dest`, whiteouts
/// applied, owners kept as far as the id plan allows.
pub(crate) fn unpack_stage(
    layers: &[(Digest, PathBuf)],
    dest: &Path,
    ids: &IdPlan,
) -> Result<(), String> {
    use crate::layer::{apply_layer, ApplyOptions, Policy};
    let is_root = nix::unistd::geteuid().is_root();
    let ownership = if is_root {
        Policy::Apply
    } else if ids.helpers {
        Policy::BestEffort
    } else {
        Policy::Skip
    };
    let mut fill = || -> Result<(), String> {
        for (diff_id, tar) in layers {
            let f = fs::File::open(tar).map_err(|e| format!("{}: {e}", tar.display()))?;
            let opts = ApplyOptions {
                whiteouts: true,
                ownership,
                xattrs: Policy::BestEffort,
                devices: Policy::BestEffort,
                ..ApplyOptions::default()
            };
            apply_layer(std::io::BufReader::new(f), dest, &opts)
                .map_err(|e| format!("unpacking {diff_id}: {e}"))?;
        }
        Ok(())
    };
    as_container_root(ids, &mut fill)
}

/// Copy the tree at `from` into the existing directory `to` (as container root, so owners
/// are kept): seeds a new cache from a stage.
pub(crate) fn copy_tree_into(from: &Path, to: &Path, ids: &IdPlan) -> Result<(), String> {
    fn walk(from: &Path, to: &Path) -> Result<(), String> {
        let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        let md = fs::symlink_metadata(from).map_err(|e| err(from, e))?;
        if md.is_dir() {
            for entry in fs::read_dir(from).map_err(|e| err(from, e))? {
                let entry = entry.map_err(|e| err(from, e))?;
                let src = entry.path();
                let dst = to.join(entry.file_name());
                let md = fs::symlink_metadata(&src).map_err(|e| err(&src, e))?;
                if md.is_dir() {
                    fs::create_dir(&dst).map_err(|e| err(&dst, e))?;
                    walk(&src, &dst)?;
                    fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777))
                        .map_err(|e| err(&dst, e))?;
                } else if md.file_type().is_symlink() {
                    let t = fs::read_link(&src).map_err(|e| err(&src, e))?;
                    std::os::unix::fs::symlink(t, &dst).map_err(|e| err(&dst, e))?;
                } else if md.is_file() {
                    fs::copy(&src, &dst).map_err(|e| err(&src, e))?;
                } else {
                    continue;
                }
                let _ = std::os::unix::fs::lchown(&dst, Some(md.uid()), Some(md.gid()));
            }
        } else if md.is_file() {
            let dst = to.join(from.file_name().unwrap_or_default());
            fs::copy(from, &dst).map_err(|e| err(from, e))?;
        }
        Ok(())
    }
    as_container_root(ids, &mut || walk(from, to))
}

/// A cache mount's directory, held for one RUN.
#[derive(Debug)]
pub(crate) struct CacheHold {
    pub(crate) path: PathBuf,
    _lock: Option<FileLock>,
    _scratch: Option<Scratch>,
}

/// How a new cache directory is made: mode and owner in container ids, and what seeds it.
pub(crate) struct CacheInit<'a> {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub seed: Option<&'a Path>,
}

/// The cache directory of `id`, created (and seeded) on first use. `shared` caches are used
/// by concurrent RUNs at once; `locked` ones wait for each other; a `private` one in use
/// elsewhere gives this RUN a new, throwaway directory. `fresh` (`--no-cache`) gives an
/// empty throwaway directory and leaves the persistent one as it is.
pub(crate) fn hold_cache(
    store: &Store,
    id: &str,
    sharing: CacheSharing,
    fresh: bool,
    init: &CacheInit<'_>,
    ids: &IdPlan,
) -> Result<CacheHold, String> {
    let base = cache_mounts_dir(store);
    fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let name = blake3::hash(id.as_bytes()).to_hex().to_string();
    let dir = base.join(&name);
    let lock_path = base.join(format!("{name}.lock"));
    let throwaway = || -> Result<CacheHold, String> {
        let s = Scratch::new(&store.root().join("tmp"), "cache-")?;
        let path = s.path().join("cache");
        make_cache_dir(&path, init, ids)?;
        Ok(CacheHold {
            path,
            _lock: None,
            _scratch: Some(s),
        })
    };
    if fresh {
        return throwaway();
    }
    let lock = match sharing {
        CacheSharing::Shared => FileLock::shared(&lock_path).map_err(|e| e.to_string())?,
        CacheSharing::Locked => FileLock::exclusive(&lock_path).map_err(|e| e.to_string())?,
        CacheSharing::Private => match FileLock::try_exclusive(&lock_path) {
            Ok(Some(l)) => l,
            Ok(None) => return throwaway(),
            Err(e) => return Err(e.to_string()),
        },
    };
    if !dir.is_dir() {
        // Made aside and renamed into place, so a cache is never seen half seeded. A sibling:
        // moving a directory to another parent needs write access to it, which a cache owned
        // by another container user does not give.
        let staged = base.join(format!(
            ".new-{name}-{}-{}",
            std::process::id(),
            blake3::hash(format!("{:?}", std::thread::current().id()).as_bytes()).to_hex()
        ));
        let guard = Scratch {
            path: staged.clone(),
            _lock: None,
        };
        make_cache_dir(&staged, init, ids)?;
        let renamed = fs::rename(&staged, &dir);
        if renamed.is_ok() {
            std::mem::forget(guard);
        }
        match renamed {
            Ok(()) => {}
            // Another build made it first: use theirs.
            Err(_) if dir.is_dir() => {}
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Ok(CacheHold {
        path: dir,
        _lock: Some(lock),
        _scratch: None,
    })
}

fn make_cache_dir(path: &Path, init: &CacheInit<'_>, ids: &IdPlan) -> Result<(), String> {
    fs::create_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(seed) = init.seed {
        copy_tree_into(seed, path, ids)?;
    }
    set_owner_mode(path, init.mode, init.uid, init.gid, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs_as_buildx_reads_them() {
        assert_eq!(
            parse_secret("id=a,src=/f").unwrap(),
            ("a".into(), SecretSource::File("/f".into()))
        );
        assert_eq!(
            parse_secret("id=a,source=/f,type=file").unwrap(),
            ("a".into(), SecretSource::File("/f".into()))
        );
        assert_eq!(
            parse_secret("id=a,env=V").unwrap(),
            ("a".into(), SecretSource::Env("V".into()))
        );
        assert_eq!(
            parse_secret("id=TOKEN").unwrap(),
            ("TOKEN".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            parse_secret("src=/run/key.pem").unwrap(),
            ("key.pem".into(), SecretSource::File("/run/key.pem".into()))
        );
        for bad in [
            "id=a,src=/f,env=V",
            "id=a,type=ssh",
            "id=a,colour=red",
            "novalue",
            "src=",
        ] {
            assert!(parse_secret(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_looking_names() {
        for yes in [
            "API_TOKEN",
            "password",
            "DB_PASSWORD",
            "aws_secret_access_key",
            "APIKEY",
            "GITHUB_AUTH",
        ] {
            assert!(looks_secret(yes), "{yes}");
        }
        for no in ["TOKENIZER", "KEYBOARD", "PUBLIC_KEY", "VERSION", "MONKEY"] {
            assert!(!looks_secret(no), "{no}");
        }
    }

    #[test]
    fn redaction_replaces_every_value_longest_first() {
        assert_eq!(
            redact("ARG T=abc U=abcdef", &["abc", "abcdef", ""]),
            "ARG T=<redacted> U=<redacted>"
        );
    }

    #[test]
    fn context_trees_copy_only_the_listed_subtree() {
        let t = tempfile::tempdir().unwrap();
        let ctx = t.path().join("ctx");
        fs::create_dir_all(ctx.join("src/sub")).unwrap();
        fs::write(ctx.join("src/a"), "a").unwrap();
        fs::write(ctx.join("src/sub/b"), "b").unwrap();
        fs::write(ctx.join("src/ignored"), "x").unwrap();
        fs::write(ctx.join("top"), "t").unwrap();
        let m = crate::context::ignore::PatternMatcher::new(&["src/ignored".to_string()]).unwrap();
        let listing = Listing::scan(&ctx, &m).unwrap();
        let dest = t.path().join("out");
        let p = context_tree(&listing, "src", &dest, false).unwrap();
        assert_eq!(p, dest);
        assert_eq!(fs::read_to_string(dest.join("sub/b")).unwrap(), "b");
        assert!(!dest.join("ignored").exists());
        assert!(!dest.join("top").exists());
        // A copy: writing it leaves the context alone.
        fs::write(dest.join("a"), "changed").unwrap();
        assert_eq!(fs::read_to_string(ctx.join("src/a")).unwrap(), "a");
        let f = context_tree(&listing, "top", &t.path().join("one"), true).unwrap();
        assert_eq!(fs::read_to_string(f).unwrap(), "t");
        assert!(context_tree(&listing, "src/ignored", &t.path().join("x"), true).is_err());
    }
}
