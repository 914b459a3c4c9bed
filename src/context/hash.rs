//! Content hashes of context files: blake3, many files in parallel (rayon), big files
//! memory-mapped and hashed on several threads, and a stat cache so that a rebuild
//! rereads only files whose (size, mtime, ctime, inode, device) changed.

use super::walk::{Entry, Kind, Listing};
use super::ContextError;
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Files at least this big are memory-mapped and hashed with several threads.
const BIG_FILE: u64 = 8 << 20;

/// A stat entry is trusted only if the file was last changed this long before it was
/// hashed: a write within the same timestamp tick could otherwise go unseen (git's
/// "racily clean" problem).
const RACY_WINDOW_NS: i128 = 2_000_000_000;

const MAGIC: &[u8] = b"kiln-statcache-v1\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(e: &Entry) -> Self {
        Stamp {
            size: e.size,
            mtime_ns: e.mtime_ns,
            ctime_ns: e.ctime_ns,
            ino: e.ino,
            dev: e.dev,
        }
    }
}

/// Remembers the hash of each file by its stat stamp, across builds.
#[derive(Debug, Default)]
pub struct StatCache {
    entries: HashMap<PathBuf, (Stamp, [u8; 32])>,
    dirty: bool,
}

impl StatCache {
    /// Load the cache at `path`. A missing or unreadable cache is an empty one: it only
    /// ever saves work, so a damaged file must not fail a build.
    pub fn load(path: &Path) -> StatCache {
        let Ok(bytes) = std::fs::read(path) else {
            return StatCache::default();
        };
        decode(&bytes).unwrap_or_default()
    }

    /// Write the cache atomically (temp file, rename), if anything changed. Not fsynced: a
    /// cache lost in a crash only costs rehashing.
    pub fn save(&self, path: &Path) -> Result<(), ContextError> {
        if !self.dirty {
            return Ok(());
        }
        let err = |e| ContextError::io(path, e);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut buf = Vec::with_capacity(MAGIC.len() + self.entries.len() * 96);
        buf.extend_from_slice(MAGIC);
        for (p, (s, h)) in &self.entries {
            let p = p.as_os_str().as_encoded_bytes();
            buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buf.extend_from_slice(p);
            buf.extend_from_slice(&s.size.to_le_bytes());
            buf.extend_from_slice(&s.mtime_ns.to_le_bytes());
            buf.extend_from_slice(&s.ctime_ns.to_le_bytes());
            buf.extend_from_slice(&s.ino.to_le_bytes());
            buf.extend_from_slice(&s.dev.to_le_bytes());
            buf.extend_from_slice(h);
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&buf).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Bytes of one record after its path: size, two times, inode, device, hash.
const RECORD_TAIL: usize = 8 + 16 + 16 + 8 + 8 + 32;

fn decode(bytes: &[u8]) -> Option<StatCache> {
    let mut r = bytes.strip_prefix(MAGIC)?;
    // Counted first so the map is allocated once: growing it by doubling would hold two
    // tables at once, tens of MB for a context of 200,000 files.
    let mut count = 0usize;
    let mut scan = r;
    while let Some((len, rest)) = scan.split_first_chunk::<4>() {
        let skip = (u32::from_le_bytes(*len) as usize).checked_add(RECORD_TAIL)?;
        scan = rest.get(skip..)?;
        count += 1;
    }
    let mut entries = HashMap::with_capacity(count);
    fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if r.len() < n {
            return None;
        }
        let (a, b) = r.split_at(n);
        *r = b;
        Some(a)
    }
    fn u64_(r: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(r, 8)?.try_into().ok()?))
    }
    fn i128_(r: &mut &[u8]) -> Option<i128> {
        Some(i128::from_le_bytes(take(r, 16)?.try_into().ok()?))
    }
    while !r.is_empty() {
        let n = u32::from_le_bytes(take(&mut r, 4)?.try_into().ok()?) as usize;
        let p = take(&mut r, n)?;
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(p));
        let stamp = Stamp {
            size: u64_(&mut r)?,
            mtime_ns: i128_(&mut r)?,
            ctime_ns: i128_(&mut r)?,
            ino: u64_(&mut r)?,
            dev: u64_(&mut r)?,
        };
        let h: [u8; 32] = take(&mut r, 32)?.try_into().ok()?;
        entries.insert(p, (stamp, h));
    }
    Some(StatCache {
        entries,
        dirty: false,
    })
}

/// What [`hash_files`] did, for progress and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HashStats {
    pub files: usize,
    pub reread: usize,
    pub bytes_read: u64,
}

/// The blake3 hash of each regular file among `entries`, keyed by its context path.
/// Files whose stat stamp matches the cache are not read.
pub fn hash_files(
    listing: &Listing,
    entries: &[&Entry],
    cache: &mut StatCache,
) -> Result<(HashMap<String, blake3::Hash>, HashStats), ContextError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let files: Vec<&Entry> = entries
        .iter()
        .copied()
        .filter(|e| e.kind == Kind::File)
        .collect();
    let results: Vec<(String, PathBuf, Stamp, blake3::Hash, bool)> = files
        .par_iter()
        .map(|e| {
            let disk = listing.disk_path(&e.path);
            let stamp = Stamp::of(e);
            if let Some((s, h)) = cache.entries.get(&disk) {
                if *s == stamp {
                    return Ok((e.path.clone(), disk, stamp, blake3::Hash::from(*h), false));
                }
            }
            let h = hash_path(&disk, e.size)?;
            Ok((e.path.clone(), disk, stamp, h, true))
        })
        .collect::<Result<_, ContextError>>()?;
    let mut out = HashMap::with_capacity(results.len());
    let mut stats = HashStats {
        files: results.len(),
        ..Default::default()
    };
    for (rel, disk, stamp, h, reread) in results {
        if reread {
            stats.reread += 1;
            stats.bytes_read += stamp.size;
            if now - stamp.mtime_ns.max(stamp.ctime_ns) > RACY_WINDOW_NS {
                cache.entries.insert(disk, (stamp, *h.as_bytes()));
                cache.dirty = true;
            }
        }
        out.insert(rel, h);
    }
    Ok((out, stats))
}

/// Hash one file's content.
pub fn hash_path(path: &Path, size: u64) -> Result<blake3::Hash, ContextError> {
    let err = |e| ContextError::io(path, e);
    let mut hasher = blake3::Hasher::new();
    if size >= BIG_FILE {
        hasher.update_mmap_rayon(path).map_err(err)?;
    } else {
        let mut f = std::fs::File::open(path).map_err(err)?;
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf).map_err(err)?;
        hasher.update(&buf);
    }
    Ok(hasher.finalize())
}

/// A digest over a selection of context entries: their paths (relative to `base`),
/// kinds, permission bits, link targets and content hashes. Owners and times of context
/// files do not count: a COPY from the context writes owner 0:0 (or --chown) anyway.
pub fn selection_digest(
    base: &str,
    entries: &[&Entry],
    hashes: &HashMap<String, blake3::Hash>,
) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"kiln-context-selection-v1\0");
    for e in entries {
        let rel = e
            .path
            .strip_prefix(base)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(&e.path);
        h.update(rel.as_bytes());
        h.update(b"\0");
        h.update(&(e.mode & 0o7777).to_le_bytes());
        match &e.kind {
            Kind::File => {
                h.update(b"f");
                if let Some(c) = hashes.get(&e.path) {
                    h.update(c.as_bytes());
                }
            }
            Kind::Dir => {
                h.update(b"d");
            }
            Kind::Symlink(t) => {
                h.update(b"l");
                h.update(t.as_os_str().as_encoded_bytes());
                h.update(b"\0");
            }
            Kind::Other => {
                h.update(b"o");
            }
        }
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_cache_round_trips_and_a_damaged_one_is_empty() {
        let mut c = StatCache::default();
        for i in 0..1000u64 {
            let stamp = Stamp {
                size: i,
                mtime_ns: -(i as i128),
                ctime_ns: i as i128 * 3,
                ino: i + 7,
                dev: 2,
            };
            c.entries.insert(
                PathBuf::from(format!("/ctx/d{}/f{i}", i % 10)),
                (stamp, [i as u8; 32]),
            );
        }
        c.dirty = true;
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("cache");
        c.save(&path).unwrap();
        let back = StatCache::load(&path);
        assert_eq!(back.entries, c.entries);
        let bytes = std::fs::read(&path).unwrap();
        // Cut inside a record: the whole cache is dropped, never half read.
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(StatCache::load(&path).is_empty());
    }
}
