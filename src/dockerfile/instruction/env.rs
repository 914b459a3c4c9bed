//! The image environment as a list of `KEY=VALUE` strings, and how ENV updates it.

/// Splits an env entry at its first `=`; an entry without `=` has an empty value.
pub fn parse_key_value(entry: &str) -> (&str, &str) {
    entry.split_once('=').unwrap_or((entry, ""))
}

/// Sets `key` in `env`: the first entry with that key (a bare `key` counts) is replaced
/// in place, later duplicates are left alone; a new key is appended.
pub fn add_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env.iter_mut().find(|e| parse_key_value(e).0 == key) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(parse_key_value("a=b=c"), ("a", "b=c"));
        assert_eq!(parse_key_value("a"), ("a", ""));
    }

    #[test]
    fn replaces_first_only() {
        let mut env = vec!["k=1".to_string(), "k=2".to_string()];
        add_env(&mut env, "k", "3");
        assert_eq!(env, ["k=3", "k=2"]);
        add_env(&mut env, "n", "");
        assert_eq!(env, ["k=3", "k=2", "n="]);
    }
}
