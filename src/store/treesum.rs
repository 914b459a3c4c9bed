//! The content record of a snapshot: one line per entry of the unpacked tree (kind, mode,
//! owner, size, blake3 of the content or the link target, path), written when the snapshot
//! is published and compared by `system check`. Per-entry lines rather than one hash, so a
//! check can name the file that changed and can tolerate files it cannot read.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::error::{io_err, Result};

/// Content hash placeholder for a file the walker could not open (modes without owner read,
/// or ids of a rootless user's containers): such a file is compared by metadata only.
const UNREADABLE: &str = "?";

/// The record of the tree at `root`, sorted by path.
pub(crate) fn tree_record(root: &Path) -> Result<String> {
    let mut out = String::new();
    for entry in walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            io_err("walking snapshot", path)(io::Error::other(e.to_string()))
        })?;
        let path = entry.path();
        let md = fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
        let ft = md.file_type();
        let (kind, content) = if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err("reading link", path))?;
            (
                "l",
                blake3::hash(target.as_os_str().as_bytes())
                    .to_hex()
                    .to_string(),
            )
        } else if ft.is_dir() {
            ("d", String::new())
        } else if ft.is_file() {
            ("f", file_hash(path, md.mode()))
        } else if ft.is_char_device() || ft.is_block_device() {
            ("c", format!("{:x}", md.rdev()))
        } else {
            ("o", String::new())
        };
        let rel = path.strip_prefix(root).unwrap_or(path);
        let size = if ft.is_file() { md.len() } else { 0 };
        out.push_str(&format!(
            "{kind} {:o} {} {} {size} {content} {}\n",
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            rel.as_os_str().as_bytes().escape_ascii()
        ));
    }
    Ok(out)
}

fn file_hash(path: &Path, mode: u32) -> String {
    // Without owner read the file is readable only by privilege, which differs between the
    // process that made the snapshot and the one checking it: compare metadata only.
    if mode & 0o400 == 0 {
        return UNREADABLE.to_string();
    }
    let Ok(mut f) = File::open(path) else {
        return UNREADABLE.to_string();
    };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(buf.get(..n).unwrap_or_default());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return UNREADABLE.to_string(),
        }
    }
    hasher.finalize().to_hex().to_string()
}

/// The first difference between a recorded and a fresh record, described for a user; `None`
/// when they match (an unreadable file on either side matches on metadata).
pub(crate) fn first_difference(recorded: &str, actual: &str) -> Option<String> {
    let mut want = recorded.lines();
    let mut got = actual.lines();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return None,
            (Some(w), None) => return Some(format!("missing {}", path_of(w))),
            (None, Some(g)) => return Some(format!("unexpected {}", path_of(g))),
            (Some(w), Some(g)) => {
                if w == g {
                    continue;
                }
                let (wp, gp) = (path_of(w), path_of(g));
                if wp != gp {
                    return Some(if wp < gp {
                        format!("missing {wp}")
                    } else {
                        format!("unexpected {gp}")
                    });
                }
                if !same_but_unreadable(w, g) {
                    return Some(format!("{wp} changed"));
                }
            }
        }
    }
}

fn path_of(line: &str) -> &str {
    line.splitn(7, ' ').nth(6).unwrap_or(line)
}

fn same_but_unreadable(a: &str, b: &str) -> bool {
    let fa: Vec<&str> = a.splitn(7, ' ').collect();
    let fb: Vec<&str> = b.splitn(7, ' ').collect();
    if fa.len() != 7 || fb.len() != 7 {
        return false;
    }
    let content_differs_by_access =
        fa.get(5) == Some(&UNREADABLE) || fb.get(5) == Some(&UNREADABLE);
    content_differs_by_access
        && fa
            .iter()
            .zip(&fb)
            .enumerate()
            .all(|(i, (x, y))| i == 5 || x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn record_names_what_changed() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("bin")).unwrap();
        fs::write(d.path().join("bin/sh"), b"#!").unwrap();
        std::os::unix::fs::symlink("sh", d.path().join("bin/ash")).unwrap();
        let before = tree_record(d.path()).unwrap();
        assert_eq!(before.lines().count(), 3);
        assert_eq!(first_difference(&before, &before), None);
        fs::write(d.path().join("bin/sh"), b"#?").unwrap();
        let after = tree_record(d.path()).unwrap();
        assert_eq!(
            first_difference(&before, &after).as_deref(),
            Some("bin/sh changed")
        );
        fs::remove_file(d.path().join("bin/ash")).unwrap();
        let gone = tree_record(d.path()).unwrap();
        assert_eq!(
            first_difference(&before, &gone).as_deref(),
            Some("missing bin/ash")
        );
        fs::write(d.path().join("extra"), b"").unwrap();
        assert!(first_difference(&gone, &tree_record(d.path()).unwrap())
            .unwrap()
            .starts_with("unexpected extra"));
    }

    #[test]
    fn unreadable_files_compare_by_metadata() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("secret"), b"x").unwrap();
        fs::set_permissions(d.path().join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
        let rec = tree_record(d.path()).unwrap();
        assert!(rec.contains(" ? "), "{rec}");
        let readable = rec.replace(" ? ", " abc ");
        assert_eq!(first_difference(&rec, &readable), None);
        let resized = rec.replace(" 1 ? ", " 2 ? ");
        assert!(first_difference(&rec, &resized).is_some());
    }
}
