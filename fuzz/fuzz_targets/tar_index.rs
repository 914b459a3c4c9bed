//! Any bytes as a layer tar: checking it, indexing it, resolving paths in it and applying it (plain or
//! compressed) onto a scratch directory must not panic, and applying must leave nothing
//! beside the scratch directory.
#![no_main]

use kiln::layer::index::{resolve_in_root, Kind, LayerIndex, Node};
use kiln::layer::{apply_layer, check_layer, ApplyOptions, Policy};
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// One scratch parent per process: `root` is the apply target, and nothing else may appear.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("kiln-fuzz-tar-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("scratch dir");
        base
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = check_layer(data);
    if let Ok(idx) = LayerIndex::read(data) {
        let lookup = |p: &str| {
            idx.entries.get(p).map(|m| match &m.kind {
                Kind::Symlink(t) => Node::Symlink(t.clone()),
                Kind::Dir => Node::Dir,
                _ => Node::Other,
            })
        };
        for path in idx.entries.keys().take(64) {
            let _ = resolve_in_root(path, true, lookup);
            let _ = resolve_in_root(&format!("{path}/../../x"), false, lookup);
        }
    }

    let base = scratch();
    // A fresh root each run: a layer may leave directories its owner cannot empty.
    static RUN: AtomicU64 = AtomicU64::new(0);
    let root = base.join(format!("root{}", RUN.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir(&root).expect("root dir");
    let opts = ApplyOptions {
        ownership: Policy::BestEffort,
        xattrs: Policy::BestEffort,
        devices: Policy::Skip,
        ..ApplyOptions::default()
    };
    let _ = apply_layer(data, &root, &opts);
    for e in std::fs::read_dir(base).expect("read scratch").flatten() {
        let name = e.file_name();
        assert!(
            name.to_string_lossy().starts_with("root"),
            "apply wrote beside its root: {name:?}"
        );
    }
    make_removable(&root);
    let _ = std::fs::remove_dir_all(&root);
});

/// Gives the owner write and search permission on every directory below `dir` (links are
/// not followed), so the scratch tree can be removed.
fn make_removable(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_removable(&e.path());
            }
        }
    }
}
