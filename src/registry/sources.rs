//! Where the store's blobs are known to live on registries (`meta/blob-sources/<hex>`: the
//! `registry/repository` names a blob was pulled from or pushed to, newest first), so a push
//! to another repository of the same registry can mount the blob instead of uploading it.
//! Records only save work: failing to write one is ignored, and a stale one costs a failed
//! mount that falls back to an upload.

use crate::image::Digest;
use crate::store::Store;

const KIND: &str = "blob-sources";
/// Older names beyond this many are forgotten.
const KEEP: usize = 8;

fn name(digest: &Digest) -> Option<&str> {
    let hex = digest.as_str().strip_prefix("sha256:")?;
    // Meta names are kiln's own identifiers; anything else is not recorded.
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

fn read(store: &Store, digest: &Digest) -> Vec<String> {
    name(digest)
        .and_then(|n| store.get_meta(KIND, n))
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Notes that `registry/repository` holds `digest`.
pub(crate) fn record(store: &Store, digest: &Digest, registry: &str, repository: &str) {
    let Some(n) = name(digest) else {
        return;
    };
    let here = format!("{registry}/{repository}");
    let mut all = read(store, digest);
    if all.first() == Some(&here) {
        return;
    }
    all.retain(|s| *s != here);
    all.insert(0, here);
    all.truncate(KEEP);
    if let Ok(bytes) = serde_json::to_vec(&all) {
        let _ = store.put_meta(KIND, n, &bytes);
    }
}

/// The other repositories of `registry` known to hold `digest`, newest first.
pub(crate) fn mount_candidates(
    store: &Store,
    digest: &Digest,
    registry: &str,
    repository: &str,
) -> Vec<String> {
    let prefix = format!("{registry}/");
    read(store, digest)
        .into_iter()
        .filter_map(|s| s.strip_prefix(&prefix).map(str::to_string))
        .filter(|r| r != repository && !r.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_per_registry_newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::sha256_of(b"x");
        assert!(mount_candidates(&store, &d, "r:5000", "a").is_empty());
        record(&store, &d, "r:5000", "a");
        record(&store, &d, "r:5000", "b/c");
        record(&store, &d, "other:5000", "z");
        assert_eq!(mount_candidates(&store, &d, "r:5000", "a"), vec!["b/c"]);
        assert_eq!(
            mount_candidates(&store, &d, "r:5000", "x"),
            vec!["b/c", "a"]
        );
        // "r:50001/..." is another registry, not a repository of "r:5000".
        record(&store, &d, "r:50001", "q");
        assert_eq!(
            mount_candidates(&store, &d, "r:5000", "x"),
            vec!["b/c", "a"]
        );
        for i in 0..20 {
            record(&store, &d, "r:5000", &format!("n{i}"));
        }
        assert_eq!(mount_candidates(&store, &d, "r:5000", "x").len(), KEEP);
    }
}
