//! Any bytes as a manifest or index JSON: parsing must not panic, and what parses must
//! serialise and parse back equal.
#![no_main]

use kiln::image::oci::{Index, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_json(data) {
        let out = m.to_json().expect("serialise manifest");
        let back = Manifest::from_json(&out).expect("reparse manifest");
        assert_eq!(m, back);
    }
    if let Ok(i) = Index::from_json(data) {
        let out = i.to_json().expect("serialise index");
        let back = Index::from_json(&out).expect("reparse index");
        assert_eq!(i, back);
    }
});
