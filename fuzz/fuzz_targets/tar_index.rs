//! Any bytes as a layer tar: indexing it, resolving paths in it and applying it (plain or
//! compressed) onto a scratch directory must not panic, and applying must leave nothing
//! beside the scratch directory.
#![no_main]

use kiln::layer::index::{resolve_in_root, Kind, LayerIndex, Node};
use kiln::layer::{apply_layer, ApplyOptions, Policy};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
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
    let root = base.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).expect("root dir");
    let opts = ApplyOptions {
        ownership: Policy::BestEffort,
        xattrs: Policy::BestEffort,
        devices: Policy::Skip,
        ..ApplyOptions::default()
    };
    let _ = apply_layer(data, &root, &opts);
    let names: Vec<_> = std::fs::read_dir(base)
        .expect("read scratch")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("root")], "apply wrote beside its root");
    let _ = std::fs::remove_dir_all(&root);
});
