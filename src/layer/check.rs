//! Checking a layer tar without unpacking it: the same refusals [`super::apply_layer`] would
//! make (names climbing out with `..`, hard links leaving the root, entry types a layer
//! cannot carry, name components the kernel cannot create), plus a stream that ends inside
//! an entry. `load` runs it while it stores a layer, so a hostile layer is refused at the
//! door rather than at the first RUN that unpacks it.

use super::apply::{clean_path, join};
use super::error::{LayerError, Result};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Linux's NAME_MAX: the longest single name component any filesystem accepts.
pub const NAME_MAX: usize = 255;

/// Why a (raw) entry name cannot be unpacked, if it cannot.
pub fn name_problem(raw: &[u8]) -> Option<&'static str> {
    if raw.split(|&b| b == b'/').any(|c| c.len() > NAME_MAX) {
        return Some("a name component is longer than 255 bytes");
    }
    // In a layer `.wh.NAME` deletes NAME; deleting `.` or `..` would aim at the parent.
    let base = raw.rsplit(|&b| b == b'/').find(|c| !c.is_empty());
    if matches!(base, Some(b".wh." | b".wh.." | b".wh...")) {
        return Some("a whiteout of an empty name, `.` or `..`");
    }
    if raw.contains(&0) {
        return Some("the name contains a NUL byte");
    }
    None
}

/// Reads the uncompressed layer tar `reader` to its end and refuses what could not be
/// unpacked inside a root. Returns the number of entries.
pub fn check_layer(reader: impl Read) -> Result<u64> {
    let mut archive = tar::Archive::new(reader);
    let mut count = 0u64;
    // Non-directories seen so far: a hard link may only name one of them, as each layer is
    // unpacked on its own and a link cannot reach into another layer's snapshot.
    let mut linkable: HashSet<Vec<u8>> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|source| LayerError::Read { source })?;
    for entry in entries {
        let entry = entry.map_err(|source| LayerError::Read { source })?;
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        count += 1;
        let raw = entry.path_bytes().into_owned();
        let shown = || PathBuf::from(OsStr::from_bytes(&raw));
        let Some(comps) = clean_path(&raw) else {
            return Err(LayerError::Escape {
                path: shown(),
                reason: "the path climbs above the root with `..`",
            });
        };
        if let Some(reason) = name_problem(&raw) {
            return Err(LayerError::InvalidPath {
                path: shown(),
                reason,
            });
        }
        match kind {
            T::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let Some(inside) = clean_path(&target).filter(|c| !c.is_empty()) else {
                    return Err(LayerError::LinkEscape {
                        path: shown(),
                        target: PathBuf::from(OsStr::from_bytes(&target)),
                    });
                };
                if !linkable.contains(&join(&inside)) {
                    return Err(LayerError::InvalidPath {
                        path: shown(),
                        reason: "hard link to a file that does not come earlier in the layer",
                    });
                }
            }
            T::Symlink if entry.link_name_bytes().is_none() => {
                return Err(LayerError::InvalidPath {
                    path: shown(),
                    reason: "symlink without a target",
                });
            }
            T::Directory
            | T::Regular
            | T::Continuous
            | T::GNUSparse
            | T::Symlink
            | T::Char
            | T::Block
            | T::Fifo => {}
            other => {
                return Err(LayerError::UnsupportedEntry {
                    path: shown(),
                    kind: char::from(other.as_byte()),
                })
            }
        }
        // One flat key per path: a layer may hold hundreds of thousands of entries.
        if kind.is_dir() {
            linkable.remove(&join(&comps));
        } else {
            linkable.insert(join(&comps));
        }
    }
    // Whatever follows the end blocks is read too, so a caller hashing the stream sees it.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| LayerError::Read { source })?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&[u8], tar::EntryType, &[u8], usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, size) in entries {
            let mut h = tar::Header::new_gnu();
            {
                let raw = h.as_old_mut();
                raw.name[..name.len()].copy_from_slice(name);
                raw.linkname[..link.len()].copy_from_slice(link);
            }
            h.set_entry_type(*kind);
            h.set_size(*size as u64);
            h.set_mode(0o644);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend(std::iter::repeat_n(b'x', size.div_ceil(512) * 512));
        }
        out.extend([0u8; 1024]);
        out
    }

    #[test]
    fn sound_layers_pass() {
        let t = tar_of(&[
            (b"etc/", tar::EntryType::Directory, b"", 0),
            (b"etc/passwd", tar::EntryType::Regular, b"", 700),
            (b"etc/pw", tar::EntryType::Link, b"etc/passwd", 0),
            (b"abs", tar::EntryType::Symlink, b"/etc/../../..", 0),
            (b"/rooted/../x", tar::EntryType::Regular, b"", 1),
        ]);
        assert_eq!(check_layer(&t[..]).unwrap(), 5);
    }

    #[test]
    fn hostile_layers_are_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                tar_of(&[(b"../x", tar::EntryType::Regular, b"", 1)]),
                "climbs above",
            ),
            (
                tar_of(&[(b"h", tar::EntryType::Link, b"a/../../etc/shadow", 0)]),
                "outside the destination",
            ),
            (tar_of(&[(b"h", tar::EntryType::Link, b"/", 0)]), "outside"),
            (
                tar_of(&[(b"w", tar::EntryType::new(b'Z'), b"", 0)]),
                "unsupported",
            ),
            (
                tar_of(&[(b"h", tar::EntryType::Link, b"lower/file", 0)]),
                "earlier",
            ),
            (
                tar_of(&[(b"a/.wh...", tar::EntryType::Regular, b"", 0)]),
                "whiteout",
            ),
        ];
        for (t, want) in cases {
            let e = check_layer(&t[..]).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let mut long = tar_of(&[(b"x", tar::EntryType::Regular, b"", 1)]);
        long.truncate(512 + 100);
        assert!(matches!(
            check_layer(&long[..]),
            Err(LayerError::Read { .. })
        ));
        assert_eq!(
            name_problem(&[b'n'; 256]),
            Some("a name component is longer than 255 bytes")
        );
        assert_eq!(name_problem(&[b'n'; 255]), None);
    }

    #[test]
    fn a_header_promising_more_than_the_stream_holds_is_refused() {
        let mut t = tar_of(&[(b"big", tar::EntryType::Regular, b"", 10)]);
        // Size field: 8 GiB - 1, with only the 512 bytes of data written above.
        t[124..136].copy_from_slice(b"77777777777\0");
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&t[..512]);
        h.set_cksum();
        t[..512].copy_from_slice(h.as_bytes());
        assert!(matches!(check_layer(&t[..]), Err(LayerError::Read { .. })));
    }
}
