//! BuildKit's AST dump format (`Node.Dump`), used by its parser golden files:
//! one `(keyword ["--flag" ...] "arg" ...)` line per instruction, strings
//! quoted as Go's `strconv.Quote` quotes them, ONBUILD nesting its instruction.

use super::{Ast, Node};
use std::fmt::Write as _;

/// The whole tree: one line per instruction, each ending in `\n` (what the
/// golden `result` files hold).
pub fn dump(ast: &Ast) -> String {
    let mut out = String::new();
    for node in &ast.nodes {
        out.push_str(&dump_node(node));
        out.push('\n');
    }
    out
}

/// One instruction in parentheses, without a line end.
pub fn dump_node(node: &Node) -> String {
    format!("({})", dump_body(node))
}

fn dump_body(node: &Node) -> String {
    let mut out = node.keyword.to_lowercase();
    if !node.flags.is_empty() {
        out.push_str(" [");
        for (i, flag) in node.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            push_go_quoted(&mut out, flag);
        }
        out.push(']');
    }
    for arg in &node.args {
        out.push(' ');
        push_go_quoted(&mut out, arg);
    }
    if let Some(inner) = &node.inner {
        out.push_str(" (");
        out.push_str(&dump_body(inner));
        out.push(')');
    }
    // Upstream trims each dump; it matters only for an empty keyword.
    match out.trim() {
        trimmed if trimmed.len() == out.len() => out,
        trimmed => trimmed.to_owned(),
    }
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_go_quoted(&mut out, s);
    out
}

fn push_go_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_go_printable(c) => out.push(c),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0B}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7F}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and
/// the ASCII space.
fn is_go_printable(c: char) -> bool {
    let code = c as u32;
    if code < 0x80 {
        return (0x20..0x7F).contains(&code);
    }
    if code <= 0xFF {
        return code >= 0xA1 && code != 0xAD;
    }
    use pest::unicode::{LETTER, MARK, NUMBER, PUNCTUATION, SYMBOL};
    LETTER(c) || MARK(c) || NUMBER(c) || PUNCTUATION(c) || SYMBOL(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            go_quote("\u{0}\u{7}\u{8}\t\n\u{b}\u{c}\r\u{1b}\u{7f}"),
            r#""\x00\a\b\t\n\v\f\r\x1b\x7f""#
        );
        assert_eq!(go_quote("é♥☃한국어"), "\"é♥☃한국어\"");
        assert_eq!(
            go_quote("\u{a0}\u{ad}\u{200b}\u{feff}"),
            r#""\u00a0\u00ad\u200b\ufeff""#
        );
        assert_eq!(go_quote("\u{e0001}\u{1F600}"), "\"\\U000e0001\u{1F600}\"");
    }

    #[test]
    fn nodes() {
        let inner = Node {
            keyword: "copy".into(),
            flags: vec!["--from=x".into()],
            args: vec!["a".into(), "b".into()],
            ..Node::default()
        };
        let node = Node {
            keyword: "ONBUILD".into(),
            inner: Some(Box::new(inner)),
            ..Node::default()
        };
        assert_eq!(dump_node(&node), r#"(onbuild (copy ["--from=x"] "a" "b"))"#);
        let bare = Node {
            keyword: "cmd".into(),
            ..Node::default()
        };
        assert_eq!(dump_node(&bare), "(cmd)");
        let empty = Node {
            args: vec![String::new()],
            ..Node::default()
        };
        assert_eq!(dump_node(&empty), r#"("")"#);
    }
}
