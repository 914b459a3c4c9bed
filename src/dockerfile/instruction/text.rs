//! Small text helpers shared by the instruction parsers: Go-compatible quoting and
//! boolean parsing (BuildKit's messages and accepted values come from Go's standard
//! library), and "did you mean" suggestions by edit distance.

/// Renders `s` as Go's `%q` does, so messages read exactly like BuildKit's.
pub(crate) use crate::dockerfile::dump::go_quote;

/// Go's `strconv.ParseBool`: the spellings BuildKit accepts for mount and device options.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Edit distance over characters where swapping two neighbours counts as one edit
/// (optimal string alignment), since `--form` for `--from` is a typical typo.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// The option closest to `word`, compared case-insensitively, when it is close enough
/// to be a likely typo: a small edit distance for the word's length, or `word` being a
/// prefix of the option (`tmp` → `tmpfs`). An exact match suggests nothing.
pub fn suggest<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    let len = word.chars().count();
    if len == 0 {
        return None;
    }
    // Short words are close to too many keywords: one edit for up to five letters.
    let threshold = (len / 3).clamp(1, 2);
    let mut best: Option<(usize, &'a str)> = None;
    for &option in options {
        let lower = option.to_lowercase();
        if lower == word {
            return None;
        }
        let dist = edit_distance(&word, &lower);
        if best.is_none_or(|(d, _)| dist < d) {
            best = Some((dist, option));
        }
    }
    if let Some((dist, option)) = best {
        if dist <= threshold {
            return Some(option);
        }
    }
    if len >= 3 {
        return options
            .iter()
            .copied()
            .find(|o| o.to_lowercase().starts_with(&word));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote(""), "\"\"");
        assert_eq!(go_quote("a\"b\\c\n\t\u{0}é"), "\"a\\\"b\\\\c\\n\\t\\x00é\"");
    }

    #[test]
    fn bools_like_go() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("runn", "run"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("form", "from"), 1);
    }

    #[test]
    fn suggestions() {
        let kw = ["RUN", "FROM", "ENTRYPOINT", "COPY"];
        assert_eq!(suggest("RUNN", &kw), Some("RUN"));
        assert_eq!(suggest("fntrypoint", &kw), Some("ENTRYPOINT"));
        assert_eq!(suggest("FOO", &kw), None);
        assert_eq!(suggest("RUN", &kw), None);
        assert_eq!(suggest("tmp", &["bind", "tmpfs"]), Some("tmpfs"));
        assert_eq!(suggest("mont", &["mount", "network"]), Some("mount"));
    }
}
