//! Parser directives (`# syntax=`, `# escape=`, `# check=`) at the top of a
//! file, and the looser detection of `syntax` used to pick a frontend.

use super::grammar::{self, Rule};
use crate::dockerfile::ast::Directive;
use crate::dockerfile::Error;

/// The directive names BuildKit knows; any other `# key=value` ends the block.
const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

/// A directive found by [`detect_syntax`] or [`parse_directive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedDirective {
    /// The value up to its first space (the frontend image for `syntax`).
    pub reference: String,
    /// The whole value.
    pub cmdline: String,
    /// 1-based line of the directive.
    pub start_line: usize,
    pub end_line: usize,
}

/// One line read as a directive with the given comment prefix: the lowercased
/// name and the value, or `None` when the line is not of that form.
fn match_line(line: &str, rule: Rule) -> Option<(String, String)> {
    let pairs = grammar::parse(rule, line).ok()?;
    let mut name = "";
    let mut raw_value = "";
    for pair in pairs {
        match pair.as_rule() {
            Rule::directive_name => name = pair.as_str(),
            Rule::directive_value => raw_value = pair.as_str(),
            _ => {}
        }
    }
    // BuildKit's pattern ends in `\s*(.+?)\s*$`: the value is trimmed of
    // regexp blanks, but may not be empty, so an all-blank value keeps its
    // last character.
    let is_blank = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{0C}' | '\r');
    let value = raw_value.trim_matches(is_blank);
    let value = if value.is_empty() {
        let last = raw_value.chars().next_back()?;
        &raw_value[raw_value.len() - last.len_utf8()..]
    } else {
        value
    };
    Some((name.to_ascii_lowercase(), value.to_owned()))
}

/// BuildKit's `DirectiveParser.ParseAll`: the directives of the leading
/// `# name=value` lines, up to the first line that is not a known directive.
/// A repeated directive is an error.
pub fn parse_directives(text: &str) -> Result<Vec<Directive>, Error> {
    let mut found = Vec::new();
    scan(text, Rule::directive_hash, 0, &mut found)?;
    Ok(found)
}

/// Read directives from the top of `text`, numbering lines after `first_line`.
/// What was found before an error stays in `found`.
fn scan(
    text: &str,
    rule: Rule,
    first_line: usize,
    found: &mut Vec<Directive>,
) -> Result<(), Error> {
    for (index, line) in text.lines().enumerate() {
        let number = first_line + index + 1;
        let Some((name, value)) = match_line(line, rule) else {
            break;
        };
        if !KNOWN.contains(&name.as_str()) {
            break;
        }
        if found.iter().any(|d: &Directive| d.name == name) {
            return Err(Error::new(
                number,
                format!("only one {name} parser directive can be used"),
            ));
        }
        found.push(Directive {
            name,
            value,
            line: number,
        });
    }
    Ok(())
}

/// BuildKit's `DetectSyntax`: the `syntax` directive, also accepted as
/// `// syntax=` or as the `syntax` key of a file that is one JSON object. A
/// leading `#!` line is skipped (and counted).
pub fn detect_syntax(text: &str) -> Option<DetectedDirective> {
    find(text, "syntax", true)
}

/// BuildKit's `ParseDirective`: the directive `key` in `#` form only.
pub fn parse_directive(key: &str, text: &str) -> Option<DetectedDirective> {
    find(text, key, false)
}

fn find(text: &str, key: &str, loose: bool) -> Option<DetectedDirective> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let (text, skipped) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("#!") => (rest, 1),
        None if text.starts_with("#!") => ("", 1),
        _ => (text, 0),
    };
    let rules: &[Rule] = if loose {
        &[Rule::directive_hash, Rule::directive_slash]
    } else {
        &[Rule::directive_hash]
    };
    for &rule in rules {
        let mut found = Vec::new();
        // As upstream, a repeated directive still leaves the first one usable.
        let _ = scan(text, rule, skipped, &mut found);
        if let Some(d) = found.into_iter().find(|d| d.name == key) {
            let reference = d.value.split(' ').next().unwrap_or("").to_owned();
            return Some(DetectedDirective {
                reference,
                cmdline: d.value,
                start_line: d.line,
                end_line: d.line,
            });
        }
    }
    if loose {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let found = value.get(key)?.as_str()?.to_owned();
        return Some(DetectedDirective {
            reference: found.clone(),
            cmdline: found,
            start_line: skipped + 1,
            end_line: skipped + 1,
        });
    }
    None
}

/// The directives at the top of a file being parsed, and the escape character
/// they select. `text` has no byte order mark. Lines are taken as BuildKit's
/// parser sees them: without their line end and leading whitespace.
pub(crate) fn leading_directives(text: &str) -> Result<(Vec<Directive>, char), Error> {
    let mut found: Vec<Directive> = Vec::new();
    let mut escape = '\\';
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = line.trim_end_matches('\r').trim_start();
        let Some((name, value)) = match_line(line, Rule::directive_hash) else {
            break;
        };
        if !KNOWN.contains(&name.as_str()) {
            break;
        }
        if found.iter().any(|d| d.name == name) {
            return Err(Error::new(
                number,
                format!("only one {name} parser directive can be used"),
            ));
        }
        if name == "escape" {
            escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(Error::new(
                        number,
                        format!("invalid escape token '{other}' does not match ` or \\"),
                    ))
                }
            };
        }
        found.push(Directive {
            name,
            value,
            line: number,
        });
    }
    Ok((found, escape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_upstream_pattern() {
        assert_eq!(
            match_line("#  Escape =  ` ", Rule::directive_hash),
            Some(("escape".to_owned(), "`".to_owned()))
        );
        assert_eq!(
            match_line("# escape=  ", Rule::directive_hash),
            Some(("escape".to_owned(), " ".to_owned()))
        );
        assert_eq!(match_line("# escape=", Rule::directive_hash), None);
        assert_eq!(match_line("# 1x=y", Rule::directive_hash), None);
        assert_eq!(match_line(" # x=y", Rule::directive_hash), None);
    }

    #[test]
    fn leading_block() {
        let (found, escape) =
            leading_directives("# syntax=a\n  #escape=`\r\n# foo=bar\n# check=x\n")
                .unwrap_or_default();
        assert_eq!(escape, '`');
        assert_eq!(found.len(), 2);
        assert!(leading_directives("# escape=x\n").is_err());
        assert!(leading_directives("# check=a\n# check=b\n").is_err());
        let (found, _) = leading_directives("\n# syntax=a\n").unwrap_or_default();
        assert!(found.is_empty());
    }
}
