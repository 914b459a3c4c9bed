//! Volumes of `kiln run`: docker's `-v`, `--mount` and `--tmpfs` syntax, named volumes in
//! the store (`<store>/volumes/<name>/_data`, with `volume.json` beside it), and their
//! filling from the image's content on first use.
//!
//! A container record (`<store>/containers/*/config.json`) that holds a `{"type":"volume",
//! "source":NAME,...}` object (a serialized [`VolumeMount`]) anywhere keeps volume NAME
//! from removal without `-f`.

use super::mounts::{Mount, MountKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid mount config: {0}")]
    Invalid(String),
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("volume {name} is in use by container {containers}: remove it with -f, or remove the container first")]
    InUse { name: String, containers: String },
    #[error("volume {0} already exists")]
    Exists(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One mount asked for on the command line, as a container record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum VolumeMount {
    /// A host path. `create`: made when missing (`-v`), else missing is an error (`--mount`).
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
        create: bool,
    },
    /// A named volume; `source` is empty for an anonymous one until [`name_anonymous`].
    Volume {
        source: String,
        target: String,
        readonly: bool,
        anonymous: bool,
        /// Do not fill it from the image (`volume-nocopy`).
        nocopy: bool,
    },
    Tmpfs {
        target: String,
        size: u64,
        mode: u32,
        readonly: bool,
    },
}

impl VolumeMount {
    pub fn target(&self) -> &str {
        match self {
            VolumeMount::Bind { target, .. }
            | VolumeMount::Volume { target, .. }
            | VolumeMount::Tmpfs { target, .. } => target,
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn check_target(target: &str, spec: &str) -> Result<(), VolumeError> {
    match super::mounts::target_components(target) {
        Some(_) => Ok(()),
        None if target.starts_with('/') => Err(VolumeError::Invalid(format!(
            "{spec}: the container path cannot be '/'"
        ))),
        None => Err(VolumeError::Invalid(format!(
            "{spec}: the container path '{target}' is not absolute"
        ))),
    }
}

/// Parse a `-v` value: `/host:/ctr[:opts]`, `NAME:/ctr[:opts]` or `/ctr[:opts]` (anonymous);
/// options `ro`, `rw`, `nocopy`, and the SELinux/propagation ones docker accepts (ignored).
pub fn parse_volume_flag(spec: &str) -> Result<VolumeMount, VolumeError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let is_mode = |s: &str| s.split(',').all(|o| mode_option(o).is_some());
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, ""),
        [t, m] if t.starts_with('/') && is_mode(m) && !m.is_empty() => (None, *t, *m),
        [s, t] => (Some(*s), *t, ""),
        [s, t, m] => (Some(*s), *t, *m),
        _ => {
            return Err(VolumeError::Invalid(format!(
                "{spec}: too many colons (SOURCE:TARGET[:OPTIONS])"
            )))
        }
    };
    check_target(target, spec)?;
    let mut readonly = false;
    let mut nocopy = false;
    if !mode.is_empty() {
        for o in mode.split(',') {
            match mode_option(o) {
                Some(Mode::Ro) => readonly = true,
                Some(Mode::Rw) => readonly = false,
                Some(Mode::NoCopy) => nocopy = true,
                Some(Mode::Ignored) => {}
                None => {
                    return Err(VolumeError::Invalid(format!(
                        "{spec}: unknown option '{o}' (ro, rw, nocopy)"
                    )))
                }
            }
        }
    }
    let target = target.to_string();
    match source {
        None => Ok(VolumeMount::Volume {
            source: String::new(),
            target,
            readonly,
            anonymous: true,
            nocopy,
        }),
        Some(s) if s.starts_with('/') => Ok(VolumeMount::Bind {
            source: PathBuf::from(s),
            target,
            readonly,
            create: true,
        }),
        Some(s) if s.contains('/') || s.starts_with('.') || s.starts_with('~') => Err(
            VolumeError::Invalid(format!("relative host path {s}: use an absolute path")),
        ),
        Some(s) if valid_name(s) => Ok(VolumeMount::Volume {
            source: s.to_string(),
            target,
            readonly,
            anonymous: false,
            nocopy,
        }),
        Some(s) => Err(VolumeError::Invalid(format!(
            "{spec}: '{s}' is not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*); \
             for a host directory, use an absolute path"
        ))),
    }
}

enum Mode {
    Ro,
    Rw,
    NoCopy,
    Ignored,
}

fn mode_option(o: &str) -> Option<Mode> {
    Some(match o {
        "ro" => Mode::Ro,
        "rw" => Mode::Rw,
        "nocopy" => Mode::NoCopy,
        "z" | "Z" | "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"
        | "delegated" | "cached" | "consistent" => Mode::Ignored,
        _ => return None,
    })
}

/// A size as docker writes it: bytes, or with a k, m or g suffix (binary units).
fn parse_size(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let t = lower.trim_end_matches('b');
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Parse a `--tmpfs` value: `/ctr[:size=64m,mode=1777,ro]` (other mount options ignored).
pub fn parse_tmpfs_flag(spec: &str) -> Result<VolumeMount, VolumeError> {
    let (target, opts) = spec.split_once(':').unwrap_or((spec, ""));
    check_target(target, spec)?;
    let (mut size, mut mode, mut readonly) = (0, 0o1777, false);
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => {
                size = parse_size(v)
                    .ok_or_else(|| VolumeError::Invalid(format!("{spec}: bad tmpfs size '{v}'")))?
            }
            Some(("mode", v)) => {
                mode = u32::from_str_radix(v, 8).map_err(|_| {
                    VolumeError::Invalid(format!("{spec}: bad tmpfs mode '{v}' (octal)"))
                })?
            }
            None if o == "ro" => readonly = true,
            None if o == "rw" => readonly = false,
            _ => {}
        }
    }
    Ok(VolumeMount::Tmpfs {
        target: target.to_string(),
        size,
        mode,
        readonly,
    })
}

/// Parse a `--mount` value: `type=bind|volume|tmpfs,source=..,target=..,readonly,...`.
pub fn parse_mount_flag(spec: &str) -> Result<VolumeMount, VolumeError> {
    let bad = |m: String| VolumeError::Invalid(format!("--mount {spec}: {m}"));
    let (mut kind, mut source, mut target) = ("volume".to_string(), None, None);
    let (mut readonly, mut nocopy, mut size, mut mode) = (false, false, 0, 0o1777);
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let flag = |v: Option<&str>| -> Result<bool, VolumeError> {
            match v {
                None | Some("1") | Some("true") => Ok(true),
                Some("0") | Some("false") => Ok(false),
                Some(x) => Err(bad(format!("'{k}={x}' is not a boolean"))),
            }
        };
        match (k, v) {
            ("type", Some(t)) => kind = t.to_string(),
            ("source" | "src", Some(s)) => source = Some(s.to_string()),
            ("target" | "destination" | "dst", Some(t)) => target = Some(t.to_string()),
            ("readonly" | "ro", v) => readonly = flag(v)?,
            ("volume-nocopy", v) => nocopy = flag(v)?,
            ("tmpfs-size", Some(s)) => {
                size = parse_size(s).ok_or_else(|| bad(format!("bad tmpfs-size '{s}'")))?
            }
            ("tmpfs-mode", Some(m)) => {
                mode = u32::from_str_radix(m, 8)
                    .map_err(|_| bad(format!("bad tmpfs-mode '{m}' (octal)")))?
            }
            ("bind-propagation" | "consistency" | "volume-driver" | "bind-nonrecursive", _) => {}
            _ => return Err(bad(format!("unexpected key '{field}'"))),
        }
    }
    let target = target.ok_or_else(|| bad("target is required".into()))?;
    check_target(&target, spec)?;
    match kind.as_str() {
        "bind" => {
            let s = source.ok_or_else(|| bad("source is required for a bind mount".into()))?;
            if !s.starts_with('/') {
                return Err(VolumeError::Invalid(format!(
                    "relative host path {s}: use an absolute path"
                )));
            }
            Ok(VolumeMount::Bind {
                source: PathBuf::from(s),
                target,
                readonly,
                create: false,
            })
        }
        "volume" => {
            let s = source.unwrap_or_default();
            if !s.is_empty() && !valid_name(&s) {
                return Err(bad(format!("'{s}' is not a valid volume name")));
            }
            Ok(VolumeMount::Volume {
                anonymous: s.is_empty(),
                source: s,
                target,
                readonly,
                nocopy,
            })
        }
        "tmpfs" => Ok(VolumeMount::Tmpfs {
            target,
            size,
            mode,
            readonly,
        }),
        t => Err(bad(format!("unknown type '{t}' (bind, volume or tmpfs)"))),
    }
}

/// The image's `VOLUME` paths that no requested mount covers, as anonymous volumes (docker
/// makes one for each), appended to `mounts`. Image paths that are not absolute are skipped.
pub fn add_image_volumes<'a>(
    mounts: &mut Vec<VolumeMount>,
    image_volumes: impl IntoIterator<Item = &'a String>,
) {
    let key = |t: &str| super::mounts::target_components(t);
    for path in image_volumes {
        let Some(comps) = key(path) else {
            continue;
        };
        if mounts
            .iter()
            .any(|m| key(m.target()).as_ref() == Some(&comps))
        {
            continue;
        }
        mounts.push(VolumeMount::Volume {
            source: String::new(),
            target: path.clone(),
            readonly: false,
            anonymous: true,
            nocopy: false,
        });
    }
}

/// Give every anonymous volume a fresh random name (call before the options are recorded,
/// so a record names the volumes it uses).
pub fn name_anonymous(mounts: &mut [VolumeMount]) {
    for m in mounts {
        if let VolumeMount::Volume { source, .. } = m {
            if source.is_empty() {
                *source = random_name();
            }
        }
    }
}

fn random_name() -> String {
    let mut bytes = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let h = blake3::hash(format!("{t}-{}", std::process::id()).as_bytes());
        bytes.copy_from_slice(h.as_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `volume.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeInfo {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    #[serde(rename = "Anonymous", default)]
    pub anonymous: bool,
}

/// The volumes of one store.
#[derive(Debug, Clone)]
pub struct Volumes {
    store_root: PathBuf,
}

impl Volumes {
    pub fn new(store_root: &Path) -> Volumes {
        Volumes {
            store_root: store_root.to_path_buf(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.store_root.join("volumes")
    }

    /// Where the volume's content lives (its `Mountpoint`).
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.dir().join(name).join("_data")
    }

    /// Create a volume (a random name when `None`); an existing name is an error.
    pub fn create(&self, name: Option<&str>, anonymous: bool) -> Result<VolumeInfo, VolumeError> {
        let name = match name {
            Some(n) if !valid_name(n) => {
                return Err(VolumeError::Invalid(format!(
                    "'{n}' is not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"
                )))
            }
            Some(n) => n.to_string(),
            None => random_name(),
        };
        match self.make(&name, anonymous)? {
            Some(info) => Ok(info),
            None => Err(VolumeError::Exists(name)),
        }
    }

    /// Make the volume; `None` when it already exists. The directory is made last, by a
    /// rename, so a volume is either complete or absent.
    fn make(&self, name: &str, anonymous: bool) -> Result<Option<VolumeInfo>, VolumeError> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(name);
        if path.exists() {
            return Ok(None);
        }
        let tmp = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(&dir)
            .map_err(io(&dir))?;
        let data = tmp.path().join("_data");
        std::fs::create_dir(&data).map_err(io(&data))?;
        let info = VolumeInfo {
            name: name.to_string(),
            created_at: crate::image::timestamp::now_rfc3339(),
            anonymous,
        };
        let meta = tmp.path().join("volume.json");
        let text =
            serde_json::to_vec_pretty(&info).map_err(|e| io(&meta)(std::io::Error::other(e)))?;
        std::fs::write(&meta, text).map_err(io(&meta))?;
        let tmp_path = tmp.keep();
        match std::fs::rename(&tmp_path, &path) {
            Ok(()) => Ok(Some(info)),
            // Another kiln made it first: theirs is as good.
            Err(_) if path.exists() => {
                let _ = std::fs::remove_dir_all(&tmp_path);
                Ok(None)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp_path);
                Err(io(&path)(e))
            }
        }
    }

    pub fn inspect(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let meta = self.dir().join(name).join("volume.json");
        if !valid_name(name) || !meta.is_file() {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let text = std::fs::read(&meta).map_err(io(&meta))?;
        serde_json::from_slice(&text)
            .map_err(|e| io(&meta)(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let dir = self.dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(io(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            // A damaged volume.json still lists the volume, so it can be removed.
            out.push(self.inspect(&name).unwrap_or(VolumeInfo {
                name,
                created_at: String::new(),
                anonymous: false,
            }));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The containers whose records name the volume.
    pub fn users(&self, name: &str) -> Vec<String> {
        let dir = self.store_root.join("containers");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Ok(text) = std::fs::read(e.path().join("config.json")) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
                continue;
            };
            if names_volume(&v, name) {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }

    /// Remove a volume; one a container record uses only with `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        let path = self.dir().join(name);
        if !valid_name(name) || !path.is_dir() {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let users = self.users(name);
        if !users.is_empty() && !force {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                containers: users.join(", "),
            });
        }
        // Renamed away first, so a half-removed volume is never seen under its name.
        let trash = self.dir().join(format!(".rm-{name}-{}", random_name()));
        std::fs::rename(&path, &trash).map_err(io(&path))?;
        remove_tree(&trash)
    }

    /// Remove the volumes no container record uses (only anonymous ones unless `all`);
    /// returns their names.
    pub fn prune(&self, all: bool) -> Result<Vec<String>, VolumeError> {
        let mut removed = Vec::new();
        for v in self.list()? {
            if (all || v.anonymous) && self.users(&v.name).is_empty() {
                self.remove(&v.name, false)?;
                removed.push(v.name);
            }
        }
        Ok(removed)
    }
}

/// A tree that may hold files of the caller's subordinate ids (filled inside the user
/// namespace) is removed from inside one when kiln cannot remove it directly.
fn remove_tree(path: &Path) -> Result<(), VolumeError> {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    super::remove_foreign_tree(path).map_err(io(path))
}

fn names_volume(v: &serde_json::Value, name: &str) -> bool {
    match v {
        serde_json::Value::Object(map) => {
            let is_it = map.get("type").and_then(|t| t.as_str()) == Some("volume")
                && map.get("source").and_then(|s| s.as_str()) == Some(name);
            is_it || map.values().any(|x| names_volume(x, name))
        }
        serde_json::Value::Array(items) => items.iter().any(|x| names_volume(x, name)),
        _ => false,
    }
}

/// A named volume to fill from the image's content at `target` in the keeper, if its
/// directory `data` is still empty then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFill {
    pub target: String,
    pub data: PathBuf,
}

/// The runtime's mounts for `requested`, in order, and the fills for the keeper. Named
/// volumes are made when missing (anonymous ones must have been named: [`name_anonymous`]);
/// a missing `-v` host path is made, as docker does.
pub fn resolve(
    volumes: &Volumes,
    requested: &[VolumeMount],
) -> Result<(Vec<Mount>, Vec<VolumeFill>), VolumeError> {
    let mut mounts = Vec::with_capacity(requested.len());
    let mut fills = Vec::new();
    for r in requested {
        match r {
            VolumeMount::Bind {
                source,
                target,
                readonly,
                create,
            } => {
                if !source.is_absolute() {
                    return Err(VolumeError::Invalid(format!(
                        "relative host path {}: use an absolute path",
                        source.display()
                    )));
                }
                if std::fs::symlink_metadata(source).is_err() {
                    if !*create {
                        return Err(VolumeError::Invalid(format!(
                            "bind source path does not exist: {}",
                            source.display()
                        )));
                    }
                    std::fs::create_dir_all(source).map_err(io(source))?;
                }
                mounts.push(Mount::bind(source.clone(), target.clone(), *readonly));
            }
            VolumeMount::Volume {
                source,
                target,
                readonly,
                anonymous,
                nocopy,
            } => {
                if source.is_empty() {
                    return Err(VolumeError::Invalid(format!(
                        "the anonymous volume at {target} has no name"
                    )));
                }
                if !valid_name(source) {
                    return Err(VolumeError::Invalid(format!(
                        "'{source}' is not a valid volume name"
                    )));
                }
                volumes.make(source, *anonymous)?;
                let data = volumes.data_path(source);
                if !nocopy && is_empty_dir(&data) {
                    fills.push(VolumeFill {
                        target: target.clone(),
                        data: data.clone(),
                    });
                }
                mounts.push(Mount::bind(data, target.clone(), *readonly));
            }
            VolumeMount::Tmpfs {
                target,
                size,
                mode,
                readonly,
            } => mounts.push(Mount {
                target: target.clone(),
                kind: MountKind::Tmpfs {
                    size: *size,
                    mode: *mode,
                },
                readonly: *readonly,
            }),
        }
    }
    Ok((mounts, fills))
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

/// In the keeper, on the mounted root: copy the image's content at each fill's target into
/// the volume (owners, modes and times kept; in the user namespace, so owners are the
/// container's ids), when the volume is still empty.
pub(crate) fn fill_from_image(merged: &Path, fills: &[VolumeFill]) -> Result<(), String> {
    for f in fills {
        if !is_empty_dir(&f.data) {
            continue;
        }
        let rel = f.target.trim_start_matches('/');
        let Ok(src) = super::mounts::resolve_in_root(merged, rel) else {
            continue;
        };
        let Ok(md) = std::fs::symlink_metadata(&src) else {
            continue;
        };
        if !md.is_dir() {
            continue;
        }
        copy_dir_contents(&src, &f.data)
            .map_err(|e| format!("filling the volume at {} from the image: {e}", f.target))?;
        copy_meta(&md, &f.data).map_err(|e| format!("{}: {e}", f.data.display()))?;
    }
    Ok(())
}

fn copy_meta(md: &std::fs::Metadata, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    match std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid())) {
        // An id the user namespace does not map (rootless without subordinate ids): the
        // copy keeps the container root's ownership, as unpacking such layers does.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        r => r?,
    }
    if !md.file_type().is_symlink() {
        // After the chown, which clears set-id bits.
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    let mtime = filetime::FileTime::from_last_modification_time(md);
    filetime::set_symlink_file_times(to, mtime, mtime)
}

fn copy_dir_contents(from: &Path, to: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let md = std::fs::symlink_metadata(&src)?;
        let ft = md.file_type();
        // Another container filling the same new volume at the same moment made it
        // already: its copy is the same content.
        let exists = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            r => r.map(|()| true),
        };
        if ft.is_dir() {
            exists(std::fs::create_dir(&dst))?;
            copy_dir_contents(&src, &dst)?;
        } else if ft.is_symlink() {
            if !exists(std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst))? {
                continue;
            }
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            // Devices, fifos and sockets have no place in a volume's seed.
            continue;
        }
        copy_meta(&md, &dst)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(source: &str, target: &str, readonly: bool, anonymous: bool) -> VolumeMount {
        VolumeMount::Volume {
            source: source.into(),
            target: target.into(),
            readonly,
            anonymous,
            nocopy: false,
        }
    }

    #[test]
    fn v_flags_follow_dockers_rules() {
        assert_eq!(
            parse_volume_flag("/h/p:/c:ro").unwrap(),
            VolumeMount::Bind {
                source: "/h/p".into(),
                target: "/c".into(),
                readonly: true,
                create: true
            }
        );
        assert_eq!(
            parse_volume_flag("data:/var/lib/x").unwrap(),
            vol("data", "/var/lib/x", false, false)
        );
        assert_eq!(parse_volume_flag("/c").unwrap(), vol("", "/c", false, true));
        assert_eq!(
            parse_volume_flag("/c:ro").unwrap(),
            vol("", "/c", true, true)
        );
        let e = parse_volume_flag("./rel:/x").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid mount config: relative host path ./rel: use an absolute path"
        );
        assert!(parse_volume_flag("a/b:/x").is_err());
        assert!(parse_volume_flag("data:rel")
            .unwrap_err()
            .to_string()
            .contains("not absolute"));
        assert!(parse_volume_flag("data:/x:bogus")
            .unwrap_err()
            .to_string()
            .contains("bogus"));
        assert!(parse_volume_flag("-x:/y").is_err());
        assert!(parse_volume_flag("/a:/b:ro:x").is_err());
        assert!(parse_volume_flag("/a:/").is_err());
    }

    #[test]
    fn image_volumes_not_mounted_by_the_user_become_anonymous_ones() {
        let mut m = vec![parse_volume_flag("data:/var/lib/db/").unwrap()];
        let image = ["/var/lib/db".to_string(), "/logs".into(), "rel".into()];
        add_image_volumes(&mut m, &image);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1], vol("", "/logs", false, true));
    }

    #[test]
    fn mount_and_tmpfs_flags() {
        assert_eq!(
            parse_mount_flag("type=bind,src=/h,dst=/c,readonly").unwrap(),
            VolumeMount::Bind {
                source: "/h".into(),
                target: "/c".into(),
                readonly: true,
                create: false
            }
        );
        assert_eq!(
            parse_mount_flag("target=/c").unwrap(),
            vol("", "/c", false, true)
        );
        assert_eq!(
            parse_mount_flag("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=700").unwrap(),
            VolumeMount::Tmpfs {
                target: "/t".into(),
                size: 1 << 20,
                mode: 0o700,
                readonly: false
            }
        );
        assert!(parse_mount_flag("type=nfs,target=/x").is_err());
        assert!(parse_mount_flag("type=bind,source=rel,target=/x").is_err());
        assert!(parse_mount_flag("type=volume").is_err());
        assert_eq!(
            parse_tmpfs_flag("/run:size=64k,mode=755,noexec").unwrap(),
            VolumeMount::Tmpfs {
                target: "/run".into(),
                size: 64 << 10,
                mode: 0o755,
                readonly: false
            }
        );
        assert!(parse_tmpfs_flag("run").is_err());
    }

    #[test]
    fn volumes_are_created_listed_and_kept_while_a_record_names_them() {
        let t = tempfile::tempdir().unwrap();
        let v = Volumes::new(t.path());
        assert_eq!(v.create(Some("data"), false).unwrap().name, "data");
        assert!(matches!(
            v.create(Some("data"), false),
            Err(VolumeError::Exists(_))
        ));
        assert!(v.create(Some("../x"), false).is_err());
        let anon = v.create(None, true).unwrap().name;
        assert_eq!(anon.len(), 64);
        let names: Vec<_> = v.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names.len(), 2);
        assert!(v.data_path("data").is_dir());
        let mut mounts = vec![vol("data", "/d", false, false)];
        name_anonymous(&mut mounts);
        let rec = t.path().join("containers/abc");
        std::fs::create_dir_all(&rec).unwrap();
        std::fs::write(
            rec.join("config.json"),
            serde_json::to_vec(&serde_json::json!({"options": {"volumes": mounts}})).unwrap(),
        )
        .unwrap();
        assert_eq!(v.users("data"), ["abc"]);
        let e = v.remove("data", false).unwrap_err().to_string();
        assert!(e.contains("in use by container abc"), "{e}");
        assert_eq!(v.prune(true).unwrap(), [anon]);
        v.remove("data", true).unwrap();
        assert!(v.list().unwrap().is_empty());
        assert!(matches!(
            v.remove("data", true),
            Err(VolumeError::NotFound(_))
        ));
    }

    #[test]
    fn resolving_makes_volumes_and_missing_bind_sources() {
        let t = tempfile::tempdir().unwrap();
        let v = Volumes::new(&t.path().join("store"));
        let host = t.path().join("made/here");
        let (mounts, fills) = resolve(
            &v,
            &[
                parse_volume_flag(&format!("{}:/h", host.display())).unwrap(),
                vol("named", "/n", true, false),
            ],
        )
        .unwrap();
        assert!(host.is_dir());
        assert_eq!(mounts[1], Mount::bind(v.data_path("named"), "/n", true));
        assert_eq!(fills.len(), 1);
        std::fs::write(v.data_path("named").join("f"), "x").unwrap();
        let (_, fills) = resolve(&v, &[vol("named", "/n", true, false)]).unwrap();
        assert!(
            fills.is_empty(),
            "a volume with content is not filled again"
        );
        let missing = VolumeMount::Bind {
            source: t.path().join("nope"),
            target: "/x".into(),
            readonly: false,
            create: false,
        };
        assert!(resolve(&v, &[missing])
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }

    #[test]
    fn filling_copies_the_images_tree() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("srv/app/sub")).unwrap();
        std::fs::write(root.join("srv/app/sub/f"), "content").unwrap();
        std::fs::set_permissions(
            root.join("srv/app/sub/f"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("srv/app/link")).unwrap();
        std::os::unix::fs::symlink("/srv/app", root.join("alias")).unwrap();
        let data = t.path().join("data");
        std::fs::create_dir(&data).unwrap();
        fill_from_image(
            &root,
            &[VolumeFill {
                target: "/alias".into(),
                data: data.clone(),
            }],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join("sub/f")).unwrap(),
            "content"
        );
        let mode = std::fs::metadata(data.join("sub/f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("sub/f")
        );
    }
}
