//! Opening directories inside a root directory as if it were `/`: symlinks are followed, but
//! absolute targets and `..` can never climb above the root. The kernel does this with
//! `openat2(RESOLVE_IN_ROOT)` (Linux ≥ 5.6); elsewhere a component-wise walk with
//! `O_NOFOLLOW` does the same resolution in user space.

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How paths inside the destination are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathResolution {
    /// `openat2(RESOLVE_IN_ROOT)` when the kernel has it, else [`PathResolution::Walk`].
    #[default]
    Auto,
    /// The user-space walk, even where `openat2` exists (for sandboxes that filter it).
    Walk,
}

/// Symlink hops allowed in one resolution, as the kernel's MAXSYMLINKS.
const MAX_HOPS: usize = 40;

pub(crate) struct Root {
    fd: OwnedFd,
    use_openat2: bool,
}

impl Root {
    pub(crate) fn open(dir: &Path, how: PathResolution) -> nix::Result<Root> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut root = Root {
            fd,
            use_openat2: false,
        };
        if how == PathResolution::Auto {
            // ENOSYS on old kernels, EPERM under seccomp filters that predate the call.
            root.use_openat2 = root.openat2_dir(OsStr::new(".")).is_ok();
        }
        Ok(root)
    }

    /// Opens (`O_PATH`) the directory `comps` inside the root. With `create`, missing
    /// directories are made with mode 0755, as docker does for parents a tar leaves out.
    pub(crate) fn open_dir(&self, comps: &[OsString], create: bool) -> nix::Result<OwnedFd> {
        match self.resolve(comps) {
            Err(Errno::ENOENT) if create => {}
            other => return other,
        }
        // Missing directories are made where the in-root resolution leads, so a symlink to
        // a directory that does not exist yet (`var/run -> /run`) gets its target created
        // inside the root, as BuildKit's MkdirAll on a root-scoped path does.
        self.walk(comps, true)
    }

    fn resolve(&self, comps: &[OsString]) -> nix::Result<OwnedFd> {
        if comps.is_empty() {
            return self.fd.try_clone().map_err(|_| Errno::EMFILE);
        }
        // openat2 takes the whole path, which the kernel caps at PATH_MAX; a deeper name
        // (a PAX path may be any length) is walked component by component instead.
        let long = comps.iter().map(|c| c.len() + 1).sum::<usize>() >= libc::PATH_MAX as usize;
        if self.use_openat2 && !long {
            let mut joined = Vec::new();
            for (i, c) in comps.iter().enumerate() {
                if i > 0 {
                    joined.push(b'/');
                }
                joined.extend_from_slice(c.as_bytes());
            }
            self.openat2_dir(OsStr::from_bytes(&joined))
        } else {
            self.walk(comps, false)
        }
    }

    fn openat2_dir(&self, path: &OsStr) -> nix::Result<OwnedFd> {
        use nix::fcntl::{openat2, OpenHow, ResolveFlag};
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        loop {
            // EAGAIN: a rename raced with the lookup; the kernel asks us to retry.
            match openat2(&self.fd, path, how) {
                Err(Errno::EAGAIN) => continue,
                other => return other,
            }
        }
    }

    /// The user-space equivalent of RESOLVE_IN_ROOT: `..` at the root stays at the root,
    /// absolute symlink targets restart from the root, and every directory is opened with
    /// `O_NOFOLLOW` so nothing outside can be reached between the check and the open.
    fn walk(&self, comps: &[OsString], create: bool) -> nix::Result<OwnedFd> {
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut queue: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            let bytes = c.as_bytes();
            if bytes.is_empty() || bytes == b"." {
                continue;
            }
            if bytes == b".." {
                stack.pop();
                continue;
            }
            let cur = stack.last().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd());
            let st = match fstatat(cur, c.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Err(Errno::ENOENT) if create => {
                    match mkdirat(cur, c.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    fstatat(cur, c.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?
                }
                other => other?,
            };
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFLNK {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(Errno::ELOOP);
                }
                let target = nix::fcntl::readlinkat(cur, c.as_os_str())?;
                let target = target.as_bytes();
                if target.first() == Some(&b'/') {
                    stack.clear();
                }
                for part in target.split(|&b| b == b'/').rev() {
                    queue.push_front(OsStr::from_bytes(part).to_os_string());
                }
                continue;
            }
            if kind != SFlag::S_IFDIR {
                return Err(Errno::ENOTDIR);
            }
            let fd = openat(
                cur,
                c.as_os_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            stack.push(fd);
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => self.fd.try_clone().map_err(|_| Errno::EMFILE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::fstat;
    use std::os::unix::fs::symlink;

    fn comps(s: &str) -> Vec<OsString> {
        s.split('/').map(OsString::from).collect()
    }

    fn ino(fd: &OwnedFd) -> u64 {
        fstat(fd).unwrap().st_ino
    }

    fn both(dir: &Path) -> [Root; 2] {
        [
            Root::open(dir, PathResolution::Auto).unwrap(),
            Root::open(dir, PathResolution::Walk).unwrap(),
        ]
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../real", root.join("up")).unwrap();
        symlink("real/sub", root.join("rel")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        symlink("/nonexistent", root.join("dangling")).unwrap();
        let real = ino(&Root::open(&root.join("real"), PathResolution::Walk)
            .unwrap()
            .fd);
        let sub = std::fs::metadata(root.join("real/sub")).unwrap();
        for r in both(&root) {
            assert_eq!(ino(&r.open_dir(&comps("abs"), false).unwrap()), real);
            assert_eq!(ino(&r.open_dir(&comps("up"), false).unwrap()), real);
            assert_eq!(
                ino(&r.open_dir(&comps("rel"), false).unwrap()),
                std::os::unix::fs::MetadataExt::ino(&sub)
            );
            assert_eq!(r.open_dir(&comps("loop"), false).unwrap_err(), Errno::ELOOP);
            assert!(r.open_dir(&comps("dangling/x"), false).is_err());
        }
        // Creating through the dangling link makes its target inside the root.
        let r = Root::open(&root, PathResolution::Auto).unwrap();
        r.open_dir(&comps("dangling/x"), true).unwrap();
        assert!(root.join("nonexistent/x").is_dir());
        assert!(!Path::new("/nonexistent").exists());
    }

    #[test]
    fn paths_longer_than_path_max_resolve() {
        let t = tempfile::tempdir().unwrap();
        let deep: Vec<OsString> = (0..30).map(|_| OsString::from("d".repeat(200))).collect();
        let r = Root::open(t.path(), PathResolution::Auto).unwrap();
        let made = r.open_dir(&deep, true).unwrap();
        assert_eq!(ino(&r.open_dir(&deep, false).unwrap()), ino(&made));
    }

    #[test]
    fn missing_parents_are_created_inside() {
        let t = tempfile::tempdir().unwrap();
        for (i, r) in both(t.path()).into_iter().enumerate() {
            let p = format!("a{i}/b/c");
            r.open_dir(&comps(&p), true).unwrap();
            assert!(t.path().join(&p).is_dir());
        }
    }
}
