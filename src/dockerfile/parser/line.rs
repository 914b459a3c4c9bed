//! One logical line → one [`Node`]: the keyword, the flags, and the arguments
//! split by the instruction's own rule (BuildKit's `newNodeFromLine` and its
//! dispatch table).

use super::args::{self, parse_json_array, parse_name_val, parse_words};
use super::grammar::{self, Entry, Rule};
use crate::dockerfile::{Error, Node};
use pest::iterators::Pair;

/// ONBUILD may wrap ONBUILD (the typed layer rejects that); the nesting is
/// bounded so that no input can exhaust the stack in the recursive code that
/// walks a node.
pub const MAX_ONBUILD_DEPTH: usize = 64;

/// Build the node for one logical line (its continuations already joined).
/// Errors carry no line: the caller knows it.
pub(crate) fn build_node(line: &str, escape: char, depth: usize) -> Result<Node, Error> {
    let trimmed = line.trim();
    let pairs = grammar::parse_with_escape(Entry::Line, escape, trimmed)
        .map_err(|e| Error::new(0, format!("cannot parse instruction: {e}")))?;

    let mut keyword = "";
    let mut flags = Vec::new();
    let mut rest = "";
    for pair in pairs {
        match pair.as_rule() {
            Rule::keyword => keyword = pair.as_str(),
            Rule::flag => {
                let value = flag_value(pair.clone());
                if value == "--" {
                    // A lone `--` ends the flags; what follows is the rest, flags or not.
                    rest = trimmed[pair.as_span().end()..].trim();
                    break;
                }
                flags.push(value);
            }
            Rule::rest => rest = pair.as_str().trim(),
            _ => {}
        }
    }

    let keyword = keyword.to_lowercase();
    let mut node = Node {
        flags,
        original: line.to_owned(),
        ..Node::default()
    };
    match keyword.as_str() {
        "add" | "copy" | "volume" => match parse_json_array(rest)? {
            Some(list) => {
                node.args = list;
                node.json = true;
            }
            None => node.args = args::split_fields(rest),
        },
        "run" | "cmd" | "entrypoint" | "shell" => maybe_json(&mut node, rest)?,
        "arg" => node.args = parse_words(rest, escape),
        "env" => node.args = parse_name_val(rest, "ENV", escape)?,
        "label" => node.args = parse_name_val(rest, "LABEL", escape)?,
        "from" | "expose" => node.args = args::split_fields(rest),
        "healthcheck" => {
            // The first word (CMD, NONE, or anything: it is not checked here),
            // then the command as for CMD.
            if !rest.is_empty() {
                let cut = rest.find(char::is_whitespace).unwrap_or(rest.len());
                node.args.push(rest[..cut].to_owned());
                maybe_json(&mut node, rest[cut..].trim_start())?;
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                node.args.push(rest.to_owned());
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                if depth >= MAX_ONBUILD_DEPTH {
                    return Err(Error::new(0, "ONBUILD instructions are nested too deeply"));
                }
                node.inner = Some(Box::new(build_node(rest, escape, depth + 1)?));
            }
        }
        // Unknown keywords are kept, with one empty argument, as BuildKit's
        // parseIgnore leaves them; the typed layer reports them.
        _ => node.args.push(String::new()),
    }
    node.keyword = keyword;
    Ok(node)
}

/// BuildKit's `parseMaybeJSON`: the exec form, or the whole rest as one argument.
fn maybe_json(node: &mut Node, rest: &str) -> Result<(), Error> {
    if rest.is_empty() {
        return Ok(());
    }
    match parse_json_array(rest)? {
        Some(list) => {
            node.args.extend(list);
            node.json = true;
        }
        None => node.args.push(rest.to_owned()),
    }
    Ok(())
}

/// The value of one `flag` pair: quotes removed, escapes applied.
fn flag_value(pair: Pair<'_, Rule>) -> String {
    let mut value = String::with_capacity(pair.as_str().len());
    push_flag_parts(pair, &mut value);
    value
}

fn push_flag_parts(pair: Pair<'_, Rule>, value: &mut String) {
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::flag_text | Rule::flag_quoted | Rule::flag_quoted_d | Rule::escaped_char => {
                value.push_str(part.as_str())
            }
            _ => push_flag_parts(part, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(line: &str) -> Node {
        match build_node(line, '\\', 0) {
            Ok(node) => node,
            Err(e) => panic!("{line:?}: {e}"),
        }
    }

    #[test]
    fn flags_unquote_and_stop() {
        let n = node(r#"COPY --chown="a b" --x='c\'d' --y=e\ f -- --not-a-flag dst"#);
        assert_eq!(n.flags, ["--chown=a b", "--x=c'd", "--y=e f"]);
        assert_eq!(n.args, ["--not-a-flag", "dst"]);
        let n = node("RUN --a=\"b c");
        assert_eq!(n.flags, ["--a=b c"]);
        assert!(n.args.is_empty());
        let n = node("RUN --a=b\\");
        assert_eq!(n.flags, ["--a=b"]);
        let n = node("COPY --");
        assert!(n.flags.is_empty() && n.args.is_empty());
        let n = node("COPY -x a");
        assert_eq!(n.args, ["-x", "a"]);
    }

    #[test]
    fn keyword_forms() {
        let n = node("From\tfoo  AS bar");
        assert_eq!((n.keyword.as_str(), n.args.len()), ("from", 3));
        let n = node("frob --x=1 a b");
        assert_eq!(
            (n.flags.len(), n.args.as_slice()),
            (1, [String::new()].as_slice())
        );
        let n = node("");
        assert_eq!(
            (n.keyword.as_str(), n.args.as_slice()),
            ("", [String::new()].as_slice())
        );
        let n = node("HEALTHCHECK   CMD   a b");
        assert_eq!(n.args, ["CMD", "a b"]);
        let n = node("ONBUILD ONBUILD RUN [\"a\"]");
        let inner = n.inner.as_ref().and_then(|n| n.inner.as_ref());
        assert_eq!(
            inner.map(|n| (n.json, n.args.clone())),
            Some((true, vec!["a".to_owned()]))
        );
    }

    #[test]
    fn onbuild_depth_is_bounded() {
        let line = "ONBUILD ".repeat(MAX_ONBUILD_DEPTH + 2) + "RUN x";
        assert!(build_node(&line, '\\', 0).is_err());
        let line = "ONBUILD ".repeat(MAX_ONBUILD_DEPTH) + "RUN x";
        assert!(build_node(&line, '\\', 0).is_ok());
    }
}
