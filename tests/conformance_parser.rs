#![allow(clippy::unwrap_used, clippy::expect_used)]
//! BuildKit's parser corpus against `kiln::dockerfile::parser`: golden dumps,
//! negative files, line numbers, warnings, limits, JSON arrays, name/value
//! triples, heredocs, the word splitter and parser directives.
//!
//! Every test walks all the cases of its table and reports every failing one.

mod common;

use common::conformance_dir;
use kiln::dockerfile::dump::dump;
use kiln::dockerfile::parser::{
    chomp_heredoc_content, detect_syntax, heredocs_from_line, parse_directive, parse_directives,
    parse_heredoc, parse_json_array, parse_name_val, parse_words, DetectedDirective,
    NOT_STRING_ARRAY,
};
use kiln::dockerfile::{parse, Heredoc};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn parser_dir(corpus: &Path) -> PathBuf {
    corpus.join("buildkit/frontend/dockerfile/parser")
}

fn json(corpus: &Path, name: &str) -> Value {
    let path = corpus.join("extracted").join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn read(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("{}: not UTF-8: {e}", path.display()))
}

fn report(what: &str, checked: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{what}: {} of {checked} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{what}: {checked} cases passed");
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap().to_owned())
            .collect(),
        other => panic!("not a string list: {other}"),
    }
}

fn dirs(path: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn golden_files() {
    let corpus = conformance_dir();
    let cases = dirs(&parser_dir(&corpus).join("testfiles"));
    assert_eq!(cases.len(), 33, "expected 33 golden cases");
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expected = read(&dir.join("result"));
        match parse(&read(&dir.join("Dockerfile"))) {
            Ok(ast) => {
                let got = dump(&ast);
                if got != expected {
                    failures.push(format!("{name}:\n--- expected\n{expected}--- got\n{got}"));
                }
            }
            Err(e) => failures.push(format!("{name}: parse failed: {e}")),
        }
    }
    report("golden files", cases.len(), failures);
}

#[test]
fn negative_files() {
    let corpus = conformance_dir();
    let misc = json(&corpus, "parser-misc.json");
    let listed = strings(&misc["negative_testfiles"]["dirs"]);
    let cases = dirs(&parser_dir(&corpus).join("testfiles-negative"));
    assert_eq!(cases.len(), 4, "expected 4 negative cases");
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !listed.contains(&name) {
            failures.push(format!("{name}: not listed in parser-misc.json"));
        }
        let expected = misc["negative_testfiles"]["error_text_informational"][&name].as_str();
        match parse(&read(&dir.join("Dockerfile"))) {
            Ok(ast) => failures.push(format!("{name}: parsed into {} nodes", ast.nodes.len())),
            // The message is informational upstream; ours are the same, so say so when not.
            Err(e) if expected.is_some_and(|m| m != e.message) => {
                eprintln!(
                    "note: {name}: message {:?}, upstream {expected:?}",
                    e.message
                )
            }
            Err(_) => {}
        }
    }
    report("negative files", cases.len(), failures);
}

#[test]
fn line_numbers() {
    let corpus = conformance_dir();
    let case = &json(&corpus, "parser-misc.json")["line_numbers"];
    let ast = parse(&read(&parser_dir(&corpus).join("testfile-line/Dockerfile"))).unwrap();
    let mut failures = Vec::new();
    let want: Vec<(usize, usize)> = case["child_line_ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap() as usize,
                r[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let got: Vec<(usize, usize)> = ast
        .nodes
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    if got.len() != case["child_count"].as_u64().unwrap() as usize {
        failures.push(format!("child count: got {}", got.len()));
    }
    for (i, want) in want.iter().enumerate() {
        if got.get(i) != Some(want) {
            failures.push(format!("child {i}: got {:?}, want {want:?}", got.get(i)));
        }
    }
    let root = (
        ast.nodes.first().map(|n| n.start_line),
        ast.nodes.last().map(|n| n.end_line),
    );
    let want_root = (
        case["root_start_line"].as_u64().map(|l| l as usize),
        case["root_end_line"].as_u64().map(|l| l as usize),
    );
    if root != want_root {
        failures.push(format!("root: got {root:?}, want {want_root:?}"));
    }
    report("line numbers", want.len() + 2, failures);
}

#[test]
fn empty_continuation_warnings() {
    let corpus = conformance_dir();
    let case = &json(&corpus, "parser-misc.json")["empty_continuation_warnings"];
    let ast = parse(case["dockerfile"].as_str().unwrap()).unwrap();
    let mut failures = Vec::new();
    let count = case["warning_count"].as_u64().unwrap() as usize;
    if ast.warnings.len() != count {
        failures.push(format!(
            "got {} warnings: {:?}",
            ast.warnings.len(),
            ast.warnings
        ));
    }
    let checks = [
        (0, strings(&case["warning_0_short_contains"])),
        (1, strings(&case["warning_1_short_contains"])),
    ];
    for (i, needles) in &checks {
        for needle in needles {
            match ast.warnings.get(*i) {
                Some(w) if w.message.contains(needle.as_str()) => {}
                other => failures.push(format!("warning {i} lacks {needle:?}: {other:?}")),
            }
        }
    }
    let detail = case["warning_0_detail_contains"].as_str().unwrap();
    if !ast
        .warnings
        .first()
        .is_some_and(|w| w.detail.contains(detail))
    {
        failures.push(format!("warning 0 detail lacks {detail:?}"));
    }
    report("empty continuation warnings", 4, failures);
}

#[test]
fn line_too_long() {
    let corpus = conformance_dir();
    let case = &json(&corpus, "parser-misc.json")["line_too_long"];
    let text = case["dockerfile_template"]
        .as_str()
        .unwrap()
        .replace("{LABEL}", &"a".repeat(65536));
    let want = case["expected_error"].as_str().unwrap();
    let mut failures = Vec::new();
    match parse(&text) {
        Err(e) if e.message == want => {}
        other => failures.push(format!("got {:?}", other.map(|a| a.nodes.len()))),
    }
    report("line too long", 1, failures);
}

#[test]
fn json_arrays() {
    let corpus = conformance_dir();
    let section = &json(&corpus, "parser-misc.json")["json_arrays"];
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in section["valid"].as_array().unwrap() {
        checked += 1;
        let input = case["input"].as_str().unwrap();
        let want = strings(&case["expected"]);
        match parse_json_array(input) {
            Ok(Some(got)) if got == want => {}
            other => failures.push(format!("{input:?}: got {other:?}, want {want:?}")),
        }
    }
    for input in section["not_string_array"].as_array().unwrap() {
        checked += 1;
        let input = input.as_str().unwrap();
        match parse_json_array(input) {
            Err(e) if e.message == NOT_STRING_ARRAY => {}
            other => failures.push(format!(
                "{input:?}: got {other:?}, want the strings-only error"
            )),
        }
        // The error fails the instruction: no fallback to the shell form.
        if parse(&format!("FROM a\nCMD {input}\n")).is_ok() {
            failures.push(format!("CMD {input}: parsed"));
        }
    }
    report("JSON arrays", checked, failures);
}

#[test]
fn name_val() {
    let corpus = conformance_dir();
    let section = &json(&corpus, "parser-misc.json")["name_val"];
    let mut failures = Vec::new();
    let cases = section["cases"].as_array().unwrap();
    for case in cases {
        let (rest, key) = (
            case["rest"].as_str().unwrap(),
            case["key"].as_str().unwrap(),
        );
        let got = parse_name_val(rest, key, '\\');
        if case["error"].as_bool() == Some(true) {
            let want = case["error_text_informational"].as_str().unwrap();
            match got {
                Err(e) if e.message == want => {}
                other => failures.push(format!(
                    "{key} {rest:?}: got {other:?}, want error {want:?}"
                )),
            }
        } else {
            let want = strings(&case["node_values"]);
            match got {
                Ok(got) if got == want => {}
                other => failures.push(format!("{key} {rest:?}: got {other:?}, want {want:?}")),
            }
        }
    }
    report("name/value", cases.len(), failures);
}

fn expected_heredoc(v: &Value) -> Heredoc {
    Heredoc {
        name: v["name"].as_str().unwrap().to_owned(),
        file_descriptor: v["file_descriptor"].as_u64().unwrap() as u32,
        expand: v["expand"].as_bool().unwrap(),
        chomp: v["chomp"].as_bool().unwrap(),
        content: v["content"].as_str().unwrap().to_owned(),
    }
}

#[test]
fn heredocs_extracted() {
    let corpus = conformance_dir();
    let section = &json(&corpus, "parser-heredocs.json")["extracts_heredoc"];
    let ast = parse(section["dockerfile"].as_str().unwrap()).unwrap();
    let children = section["children"].as_array().unwrap();
    let mut failures = Vec::new();
    for child in children {
        let index = child["child_index"].as_u64().unwrap() as usize;
        let want: Vec<Heredoc> = match &child["heredocs"] {
            Value::Null => Vec::new(),
            list => list
                .as_array()
                .unwrap()
                .iter()
                .map(expected_heredoc)
                .collect(),
        };
        match ast.nodes.get(index) {
            Some(node) if node.heredocs == want => {}
            Some(node) => failures.push(format!(
                "child {index} ({}): got {:?}, want {want:?}",
                child["original_line_informational"], node.heredocs
            )),
            None => failures.push(format!("child {index}: missing")),
        }
    }
    report("heredocs extracted", children.len(), failures);
}

#[test]
fn json_form_has_no_heredocs() {
    let corpus = conformance_dir();
    let section = &json(&corpus, "parser-heredocs.json")["json_form_has_no_heredocs"];
    let ast = parse(section["dockerfile"].as_str().unwrap()).unwrap();
    let indexes = section["child_indexes_without_heredocs"]
        .as_array()
        .unwrap();
    let mut failures = Vec::new();
    for index in indexes {
        let index = index.as_u64().unwrap() as usize;
        match ast.nodes.get(index) {
            Some(node) if node.heredocs.is_empty() && node.json => {}
            other => failures.push(format!("child {index}: {other:?}")),
        }
    }
    report("JSON form has no heredocs", indexes.len(), failures);
}

#[test]
fn parse_heredoc_word() {
    let corpus = conformance_dir();
    let section = &json(&corpus, "parser-heredocs.json")["parse_heredoc_word"];
    let mut failures = Vec::new();
    let mut checked = 0;
    for word in strings(&section["valid_name_is_EOF"]) {
        checked += 1;
        match parse_heredoc(&word) {
            Ok(Some(h)) if h.name == "EOF" => {}
            other => failures.push(format!("{word:?}: got {other:?}, want EOF")),
        }
    }
    for word in strings(&section["error"]) {
        checked += 1;
        if parse_heredoc(&word).is_ok() {
            failures.push(format!("{word:?}: no error"));
        }
    }
    for word in strings(&section["not_a_heredoc"]) {
        checked += 1;
        match parse_heredoc(&word) {
            Ok(None) => {}
            other => failures.push(format!("{word:?}: got {other:?}, want no heredoc")),
        }
    }
    report("heredoc words", checked, failures);
}

#[test]
fn heredocs_from_lines() {
    let corpus = conformance_dir();
    let section = &json(&corpus, "parser-heredocs.json")["heredocs_from_line"];
    let cases = section["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let line = case["line"].as_str().unwrap();
        // Upstream checks each name returned against `heredoc_names` without
        // checking the count, and `RUN <<- EOF` really yields none (quirk 1 in
        // extracted/README.md); we require the exact list the implementation
        // returns, which satisfies the upstream assertion too.
        let want = strings(&case["actual_names_informational"]);
        let upstream = strings(&case["heredoc_names"]);
        let got: Vec<String> = heredocs_from_line(line)
            .into_iter()
            .map(|d| d.name)
            .collect();
        if got != want || got.iter().zip(&upstream).any(|(g, u)| g != u) {
            failures.push(format!("{line:?}: got {got:?}, want {want:?}"));
        }
    }
    report("heredocs from line", cases.len(), failures);
}

#[test]
fn chomp() {
    let corpus = conformance_dir();
    let case = &json(&corpus, "parser-heredocs.json")["chomp"];
    let got = chomp_heredoc_content(case["input"].as_str().unwrap());
    let want = case["expected"].as_str().unwrap();
    let failures = if got == want {
        Vec::new()
    } else {
        vec![format!("got {got:?}, want {want:?}")]
    };
    report("chomp", 1, failures);
}

#[test]
fn parse_words_table() {
    let corpus = conformance_dir();
    let text = read(&corpus.join("extracted/parser-parse-words.tsv"));
    let mut failures = Vec::new();
    let mut checked = 0;
    for row in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        checked += 1;
        let mut fields = row.split('\t');
        let input = fields.next().unwrap();
        let want: Vec<&str> = fields.collect();
        let got = parse_words(input, '\\');
        if got != want {
            failures.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
    }
    assert_eq!(checked, 8, "expected 8 rows");
    report("parse words", checked, failures);
}

#[test]
fn directives() {
    let corpus = conformance_dir();
    let v = json(&corpus, "parser-directives.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 17, "expected 17 directive cases");
    let mut failures = Vec::new();
    for case in cases {
        let input = case["input"].as_str().unwrap();
        let want = &case["expected"];
        let label = format!("{} {input:?}", case["call"]);
        match case["call"].as_str().unwrap() {
            "DirectiveParser.ParseAll" => {
                let got = parse_directives(input);
                if got.is_err() != want["error"].as_bool().unwrap() {
                    failures.push(format!("{label}: got {got:?}"));
                    continue;
                }
                let got: Vec<(String, String)> = got
                    .unwrap_or_default()
                    .into_iter()
                    .map(|d| (d.name, d.value))
                    .collect();
                let expected: Vec<(String, String)> = want["directives"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| {
                        (
                            d["name"].as_str().unwrap().into(),
                            d["value"].as_str().unwrap().into(),
                        )
                    })
                    .collect();
                if got.len() != want["directive_count"].as_u64().unwrap() as usize
                    || got != expected
                {
                    failures.push(format!("{label}: got {got:?}, want {expected:?}"));
                }
            }
            call @ ("DetectSyntax" | "ParseDirective(\"check\")") => {
                let got = if call == "DetectSyntax" {
                    detect_syntax(input)
                } else {
                    parse_directive("check", input)
                };
                check_detected(&label, got, want, &mut failures);
            }
            other => failures.push(format!("unknown call {other}")),
        }
    }
    report("directives", cases.len(), failures);
}

fn check_detected(
    label: &str,
    got: Option<DetectedDirective>,
    want: &Value,
    failures: &mut Vec<String>,
) {
    let found = want["found"].as_bool().unwrap();
    if got.is_some() != found {
        failures.push(format!("{label}: got {got:?}, want found={found}"));
        return;
    }
    let (reference, cmdline, start, end) = match &got {
        Some(d) => (
            d.reference.as_str(),
            d.cmdline.as_str(),
            d.start_line,
            d.end_line,
        ),
        None => ("", "", 0, 0),
    };
    let fields = [
        ("ref", Value::from(reference)),
        ("cmdline", Value::from(cmdline)),
        ("start_line", Value::from(start)),
        ("end_line", Value::from(end)),
    ];
    for (key, value) in fields {
        if let Some(expected) = want.get(key) {
            if *expected != value {
                failures.push(format!("{label}: {key} = {value}, want {expected}"));
            }
        }
    }
}
