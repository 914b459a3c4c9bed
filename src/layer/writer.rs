//! The deterministic tar writer: ustar headers written by hand, PAX records for whatever does
//! not fit (long names and links, large ids and sizes, xattrs), sha256 of the stream as it goes.

use super::digest::{Digested, HashingWriter};
use super::error::{LayerError, Result};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const BLOCK: usize = 512;
/// Copy buffer for file contents: big enough that hashing and writing run at memory speed.
const COPY_BUF: usize = 256 * 1024;

/// Prefix of an OCI whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Ownership, permissions, time and xattrs of one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits including setuid/setgid/sticky (`0o7777`); other bits are ignored.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch; clamped to SOURCE_DATE_EPOCH when the builder has one.
    pub mtime: i64,
    /// Extended attributes, written as `SCHILY.xattr.<name>` PAX records in name order.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntryMeta {
    /// Root-owned entry with `mode`, mtime 0 and no xattrs.
    pub fn with_mode(mode: u32) -> Self {
        EntryMeta {
            mode,
            ..EntryMeta::default()
        }
    }
}

/// Options fixed for the whole layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// When set, every mtime is clamped to `min(mtime, epoch)` (reproducible builds).
    pub source_date_epoch: Option<i64>,
}

/// Character or block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

/// Writes a layer tar to `W`, entry by entry in the order the caller gives. The same calls
/// produce the same bytes. After any error the output is incomplete and must be discarded.
pub struct LayerBuilder<W: Write> {
    out: HashingWriter<W>,
    opts: BuildOptions,
    buf: Vec<u8>,
    /// (dev, ino) → archive path of the first link seen, for trees walked from disk.
    pub(crate) links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> LayerBuilder<W> {
    pub fn new(out: W, opts: BuildOptions) -> Self {
        LayerBuilder {
            out: HashingWriter::new(out),
            opts,
            buf: Vec::new(),
            links: HashMap::new(),
        }
    }

    /// Bytes of tar written so far.
    pub fn bytes_written(&self) -> u64 {
        self.out.size()
    }

    pub fn options(&self) -> BuildOptions {
        self.opts
    }

    pub fn append_dir(&mut self, path: &Path, meta: &EntryMeta) -> Result<()> {
        let name = archive_path(path, true)?;
        self.write_header(path, &name, b'5', meta, 0, None, (0, 0))
    }

    /// A regular file whose `size` bytes of content are read from `content` (streamed, never
    /// held in memory). A reader shorter than `size` is an error; extra bytes are not read.
    pub fn append_file(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        size: u64,
        content: impl Read,
    ) -> Result<()> {
        let name = archive_path(path, false)?;
        self.write_header(path, &name, b'0', meta, size, None, (0, 0))?;
        self.copy_content(path, size, content)
    }

    /// A regular file whose content is read from `source` on the host. The size is taken from
    /// the opened file, so a file that shrinks while being read is an error, not a bad tar;
    /// one rewritten while being read (its size, mtime or ctime differ afterwards) is an
    /// error too, as its bytes may mix two versions. Nothing is retried: the content is
    /// already in the stream, and the caller's cache key was computed from one version.
    pub fn append_file_from_path(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        source: &Path,
    ) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open(source).map_err(|e| LayerError::io(source, e))?;
        let stamp = |f: &std::fs::File| {
            f.metadata()
                .map(|m| {
                    (
                        m.len(),
                        m.mtime(),
                        m.mtime_nsec(),
                        m.ctime(),
                        m.ctime_nsec(),
                    )
                })
                .map_err(|e| LayerError::io(source, e))
        };
        let before = stamp(&file)?;
        self.append_file(path, meta, before.0, &file)?;
        if stamp(&file)? != before {
            return Err(LayerError::Changed {
                path: source.to_path_buf(),
            });
        }
        Ok(())
    }

    /// A symlink to `target`, stored verbatim (targets may be absolute or relative).
    pub fn append_symlink(&mut self, path: &Path, meta: &EntryMeta, target: &Path) -> Result<()> {
        let name = archive_path(path, false)?;
        let target = target.as_os_str().as_bytes();
        check_no_nul(path, target)?;
        if target.is_empty() {
            return Err(LayerError::InvalidPath {
                path: path.to_path_buf(),
                reason: "empty symlink target",
            });
        }
        self.write_header(path, &name, b'2', meta, 0, Some(target), (0, 0))
    }

    /// A hard link to `target`, the archive path of an entry written earlier in this layer.
    pub fn append_hardlink(&mut self, path: &Path, meta: &EntryMeta, target: &Path) -> Result<()> {
        let name = archive_path(path, false)?;
        let target = archive_path(target, false)?;
        self.write_header(path, &name, b'1', meta, 0, Some(&target), (0, 0))
    }

    pub fn append_device(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        kind: DeviceKind,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        let name = archive_path(path, false)?;
        let flag = match kind {
            DeviceKind::Char => b'3',
            DeviceKind::Block => b'4',
        };
        self.write_header(path, &name, flag, meta, 0, None, (major, minor))
    }

    pub fn append_fifo(&mut self, path: &Path, meta: &EntryMeta) -> Result<()> {
        let name = archive_path(path, false)?;
        self.write_header(path, &name, b'6', meta, 0, None, (0, 0))
    }

    /// OCI whiteout: `dir/.wh.name` deletes `dir/name` of the layers below.
    pub fn append_whiteout(&mut self, path: &Path) -> Result<()> {
        let file = path.file_name().ok_or_else(|| LayerError::InvalidPath {
            path: path.to_path_buf(),
            reason: "whiteout of a path without a file name",
        })?;
        let mut marker = OsStr::new(WHITEOUT_PREFIX).to_os_string();
        marker.push(file);
        let wh = path.with_file_name(marker);
        self.append_marker(&wh)
    }

    /// OCI opaque marker: `dir/.wh..wh..opq` hides everything the layers below have in `dir`.
    pub fn append_opaque(&mut self, dir: &Path) -> Result<()> {
        self.append_marker(&dir.join(OPAQUE_MARKER))
    }

    /// Writes the end-of-archive blocks and returns the writer with the layer's diffID (sha256
    /// of the uncompressed tar) and size.
    pub fn finish(mut self) -> Result<(W, Digested)> {
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .map_err(|e| LayerError::io("<layer tar>", e))?;
        self.out
            .finish()
            .map_err(|e| LayerError::io("<layer tar>", e))
    }

    fn append_marker(&mut self, path: &Path) -> Result<()> {
        // Markers carry no data of their own; fixed metadata keeps them from varying the digest.
        let meta = EntryMeta::with_mode(0o644);
        let name = archive_path(path, false)?;
        self.write_header(path, &name, b'0', &meta, 0, None, (0, 0))
    }

    fn clamp(&self, mtime: i64) -> i64 {
        match self.opts.source_date_epoch {
            Some(epoch) => mtime.min(epoch),
            None => mtime,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write_header(
        &mut self,
        path: &Path,
        name: &[u8],
        typeflag: u8,
        meta: &EntryMeta,
        size: u64,
        link: Option<&[u8]>,
        dev: (u32, u32),
    ) -> Result<()> {
        let mtime = self.clamp(meta.mtime);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut hdr = [0u8; BLOCK];

        if name.len() > 100 {
            pax.push(("path".into(), name.to_vec()));
        }
        put_bytes(&mut hdr[0..100], name);
        put_octal(&mut hdr[100..108], u64::from(meta.mode & 0o7777));
        if !put_octal(&mut hdr[108..116], u64::from(meta.uid)) {
            pax.push(("uid".into(), meta.uid.to_string().into_bytes()));
            put_octal(&mut hdr[108..116], 0);
        }
        if !put_octal(&mut hdr[116..124], u64::from(meta.gid)) {
            pax.push(("gid".into(), meta.gid.to_string().into_bytes()));
            put_octal(&mut hdr[116..124], 0);
        }
        if !put_octal(&mut hdr[124..136], size) {
            pax.push(("size".into(), size.to_string().into_bytes()));
            put_octal(&mut hdr[124..136], 0);
        }
        let mtime_fits = u64::try_from(mtime)
            .map(|m| put_octal(&mut hdr[136..148], m))
            .unwrap_or(false);
        if !mtime_fits {
            pax.push(("mtime".into(), mtime.to_string().into_bytes()));
            put_octal(&mut hdr[136..148], 0);
        }
        hdr[156] = typeflag;
        if let Some(link) = link {
            if link.len() > 100 {
                pax.push(("linkpath".into(), link.to_vec()));
            }
            put_bytes(&mut hdr[157..257], link);
        }
        hdr[257..263].copy_from_slice(b"ustar\0");
        hdr[263..265].copy_from_slice(b"00");
        // uname/gname stay empty: names would leak the build host's passwd database.
        if !put_octal(&mut hdr[329..337], u64::from(dev.0))
            || !put_octal(&mut hdr[337..345], u64::from(dev.1))
        {
            return Err(LayerError::InvalidPath {
                path: path.to_path_buf(),
                reason: "device number too large for a tar header",
            });
        }
        for (k, v) in &meta.xattrs {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(LayerError::Xattr {
                    path: path.to_path_buf(),
                    name: k.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "name unusable in a tar"),
                });
            }
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }

        if !pax.is_empty() {
            let records = pax_records(&pax);
            let mut xhdr = [0u8; BLOCK];
            put_bytes(&mut xhdr[0..100], b"././@PaxHeader");
            put_octal(&mut xhdr[100..108], 0o644);
            put_octal(&mut xhdr[108..116], 0);
            put_octal(&mut xhdr[116..124], 0);
            put_octal(&mut xhdr[124..136], records.len() as u64);
            put_octal(&mut xhdr[136..148], 0);
            xhdr[156] = b'x';
            xhdr[257..263].copy_from_slice(b"ustar\0");
            xhdr[263..265].copy_from_slice(b"00");
            put_octal(&mut xhdr[329..337], 0);
            put_octal(&mut xhdr[337..345], 0);
            set_checksum(&mut xhdr);
            self.write_raw(path, &xhdr)?;
            self.write_raw(path, &records)?;
            self.pad(path, records.len() as u64)?;
        }
        set_checksum(&mut hdr);
        self.write_raw(path, &hdr)
    }

    fn copy_content(&mut self, path: &Path, size: u64, content: impl Read) -> Result<()> {
        if self.buf.len() < COPY_BUF {
            self.buf.resize(COPY_BUF, 0);
        }
        let mut reader = content.take(size);
        let mut copied = 0u64;
        loop {
            let n = match reader.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::io(path, e)),
            };
            let chunk = self.buf.get(..n).unwrap_or_default();
            self.out
                .write_all(chunk)
                .map_err(|e| LayerError::io(path, e))?;
            copied += n as u64;
        }
        if copied != size {
            return Err(LayerError::SizeMismatch {
                path: path.to_path_buf(),
                expected: size,
                actual: copied,
            });
        }
        self.pad(path, size)
    }

    fn pad(&mut self, path: &Path, len: u64) -> Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem == 0 {
            return Ok(());
        }
        let zeros = [0u8; BLOCK];
        self.write_raw(path, zeros.get(rem..).unwrap_or_default())
    }

    fn write_raw(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| LayerError::io(path, e))
    }
}

/// Turns a caller's path into the name stored in the tar: relative, `/`-separated, no `.`
/// or `..`, directories with a trailing `/` (as docker and BuildKit write them).
pub(crate) fn archive_path(path: &Path, is_dir: bool) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part.as_bytes());
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(LayerError::InvalidPath {
                    path: path.to_path_buf(),
                    reason: "`..` is not allowed in a layer path",
                });
            }
        }
    }
    if out.is_empty() {
        return Err(LayerError::InvalidPath {
            path: path.to_path_buf(),
            reason: "the layer root itself cannot be an entry",
        });
    }
    check_no_nul(path, &out)?;
    if is_dir {
        out.push(b'/');
    }
    Ok(out)
}

fn check_no_nul(path: &Path, bytes: &[u8]) -> Result<()> {
    if bytes.contains(&0) {
        return Err(LayerError::InvalidPath {
            path: path.to_path_buf(),
            reason: "NUL byte in a path",
        });
    }
    Ok(())
}

/// Copies as much of `src` as fits; names that do not fit also get a PAX record.
fn put_bytes(field: &mut [u8], src: &[u8]) {
    let n = src.len().min(field.len());
    if let (Some(dst), Some(src)) = (field.get_mut(..n), src.get(..n)) {
        dst.copy_from_slice(src);
    }
}

/// Zero-padded octal, NUL-terminated. Returns false (field left zeroed) when it does not fit.
fn put_octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    if s.len() > digits {
        field.fill(0);
        return false;
    }
    put_bytes(field, s.as_bytes());
    if let Some(last) = field.last_mut() {
        *last = 0;
    }
    true
}

fn set_checksum(hdr: &mut [u8; BLOCK]) {
    hdr[148..156].fill(b' ');
    let sum: u32 = hdr.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    hdr[148..156].copy_from_slice(s.as_bytes());
}

/// `"<len> key=value\n"` records, where len counts the whole record including its own digits.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // space, '=', newline
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(bytes: &[u8]) -> Vec<(String, u8, u64, Vec<u8>)> {
        let mut ar = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = String::from_utf8(e.path_bytes().to_vec()).unwrap();
            let kind = e.header().entry_type().as_byte();
            let size = e.size();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((path, kind, size, data));
        }
        out
    }

    #[test]
    fn octal_fields_and_overflow() {
        let mut f = [0u8; 8];
        assert!(put_octal(&mut f, 0o755));
        assert_eq!(&f, b"0000755\0");
        assert!(!put_octal(&mut f, 0o10000000));
        assert_eq!(f, [0u8; 8]);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_records(&[("path".into(), b"a".to_vec())]);
        assert_eq!(r, b"9 path=a\n");
        let long = vec![b'x'; 95];
        let r = pax_records(&[("path".into(), long)]);
        assert!(r.starts_with(b"105 path="));
        assert_eq!(r.len(), 105);
    }

    #[test]
    fn archive_paths_are_normalised() {
        assert_eq!(archive_path(Path::new("/a/./b"), false).unwrap(), b"a/b");
        assert_eq!(archive_path(Path::new("a/b/"), true).unwrap(), b"a/b/");
        assert!(archive_path(Path::new("a/../b"), false).is_err());
        assert!(archive_path(Path::new("/"), true).is_err());
    }

    #[test]
    fn long_names_xattrs_and_big_ids_survive_a_reader() {
        let mut b = LayerBuilder::new(Vec::new(), BuildOptions::default());
        let long = format!("{}/{}", "d".repeat(80), "f".repeat(90));
        let mut meta = EntryMeta::with_mode(0o4755);
        meta.uid = 3_000_000;
        meta.gid = 7;
        meta.xattrs.insert("user.k".into(), b"v\0with nul".to_vec());
        b.append_file(Path::new(&long), &meta, 3, &b"abc"[..])
            .unwrap();
        b.append_symlink(
            Path::new("l"),
            &EntryMeta::default(),
            Path::new(&"t/".repeat(70)),
        )
        .unwrap();
        let (bytes, d) = b.finish().unwrap();
        assert_eq!(d.size, bytes.len() as u64);
        assert_eq!(bytes.len() % BLOCK, 0);

        let mut ar = tar::Archive::new(&bytes[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), long);
        assert_eq!(e.header().mode().unwrap(), 0o4755);
        // The real uid lives in the PAX record (block 1); the ustar field (block 2) holds 0.
        assert_eq!(&bytes[1024 + 108..1024 + 116], b"0000000\0");
        let pax: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key().unwrap().to_string(), x.value_bytes().to_vec())
            })
            .collect();
        assert!(pax.contains(&("uid".into(), b"3000000".to_vec())));
        assert!(pax.contains(&("SCHILY.xattr.user.k".into(), b"v\0with nul".to_vec())));
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
        let e = entries.next().unwrap().unwrap();
        assert_eq!(
            e.link_name().unwrap().unwrap().to_str().unwrap(),
            "t/".repeat(70)
        );
    }

    #[test]
    fn short_reader_is_an_error() {
        let mut b = LayerBuilder::new(Vec::new(), BuildOptions::default());
        let err = b
            .append_file(Path::new("f"), &EntryMeta::default(), 10, &b"abc"[..])
            .unwrap_err();
        assert!(matches!(err, LayerError::SizeMismatch { actual: 3, .. }));
    }

    #[test]
    fn whiteouts_and_epoch_clamp() {
        let opts = BuildOptions {
            source_date_epoch: Some(100),
        };
        let mut b = LayerBuilder::new(Vec::new(), opts);
        let mut meta = EntryMeta::with_mode(0o755);
        meta.mtime = 5000;
        b.append_dir(Path::new("d"), &meta).unwrap();
        meta.mtime = 50;
        b.append_dir(Path::new("e"), &meta).unwrap();
        b.append_whiteout(Path::new("d/gone")).unwrap();
        b.append_opaque(Path::new("e")).unwrap();
        let (bytes, _) = b.finish().unwrap();
        let got = read_back(&bytes);
        let names: Vec<_> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["d/", "e/", "d/.wh.gone", "e/.wh..wh..opq"]);
        let mut ar = tar::Archive::new(&bytes[..]);
        let mtimes: Vec<u64> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().mtime().unwrap())
            .collect();
        assert_eq!(mtimes, [100, 50, 0, 0]);
    }
}
