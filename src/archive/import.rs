//! `kiln import`: a rootfs tarball (plain or compressed) becomes a one-layer image. Every entry
//! is rewritten through [`LayerBuilder`], so the layer has clean relative paths, no host user
//! names and (with SOURCE_DATE_EPOCH) clamped times, and the same tarball always gives the
//! same image ID.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::{ArchiveError, Result};
use crate::image::timestamp::{now_rfc3339, rfc3339_from_unix};
use crate::image::{media, Descriptor, Digest, History, ImageConfig, Reference};
use crate::layer::{decompressing_reader, BuildOptions, DeviceKind, EntryMeta, LayerBuilder};
use crate::store::Store;

/// What `import` is asked to make.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The tag to give the image; without one it is kept untagged (docker's `<none>`).
    pub reference: Option<Reference>,
    /// Clamps file times and fixes `created` (reproducible imports).
    pub source_date_epoch: Option<i64>,
    /// The history comment (docker's `import -m`).
    pub message: Option<String>,
}

/// The image `import` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The manifest descriptor, as recorded in the store's index.
    pub manifest: Descriptor,
    /// The config digest: the image ID.
    pub config: Digest,
    /// The digest of the single (uncompressed) layer.
    pub diff_id: Digest,
    /// Bytes of the layer tar.
    pub layer_size: u64,
}

/// The history line of imported images.
pub const IMPORT_CREATED_BY: &str = "kiln import";

/// Reads a rootfs tarball from `input` and stores it as a one-layer image for the host
/// platform. Nothing is tagged if any entry is refused.
pub fn import_rootfs(store: &Store, input: impl Read, opts: &ImportOptions) -> Result<Imported> {
    let (_, stream) = decompressing_reader(input).map_err(ArchiveError::Read)?;
    let mut archive = tar::Archive::new(stream);
    let mut builder = LayerBuilder::new(
        store.blob_writer()?,
        BuildOptions {
            source_date_epoch: opts.source_date_epoch,
        },
    );
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let entry = entry.map_err(ArchiveError::Read)?;
        copy_entry(&mut builder, entry, &mut seen)?;
    }
    // Decompressors check their trailer only at the very end of the stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(ArchiveError::Read)?;

    let (writer, digested) = builder.finish()?;
    let diff_id = Digest::from_sha256_bytes(&digested.digest.0);
    let layer = writer.commit(Some(&diff_id))?;

    let created = match opts.source_date_epoch {
        Some(epoch) => rfc3339_from_unix(u64::try_from(epoch).unwrap_or(0), 0),
        None => now_rfc3339(),
    };
    let mut config = ImageConfig {
        created: Some(created.clone()),
        architecture: crate::image::host_architecture().to_string(),
        os: "linux".to_string(),
        ..Default::default()
    };
    config.rootfs.diff_ids.push(diff_id.clone());
    config.history.push(History {
        created: Some(created),
        created_by: Some(IMPORT_CREATED_BY.to_string()),
        comment: opts.message.clone().filter(|m| !m.is_empty()),
        ..Default::default()
    });
    let layer_desc = Descriptor::new(media::OCI_LAYER_TAR, layer.digest, layer.size);
    let (manifest, config_digest) = store.put_image(&config, &[layer_desc])?;
    match &opts.reference {
        Some(r) => store.tag(r, &manifest)?,
        None => store.keep_untagged(&manifest)?,
    }
    Ok(Imported {
        manifest,
        config: config_digest,
        diff_id,
        layer_size: layer.size,
    })
}

fn copy_entry<R: Read, W: Write>(
    b: &mut LayerBuilder<W>,
    mut entry: tar::Entry<'_, R>,
    seen: &mut HashSet<Vec<u8>>,
) -> Result<()> {
    use tar::EntryType as T;
    let kind = entry.header().entry_type();
    if kind.is_pax_global_extensions() {
        return Ok(());
    }
    let raw = entry.path_bytes().into_owned();
    let shown = || String::from_utf8_lossy(&raw).into_owned();
    let Some(clean) = clean_path(&raw) else {
        return Err(ArchiveError::Entry {
            path: shown(),
            reason: "the path climbs above the root with `..`",
        });
    };
    if clean.is_empty() {
        // The root itself (`./`): its owner and mode belong to whoever unpacks the image.
        return Ok(());
    }
    // Refused here rather than stored as a layer no RUN could unpack.
    if let Some(reason) = crate::layer::name_problem(&clean) {
        return Err(ArchiveError::Entry {
            path: shown(),
            reason,
        });
    }
    let path = PathBuf::from(OsStr::from_bytes(&clean));
    let meta = read_meta(&mut entry).map_err(|reason| ArchiveError::Entry {
        path: shown(),
        reason,
    })?;
    match kind {
        T::Directory => b.append_dir(&path, &meta)?,
        T::Regular | T::Continuous | T::GNUSparse => {
            let size = entry.size();
            b.append_file(&path, &meta, size, &mut entry)?;
        }
        T::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| ArchiveError::Entry {
                    path: shown(),
                    reason: "symlink without a target",
                })?
                .into_owned();
            b.append_symlink(&path, &meta, Path::new(OsStr::from_bytes(&target)))?;
        }
        T::Link => {
            let target = entry.link_name_bytes().map(|t| t.into_owned());
            let target = target.as_deref().and_then(clean_path);
            let Some(target) = target.filter(|t| !t.is_empty()) else {
                return Err(ArchiveError::Entry {
                    path: shown(),
                    reason: "hard link target is missing or outside the root",
                });
            };
            // Readers resolve a hard link against entries already extracted.
            if !seen.contains(&target) {
                return Err(ArchiveError::Entry {
                    path: shown(),
                    reason: "hard link to a file that does not come earlier in the archive",
                });
            }
            b.append_hardlink(&path, &meta, Path::new(OsStr::from_bytes(&target)))?;
        }
        T::Char | T::Block => {
            let dev = |v: io::Result<Option<u32>>| v.ok().flatten();
            let (Some(major), Some(minor)) = (
                dev(entry.header().device_major()),
                dev(entry.header().device_minor()),
            ) else {
                return Err(ArchiveError::Entry {
                    path: shown(),
                    reason: "unreadable device numbers",
                });
            };
            let kind = if kind == T::Char {
                DeviceKind::Char
            } else {
                DeviceKind::Block
            };
            b.append_device(&path, &meta, kind, major, minor)?;
        }
        T::Fifo => b.append_fifo(&path, &meta)?,
        _ => {
            return Err(ArchiveError::Entry {
                path: shown(),
                reason: "unsupported tar entry type",
            })
        }
    }
    if kind != T::Directory {
        seen.insert(clean);
    }
    Ok(())
}

/// The path relative to the root, `/`-separated, with `.`, empty components and leading `/`
/// dropped and `..` resolved; `None` if it climbs above the root.
fn clean_path(raw: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&c| c == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join(&b'/'))
}

/// Header fields with the entry's PAX records applied.
fn read_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> std::result::Result<EntryMeta, &'static str> {
    let h = entry.header();
    let mode = h.mode().map_err(|_| "unreadable mode field")?;
    let mut uid = h.uid().map_err(|_| "unreadable uid field")?;
    let mut gid = h.gid().map_err(|_| "unreadable gid field")?;
    let mut mtime = h
        .mtime()
        .map(|m| i64::try_from(m).unwrap_or(i64::MAX))
        .map_err(|_| "unreadable mtime field")?;
    let mut xattrs = std::collections::BTreeMap::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|_| "unreadable PAX header")?
    {
        for ext in pax {
            let ext = ext.map_err(|_| "unreadable PAX record")?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            let text = std::str::from_utf8(value).map(str::trim);
            match key {
                "uid" => {
                    uid = text
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or("bad PAX uid")?
                }
                "gid" => {
                    gid = text
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or("bad PAX gid")?
                }
                "mtime" => {
                    // Whole seconds: the layer keeps second precision, as docker's do.
                    let secs = text.ok().and_then(|t| t.split('.').next());
                    mtime = secs.and_then(|s| s.parse().ok()).ok_or("bad PAX mtime")?;
                }
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        xattrs.insert(name.to_string(), value.to_vec());
                    }
                }
            }
        }
    }
    Ok(EntryMeta {
        mode: mode & 0o7777,
        uid: u32::try_from(uid).map_err(|_| "uid does not fit in 32 bits")?,
        gid: u32::try_from(gid).map_err(|_| "gid does not fit in 32 bits")?,
        mtime,
        xattrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_strips_and_rejects_escapes() {
        assert_eq!(clean_path(b"./bin/sh").unwrap(), b"bin/sh");
        assert_eq!(clean_path(b"/etc//passwd").unwrap(), b"etc/passwd");
        assert_eq!(clean_path(b"./").unwrap(), b"");
        assert_eq!(clean_path(b"a/../b/").unwrap(), b"b");
        assert_eq!(clean_path(b"../etc/passwd"), None);
        assert_eq!(clean_path(b"a/../../x"), None);
    }

    fn tarball(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_uid(1000);
            h.set_gid(1000);
            h.set_mtime(2_000_000_000);
            h.set_size(data.len() as u64);
            // Raw names: the crate's own setters refuse `..`, which is what we test.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if !link.is_empty() {
                let l = h.as_old_mut().linkname.as_mut();
                l[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            t.append(&h, *data).unwrap();
        }
        t.into_inner().unwrap()
    }

    fn entries(layer: &[u8]) -> Vec<(String, u64, u64, u32)> {
        let mut a = tar::Archive::new(layer);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                    h.mode().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn import_cleans_paths_keeps_owners_and_clamps_times() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = tarball(&[
            ("./", tar::EntryType::Directory, b"", ""),
            ("./bin/", tar::EntryType::Directory, b"", ""),
            ("/bin/busybox", tar::EntryType::Regular, b"ELF", ""),
            ("./bin/sh", tar::EntryType::Symlink, b"", "/bin/busybox"),
            ("./bin/ash", tar::EntryType::Link, b"", "./bin/busybox"),
        ]);
        let opts = ImportOptions {
            reference: Some(Reference::parse("bb:1").unwrap()),
            source_date_epoch: Some(1_700_000_000),
            message: None,
        };
        let a = import_rootfs(&store, &tar[..], &opts).unwrap();
        let b = import_rootfs(&store, &tar[..], &opts).unwrap();
        assert_eq!(a, b);
        let layer = store.read_blob(&a.diff_id).unwrap();
        let got = entries(&layer);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["bin/", "bin/busybox", "bin/sh", "bin/ash"]);
        assert!(got.iter().all(|e| e.1 == 1000 && e.2 == 1_700_000_000));
        assert_eq!(got[1].3, 0o755);

        let config = store.read_config(&a.config).unwrap();
        assert_eq!(config.created.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(config.rootfs.diff_ids, vec![a.diff_id.clone()]);
        assert_eq!(config.history.len(), 1);
        assert_eq!(
            config.history[0].created_by.as_deref(),
            Some(IMPORT_CREATED_BY)
        );
        assert!(config.config.env.is_empty());
        assert_eq!(store.resolve("bb:1").unwrap().config, a.config);
    }

    #[test]
    fn import_refuses_escapes_and_tags_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let opts = ImportOptions {
            reference: Some(Reference::parse("bad").unwrap()),
            ..Default::default()
        };
        for tar in [
            tarball(&[("../etc/passwd", tar::EntryType::Regular, b"x", "")]),
            tarball(&[("a", tar::EntryType::Link, b"", "../../x")]),
            tarball(&[("a", tar::EntryType::Link, b"", "later")]),
        ] {
            let err = import_rootfs(&store, &tar[..], &opts).unwrap_err();
            assert!(matches!(err, ArchiveError::Entry { .. }), "{err}");
        }
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn import_reads_compressed_tarballs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = tarball(&[("f", tar::EntryType::Regular, b"data", "")]);
        let opts = ImportOptions {
            source_date_epoch: Some(0),
            ..Default::default()
        };
        let plain = import_rootfs(&store, &tar[..], &opts).unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        assert_eq!(import_rootfs(&store, &zst[..], &opts).unwrap(), plain);
        let truncated = &zst[..zst.len() - 4];
        assert!(import_rootfs(&store, truncated, &opts).is_err());
        // Kept untagged, so listed as `<none>`.
        assert_eq!(store.list().unwrap().len(), 1);
    }
}
