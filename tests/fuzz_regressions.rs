#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Inputs the fuzz targets (fuzz/fuzz_targets) once failed on, kept in testdata/fuzz/ and
//! replayed with the target's own checks. `tar_index-*` inputs are replayed by
//! tests/layer_hostile.rs.

use kiln::image::config::ImageConfig;
use kiln::image::oci::{Index, Manifest};
use std::fs;
use std::path::Path;

fn inputs(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz");
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            out.push((name, fs::read(&p).unwrap()));
        }
    }
    out
}

/// A config that parses serialises to JSON that serialises the same again. The fuzzer found
/// a float in an unknown field that came back one ulp off before serde_json's correctly
/// rounded float parsing was turned on, and `"Cmd": []`, which docker's omitempty writes as
/// absent (so the struct, though not the bytes, differs after one round: by design).
fn round_trip(c: &ImageConfig) -> (Vec<u8>, Vec<u8>) {
    let once = c.to_json().unwrap();
    let twice = ImageConfig::from_json(&once).unwrap().to_json().unwrap();
    (once, twice)
}

#[test]
fn json_documents_round_trip_exactly() {
    let found = inputs("config-");
    assert!(found.len() >= 2);
    for (name, bytes) in found {
        let (once, twice) = round_trip(&ImageConfig::from_json(&bytes).unwrap());
        assert_eq!(
            String::from_utf8_lossy(&once),
            String::from_utf8_lossy(&twice),
            "{name}"
        );
    }
    for text in [
        r#"{"": 22222222222222222222222222222222222222222222222222222222222222222222222222222222}"#,
        r#"{"x": 0.30000000000000004, "y": 1e-320, "z": 1.7976931348623157e308}"#,
    ] {
        let c = ImageConfig::from_json(text.as_bytes()).unwrap();
        let (once, twice) = round_trip(&c);
        assert_eq!(once, twice, "{text}");
        // Unknown fields carry no omitempty rule: here the struct itself survives.
        assert_eq!(c, ImageConfig::from_json(&once).unwrap());
    }
    for (name, bytes) in inputs("manifest-") {
        if let Ok(m) = Manifest::from_json(&bytes) {
            assert_eq!(
                m,
                Manifest::from_json(&m.to_json().unwrap()).unwrap(),
                "{name}"
            );
        }
        if let Ok(i) = Index::from_json(&bytes) {
            assert_eq!(
                i,
                Index::from_json(&i.to_json().unwrap()).unwrap(),
                "{name}"
            );
        }
    }
}
