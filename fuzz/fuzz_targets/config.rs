//! Any bytes as an image config JSON: parsing must not panic, its platform must be
//! computable, and what parses must serialise to JSON that serialises the same again
//! (docker's omitempty makes `"Cmd": []` read back as unset, so the structs themselves may
//! differ after one round; the bytes kiln writes may not).
#![no_main]

use kiln::image::config::ImageConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ImageConfig::from_json(data) {
        let _ = c.platform();
        let once = c.to_json().expect("serialise config");
        let back = ImageConfig::from_json(&once).expect("reparse config");
        let twice = back.to_json().expect("serialise again");
        assert_eq!(
            String::from_utf8_lossy(&once),
            String::from_utf8_lossy(&twice)
        );
    }
});
