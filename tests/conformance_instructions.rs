#![allow(clippy::unwrap_used, clippy::expect_used)]
//! BuildKit's typed-instruction tables (extracted/instructions-parse.json) and the
//! EXPOSE / ENV helpers of extracted/dockerfile2llb-cases.json. Every case is checked;
//! each test lists all the cases that fail.

mod common;

use common::conformance_dir;
use kiln::dockerfile::instruction::{
    add_env, from_node, handle_json_args, lower, parse_device, parse_key_value, parse_port_spec,
    parse_port_specs, BuilderFlags, HealthcheckCommand, Instruction, KEYWORDS,
};
use kiln::dockerfile::{parse, Error, Node};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = conformance_dir().join("extracted").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn instructions_parse() -> Value {
    load("instructions-parse.json")
}

fn cases<'a>(v: &'a Value, section: &str, expected_count: usize) -> &'a Vec<Value> {
    let cases = v[section]["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{section}: no cases"));
    assert_eq!(cases.len(), expected_count, "{section}: case count");
    cases
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|s| s.as_str().expect("string").to_string())
            .collect(),
        other => panic!("not a list: {other}"),
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Parses the text and types its first instruction. The outer error is an AST parse
/// failure (the tables expect none), the inner one the conversion's.
fn convert(text: &str) -> Result<Result<Instruction, Error>, String> {
    let ast = parse(text).map_err(|e| format!("AST parse failed: {e}"))?;
    let node = ast
        .nodes
        .first()
        .ok_or_else(|| "AST has no instruction".to_string())?;
    Ok(from_node(node, ast.escape))
}

fn report(section: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{section}: {} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn expect_error(text: &str, check: impl Fn(&str) -> bool, want: &str) -> Option<String> {
    match convert(text) {
        Err(parse_err) => Some(format!("{text:?}: {parse_err}")),
        Ok(Ok(i)) => Some(format!(
            "{text:?}: converted to {i:?}, expected error {want:?}"
        )),
        Ok(Err(e)) if check(&e.message) => None,
        Ok(Err(e)) => Some(format!(
            "{text:?}: error {:?}, expected {want:?}",
            e.message
        )),
    }
}

#[test]
fn argument_count_errors() {
    let v = instructions_parse();
    let mut failures = Vec::new();
    for case in cases(&v, "argument_count_errors", 12) {
        let want = s(case, "expected_error_exact");
        failures.extend(expect_error(s(case, "dockerfile"), |m| m == want, want));
    }
    report("argument_count_errors", failures);
}

#[test]
fn error_cases() {
    let v = instructions_parse();
    let mut failures = Vec::new();
    for case in cases(&v, "error_cases", 7) {
        let want = s(case, "expected_error_contains");
        failures.extend(expect_error(
            s(case, "dockerfile"),
            |m| m.contains(want),
            want,
        ));
    }
    report("error_cases", failures);
}

#[test]
fn constructed_ast_cases() {
    let v = instructions_parse();
    let mut failures = Vec::new();
    for case in cases(&v, "constructed_ast_cases", 5) {
        let node = Node {
            keyword: s(case, "node_value").to_string(),
            args: strings(&case["node_args"]),
            start_line: 1,
            end_line: 1,
            ..Node::default()
        };
        let got = from_node(&node, '\\');
        let label = format!("{} {:?}", node.keyword, node.args);
        if let Some(want) = case["expected_error_exact"].as_str() {
            match got {
                Err(e) if e.message == want => {}
                other => failures.push(format!("{label}: got {other:?}, expected error {want:?}")),
            }
        } else {
            let want = strings(&case["expected_health_test"]);
            match got {
                Ok(Instruction::Healthcheck(h)) if h.test() == want => {}
                other => failures.push(format!("{label}: got {other:?}, expected test {want:?}")),
            }
        }
    }
    report("constructed_ast_cases", failures);
}

#[test]
fn healthcheck_interval_flag() {
    let v = instructions_parse();
    let mut failures = Vec::new();
    for case in cases(&v, "healthcheck_interval_flag", 3) {
        let value = s(case, "value");
        let node = Node {
            keyword: "healthcheck".into(),
            flags: vec![format!("--interval={value}")],
            args: vec!["CMD".into(), "true".into()],
            start_line: 1,
            end_line: 1,
            ..Node::default()
        };
        let got = from_node(&node, '\\');
        match (case["expected_error_contains"].as_str(), got) {
            (Some(want), Err(e)) if e.message.contains(want) => {}
            (None, Ok(Instruction::Healthcheck(HealthcheckCommand::Check(h)))) => {
                // Zero means unset; 1ms is kept.
                let want_set = value != "0ms";
                if h.interval.is_some() != want_set {
                    failures.push(format!("{value}: interval {:?}", h.interval));
                }
            }
            (want, got) => failures.push(format!("{value}: got {got:?}, expected error {want:?}")),
        }
    }
    report("healthcheck_interval_flag", failures);
}

#[test]
fn run_flags_used() {
    let v = instructions_parse();
    let case = &v["run_flags_used"];
    let text = s(case, "dockerfile");
    let want = strings(&case["expected_flags_used"]);
    match convert(text) {
        Ok(Ok(Instruction::Run(r))) => assert_eq!(r.flags_used, want, "{text:?}"),
        other => panic!("{text:?}: {other:?}"),
    }
}

#[test]
fn copy_heredoc() {
    let v = instructions_parse();
    let mut failures = Vec::new();
    for case in cases(&v, "copy_heredoc", 8) {
        let text = s(case, "dockerfile");
        let c = match convert(text) {
            Ok(Ok(Instruction::Copy(c))) => c,
            other => {
                failures.push(format!("{text:?}: {other:?}"));
                continue;
            }
        };
        let want_paths = strings(&case["source_paths"]);
        let want_contents: Vec<(String, String, bool)> = case["source_contents"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|c| {
                        (
                            s(c, "path").to_string(),
                            s(c, "data").to_string(),
                            c["expand"].as_bool().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let got_contents: Vec<(String, String, bool)> = c
            .sources
            .contents
            .iter()
            .map(|c| (c.path.clone(), c.data.clone(), c.expand))
            .collect();
        if c.sources.dest != s(case, "dest_path")
            || c.sources.paths != want_paths
            || got_contents != want_contents
        {
            failures.push(format!(
                "{text:?}: got dest {:?} paths {:?} contents {got_contents:?}; expected dest {:?} paths {want_paths:?} contents {want_contents:?}",
                c.sources.dest, c.sources.paths, s(case, "dest_path")
            ));
        }
    }
    report("copy_heredoc", failures);
}

#[test]
fn run_heredoc() {
    let v = instructions_parse();
    let mut failures = Vec::new();
    for case in cases(&v, "run_heredoc", 6) {
        let text = s(case, "dockerfile");
        let r = match convert(text) {
            Ok(Ok(Instruction::Run(r))) => r,
            other => {
                failures.push(format!("{text:?}: {other:?}"));
                continue;
            }
        };
        let want_files: Vec<(String, bool, String)> = case["files"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|f| {
                        (
                            s(f, "name").to_string(),
                            f["chomp"].as_bool().unwrap(),
                            s(f, "data").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let got_files: Vec<(String, bool, String)> = r
            .files
            .iter()
            .map(|f| (f.name.clone(), f.chomp, f.data.clone()))
            .collect();
        let want_shell = case["prepend_shell"].as_bool().unwrap();
        let want_cmd = strings(&case["cmd_line"]);
        if r.command.prepends_shell() != want_shell
            || r.command.to_vec() != want_cmd
            || got_files != want_files
        {
            failures.push(format!(
                "{text:?}: got {:?} files {got_files:?}; expected shell={want_shell} {want_cmd:?} files {want_files:?}",
                r.command
            ));
        }
    }
    report("run_heredoc", failures);
}

#[test]
fn handle_json_args_cases() {
    let v = instructions_parse();
    let mut failures = Vec::new();
    for case in cases(&v, "handle_json_args", 4) {
        let args = strings(&case["args"]);
        let json = case["json"].as_bool().unwrap();
        let want = strings(&case["expected"]);
        let got = handle_json_args(&args, json);
        if got != want {
            failures.push(format!(
                "{}: got {got:?}, expected {want:?}",
                s(case, "name")
            ));
        }
    }
    report("handle_json_args", failures);
}

#[test]
fn run_device() {
    let v = instructions_parse();
    let mut failures = Vec::new();
    for case in cases(&v, "run_device", 8) {
        let input = s(case, "input");
        let got = parse_device(input);
        match (case["expected_error_exact"].as_str(), got) {
            (Some(want), Err(e)) if e.message == want => {}
            (None, Ok(d))
                if d.name == s(case, "expected_name")
                    && Some(d.required) == case["expected_required"].as_bool() => {}
            (want, got) => failures.push(format!(
                "{input:?}: got {got:?}, expected error {want:?} / {case}"
            )),
        }
    }
    report("run_device", failures);
}

#[test]
fn builder_flags() {
    let v = instructions_parse();
    let mut failures = Vec::new();
    for (i, case) in cases(&v, "builder_flags", 14).iter().enumerate() {
        let mut flags = BuilderFlags::new();
        for def in case["defined_flags"].as_array().into_iter().flatten() {
            let name = s(def, "name");
            match s(def, "type") {
                "string" => flags.add_string(name, s(def, "default")),
                "bool" => flags.add_bool(name, def["default"].as_bool().unwrap()),
                "strings" => flags.add_strings(name),
                other => panic!("unknown flag type {other}"),
            }
        }
        let args = strings(&case["args"]);
        let label = format!("case {i} {args:?}");
        let result = flags.parse(&args);
        let want_error = case["expected_error"].as_bool().unwrap();
        match (&result, want_error) {
            (Ok(()), true) => {
                failures.push(format!("{label}: parsed, expected an error"));
                continue;
            }
            (Err(e), false) => {
                failures.push(format!("{label}: unexpected error {e}"));
                continue;
            }
            (Err(_), true) => continue,
            (Ok(()), false) => {}
        }
        if let Some(values) = case["expected_values"].as_object() {
            for (name, want) in values {
                let ok = match want {
                    Value::Bool(b) => flags.bool_value(name) == *b,
                    Value::String(sv) => flags.string_value(name) == Some(sv.as_str()),
                    other => panic!("unexpected value {other}"),
                };
                if !ok {
                    failures.push(format!("{label}: flag {name} != {want}"));
                }
            }
        }
        for name in strings(&case["expected_not_used"]) {
            if flags.is_used(&name) {
                failures.push(format!("{label}: flag {name} reported used"));
            }
        }
        if let Some(want) = case["expected_used_sorted_joined"].as_str() {
            let got = flags.used().join(", ");
            if got != want {
                failures.push(format!("{label}: used {got:?}, expected {want:?}"));
            }
        }
    }
    report("builder_flags", failures);
}

#[test]
fn no_crash_templates() {
    let v = instructions_parse();
    let templates = strings(&v["no_crash_templates"]["templates"]);
    assert_eq!(templates.len(), 5);
    let mut failures = Vec::new();
    for template in &templates {
        for keyword in KEYWORDS {
            let text = template.replace('X', keyword);
            let outcome = std::panic::catch_unwind(|| {
                if let Ok(ast) = parse(&text) {
                    let _ = lower(&ast);
                }
            });
            if outcome.is_err() {
                failures.push(format!("{text:?}: panicked"));
            }
        }
    }
    report("no_crash_templates", failures);
}

fn llb_cases() -> Value {
    load("dockerfile2llb-cases.json")
}

#[test]
fn expose_single_spec() {
    let v = llb_cases();
    let cases = v["expose_ports"]["single_spec"]["cases"]
        .as_array()
        .unwrap();
    assert_eq!(cases.len(), 9);
    let mut failures = Vec::new();
    for case in cases {
        let spec = s(case, "spec");
        let got = parse_port_spec(spec)
            .map(|ports| ports.iter().map(ToString::to_string).collect::<Vec<_>>());
        match (case["expected_error_exact"].as_str(), got) {
            (Some(want), Err(e)) if e.message == want => {}
            (None, Ok(keys)) if keys == strings(&case["expected"]) => {}
            (_, got) => failures.push(format!("{spec:?}: got {got:?}, expected {case}")),
        }
    }
    report("expose_ports.single_spec", failures);
}

#[test]
fn expose_spec_lists() {
    let v = llb_cases();
    let cases = v["expose_ports"]["spec_lists"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    let mut failures = Vec::new();
    for case in cases {
        let specs = strings(&case["specs"]);
        let got = parse_port_specs(&specs)
            .map(|ports| ports.iter().map(ToString::to_string).collect::<Vec<_>>());
        let want_error = case["expected_error"].as_bool().unwrap_or(false);
        match (want_error, got) {
            (true, Err(_)) => {}
            (false, Ok(keys)) if keys == strings(&case["expected"]) => {}
            (_, got) => failures.push(format!("{specs:?}: got {got:?}, expected {case}")),
        }
    }
    report("expose_ports.spec_lists", failures);
}

#[test]
fn add_env_cases() {
    let v = llb_cases();
    let cases = v["add_env"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    let mut failures = Vec::new();
    for case in cases {
        let mut env = strings(&case["env"]);
        add_env(&mut env, s(case, "key"), s(case, "value"));
        let want = strings(&case["expected"]);
        if env != want {
            failures.push(format!("{case}: got {env:?}"));
        }
    }
    report("add_env", failures);
}

#[test]
fn parse_key_value_cases() {
    let v = llb_cases();
    let cases = v["parse_key_value"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    let mut failures = Vec::new();
    for case in cases {
        let got = parse_key_value(s(case, "input"));
        if got != (s(case, "key"), s(case, "value")) {
            failures.push(format!("{case}: got {got:?}"));
        }
    }
    report("parse_key_value", failures);
}
