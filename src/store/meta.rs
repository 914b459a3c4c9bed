//! Small records the build engine keeps beside the cache, by kind and name: the context
//! stat caches (`statcache/`) and each step's last inputs (`steps/`), which the miss report
//! compares against. They only ever save work or explain it, so gc may drop them freely.

use super::error::Result;
use super::Store;
use std::path::PathBuf;

impl Store {
    /// Where the record `kind/name` lives (it may not exist). `kind` and `name` are
    /// kiln's own identifiers (hex digests), never user input.
    pub fn meta_path(&self, kind: &str, name: &str) -> PathBuf {
        self.root().join("meta").join(kind).join(name)
    }

    /// Write the record `kind/name` atomically (temp file, rename). Not fsynced: these
    /// records only save or explain work, a crash may lose one but never leaves a partial
    /// one visible, and a rebuild should not wait on the disk for them.
    pub fn put_meta(&self, kind: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.meta_path(kind, name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(super::error::io_err("creating directory", dir))?;
        }
        super::fsutil::replace_unsynced(&self.tmp_dir(), &path, bytes, "writing record")
    }

    /// Read the record `kind/name`, if present.
    pub fn get_meta(&self, kind: &str, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.meta_path(kind, name)).ok()
    }
}
