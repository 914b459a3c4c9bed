#![allow(clippy::unwrap_used, clippy::expect_used)]
//! BuildKit's shell-lexer tables (`extracted/shell-*.json`, and the raw `envVarTest` and
//! `wordsTest` files read with upstream's reader rules) against `dockerfile::expand`.
//! Every case is checked and every failure is listed before the test fails.

mod common;

use common::conformance_dir;
use std::collections::{BTreeMap, BTreeSet};

use kiln::dockerfile::expand::{env_from_key_values, Env, Lexer};
use serde_json::Value;

fn read_json(root: &std::path::Path, name: &str) -> Value {
    let path = root.join("extracted").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn read_raw(root: &std::path::Path, name: &str) -> String {
    let path = root.join("buildkit/frontend/dockerfile/shell").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|s| s.as_str().expect("string in list").to_owned())
            .collect(),
        other => panic!("expected a string list, got {other}"),
    }
}

fn string_set(v: Option<&Value>) -> BTreeSet<String> {
    v.map(strings).unwrap_or_default().into_iter().collect()
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .expect("env object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
        .collect()
}

fn finish(what: &str, checked: usize, failures: &[String]) {
    eprintln!(
        "{what}: {} of {checked} cases pass",
        checked - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{what}: {} of {checked} cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One single-word expansion case: `None` expects an error.
fn check_word(env: &dyn Env, input: &str, expected: Option<&str>) -> Option<String> {
    let got = Lexer::new('\\').process_word(input, env);
    match (expected, got) {
        (Some(want), Ok(got)) if got == want => None,
        (None, Err(_)) => None,
        (want, got) => Some(format!("{input:?}: want {want:?}, got {got:?}")),
    }
}

fn check_words(
    lexer: &Lexer,
    env: &dyn Env,
    input: &str,
    expected: Option<&[String]>,
) -> Option<String> {
    let got = lexer.process_words(input, env);
    match (expected, got) {
        (Some(want), Ok(got)) if got == want => None,
        (None, Err(_)) => None,
        (want, got) => Some(format!("{input:?}: want {want:?}, got {got:?}")),
    }
}

#[test]
fn envvartest_json() {
    let root = conformance_dir();
    let data = read_json(&root, "shell-envvartest.json");
    let env = env_from_key_values(strings(&data["env"]));
    let cases = data["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 230, "the corpus has 230 envVarTest cases");
    let (mut checked, mut windows_only) = (0, 0);
    let mut failures = Vec::new();
    for case in cases {
        let platform = case["platform"].as_str().expect("platform");
        if platform == "W" {
            windows_only += 1;
            continue;
        }
        assert!(
            platform == "A" || platform == "U",
            "unknown platform {platform}"
        );
        checked += 1;
        let input = case["input"].as_str().expect("input");
        let expected = if case["expected_error"].as_bool().expect("expected_error") {
            None
        } else {
            Some(case["expected"].as_str().expect("expected"))
        };
        if let Some(f) = check_word(&env, input, expected) {
            failures.push(format!("line {}: {f}", case["line"]));
        }
    }
    eprintln!("shell-envvartest.json: skipped {windows_only} Windows-only cases");
    assert_eq!(windows_only, 2);
    finish("shell-envvartest.json", checked, &failures);
}

#[test]
fn wordstest_json() {
    let root = conformance_dir();
    let data = read_json(&root, "shell-wordstest.json");
    let cases = data["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 24, "the corpus has 24 wordsTest cases");
    let mut failures = Vec::new();
    for case in cases {
        let env = env_from_key_values(strings(&case["env"]));
        let input = case["input"].as_str().expect("input");
        let expected = if case["expected_error"].as_bool().expect("expected_error") {
            None
        } else {
            Some(strings(&case["expected_words"]))
        };
        if let Some(f) = check_words(&Lexer::new('\\'), &env, input, expected.as_deref()) {
            failures.push(format!("line {}: {f}", case["line"]));
        }
    }
    finish("shell-wordstest.json", cases.len(), &failures);
}

/// Upstream never checks its second mode (raw quotes, unset variables kept), but the
/// corpus records what it returns; BuildKit's parser uses that mode for heredoc words.
#[test]
fn wordstest_json_raw_quotes_mode() {
    let root = conformance_dir();
    let data = read_json(&root, "shell-wordstest.json");
    let cases = data["cases"].as_array().expect("cases");
    let lexer = Lexer::new('\\')
        .with_raw_quotes(true)
        .with_skip_unset_env(true);
    let mut failures = Vec::new();
    for case in cases {
        let env = env_from_key_values(strings(&case["env"]));
        let input = case["input"].as_str().expect("input");
        let note = case["raw_quotes_skip_unset_mode_informational"]
            .as_str()
            .expect("informational");
        let expected = if let Some(list) = note.strip_prefix("differs: ") {
            Some(strings(&serde_json::from_str(list).expect("word list")))
        } else {
            assert_eq!(note, "same");
            if case["expected_error"].as_bool().expect("expected_error") {
                None
            } else {
                Some(strings(&case["expected_words"]))
            }
        };
        if let Some(f) = check_words(&lexer, &env, input, expected.as_deref()) {
            failures.push(format!("line {}: {f}", case["line"]));
        }
    }
    finish(
        "shell-wordstest.json (raw-quotes mode)",
        cases.len(),
        &failures,
    );
}

#[test]
fn envvartest_raw_file() {
    let root = conformance_dir();
    let text = read_raw(&root, "envVarTest");
    let env = env_from_key_values(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let (mut checked, mut windows_only) = (0, 0);
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(fields.len(), 3, "envVarTest line {}: {line:?}", n + 1);
        if fields[0] == "W" {
            windows_only += 1;
            continue;
        }
        checked += 1;
        let expected = (fields[2] != "error").then_some(fields[2]);
        if let Some(f) = check_word(&env, fields[1], expected) {
            failures.push(format!("line {}: {f}", n + 1));
        }
    }
    assert_eq!(checked + windows_only, 230);
    finish("envVarTest", checked, &failures);
}

#[test]
fn wordstest_raw_file() {
    let root = conformance_dir();
    let text = read_raw(&root, "wordsTest");
    let mut env_lines: Vec<String> = Vec::new();
    let (mut checked, mut failures) = (0, Vec::new());
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            env_lines.push(rest.trim_start_matches(' ').to_owned());
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 2, "wordsTest line {}: {line:?}", n + 1);
        checked += 1;
        let input = fields[0].trim();
        let right = fields[1].trim_start_matches(' ');
        let expected: Option<Vec<String>> =
            (right != "error").then(|| right.split(',').map(str::to_owned).collect());
        let env = env_from_key_values(&env_lines);
        if let Some(f) = check_words(&Lexer::new('\\'), &env, input, expected.as_deref()) {
            failures.push(format!("line {}: {f}", n + 1));
        }
    }
    assert_eq!(checked, 24);
    finish("wordsTest", checked, &failures);
}

#[test]
fn expansion_process_word_with_matches() {
    let root = conformance_dir();
    let data = read_json(&root, "shell-expansion.json");
    let cases = data["process_word_with_matches"]["cases"]
        .as_array()
        .expect("cases");
    assert_eq!(cases.len(), 47);
    let mut failures = Vec::new();
    for case in cases {
        let env = string_map(&case["env"]);
        let input = case["input"].as_str().expect("input");
        let got = Lexer::new('\\').process_word_with_matches(input, &env);
        if case["expected_error"].as_bool().expect("expected_error") {
            if let Ok(got) = got {
                failures.push(format!("{input:?}: want an error, got {got:?}"));
            }
            continue;
        }
        let want_value = case["expected"].as_str().expect("expected");
        let want_matched = string_set(case.get("matched"));
        let want_unmatched = string_set(case.get("unmatched"));
        match got {
            Ok(got)
                if got.value == want_value
                    && got.matched == want_matched
                    && got.unmatched == want_unmatched => {}
            got => failures.push(format!(
                "{input:?} with {env:?}: want {want_value:?} matched {want_matched:?} \
                 unmatched {want_unmatched:?}, got {got:?}"
            )),
        }
    }
    finish("process_word_with_matches", cases.len(), &failures);
}

#[test]
fn expansion_platform_release_name() {
    let root = conformance_dir();
    let data = read_json(&root, "shell-expansion.json");
    let cases = data["platform_release_name"]["cases"]
        .as_array()
        .expect("cases");
    assert_eq!(cases.len(), 3);
    let mut failures = Vec::new();
    for case in cases {
        let env = string_map(&case["env"]);
        let input = case["input"].as_str().expect("input");
        let want = case["expected"].as_str().expect("expected");
        match Lexer::new('\\').process_word_with_matches(input, &env) {
            Ok(got) if got.value == want => {}
            got => failures.push(format!(
                "{input:?} with {env:?}: want {want:?}, got {got:?}"
            )),
        }
    }
    finish("platform_release_name", cases.len(), &failures);
}

#[test]
fn expansion_mandatory_vars() {
    let root = conformance_dir();
    let data = read_json(&root, "shell-expansion.json");
    let cases = data["mandatory_vars"]["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 6);
    let mut failures = Vec::new();
    for case in cases {
        let env = env_from_key_values(strings(&case["env"]));
        let input = case["input"].as_str().expect("input");
        let got = Lexer::new('\\').process_word(input, &env);
        match (case.get("expected_error_contains"), got) {
            (Some(needle), Err(e)) if e.to_string().contains(needle.as_str().expect("text")) => {}
            (None, Ok(got)) if got == case["expected"].as_str().expect("expected") => {}
            (want, got) => failures.push(format!(
                "{input:?} with {env:?}: want {:?} / error containing {want:?}, got {got:?}",
                case.get("expected")
            )),
        }
    }
    finish("mandatory_vars", cases.len(), &failures);
}

#[test]
fn expansion_env_lookup() {
    let root = conformance_dir();
    let data = read_json(&root, "shell-expansion.json");
    let cases = data["env_lookup"]["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 7);
    let mut failures = Vec::new();
    for case in cases {
        let list = strings(&case["env"]);
        let env = env_from_key_values(&list);
        let name = case["name"].as_str().expect("name");
        let want = case["expected"].as_str().expect("expected");
        let got = env.lookup(name).unwrap_or("");
        if got != want {
            failures.push(format!("{name:?} in {list:?}: want {want:?}, got {got:?}"));
        }
    }
    finish("env_lookup", cases.len(), &failures);
}

/// Upstream's pattern-to-regexp helper, checked through the public operators: invalid
/// escapes fail `#`, `%` and `/` alike, and each valid pattern matches what its regexp
/// matches (nothing in these patterns or samples matches a newline, so `##` on
/// `sample + "\nTAIL"` must leave exactly `"\nTAIL"`).
#[test]
fn expansion_pattern_helpers() {
    let root = conformance_dir();
    let data = read_json(&root, "shell-expansion.json");
    let helpers = &data["internal_helpers"];
    let mut failures = Vec::new();
    let errors = strings(&helpers["shell_pattern_to_regex_errors"]);
    for pattern in &errors {
        for form in ["${V#$P}", "${V%$P}", "${V/$P/x}"] {
            let env = [("V", "value"), ("P", pattern.as_str())];
            if let Ok(got) = Lexer::new('\\').process_word(form, &env) {
                failures.push(format!(
                    "{form} with P={pattern:?}: want an error, got {got:?}"
                ));
            }
        }
    }
    let valid = helpers["shell_pattern_to_regex"].as_array().expect("cases");
    for case in valid {
        let pattern = case["input"].as_str().expect("input");
        let regex = case["expected"].as_str().expect("expected");
        let sample = sample_for_regex(regex);
        let value = format!("{sample}\nTAIL");
        let env = [("V", value.as_str()), ("P", pattern)];
        match Lexer::new('\\').process_word("${V##$P}", &env) {
            Ok(got) if got == "\nTAIL" => {}
            got => failures.push(format!(
                "pattern {pattern:?} (regexp {regex:?}) on {value:?}: want \"\\nTAIL\", got {got:?}"
            )),
        }
    }
    finish(
        "internal_helpers",
        errors.len() * 3 + valid.len(),
        &failures,
    );
}

/// A string the anchored Go regexp `regex` (made only of `^`, `\x`, `.*`, `.` and
/// literals) matches in full.
fn sample_for_regex(regex: &str) -> String {
    let mut chars = regex.strip_prefix('^').unwrap_or(regex).chars().peekable();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().expect("escaped char")),
            '.' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str("zz");
            }
            '.' => out.push('q'),
            c => out.push(c),
        }
    }
    out
}
