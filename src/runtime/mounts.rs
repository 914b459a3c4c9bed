//! Mounts inside a container beyond its root: bind mounts of host files and directories
//! (volumes, `-v`, `RUN --mount=type=bind|cache|secret`) and tmpfs.
//!
//! Targets are resolved inside the container's root as the kernel would resolve them there
//! (symlinks followed, never out of the root), so an image cannot make kiln mount over a host
//! path by shipping a symlink where a mount goes. Missing mount points are created by the
//! keeper before the command starts and removed afterwards, so they never show up in a RUN
//! step's layer.

use crate::layer::resolve::Root;
use crate::layer::PathResolution;
use nix::errno::Errno;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A host file or directory, bound in as it is (the caller resolved and checked it).
    Bind(PathBuf),
    /// An empty tmpfs; `size` in bytes (0: the kernel's default, half the RAM).
    Tmpfs { size: u64, mode: u32 },
}

/// One mount in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path in the container.
    pub target: String,
    pub kind: MountKind,
    pub readonly: bool,
}

impl Mount {
    pub fn bind(source: impl Into<PathBuf>, target: impl Into<String>, readonly: bool) -> Mount {
        Mount {
            target: target.into(),
            kind: MountKind::Bind(source.into()),
            readonly,
        }
    }

    pub fn tmpfs(target: impl Into<String>) -> Mount {
        Mount {
            target: target.into(),
            kind: MountKind::Tmpfs {
                size: 0,
                mode: 0o1777,
            },
            readonly: false,
        }
    }
}

/// The components of an absolute container path, `.` and `..` removed lexically (as docker
/// cleans mount targets); `None` for a relative path or one that names the root itself.
pub fn target_components(target: &str) -> Option<Vec<OsString>> {
    if !target.starts_with('/') {
        return None;
    }
    let mut comps: Vec<OsString> = Vec::new();
    for c in Path::new(target).components() {
        match c {
            Component::Normal(n) => comps.push(n.to_os_string()),
            Component::ParentDir => {
                comps.pop();
            }
            _ => {}
        }
    }
    (!comps.is_empty()).then_some(comps)
}

/// The real path (no symlinks) of `rel` inside `root`, resolved as if `root` were `/`. Used
/// for mount targets and for sources inside another root (a stage's snapshot).
pub fn resolve_in_root(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let comps = target_components(&format!("/{rel}")).unwrap_or_default();
    let r =
        Root::open(root, PathResolution::Auto).map_err(|e| format!("{}: {e}", root.display()))?;
    let shown = || format!("{}/{}", root.display(), rel.trim_start_matches('/'));
    if comps.is_empty() {
        return Ok(root.to_path_buf());
    }
    let (last, parents) = comps.split_last().ok_or_else(shown)?;
    let dir = r
        .open_dir(parents, false)
        .map_err(|e| format!("{}: {e}", shown()))?;
    let path = fd_path(&dir)?.join(last);
    // The last component may itself be a symlink: resolve it inside the root too.
    match std::fs::symlink_metadata(&path) {
        Ok(md) if md.file_type().is_symlink() => {
            let link = std::fs::read_link(&path).map_err(|e| format!("{}: {e}", shown()))?;
            let mut next = if link.is_absolute() {
                PathBuf::new()
            } else {
                strip_root(root, &fd_path(&dir)?)
            };
            next.push(link);
            let next = next.to_string_lossy().into_owned();
            if next.len() > 4096 * 40 {
                return Err(format!("{}: too many levels of symbolic links", shown()));
            }
            resolve_in_root(root, &next)
        }
        Ok(_) => Ok(path),
        Err(e) => Err(format!("{}: {e}", shown())),
    }
}

fn strip_root(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The path the kernel has for an open descriptor (it names the object itself, with every
/// symlink on the way already resolved).
fn fd_path(fd: &OwnedFd) -> Result<PathBuf, String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("reading /proc/self/fd: {e}"))
}

/// Make the mount points of `mounts` under `merged` (the container's root), resolving each
/// inside it. Returns, per mount, the real host path of its mount point, and appends what had
/// to be created to `created` (in creation order, for removal afterwards).
pub(crate) fn prepare_targets(
    merged: &Path,
    mounts: &[Mount],
    created: &mut Vec<PathBuf>,
) -> Result<Vec<PathBuf>, String> {
    let root = Root::open(merged, PathResolution::Auto)
        .map_err(|e| format!("{}: {e}", merged.display()))?;
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let comps = target_components(&m.target).ok_or_else(|| {
            format!(
                "mount target '{}' must be an absolute path below /",
                m.target
            )
        })?;
        let want_dir = match &m.kind {
            MountKind::Bind(src) => std::fs::metadata(src)
                .map_err(|e| format!("mount source {}: {e}", src.display()))?
                .is_dir(),
            MountKind::Tmpfs { .. } => true,
        };
        let fail = |e: Errno| format!("mount point {} in the container: {e}", m.target);
        let Some((last, parents)) = comps.split_last() else {
            return Err(fail(Errno::EINVAL));
        };
        // Parent directories one at a time, so each one made can be removed afterwards.
        for i in 0..parents.len() {
            match root.open_dir(&parents[..=i], false) {
                Ok(_) => {}
                Err(Errno::ENOENT) => {
                    let dir = root.open_dir(&parents[..i], false).map_err(fail)?;
                    match nix::sys::stat::mkdirat(
                        &dir,
                        parents[i].as_os_str(),
                        nix::sys::stat::Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) => created.push(fd_path(&dir)?.join(&parents[i])),
                        // A dangling symlink: made where it leads, inside the root.
                        Err(Errno::EEXIST) => {
                            root.open_dir(&parents[..=i], true).map_err(fail)?;
                        }
                        Err(e) => return Err(fail(e)),
                    }
                }
                Err(e) => return Err(fail(e)),
            }
        }
        let dir = root.open_dir(parents, false).map_err(fail)?;
        let dir_path = fd_path(&dir)?;
        let rel = comps
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let path = match resolve_in_root(merged, &rel) {
            Ok(p) => p,
            Err(_) => {
                let p = dir_path.join(last);
                if std::fs::symlink_metadata(&p).is_ok() {
                    // A dangling symlink (`/vol -> /srv/data`): as docker, the directory
                    // is made where the link leads, inside the root. (Not recorded in
                    // `created`: it is rare, and then part of the container's changes.)
                    if !want_dir {
                        return Err(format!(
                            "mount point {} in the container is a symbolic link that leads nowhere",
                            m.target
                        ));
                    }
                    let fd = root.open_dir(&comps, true).map_err(fail)?;
                    out.push(fd_path(&fd)?);
                    continue;
                }
                let made = if want_dir {
                    nix::sys::stat::mkdirat(
                        &dir,
                        last.as_os_str(),
                        nix::sys::stat::Mode::from_bits_truncate(0o755),
                    )
                } else {
                    nix::fcntl::openat(
                        &dir,
                        last.as_os_str(),
                        nix::fcntl::OFlag::O_CREAT
                            | nix::fcntl::OFlag::O_EXCL
                            | nix::fcntl::OFlag::O_WRONLY
                            | nix::fcntl::OFlag::O_CLOEXEC
                            | nix::fcntl::OFlag::O_NOFOLLOW,
                        nix::sys::stat::Mode::from_bits_truncate(0o644),
                    )
                    .map(drop)
                };
                made.map_err(fail)?;
                created.push(p.clone());
                p
            }
        };
        if !path.starts_with(merged) {
            return Err(format!(
                "mount point {} resolves outside the container",
                m.target
            ));
        }
        let is_dir = std::fs::metadata(&path).is_ok_and(|md| md.is_dir());
        if is_dir != want_dir {
            return Err(format!(
                "cannot mount a {} on {} in the container: it is a {}",
                if want_dir { "directory" } else { "file" },
                m.target,
                if is_dir { "directory" } else { "file" }
            ));
        }
        out.push(path);
    }
    Ok(out)
}

/// Make the mounts, on the mount points [`prepare_targets`] returned. Runs in the command
/// process, before pivot_root, in its own mount namespace.
pub(crate) fn apply(mounts: &[Mount], targets: &[PathBuf]) -> Result<(), String> {
    for (m, target) in mounts.iter().zip(targets) {
        match &m.kind {
            MountKind::Bind(src) => {
                let s = src.to_string_lossy();
                super::mount(&s, target, "", libc::MS_BIND | libc::MS_REC, None)?;
                if m.readonly {
                    remount_readonly(target)?;
                }
            }
            MountKind::Tmpfs { size, mode } => {
                let mut opts = format!("mode={mode:o}");
                if *size > 0 {
                    opts.push_str(&format!(",size={size}"));
                }
                let data = CString::new(opts).map_err(|e| e.to_string())?;
                let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
                if m.readonly {
                    flags |= libc::MS_RDONLY;
                }
                super::mount("tmpfs", target, "tmpfs", flags, Some(&data))?;
            }
        }
    }
    Ok(())
}

/// Read-only remount of a bind mount. In a user namespace the flags the source mount was
/// locked with (nosuid, nodev, noexec, atime) must be kept, or the kernel refuses.
fn remount_readonly(target: &Path) -> Result<(), String> {
    let st =
        nix::sys::statvfs::statvfs(target).map_err(|e| format!("{}: {e}", target.display()))?;
    use nix::sys::statvfs::FsFlags;
    let f = st.flags();
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    for (have, flag) in [
        (FsFlags::ST_NOSUID, libc::MS_NOSUID),
        (FsFlags::ST_NODEV, libc::MS_NODEV),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f.contains(have) {
            flags |= flag;
        }
    }
    super::mount("", target, "", flags, None)
}

/// Remove mount points made by [`prepare_targets`] (and the keeper's own), last made first;
/// a directory something was written into stays.
pub(crate) fn remove_created(created: &[PathBuf]) {
    for path in created.iter().rev() {
        let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_cleaned_and_must_be_absolute() {
        let c = |t: &str| {
            target_components(t).map(|v| {
                v.iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(c("/a/./b/../c/"), Some(vec!["a".into(), "c".into()]));
        assert_eq!(c("/../../etc"), Some(vec!["etc".into()]));
        assert_eq!(c("rel/path"), None);
        assert_eq!(c("/"), None);
        assert_eq!(c("/.."), None);
    }

    #[test]
    fn mount_points_are_made_inside_the_root_even_through_hostile_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // An image that points its mount target at the host.
        std::os::unix::fs::symlink(&outside, root.join("data")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("etc/up")).unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let mounts = [
            Mount::bind(&src, "/data/x", false),
            Mount::bind(&src, "/etc/up/y/z", true),
            Mount::tmpfs("/tmp/t"),
        ];
        let mut created = Vec::new();
        let targets = prepare_targets(&root, &mounts, &mut created).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        for p in &targets {
            assert!(p.starts_with(&root), "{} escaped", p.display());
            assert!(p.is_dir());
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // `/data` is an absolute symlink to a host path: inside the root, that path is made.
        assert!(targets[0].ends_with("x"));
        assert!(targets[1].ends_with("y/z"));
        assert!(!created.is_empty());
        remove_created(&created);
        assert!(!targets[2].exists());
        assert!(!root.join("tmp/t").exists());
        assert!(root.join("etc").is_dir());
    }

    #[test]
    fn a_file_source_gets_a_file_mount_point() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc/app.conf")).unwrap();
        let src = t.path().join("secret");
        std::fs::write(&src, "s").unwrap();
        let mut created = Vec::new();
        let targets = prepare_targets(
            &root,
            &[Mount::bind(&src, "/run/secrets/x", true)],
            &mut created,
        )
        .unwrap();
        assert!(targets[0].is_file());
        let err = prepare_targets(
            &root,
            &[Mount::bind(&src, "/etc/app.conf", true)],
            &mut created,
        )
        .unwrap_err();
        assert!(err.contains("it is a directory"), "{err}");
        let err = prepare_targets(&root, &[Mount::bind(&src, "relative", true)], &mut created)
            .unwrap_err();
        assert!(err.contains("absolute"), "{err}");
    }
}
