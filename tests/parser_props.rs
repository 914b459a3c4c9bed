#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The parser and the dump never panic and never loop, whatever the input:
//! random bytes, random Dockerfile-like token soups, and mutated corpus files.

mod common;

use common::conformance_dir_if_present;
use kiln::dockerfile::dump::{dump, dump_node};
use kiln::dockerfile::parser::{
    detect_syntax, heredocs_from_line, parse_directive, parse_directives, parse_heredoc,
    parse_json_array, parse_name_val, parse_words,
};
use kiln::dockerfile::{parse, Ast};
use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Properties of any successful parse.
fn check(text: &str) {
    if let Ok(ast) = parse(text) {
        check_ast(&ast);
    }
    let _ = detect_syntax(text);
    let _ = parse_directive("check", text);
    let _ = parse_directives(text);
    for line in text.lines().take(50) {
        let _ = heredocs_from_line(line);
        let _ = parse_heredoc(line);
        let _ = parse_json_array(line);
        let _ = parse_name_val(line, "ENV", '\\');
        let _ = parse_words(line, '`');
    }
}

fn check_ast(ast: &Ast) {
    let text = dump(ast);
    assert_eq!(text.lines().count(), ast.nodes.len());
    let mut previous_end = 0;
    for node in &ast.nodes {
        assert!(node.start_line > previous_end, "lines overlap: {ast:?}");
        assert!(node.start_line <= node.end_line);
        previous_end = node.end_line;
        let one = dump_node(node);
        assert!(one.starts_with('(') && one.ends_with(')'));
        assert!(!node.original.contains('\n'));
    }
}

/// Dockerfiles to mutate: the corpus golden files when the corpus is present,
/// else a few built-in ones.
fn seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<String> = [
            "FROM a\nRUN <<EOF cat\nx \\\nEOF\nCOPY <<A <<-'B' /d\n1\nA\n\t2\n\tB\n",
            "# escape=`\nFROM a\nENV x=1 `\n  y=\"2 3\"\nONBUILD RUN [\"a\", \"b\"]\n",
            "FROM a AS b\nHEALTHCHECK --interval=5s CMD [\"c\"]\nLABEL \"a b\"=c d=e\nARG x=\"1 2\" y\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(dir) = conformance_dir_if_present() {
            let golden = dir.join("buildkit/frontend/dockerfile/parser/testfiles");
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&golden)
                .unwrap()
                .map(|e| e.unwrap().path().join("Dockerfile"))
                .collect();
            entries.sort();
            for path in entries {
                seeds.push(String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned());
            }
            let heredocs = std::fs::read_to_string(dir.join("extracted/parser-heredocs.json")).unwrap();
            let v: serde_json::Value = serde_json::from_str(&heredocs).unwrap();
            seeds.push(v["extracts_heredoc"]["dockerfile"].as_str().unwrap().to_owned());
        }
        seeds
    })
}

/// Pieces that exercise the grammar's corners when strung together.
const TOKENS: &[&str] = &[
    "RUN ",
    "FROM ",
    "COPY ",
    "ADD ",
    "ENV ",
    "LABEL ",
    "ARG ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "CMD ",
    "SHELL ",
    "VOLUME ",
    "EXPOSE ",
    "frob ",
    "\n",
    "\r\n",
    "\r",
    "\\",
    "\\\\",
    "`",
    " ",
    "\t",
    "\u{0B}",
    "\u{A0}",
    "#",
    "# escape=`\n",
    "# escape=\\\n",
    "# syntax=x\n",
    "# check=y\n",
    "<<",
    "<<-",
    "3<<",
    "EOF",
    "'",
    "\"",
    "[",
    "]",
    ",",
    "\"a\"",
    "--",
    "--x=",
    "=",
    "${",
    "}",
    "$",
    "x",
    "é",
    "\u{FEFF}",
    "\u{0}",
    "{",
    "//",
    "#!",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..80).prop_map(|parts| parts.concat())
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, &'static str),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), 0usize..20).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 0usize..200).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ];
    prop::collection::vec(edit, 1..8)
}

/// Apply edits at character boundaries, positions taken modulo the length.
fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for edit in edits {
        let len = chars.len();
        match *edit {
            Edit::Insert(at, token) => {
                let at = at % (len + 1);
                chars.splice(at..at, token.chars());
            }
            Edit::Delete(at, n) if len > 0 => {
                let at = at % len;
                let end = (at + n).min(len);
                chars.drain(at..end);
            }
            Edit::Duplicate(at, n) if len > 0 => {
                let at = at % len;
                let end = (at + n).min(len);
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(end..end, copy);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    // PROPTEST_CASES raises the count for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_soup(text in soup()) {
        check(&text);
    }

    #[test]
    fn mutated_corpus(index in any::<usize>(), edits in edits()) {
        let seeds = seeds();
        let seed = &seeds[index % seeds.len()];
        check(&mutate(seed, &edits));
    }
}

#[test]
fn pathological_inputs_stay_fast() {
    let cases = [
        // Heredoc terminators ending in the escape character: each body ends
        // inside a unit of the whole-file pass.
        "FROM a\n".to_owned() + &"RUN <<'E\\'\nbody\nE\\\n".repeat(5000),
        "FROM a\nRUN ".to_owned() + &"\\\n".repeat(50_000) + "x\n",
        "FROM a\nRUN x \\\n".to_owned() + &"\n# c\n".repeat(50_000) + "y\n",
        "FROM a\nRUN ".to_owned() + &"${".repeat(30_000) + " <<EOF\nEOF\n",
        "FROM a\nRUN '".to_owned() + &"<<x ".repeat(15_000) + "\n",
        "FROM a\nENV ".to_owned() + &"\\".repeat(60_000) + "\n",
        "FROM a\nCMD [".to_owned() + &"\"a\",".repeat(10_000) + "1]\n",
        "FROM a\nCMD ".to_owned() + &"[".repeat(60_000) + "\n",
        "FROM a\nRUN ".to_owned() + &" ".repeat(60_000) + "x" + &"\t".repeat(5_000) + "\n",
        "FROM a\n".to_owned() + &"ONBUILD ".repeat(8_000) + "RUN x\n",
    ];
    for text in &cases {
        let started = std::time::Instant::now();
        check(text);
        let elapsed = started.elapsed();
        assert!(
            elapsed < std::time::Duration::from_secs(20),
            "{} bytes took {elapsed:?}",
            text.len()
        );
    }
    let ast = parse(&cases[0]).unwrap();
    assert_eq!(ast.nodes.len(), 5001);
    assert!(ast.nodes.iter().skip(1).all(|n| n.heredocs.len() == 1));
}
