//! Heredoc markers on an instruction line (`<<EOF`, `<<-EOF`, `3<<'EOF'`) and
//! their bodies. As in BuildKit, markers are looked for in the shell words of
//! the whole line with `\` as the escape character, whatever `# escape=` says.

use super::grammar::{self, Rule};
use crate::dockerfile::{Error, Heredoc};
use pest::iterators::Pair;

/// BuildKit's `heredocsFromLine`: the heredocs declared on `line`, in order.
///
/// A line whose words cannot be read (an unterminated quote) declares none, as
/// upstream ignores that lexer error.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, Error> {
    let Ok(words) = grammar::parse(Rule::heredoc_scan, line) else {
        return Ok(Vec::new());
    };
    let mut heredocs = Vec::new();
    for word in words {
        if let Some(heredoc) = parse_heredoc(word.as_str())? {
            heredocs.push(heredoc);
        }
    }
    Ok(heredocs)
}

/// BuildKit's `ParseHeredoc` for one word: `Ok(None)` when the word is not a
/// heredoc marker (`<<`, `<<<EOF`, `<<EOF sh`), an error when its delimiter has
/// an unterminated quote. The content is left empty.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, Error> {
    let Ok(parts) = grammar::parse(Rule::heredoc_word, word) else {
        return Ok(None);
    };
    let mut heredoc = Heredoc {
        expand: true,
        ..Heredoc::default()
    };
    let mut rest = "";
    for part in parts {
        match part.as_rule() {
            // Go parses the digits as an unsigned integer and ignores the
            // overflow error, keeping the saturated value.
            Rule::heredoc_fd => {
                heredoc.file_descriptor = part.as_str().bytes().fold(0u32, |fd, digit| {
                    fd.saturating_mul(10)
                        .saturating_add(u32::from(digit - b'0'))
                })
            }
            Rule::heredoc_chomp => heredoc.chomp = true,
            Rule::heredoc_rest => rest = part.as_str(),
            _ => {}
        }
    }
    if rest.is_empty() {
        return Ok(None);
    }
    let words = grammar::parse(Rule::shell_words, rest).map_err(|_| {
        Error::new(
            0,
            format!("unexpected end of statement while looking for matching quote in heredoc delimiter {rest:?}"),
        )
    })?;
    let mut found = None;
    for word in words {
        let (name, quoted) = unquote(word);
        if name.is_empty() {
            continue;
        }
        if found.is_some() {
            return Ok(None);
        }
        found = Some((name, quoted));
    }
    let Some((name, quoted)) = found else {
        return Ok(None);
    };
    heredoc.name = name;
    // A delimiter with any quoted part leaves the body unexpanded.
    heredoc.expand = !quoted;
    Ok(Some(heredoc))
}

/// The value of a `shell_word` with quotes removed and escapes applied, and
/// whether any part of it was quoted.
fn unquote(word: Pair<'_, Rule>) -> (String, bool) {
    let mut value = String::new();
    let mut quoted = false;
    for part in word.into_inner() {
        match part.as_rule() {
            Rule::sw_single | Rule::sw_double => {
                quoted = true;
                for inner in part.into_inner() {
                    match inner.as_rule() {
                        Rule::sw_dq_escaped => {
                            value.push_str(inner.as_str().get(1..).unwrap_or(""))
                        }
                        _ => value.push_str(inner.as_str()),
                    }
                }
            }
            Rule::sw_escaped => value.push_str(part.as_str().get(1..).unwrap_or("")),
            Rule::sw_text => value.push_str(part.as_str()),
            _ => {}
        }
    }
    (value, quoted)
}

/// BuildKit's `ChompHeredocContent`: remove the leading tabs of every line.
pub fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

/// Whether a raw body line (with its newline) closes the heredoc `heredoc`.
pub(crate) fn is_terminator(heredoc: &Heredoc, line: &str) -> bool {
    let line = line.trim_end_matches(['\r', '\n']);
    let line = if heredoc.chomp {
        line.trim_start_matches('\t')
    } else {
        line
    };
    line == heredoc.name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<String> {
        match heredocs_from_line(line) {
            Ok(docs) => docs.into_iter().map(|d| d.name).collect(),
            Err(e) => panic!("{line:?}: {e}"),
        }
    }

    #[test]
    fn markers_on_a_line() {
        assert_eq!(
            names("RUN <<EOF <<-EOF2 3<<'E F' cat"),
            ["EOF", "EOF2", "E F"]
        );
        assert_eq!(names("RUN <<  EOF  > foo"), ["EOF"]);
        assert!(names("RUN <<- EOF").is_empty());
        assert!(names("RUN echo '<<EOF").is_empty());
        assert!(names("RUN \"<<EOF\" '<<EOF'").is_empty());
        assert_eq!(names(r"RUN a\ <<EOF"), Vec::<String>::new());
    }

    #[test]
    fn single_words() {
        let doc = parse_heredoc(r#"12<<-"E"O\F"#).ok().flatten();
        let doc = doc.map(|d| (d.name, d.file_descriptor, d.chomp, d.expand));
        assert_eq!(doc, Some(("EOF".to_owned(), 12, true, false)));
        assert_eq!(parse_heredoc("<<''").ok().flatten(), None);
        assert!(parse_heredoc("<<'EOF").is_err());
        let doc = parse_heredoc("99999999999<<EOF").ok().flatten();
        assert_eq!(doc.map(|d| d.file_descriptor), Some(u32::MAX));
    }

    #[test]
    fn chomp_and_terminators() {
        assert_eq!(chomp_heredoc_content("\t\ta\n\tb\n c\n\t"), "a\nb\n c\n");
        let doc = Heredoc {
            name: "EOF".into(),
            chomp: true,
            ..Heredoc::default()
        };
        assert!(is_terminator(&doc, "\t\tEOF\r\n"));
        assert!(!is_terminator(&doc, " EOF\n"));
    }
}
