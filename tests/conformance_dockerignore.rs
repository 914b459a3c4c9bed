#![allow(clippy::unwrap_used, clippy::expect_used)]
//! moby/patternmatcher's tables (`extracted/patternmatcher-*`) against our matcher.
//! Every row is asserted; each test collects all failing rows before failing.

mod common;

use common::conformance_dir;

use kiln::context::ignore::{
    load_for_build, matches, read_dockerignore, IgnoreError, MatchInfo, MatchType, PatternMatcher,
};

fn read(name: &str) -> String {
    let path = conformance_dir().join("extracted").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Data rows of a TSV table: `#` lines skipped, fields split on TAB.
fn rows(text: &str) -> Vec<(usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.is_empty())
        .map(|(i, l)| (i + 1, l.split('\t').collect()))
        .collect()
}

fn report(table: &str, checked: usize, failures: &[String]) {
    assert!(checked > 0, "{table}: no rows");
    assert!(
        failures.is_empty(),
        "{table}: {} failed checks in {checked} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Go's `filepath.Dir` (the test walks the parents as upstream's test does).
fn go_dir(path: &str) -> String {
    let Some(i) = path.rfind('/') else {
        return ".".into();
    };
    let head = &path[..=i];
    let rooted = head.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for el in head.split('/') {
        match el {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            e => parts.push(e),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// The parents of `path` from the top, as upstream's test lists them.
fn parents_top_down(path: &str) -> Vec<String> {
    let parent = go_dir(path);
    if parent == "." {
        return Vec::new();
    }
    let dirs: Vec<&str> = parent.split('/').collect();
    (1..=dirs.len()).map(|i| dirs[..i].join("/")).collect()
}

#[test]
fn patternmatcher_matches_table() {
    let text = read("patternmatcher-matches.tsv");
    let mut failures = Vec::new();
    let mut checked = 0;
    for (line, f) in rows(&text) {
        checked += 1;
        let [platform, expected, path, patterns @ ..] = f.as_slice() else {
            failures.push(format!("line {line}: malformed row"));
            continue;
        };
        if !matches!(*platform, "all" | "unix") || patterns.is_empty() {
            failures.push(format!("line {line}: unexpected platform or no pattern"));
            continue;
        }
        let expected = match *expected {
            "true" => true,
            "false" => false,
            other => {
                failures.push(format!("line {line}: bad expected {other:?}"));
                continue;
            }
        };
        let pm = match PatternMatcher::new(patterns) {
            Ok(pm) => pm,
            Err(e) => {
                failures.push(format!("line {line}: {path:?} {patterns:?}: new: {e}"));
                continue;
            }
        };
        let mut fail = |how: &str, got: Result<bool, IgnoreError>| match got {
            Ok(got) if got == expected => {}
            got => failures.push(format!(
                "line {line}: {path:?} {patterns:?}: {how}: got {got:?}, want {expected}"
            )),
        };

        fail(
            "matches_or_parent_matches",
            pm.matches_or_parent_matches(path),
        );

        if pm.patterns().len() == 1 {
            let mut parent = Ok(false);
            for dir in parents_top_down(path) {
                parent = parent.and_then(|p| pm.matches_using_parent_result(&dir, p));
            }
            fail(
                "matches_using_parent_result (walked)",
                parent.and_then(|p| pm.matches_using_parent_result(path, p)),
            );
        }

        let mut info = Ok(MatchInfo::default());
        for dir in parents_top_down(path) {
            info = info.and_then(|i| pm.matches_using_parent_results(&dir, i).map(|r| r.1));
        }
        fail(
            "matches_using_parent_results (walked)",
            info.and_then(|i| pm.matches_using_parent_results(path, i).map(|r| r.0)),
        );

        fail(
            "matches_using_parent_results (no parent info)",
            pm.matches_using_parent_results(path, MatchInfo::default())
                .map(|r| r.0),
        );
    }
    report("patternmatcher-matches.tsv", checked, &failures);
}

#[test]
fn patternmatcher_legacy_matches_table() {
    let text = read("patternmatcher-legacy-matches.tsv");
    let mut failures = Vec::new();
    let mut checked = 0;
    for (line, f) in rows(&text) {
        checked += 1;
        let [test, platform, expected, error, path, patterns @ ..] = f.as_slice() else {
            failures.push(format!("line {line}: malformed row"));
            continue;
        };
        if !matches!(*platform, "all" | "unix") {
            failures.push(format!("line {line}: unexpected platform {platform:?}"));
            continue;
        }
        let got = matches(path, patterns);
        let ctx = format!("line {line} ({test}): {path:?} {patterns:?}: got {got:?}");
        match *error {
            "unchecked" => {}
            "nil" if got.is_ok() => {}
            "non-nil" if got.is_err() => {}
            "ErrBadPattern"
                if matches!(&got, Err(e @ IgnoreError::BadPattern { .. })
                    if e.to_string().starts_with("syntax error in pattern")) => {}
            "nil" | "non-nil" | "ErrBadPattern" => {
                failures.push(format!("{ctx}, want error {error}"));
                continue;
            }
            other => {
                failures.push(format!("{ctx}: unknown error column {other:?}"));
                continue;
            }
        }
        // Upstream returns false alongside an error.
        let value = *got.as_ref().unwrap_or(&false);
        match *expected {
            "unchecked" => {}
            "true" | "false" => {
                if value != (*expected == "true") {
                    failures.push(format!("{ctx}, want {expected}"));
                }
            }
            other => failures.push(format!("{ctx}: unknown expected column {other:?}")),
        }
    }
    report("patternmatcher-legacy-matches.tsv", checked, &failures);
}

#[test]
fn patternmatcher_compile_table() {
    let text = read("patternmatcher-compile.tsv");
    let mut failures = Vec::new();
    let mut checked = 0;
    for (line, f) in rows(&text) {
        checked += 1;
        let [pattern, match_type, ..] = f.as_slice() else {
            failures.push(format!("line {line}: malformed row"));
            continue;
        };
        let want = match *match_type {
            "exact" => MatchType::Exact,
            "prefix" => MatchType::Prefix,
            "suffix" => MatchType::Suffix,
            "regexp" => MatchType::Regexp,
            other => {
                failures.push(format!("line {line}: unknown match type {other:?}"));
                continue;
            }
        };
        let got = PatternMatcher::new(&[pattern])
            .map(|pm| pm.patterns().first().and_then(|p| p.match_type()));
        if !matches!(got, Ok(Some(t)) if t == want) {
            failures.push(format!(
                "line {line}: {pattern:?}: got {got:?}, want {want:?}"
            ));
        }
    }
    report("patternmatcher-compile.tsv", checked, &failures);
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("list of strings")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

#[test]
fn patternmatcher_misc() {
    let doc: serde_json::Value = serde_json::from_str(&read("patternmatcher-misc.json")).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;

    for case in doc["new_matcher"]["cases"].as_array().unwrap() {
        checked += 1;
        let test = case["test"].as_str().unwrap();
        let patterns = strings(&case["patterns"]);
        let expect = case["expect"].as_str().unwrap();
        let got = PatternMatcher::new(&patterns);
        if expect == "error" {
            if got.is_ok() {
                failures.push(format!("new_matcher {test}: {patterns:?}: want an error"));
            }
            continue;
        }
        let Some(rest) = expect.strip_prefix("no error; ") else {
            failures.push(format!(
                "new_matcher {test}: unknown expectation {expect:?}"
            ));
            continue;
        };
        let pm = match got {
            Ok(pm) => pm,
            Err(e) => {
                failures.push(format!("new_matcher {test}: {patterns:?}: {e}"));
                continue;
            }
        };
        if let Some(n) = rest.strip_prefix("Patterns() has ") {
            let want: usize = n.split(' ').next().unwrap().parse().unwrap();
            if pm.patterns().len() != want {
                failures.push(format!(
                    "new_matcher {test}: {} patterns, want {want}",
                    pm.patterns().len()
                ));
            }
        } else if rest.starts_with("Exclusions() is true") {
            if !pm.exclusions() {
                failures.push(format!("new_matcher {test}: exclusions() is false"));
            }
        } else {
            failures.push(format!(
                "new_matcher {test}: unknown expectation {expect:?}"
            ));
        }
    }

    let late = &doc["bad_pattern_detected_late"];
    checked += 1;
    let patterns = strings(&late["patterns"]);
    let path = late["path"].as_str().unwrap();
    match PatternMatcher::new(&patterns) {
        Err(e) => failures.push(format!("bad_pattern_detected_late: new failed: {e}")),
        Ok(pm) => {
            for attempt in 1..=2 {
                let got = pm.matches_or_parent_matches(path);
                let ok = matches!(&got, Err(e @ IgnoreError::BadPattern { .. })
                    if e.to_string().starts_with("syntax error in pattern"));
                if !ok {
                    failures.push(format!(
                        "bad_pattern_detected_late: call {attempt}: got {got:?}"
                    ));
                }
            }
        }
    }

    for (i, case) in doc["dockerignore_read_all"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        checked += 1;
        let want = strings(&case["expected_patterns"]);
        let ctx = tempfile::tempdir().unwrap();
        let dockerfile = ctx.path().join("Dockerfile");
        // `null` is "no .dockerignore file": only the build loader can see that.
        if let Some(input) = case["input"].as_str() {
            let got = read_dockerignore(input);
            if got != want {
                failures.push(format!(
                    "dockerignore_read_all {i}: read_dockerignore gave {got:?}, want {want:?}"
                ));
            }
            std::fs::write(ctx.path().join(".dockerignore"), input).unwrap();
        } else if !case["input"].is_null() {
            failures.push(format!("dockerignore_read_all {i}: bad input"));
            continue;
        }
        match load_for_build(ctx.path(), &dockerfile) {
            Ok(got) if got == want => {}
            got => failures.push(format!(
                "dockerignore_read_all {i}: load_for_build gave {got:?}, want {want:?}"
            )),
        }
    }

    report("patternmatcher-misc.json", checked, &failures);
}
