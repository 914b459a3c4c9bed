//! One logical line → one [`Node`]: the keyword, the flags, and the arguments
//! split by the instruction's own rule (BuildKit's `newNodeFromLine` and its
//! dispatch table).

use super::args::{self, parse_json_array, words_of};
use super::grammar::{self, Entry, Rule};
use super::heredoc;
use crate::dockerfile::{Error, Heredoc, Node};
use pest::iterators::Pair;

/// ONBUILD may wrap ONBUILD (the typed layer rejects that); the nesting is
/// bounded so that no input can exhaust the stack in the recursive code that
/// walks a node.
pub const MAX_ONBUILD_DEPTH: usize = 64;

/// Build the node for one logical line (its continuations already joined).
/// Errors carry no line: the caller knows it.
pub(crate) fn build_node(line: &str, escape: char, depth: usize) -> Result<Node, Error> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        // BuildKit keeps even this: a node with an empty keyword.
        return build_from_parts(Parts::default(), line, escape, depth);
    }
    let pairs = grammar::parse_with_escape(Entry::Line, escape, trimmed)
        .map_err(|e| Error::new(0, format!("cannot parse instruction: {e}")))?;
    let parts = Parts::from_pairs(pairs, trimmed.len());
    build_from_parts(parts, line, escape, depth)
}

/// The keyword, the flags and the rest of a logical line, with what the
/// grammar already read of the rest.
#[derive(Default)]
pub(crate) struct Parts<'a> {
    keyword: &'a str,
    flags: Vec<String>,
    rest: &'a str,
    /// The rest read as a JSON array of strings.
    json: Option<Pair<'a, Rule>>,
    /// The rest split into words (ARG, ENV, LABEL).
    words: Option<Vec<&'a str>>,
    /// The heredoc markers in a rest that holds `<<`.
    markers: Option<Vec<Heredoc>>,
    /// Whether some flag holds a quote, a backslash or a `$`: then the flags
    /// may not end where BuildKit's heredoc scan of the whole line ends their
    /// words.
    quoted_flags: bool,
}

impl<'a> Parts<'a> {
    /// Read the pairs of `instruction_body`; `line_end` is where the logical
    /// line ends in the input the pairs come from.
    pub(crate) fn from_pairs(pairs: impl Iterator<Item = Pair<'a, Rule>>, line_end: usize) -> Self {
        let mut keyword: Option<Pair<'a, Rule>> = None;
        let mut parts = Parts::default();
        for pair in pairs {
            match pair.as_rule() {
                Rule::keyword => keyword = Some(pair),
                Rule::flag => {
                    let value = flag_value(pair.clone());
                    if value == "--" {
                        // A lone `--` ends the flags; what follows is the rest, flags or not.
                        let span = pair.as_span();
                        parts.rest = span
                            .get_input()
                            .get(span.end()..line_end)
                            .unwrap_or("")
                            .trim();
                        break;
                    }
                    parts.quoted_flags |= pair.as_str().contains(['\'', '"', '\\', '$']);
                    parts.flags.push(value);
                }
                Rule::rest => parts.rest = pair.as_str().trim(),
                Rule::marker_rest => {
                    parts.rest = pair.as_str().trim();
                    parts.markers = Some(heredoc::markers(pair.into_inner()));
                }
                Rule::json_rest => {
                    parts.rest = pair.as_str().trim();
                    parts.json = pair
                        .into_inner()
                        .find(|inner| inner.as_rule() == Rule::line_json_array);
                }
                Rule::word_rest => {
                    parts.rest = pair.as_str().trim();
                    let words = pair.into_inner().filter(|w| w.as_rule() == Rule::word);
                    parts.words = Some(words.map(|w| w.as_str()).collect());
                }
                _ => {}
            }
        }
        parts.keyword = keyword.map_or("", |pair| {
            let span = pair.as_span();
            let after = span.get_input().get(span.end()..line_end).unwrap_or("");
            // BuildKit trims the line before cutting the keyword off: Unicode
            // blanks that end the line do not belong to the keyword.
            if after.trim().is_empty() {
                pair.as_str().trim_end()
            } else {
                pair.as_str()
            }
        });
        parts
    }

    /// The exec form of the rest (see [`parse_json_array`]).
    fn json_array(&mut self) -> Result<Option<Vec<String>>, Error> {
        match self.json.take() {
            Some(array) => Ok(args::strings_of_json_array(array)),
            None => parse_json_array(self.rest),
        }
    }

    fn words(&mut self, escape: char) -> Vec<&'a str> {
        match self.words.take() {
            Some(words) => words,
            None => words_of(self.rest, escape),
        }
    }
}

/// Build a node from the parts of `original`, its logical line.
pub(crate) fn build_from_parts(
    mut parts: Parts<'_>,
    original: &str,
    escape: char,
    depth: usize,
) -> Result<Node, Error> {
    let keyword = crate::dockerfile::dump::go_to_lower(parts.keyword);
    let rest = parts.rest;
    let mut node = Node {
        flags: std::mem::take(&mut parts.flags),
        original: original.to_owned(),
        ..Node::default()
    };
    match keyword.as_str() {
        "add" | "copy" | "volume" => match parts.json_array()? {
            Some(list) => {
                node.args = list;
                node.json = true;
            }
            None => node.args = args::split_fields(rest),
        },
        "run" | "cmd" | "entrypoint" | "shell" => {
            if !rest.is_empty() {
                exec_or_shell(&mut node, parts.json_array()?, rest);
            }
        }
        "arg" => node.args = parts.words(escape).into_iter().map(str::to_owned).collect(),
        "env" => node.args = args::name_val(rest, &parts.words(escape), "ENV")?,
        "label" => node.args = args::name_val(rest, &parts.words(escape), "LABEL")?,
        "from" | "expose" => node.args = args::split_fields(rest),
        "healthcheck" => {
            // The first word (CMD, NONE, or anything: it is not checked here),
            // then the command as for CMD.
            if !rest.is_empty() {
                let (kind, command) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                node.args.push(kind.to_owned());
                let command = command.trim_start();
                if !command.is_empty() {
                    exec_or_shell(&mut node, parse_json_array(command)?, command);
                }
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
    // The markers of the rest are those of the whole line when the words
    // before it (keyword, flags) read the same to BuildKit's heredoc scan,
    // which always escapes with `\`. The driver scans the line otherwise.
    if let Some(markers) = parts.markers.take() {
        if depth == 0 && escape == '\\' && !parts.quoted_flags && can_contain_heredoc(&node) {
            node.heredocs = markers;
        }
    }
    Ok(node)
}

/// RUN, COPY and ADD in shell form (also under ONBUILD) may declare heredocs.
pub(crate) fn can_contain_heredoc(node: &Node) -> bool {
    let node = match &node.inner {
        Some(inner) if node.keyword == "onbuild" => inner,
        _ => node,
    };
    matches!(node.keyword.as_str(), "run" | "copy" | "add") && !node.json
}

/// BuildKit's `parseMaybeJSON`: the exec form, or else the whole rest as one
/// argument.
fn exec_or_shell(node: &mut Node, exec: Option<Vec<String>>, rest: &str) {
    match exec {
        Some(list) => {
            node.args.extend(list);
            node.json = true;
        }
        None => node.args.push(rest.to_owned()),
    }
}

/// The value of one `flag` pair: quotes removed, escapes applied. Plain
/// text has no pair of its own: it is what lies between the inner pairs.
fn flag_value(pair: Pair<'_, Rule>) -> String {
    let span = pair.as_span();
    let input = span.get_input();
    let mut value = String::with_capacity(span.end() - span.start());
    let mut cursor = span.start();
    for part in pair.into_inner() {
        let (start, end) = (part.as_span().start(), part.as_span().end());
        value.push_str(input.get(cursor..start).unwrap_or(""));
        match part.as_rule() {
            Rule::flag_escaped | Rule::flag_single | Rule::flag_double => {
                push_quoted_parts(part, &mut value)
            }
            _ => {}
        }
        cursor = end;
    }
    value.push_str(input.get(cursor..span.end()).unwrap_or(""));
    value
}

/// Inside quotes (and escapes) every piece of text has a pair.
fn push_quoted_parts(pair: Pair<'_, Rule>, value: &mut String) {
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::flag_sq_text | Rule::flag_dq_text | Rule::flag_other | Rule::escaped_char => {
                value.push_str(part.as_str())
            }
            _ => push_quoted_parts(part, value),
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
