//! Any bytes into the Dockerfile parser, the dump and the typed lowering: none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ast) = kiln::dockerfile::parse(text) {
            let _ = kiln::dockerfile::dump::dump(&ast);
            let _ = kiln::dockerfile::instruction::lower(&ast);
        }
    }
});
