//! How the rest of an instruction line becomes its arguments: the JSON exec
//! form, the word splitter of ARG/ENV/LABEL, ENV/LABEL triples, and plain
//! whitespace fields. These are BuildKit's `line_parsers.go` rules.

use super::grammar::{self, Entry, Rule};
use crate::dockerfile::Error;
use pest::iterators::Pair;

/// The error BuildKit gives for a JSON array holding anything but strings.
pub const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// Go's `reWhitespace`: the blanks that separate a keyword from its arguments
/// and the fields of FROM/EXPOSE.
pub(crate) fn is_field_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{0B}' | '\u{0C}' | '\r')
}

/// Read `rest` as the exec form.
///
/// `Ok(Some(list))` for a JSON array of strings (text after the closing
/// bracket is ignored, as Go's `json.Decoder` ignores it); `Ok(None)` when the
/// text is not a JSON array, so the caller falls back to the shell form; an
/// error for a well-formed array with a non-string element.
pub fn parse_json_array(rest: &str) -> Result<Option<Vec<String>>, Error> {
    let text = rest.trim_start();
    if !text.starts_with('[') {
        return Ok(None);
    }
    match grammar::parse(Rule::json_array, text) {
        Ok(pairs) => Ok(Some(pairs.map(decode_json_string).collect())),
        Err(_) if is_json_value(text) => Err(Error::new(0, NOT_STRING_ARRAY)),
        Err(_) => Ok(None),
    }
}

/// Whether `text` starts with one well-formed JSON value (what follows it is
/// not looked at). Used only to tell "not JSON" from "JSON, but not all
/// strings", which the grammar does not need to describe.
fn is_json_value(text: &str) -> bool {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<serde::de::IgnoredAny>();
    matches!(values.next(), Some(Ok(_)))
}

/// Decode one `json_string` pair as Go's `encoding/json` does, lone UTF-16
/// surrogates becoming U+FFFD.
fn decode_json_string(pair: Pair<'_, Rule>) -> String {
    let mut out = String::with_capacity(pair.as_str().len());
    let mut parts = pair.into_inner().peekable();
    while let Some(part) = parts.next() {
        let text = part.as_str();
        if part.as_rule() == Rule::json_text {
            out.push_str(text);
            continue;
        }
        let Some(code) = text.strip_prefix("\\u") else {
            out.push(match text {
                "\\b" => '\u{08}',
                "\\f" => '\u{0C}',
                "\\n" => '\n',
                "\\r" => '\r',
                "\\t" => '\t',
                // `\"`, `\\` and `\/` stand for their second character.
                other => other.chars().nth(1).unwrap_or('\u{FFFD}'),
            });
            continue;
        };
        let unit = u32::from_str_radix(code, 16).unwrap_or(0xFFFD);
        if (0xD800..0xDC00).contains(&unit) {
            let low = parts
                .peek()
                .and_then(|next| next.as_str().strip_prefix("\\u"))
                .and_then(|code| u32::from_str_radix(code, 16).ok())
                .filter(|low| (0xDC00..0xE000).contains(low));
            if let Some(low) = low {
                parts.next();
                let scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                out.push(char::from_u32(scalar).unwrap_or('\u{FFFD}'));
                continue;
            }
        }
        out.push(char::from_u32(unit).unwrap_or('\u{FFFD}'));
    }
    out
}

/// BuildKit's `parseWords`: split at unquoted whitespace; quotes group words
/// and are kept, and the escape character keeps itself and the next character.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    match grammar::parse_with_escape(Entry::Words, escape, rest) {
        Ok(pairs) => pairs
            .filter(|p| p.as_rule() == Rule::word)
            .map(|p| p.as_str().to_owned())
            .collect(),
        // The rule accepts any text; this arm only keeps the function total.
        Err(_) => Vec::new(),
    }
}

/// BuildKit's `parseNameVal` for ENV and LABEL (`key` names the instruction in
/// errors): flattened (name, value, separator) triples.
///
/// When the first word has no `=` it is the old form `KEY name value`: the rest
/// is cut once at its first blanks and the separator is `""`. Otherwise every
/// word must be `name=value` and the separator is `"="`.
pub fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, Error> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(cut) = rest.find(is_field_blank) else {
            return Err(Error::new(0, format!("{key} must have two arguments")));
        };
        let value = rest[cut..].trim_start_matches(is_field_blank);
        return Ok(vec![
            rest[..cut].to_owned(),
            value.to_owned(),
            String::new(),
        ]);
    }
    let mut triples = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(Error::new(
                0,
                format!(
                    "Syntax error - can't find = in {}. Must be of the form: name=value",
                    crate::dockerfile::dump::go_quote(&word)
                ),
            ));
        };
        triples.push(name.to_owned());
        triples.push(value.to_owned());
        triples.push("=".to_owned());
    }
    Ok(triples)
}

/// FROM and EXPOSE: the rest split at runs of blanks, quotes not interpreted.
pub(crate) fn split_fields(rest: &str) -> Vec<String> {
    rest.split(is_field_blank)
        .filter(|field| !field.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_trailing_text_is_ignored() {
        let parsed = parse_json_array(r#"["a", "b"] && rm -rf /"#);
        assert_eq!(parsed, Ok(Some(vec!["a".to_owned(), "b".to_owned()])));
    }

    #[test]
    fn json_surrogates() {
        let parsed = parse_json_array(r#"["\ud83d\ude00", "\ud83d", "\ude00x", "\ud83dA"]"#);
        let expected = ["\u{1F600}", "\u{FFFD}", "\u{FFFD}x", "\u{FFFD}A"];
        assert_eq!(
            parsed,
            Ok(Some(expected.iter().map(|s| s.to_string()).collect()))
        );
    }

    #[test]
    fn json_invalid_falls_back_but_non_strings_fail() {
        assert_eq!(parse_json_array("['a']"), Ok(None));
        assert_eq!(parse_json_array(r#"["a""#), Ok(None));
        assert_eq!(parse_json_array(r#"["a	b"]"#), Ok(None));
        assert_eq!(parse_json_array("echo ["), Ok(None));
        assert!(parse_json_array(r#"["a", 1]"#).is_err());
        assert!(parse_json_array(r#"[["a"]] trailing"#).is_err());
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"a\ b "c d" 'e\' f"#, '\\'),
            [r"a\ b", r#""c d""#, r"'e\'", "f"]
        );
        assert_eq!(parse_words("a \\", '\\'), ["a"]);
        assert_eq!(parse_words("\"a\\", '\\'), ["\"a"]);
        assert_eq!(parse_words("a` b", '`'), ["a` b"]);
        assert!(parse_words(" \t ", '\\').is_empty());
    }

    #[test]
    fn name_val_forms() {
        assert_eq!(
            parse_name_val("a b  c", "ENV", '\\'),
            Ok(vec!["a".into(), "b  c".into(), "".into()])
        );
        assert_eq!(
            parse_name_val("a=1 b=\"x y\"", "ENV", '\\'),
            Ok(vec![
                "a".into(),
                "1".into(),
                "=".into(),
                "b".into(),
                "\"x y\"".into(),
                "=".into()
            ])
        );
        assert!(parse_name_val("a=1 b", "LABEL", '\\').is_err());
        let err = parse_name_val("PATH", "ENV", '\\');
        assert_eq!(
            err.map_err(|e| e.message),
            Err("ENV must have two arguments".to_owned())
        );
    }
}
