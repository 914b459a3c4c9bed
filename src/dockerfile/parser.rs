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
//!   blank lines, comment lines and instructions. An instruction that fits on
//!   its line (most do) is read in the same pass into keyword, flags and rest,
//!   the rest already split by the rule of its instruction where the grammar
//!   can (JSON array, ARG/ENV/LABEL words). Any other instruction is its line
//!   segments and the continuations between them, with the comment and blank
//!   lines a continuation may skip; the driver joins the segments and reads the
//!   result with `line_*`. pest pays for each rule call, so the grammar keeps
//!   them few per line, and its long scans are memchr searches.
//! - **Heredoc bodies are delimited here, in Rust.** Which lines are body
//!   depends on the delimiter words of the instruction, after quote removal, so
//!   it cannot be decided by the grammar. After a heredoc instruction the driver
//!   reads body lines up to each terminator and keeps walking the units the pass
//!   already produced from the first one that starts after the bodies. Only when
//!   the pass grouped lines across that point (a terminator line ending in the
//!   escape character) does it read units one at a time (rule `unit_*`), until
//!   it meets the pass again, at the latest where that unit of the pass ends.
//!   Every line is read at most twice: the work stays linear.
//! - **Per-instruction rules** (submodules `line` and `args`) turn keyword,
//!   flags and rest into a [`Node`], as BuildKit's dispatch table does.
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
            return (text.get(..start).unwrap_or(""), Some(number));
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
        let text = self.text;
        let parse_error = |line: usize, e: Box<pest::error::Error<Rule>>| {
            Error::new(line, format!("cannot parse Dockerfile: {e}"))
        };
        let pass = grammar::parse_with_escape(Entry::File, self.escape, text)
            .map_err(|e| parse_error(self.line, e))?;
        // At most one node per unit: growing the vector of large nodes by
        // copies would cost more than the rest of the walk.
        self.nodes.reserve(pass.len());
        let mut pass = pass.peekable();
        let mut pos = 0;
        while pos < text.len() {
            // Units of the pass that start before `pos` were heredoc bodies.
            while pass.peek().is_some_and(|unit| unit.as_span().start() < pos) {
                pass.next();
            }
            let (unit, base) = match pass.next_if(|unit| unit.as_span().start() == pos) {
                Some(unit) => (unit, 0),
                None => {
                    // The bodies ended inside a unit of the pass (a body line
                    // ending in a continuation): read units afresh from there.
                    // The pass is met again at the latest where that unit ends.
                    let rest = text.get(pos..).unwrap_or("");
                    let unit = grammar::parse_with_escape(Entry::Unit, self.escape, rest)
                        .map_err(|e| parse_error(self.line, e))?
                        .next()
                        .ok_or_else(|| Error::new(self.line, "cannot parse Dockerfile"))?;
                    (unit, pos)
                }
            };
            let end = base + unit.as_span().end();
            pos = match unit.as_rule() {
                Rule::blank_line => {
                    self.line += usize::from(unit.as_str().ends_with('\n'));
                    end
                }
                Rule::comment_line => {
                    self.comment(unit.as_str());
                    end
                }
                Rule::instruction => self.instruction(unit, end)?,
                // Nothing else sits at the top level; stepping over it keeps the walk finite.
                _ => end.max(pos + 1),
            };
        }
        Ok(())
    }

    /// BuildKit keeps comments for doc strings, dropping the line's first
    /// character (the `#` when the line starts with it) and trimming the rest.
    fn comment(&mut self, line: &str) {
        self.line += usize::from(line.ends_with('\n'));
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
        let span = pair.as_span();
        let span_text = span.as_str();
        let mut inner = pair.into_inner().peekable();
        // A one-line instruction is already read: its pairs start with the keyword.
        let one_line = inner
            .peek()
            .filter(|first| first.as_rule() == Rule::keyword)
            .map(|keyword| keyword.as_span().start());
        // It holds no newline but maybe its last.
        let lines = if one_line.is_some() {
            usize::from(span_text.ends_with('\n'))
        } else {
            newlines(span_text)
        };
        let mut end_line = if span_text.ends_with('\n') {
            start_line + lines - 1
        } else {
            start_line + lines
        };
        self.line += lines;

        let (logical, empty_gap, parts) = match one_line {
            // The line is the text from the keyword on, without the carriage
            // returns that end it.
            Some(start) => {
                let input = span.get_input();
                let text = input.get(start..span.end()).unwrap_or("");
                let logical = text
                    .strip_suffix('\n')
                    .unwrap_or(text)
                    .trim_end_matches('\r');
                let line_end = start + logical.len();
                let parts = line::Parts::from_pairs(inner, line_end);
                (Cow::Borrowed(logical), false, Some(parts))
            }
            None => {
                let (logical, empty_gap) = assemble(inner);
                (logical, empty_gap, None)
            }
        };
        if empty_gap {
            self.warnings.push(Warning {
                line: end_line,
                message: format!("Empty continuation line found in: {logical}"),
                detail: "Empty continuation lines will become errors in a future release".into(),
                url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/".into(),
            });
        }
        // Errors point at the keyword.
        let indent = span_text.len() - span_text.trim_start().len();
        let column = span_text
            .get(..indent)
            .map_or(0, |lead| lead.chars().count())
            + 1;
        let locate = |mut e: Error| {
            e.line = start_line;
            if e.column == 0 {
                e.column = column;
            }
            e.with_source_line(logical.as_ref())
        };
        let node = match parts {
            Some(parts) => line::build_from_parts(parts, &logical, self.escape, 0),
            None => line::build_node(&logical, self.escape, 0),
        };
        let mut node = node.map_err(locate)?;

        let mut offset = end;
        if line::can_contain_heredoc(&node) && logical.contains("<<") {
            // The markers may already be known from the pass.
            let declared = match std::mem::take(&mut node.heredocs) {
                known if !known.is_empty() => known,
                _ => heredoc::heredocs_from_line(&logical),
            };
            for mut heredoc in declared {
                let mut terminated = false;
                while offset < self.text.len() {
                    let rest = self.text.get(offset..).unwrap_or("");
                    let body_line = rest.split_inclusive('\n').next().unwrap_or("");
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
fn assemble<'i>(parts: impl Iterator<Item = Pair<'i, Rule>>) -> (Cow<'i, str>, bool) {
    let mut segments = Vec::new();
    let mut empty_gap = false;
    for part in parts {
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
    fn errors_name_the_place() {
        let err = parse("FROM a\n\n  ENV x\n")
            .map(|_| ())
            .map_err(|e| (e.line, e.column, e.message));
        assert_eq!(err, Err((3, 3, "ENV must have two arguments".to_owned())));
        let err = parse("FROM a\nRUN <<EOF\nx\n")
            .map(|_| ())
            .map_err(|e| (e.line, e.message));
        assert_eq!(err, Err((2, "unterminated heredoc".to_owned())));
        let err = parse("FROM a\nCMD [\"a\", 1]")
            .map(|_| ())
            .map_err(|e| (e.line, e.message));
        assert_eq!(err, Err((2, NOT_STRING_ARRAY.to_owned())));
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

#[cfg(test)]
mod marker_props {
    use super::*;
    use proptest::prelude::*;

    /// The markers the pass reads from a rest, when the driver trusts them.
    fn pass_markers(line: &str) -> Option<Vec<crate::dockerfile::Heredoc>> {
        let text = format!("{line}\n");
        let mut pairs = grammar::parse_with_escape(Entry::File, '\\', &text).ok()?;
        let unit = pairs.next()?;
        let mut inner = unit.into_inner().peekable();
        let start = inner
            .peek()
            .filter(|p| p.as_rule() == Rule::keyword)?
            .as_span()
            .start();
        let logical = text.get(start..)?.trim_end_matches(['\n', '\r']);
        let parts = line::Parts::from_pairs(inner, start + logical.len());
        let node = line::build_from_parts(parts, logical, '\\', 0).ok()?;
        (!node.heredocs.is_empty()).then_some(node.heredocs)
    }

    const TOKENS: &[&str] = &[
        "<<", "<<", "<<-", "3<<", "EOF", "E", " ", "\t", "'", "\"", "\\", "$", "${", "}", "-",
        "--x=", "<", "a", "[", "]", "\u{A0}",
    ];

    #[test]
    fn pass_reads_markers() {
        let names = |line: &str| {
            pass_markers(line).map(|m| m.into_iter().map(|h| h.name).collect::<Vec<_>>())
        };
        assert_eq!(
            names("RUN <<EOF <<-'A B' cat"),
            Some(vec!["EOF".into(), "A B".into()])
        );
        assert_eq!(names("COPY --from=x <<A /a"), Some(vec!["A".into()]));
        // Quoted flags leave the scan to the driver.
        assert_eq!(names("COPY --from='x' <<A /a"), None);
        assert_eq!(names("RUN --x=${\u{a0}<<}"), None);
        assert_eq!(names("ENV a=<<b"), None);
    }

    proptest! {
        #[test]
        fn pass_markers_match_the_line_scan(
            head in prop::sample::select(&["RUN ", "copy --from=a ", "ONBUILD ADD ", "RUN --x='a b' "][..]),
            parts in prop::collection::vec(prop::sample::select(TOKENS), 1..16),
        ) {
            let line = format!("{head}{}", parts.concat());
            if let Some(markers) = pass_markers(&line) {
                let logical = line.trim_start();
                prop_assert_eq!(markers, heredoc::heredocs_from_line(logical), "{:?}", line);
            }
        }
    }
}
