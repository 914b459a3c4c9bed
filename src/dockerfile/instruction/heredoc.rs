//! Recognising a heredoc marker among COPY/ADD arguments (`<<EOF`, `<<-'EOF'`, `3<<EOF`),
//! as BuildKit does when it splits sources into paths and inline files.

/// What a heredoc marker word says about its heredoc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocWord {
    /// The delimiter, quotes removed.
    pub name: String,
    /// False when any part of the delimiter was quoted.
    pub expand: bool,
    /// `<<-`.
    pub chomp: bool,
}

/// Reads `word` as a heredoc marker: optional digits, `<<`, optional `-`, then exactly
/// one shell word without `<`. `Ok(None)`: not a marker; `Err`: a marker with unbalanced
/// quotes. `escape` is the Dockerfile's escape character, so the delimiter is read as
/// the parser read it.
pub(crate) fn parse_heredoc_word(word: &str, escape: char) -> Result<Option<HeredocWord>, ()> {
    let after_digits = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = after_digits.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                quoted = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err(()),
                    }
                }
            }
            '"' => {
                in_word = true;
                quoted = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) if c == escape => match chars.next() {
                            Some(n @ ('"' | '$')) => current.push(n),
                            Some(n) if n == escape => current.push(n),
                            Some(n) => {
                                current.push(c);
                                current.push(n);
                            }
                            None => return Err(()),
                        },
                        Some(c) => current.push(c),
                        None => return Err(()),
                    }
                }
            }
            c if c == escape => {
                in_word = true;
                // A trailing escape stands for itself.
                current.push(chars.next().unwrap_or(c));
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    match <[String; 1]>::try_from(words) {
        Ok([name]) => Ok(Some(HeredocWord {
            name,
            expand: !quoted,
            chomp,
        })),
        Err(_) => Ok(None),
    }
}

/// Strips leading tabs from every line, as `<<-` asks.
pub(crate) fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn valid_markers() {
        for w in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<-\"EOF\"",
            "<<EO\"F\"",
            "<< EOF",
            "<<- EOF",
        ] {
            let h = parse_heredoc_word(w, '\\').unwrap().unwrap();
            assert_eq!(h.name, "EOF", "{w}");
        }
        let h = parse_heredoc_word("3<<-'EOF'", '\\').unwrap().unwrap();
        assert!(h.chomp && !h.expand);
        let h = parse_heredoc_word("<<EOF", '\\').unwrap().unwrap();
        assert!(!h.chomp && h.expand);
    }

    #[test]
    fn not_markers_and_errors() {
        for w in [
            "", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh", "a<<EOF",
        ] {
            assert_eq!(parse_heredoc_word(w, '\\'), Ok(None), "{w}");
        }
        for w in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(parse_heredoc_word(w, '\\').is_err(), "{w}");
        }
    }

    #[test]
    fn chomp() {
        assert_eq!(chomp_heredoc_content("\t\ta\n\tb\t\nc"), "a\nb\t\nc");
    }
}
