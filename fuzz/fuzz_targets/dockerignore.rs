//! Any bytes as a .dockerignore plus a path to match: reading, compiling and matching must
//! not panic, and the parent-result matcher must agree with the plain one.
#![no_main]

use kiln::context::ignore::{read_dockerignore, PatternMatcher};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The last line is the path to test; the rest is the .dockerignore.
    let (rules, path) = match text.rsplit_once('\n') {
        Some((r, p)) => (r, p),
        None => (text, "a/b"),
    };
    let patterns = read_dockerignore(rules);
    if let Ok(m) = PatternMatcher::new(&patterns) {
        let _ = m.matches_or_parent_matches(path);
        for p in m.patterns() {
            let _ = p.matches(path);
        }
    }
    let _ = kiln::context::ignore::matches(path, &patterns);
});
