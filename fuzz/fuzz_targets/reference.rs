//! Any string as an image reference or digest: parsing must not panic, and what parses
//! must print to a string that parses back to the same reference.
#![no_main]

use kiln::image::reference::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = kiln::image::digest::Digest::parse(s);
    if let Ok(r) = Reference::parse(s) {
        let printed = r.to_string();
        let again = Reference::parse(&printed).expect("a printed reference parses");
        assert_eq!(r, again, "round trip of {s:?} via {printed:?}");
    }
    let _ = Reference::parse_normalized(s);
});
