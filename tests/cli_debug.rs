//! `kiln debug parse` driven through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;
use predicates::prelude::*;
use std::io::Write;

fn kiln() -> Command {
    Command::cargo_bin("kiln").unwrap()
}

fn dockerfile(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .prefix("Dockerfile.")
        .tempfile()
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn dumps_the_example_in_buildkit_format() {
    let out = kiln()
        .args(["debug", "parse", "examples/hello/Dockerfile"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], r#"(arg "BASE=busybox:latest")"#);
    assert_eq!(lines[1], r#"(from "${BASE}" "AS" "base")"#);
    assert!(lines.contains(&r#"(copy "<<EOF" "/etc/motd")"#), "{out}");
    assert!(
        lines.contains(
            &r#"(healthcheck ["--interval=30s" "--timeout=3s"] "CMD" "/app/hello.sh" "--check")"#
        ),
        "{out}"
    );
    assert_eq!(lines.last().unwrap(), &r#"(cmd "world")"#);
}

#[test]
fn typed_view_lowers_the_example() {
    kiln()
        .args(["debug", "parse", "--typed", "examples/hello/Dockerfile"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Healthcheck"));
}

#[test]
fn unknown_instruction_names_file_line_and_suggests() {
    let f = dockerfile("FROM busybox\n\nRUNN echo hi\n");
    let name = f.path().display().to_string();
    kiln()
        .args(["debug", "parse", "--typed"])
        .arg(f.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("{name}:3")))
        .stderr(predicate::str::contains("unknown instruction: RUNN"))
        .stderr(predicate::str::contains("did you mean RUN?"));
}

#[test]
fn syntax_error_names_the_line() {
    let f = dockerfile("FROM busybox\nENV PATH\n");
    let name = f.path().display().to_string();
    kiln()
        .args(["debug", "parse"])
        .arg(f.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("{name}:2")));
}

#[test]
fn empty_file_is_an_error() {
    let f = dockerfile("# only a comment\n\n");
    kiln()
        .args(["debug", "parse"])
        .arg(f.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("file with no instructions"));
}

#[test]
fn missing_file_names_it() {
    kiln()
        .args(["debug", "parse", "/nonexistent/Dockerfile"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("/nonexistent/Dockerfile"));
}

#[test]
fn reads_standard_input() {
    kiln()
        .args(["debug", "parse", "-"])
        .write_stdin("from busybox\nrun echo hi\n")
        .assert()
        .success()
        .stdout("(from \"busybox\")\n(run \"echo hi\")\n");
}

#[test]
fn garbage_never_panics() {
    // A panic exits with 101; every outcome here must be a clean 0 or 1.
    for text in [
        "\u{feff}",
        "FROM\\",
        "RUN <<EOF",
        "COPY <<'EOF",
        "ONBUILD ONBUILD RUN x",
        "HEALTHCHECK --interval=-1s CMD x",
        "RUN --mount=type=cache,,,= x",
        "\\\n\\\n\\",
        "# escape=`\nFROM x`\n`",
        "ENV a=\"b",
        "EXPOSE 80-",
        "CMD [\"a\", [\"b\"]]",
    ] {
        let f = dockerfile(text);
        let code = kiln()
            .args(["debug", "parse", "--typed"])
            .arg(f.path())
            .output()
            .unwrap()
            .status
            .code();
        assert!(matches!(code, Some(0) | Some(1)), "{text:?} gave {code:?}");
    }
}
