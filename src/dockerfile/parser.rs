//! Text → raw syntax tree ([`Ast`]), reading the Dockerfile language exactly as
//! BuildKit's parser (`frontend/dockerfile/parser`) does.
//!
//! The lexical structure lives in `grammar/dockerfile.pest`; this module drives
//! it. How the work is split, and why:
//!
//! - **Directives first.** `# escape=` changes how every later line is read,
//!   so the leading `# name=value` lines are matched first (rule
//!   `directive_hash`, a handful of lines). The escape character they select is
//!   then pushed on pest's stack by the entry rule (`PUSH_LITERAL`) and every
//!   escape-aware rule matches it with `PEEK`: one set of rules, no copies.
//! - **One pest pass over the file** (`file_*`) groups physical lines into
//!   blank lines, comment lines and instructions; an instruction is its line
//!   segments and the continuations between them, with the comment and blank
//!   lines a continuation may skip. Hot loops are memchr scans (see the grammar).
//! - **Heredoc bodies are delimited here, in Rust.** Which lines are body
//!   depends on the delimiter words of the instruction, after quote removal, so
//!   it cannot be decided by the grammar. After a heredoc instruction the driver
//!   reads body lines up to each terminator and keeps walking the pairs the pass
//!   already produced from the first one that starts after the bodies; only when
//!   the pass grouped lines across that point (a body line ending in a
//!   continuation) does it parse the remainder again. The work stays linear.
//! - **Each logical line** is parsed once more (`line_*`) into keyword, flags
//!   and rest; the rest goes through the rule of its instruction
//!   (`json_array`, `words_*`, or plain text), in [`line`] and [`args`].
//!
//! Upstream reads flags and the HEALTHCHECK type one byte at a time (a UTF-8
//! byte 0x85 or 0xA0 then counts as a space, and other non-ASCII bytes are
//! re-encoded); here they are read by characters. Nested ONBUILD is bounded by
//! [`MAX_ONBUILD_DEPTH`]. A JSON array nested deeper than serde_json's limit
//! (128) inside an exec-form array is taken as not JSON, where upstream (limit
//! 10000) reports a non-string element.

mod args;
mod directive;
mod grammar;
mod heredoc;
mod line;

pub use args::{parse_json_array, parse_name_val, parse_words, NOT_STRING_ARRAY};
pub use directive::{detect_syntax, parse_directive, parse_directives, DetectedDirective};
pub use heredoc::{chomp_heredoc_content, heredocs_from_line, parse_heredoc};
pub use line::MAX_ONBUILD_DEPTH;

use super::ast::Warning;
use super::{Ast, Error, Node};
use grammar::{Entry, Rule};
use pest::iterators::Pair;
use std::borrow::Cow;

/// The longest physical line BuildKit reads (bufio's token limit, minus one).
pub const MAX_LINE_SIZE: usize = 65535;

/// Parse a whole Dockerfile.
pub fn parse(text: &str) -> Result<Ast, Error> {
    let (text, too_long) = cut_at_long_line(text);
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let (directives, escape) = directive::leading_directives(text)?;
    let mut walk = Walk {
        text,
        escape,
        line: 1,
        nodes: Vec::new(),
        warnings: Vec::new(),
        comments: Vec::new(),
    };
    walk.run()?;
    if walk.nodes.is_empty() {
        return Err(Error::new(0, "file with no instructions"));
    }
    if let Some(line) = too_long {
        return Err(Error::new(
            line,
            format!("dockerfile line greater than max allowed size of {MAX_LINE_SIZE}"),
        ));
    }
    Ok(Ast {
        directives,
        escape,
        nodes: walk.nodes,
        warnings: walk.warnings,
    })
}

/// BuildKit's scanner stops at the first line longer than its limit (counting
/// a carriage return, not the newline): what comes before is parsed, then the
/// scanner's error is returned. Returns the text before that line and the
/// line's number.
fn cut_at_long_line(text: &str) -> (&str, Option<usize>) {
    let mut start = 0;
    for (number, line) in (1..).zip(text.split_inclusive('\n')) {
        let content = line.strip_suffix('\n').unwrap_or(line);
        if content.len() > MAX_LINE_SIZE {
            return (&text[..start], Some(number));
        }
        start += line.len();
    }
    (text, None)
}

/// The state of one walk over a file.
struct Walk<'t> {
    text: &'t str,
    escape: char,
    /// The number of the next physical line to be read.
    line: usize,
    nodes: Vec<Node>,
    warnings: Vec<Warning>,
    /// Comment lines seen since the last instruction.
    comments: Vec<String>,
}

impl<'t> Walk<'t> {
    fn run(&mut self) -> Result<(), Error> {
        let mut base = 0;
        while base < self.text.len() {
            let pairs = grammar::parse_with_escape(Entry::File, self.escape, &self.text[base..])
                .map_err(|e| Error::new(self.line, format!("cannot parse Dockerfile: {e}")))?;
            // Pairs that end before this offset were heredoc bodies.
            let mut skip_to = base;
            let mut resume = None;
            for pair in pairs {
                let span = pair.as_span();
                let (start, end) = (base + span.start(), base + span.end());
                if start < skip_to {
                    if end <= skip_to {
                        continue;
                    }
                    resume = Some(skip_to);
                    break;
                }
                match pair.as_rule() {
                    Rule::blank_line => self.line += newlines(pair.as_str()),
                    Rule::comment_line => self.comment(pair.as_str()),
                    Rule::instruction => skip_to = self.instruction(pair, end)?,
                    _ => {}
                }
            }
            match resume {
                Some(offset) => base = offset,
                None => break,
            }
        }
        Ok(())
    }

    /// BuildKit keeps comments for doc strings, dropping the line's first
    /// character (the `#` when the line starts with it) and trimming the rest.
    fn comment(&mut self, line: &str) {
        self.line += newlines(line);
        let mut chars = line.chars();
        chars.next();
        let comment = chars.as_str().trim();
        if comment.is_empty() {
            self.comments.clear();
        } else {
            self.comments.push(comment.to_owned());
        }
    }

    /// Build the node of one `instruction` pair, read its heredoc bodies, and
    /// return the offset where the next line starts.
    fn instruction(&mut self, pair: Pair<'t, Rule>, end: usize) -> Result<usize, Error> {
        let start_line = self.line;
        let span_text = pair.as_str();
        let lines = newlines(span_text);
        let mut end_line = if span_text.ends_with('\n') {
            start_line + lines - 1
        } else {
            start_line + lines
        };
        self.line += lines;

        let (logical, empty_gap) = assemble(pair);
        if empty_gap {
            self.warnings.push(Warning {
                line: end_line,
                message: format!("Empty continuation line found in: {logical}"),
                detail: "Empty continuation lines will become errors in a future release".into(),
                url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/".into(),
            });
        }
        let locate = |mut e: Error| {
            e.line = start_line;
            e.with_source_line(logical.as_ref())
        };
        let mut node = line::build_node(&logical, self.escape, 0).map_err(locate)?;

        let mut offset = end;
        if can_contain_heredoc(&node) && logical.contains("<<") {
            for mut heredoc in heredoc::heredocs_from_line(&logical).map_err(locate)? {
                let mut terminated = false;
                while offset < self.text.len() {
                    let rest = &self.text[offset..];
                    let body_line = rest.find('\n').map_or(rest, |i| &rest[..=i]);
                    offset += body_line.len();
                    end_line = self.line;
                    self.line += 1;
                    if heredoc::is_terminator(&heredoc, body_line) {
                        terminated = true;
                        break;
                    }
                    heredoc.content.push_str(body_line);
                }
                if !terminated {
                    return Err(locate(Error::new(start_line, "unterminated heredoc")));
                }
                node.heredocs.push(heredoc);
            }
        }

        node.start_line = start_line;
        node.end_line = end_line;
        set_lines(&mut node.inner, start_line, end_line);
        node.comments = std::mem::take(&mut self.comments);
        self.nodes.push(node);
        Ok(offset)
    }
}

/// Join the segments of an instruction into its logical line. Also tells
/// whether a continuation skipped an empty line (worth a warning).
fn assemble(pair: Pair<'_, Rule>) -> (Cow<'_, str>, bool) {
    let mut segments = Vec::new();
    let mut empty_gap = false;
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::first_segment | Rule::segment => segments.push(part.as_str()),
            Rule::join => {
                empty_gap |= part
                    .into_inner()
                    .any(|gap| gap.as_rule() == Rule::gap_blank);
            }
            _ => {}
        }
    }
    // The last segment ends the logical line: its trailing carriage returns
    // are part of the line end.
    if let Some(last) = segments.last_mut() {
        *last = last.trim_end_matches('\r');
    }
    let logical = match segments.as_slice() {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(*one),
        many => Cow::Owned(many.concat()),
    };
    (logical, empty_gap)
}

/// RUN, COPY and ADD in shell form (also under ONBUILD) may declare heredocs.
fn can_contain_heredoc(node: &Node) -> bool {
    let node = match &node.inner {
        Some(inner) if node.keyword == "onbuild" => inner,
        _ => node,
    };
    matches!(node.keyword.as_str(), "run" | "copy" | "add") && !node.json
}

fn set_lines(inner: &mut Option<Box<Node>>, start: usize, end: usize) {
    let mut next = inner;
    while let Some(node) = next {
        node.start_line = start;
        node.end_line = end;
        next = &mut node.inner;
    }
}

fn newlines(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::dump::dump;

    fn ok(text: &str) -> Ast {
        match parse(text) {
            Ok(ast) => ast,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    #[test]
    fn continuations() {
        let ast = ok("FROM a\nRUN x \\\n  # c\n\n  y\\\n\\\nz\nRUN \\\r\n q\r\n");
        assert_eq!(dump(&ast), "(from \"a\")\n(run \"x   yz\")\n(run \"q\")\n");
        let lines: Vec<_> = ast
            .nodes
            .iter()
            .map(|n| (n.start_line, n.end_line))
            .collect();
        assert_eq!(lines, [(1, 1), (2, 7), (8, 9)]);
        assert_eq!(ast.warnings.len(), 1);
        assert_eq!(ast.warnings[0].line, 7);
    }

    #[test]
    fn escape_directive() {
        let ast = ok("# escape=`\nRUN a\\\nRUN b`\n c");
        assert_eq!(dump(&ast), "(run \"a\\\\\")\n(run \"b c\")\n");
        assert_eq!(ast.escape, '`');
        assert!(parse("# escape=a\nFROM x").is_err());
        assert!(parse("#escape=\\\n#escape=\\\nFROM x").is_err());
    }

    #[test]
    fn heredoc_bodies() {
        let text = "FROM a\nRUN <<EOF cat\nx \\\nEOF\nRUN b\nCOPY <<A <<-B /d\n1\nA\n\t2\n\tB\n";
        let ast = ok(text);
        assert_eq!(ast.nodes.len(), 4);
        assert_eq!(ast.nodes[1].heredocs[0].content, "x \\\n");
        assert_eq!((ast.nodes[1].start_line, ast.nodes[1].end_line), (2, 4));
        assert_eq!(dump(&ast).lines().nth(2), Some("(run \"b\")"));
        let contents: Vec<_> = ast.nodes[3]
            .heredocs
            .iter()
            .map(|h| h.content.as_str())
            .collect();
        assert_eq!(contents, ["1\n", "\t2\n"]);
        assert_eq!(ast.nodes[3].end_line, 10);
        assert!(parse("FROM a\nRUN <<EOF\nx\n").is_err());
    }

    #[test]
    fn heredoc_body_ending_in_continuation_before_terminator_line() {
        // The pass grouped "EOF\" with the next line; the driver re-reads from
        // the end of the body.
        let ast = ok("FROM a\nRUN <<'E\\'\nbody\nE\\\nRUN b\nRUN c\n");
        assert_eq!(
            ast.nodes[1].heredocs.first().map(|h| h.name.as_str()),
            Some("E\\")
        );
        assert_eq!(
            dump(&ast),
            "(from \"a\")\n(run \"<<'E\\\\'\")\n(run \"b\")\n(run \"c\")\n"
        );
    }

    #[test]
    fn onbuild_heredoc() {
        let ast = ok("ONBUILD RUN <<EOF\nhi\nEOF\n");
        assert_eq!(ast.nodes[0].heredocs.len(), 1);
        let ast = ok("ONBUILD RUN [\"<<EOF\"]\nEOF\n");
        assert_eq!(ast.nodes.len(), 2);
    }

    #[test]
    fn empty_and_long() {
        assert!(parse("").is_err());
        assert!(parse("# x\n\n  \n").is_err());
        let long = format!("FROM a\nRUN {}\nRUN b\n", "x".repeat(MAX_LINE_SIZE));
        assert!(parse(&long).is_err());
        let fits = format!("FROM a\nRUN {}\n", "x".repeat(MAX_LINE_SIZE - 4));
        assert!(parse(&fits).is_ok());
        let first = format!("{}\nFROM a\n", "#".repeat(MAX_LINE_SIZE + 1));
        let err = parse(&first).map(|_| ()).map_err(|e| e.message);
        assert_eq!(err, Err("file with no instructions".to_owned()));
    }

    #[test]
    fn comments_are_kept_for_doc_strings() {
        let ast = ok("# syntax=x\n# a b\n\n  # c\nARG a\n#\nRUN x\n");
        assert_eq!(ast.nodes[0].comments, ["syntax=x", "a b", "# c"]);
        assert!(ast.nodes[1].comments.is_empty());
        assert_eq!(ast.directive("syntax"), Some("x"));
    }

    #[test]
    fn bom_and_crlf() {
        let ast = ok("\u{FEFF}FROM a\r\nENV x=1 \\\r\n  y=2\r\n");
        assert_eq!(
            dump(&ast),
            "(from \"a\")\n(env \"x\" \"1\" \"=\" \"y\" \"2\" \"=\")\n"
        );
    }
}
