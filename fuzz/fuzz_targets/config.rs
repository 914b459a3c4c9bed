//! Any bytes as an image config JSON: parsing must not panic, and what parses must
//! serialise and parse back equal, and its platform must be computable.
#![no_main]

use kiln::image::config::ImageConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ImageConfig::from_json(data) {
        let _ = c.platform();
        let out = c.to_json().expect("serialise config");
        let back = ImageConfig::from_json(&out).expect("reparse config");
        assert_eq!(c, back);
    }
});
