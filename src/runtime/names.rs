//! Container names: docker's rule for what a name may be, and docker-style random
//! `adjective_surname` names (a list of kiln's own) for containers run without `--name`.

const ADJECTIVES: [&str; 32] = [
    "agile", "amber", "bold", "brave", "bright", "calm", "clever", "cosmic", "eager", "fancy",
    "fervent", "gentle", "happy", "humble", "jolly", "keen", "lucid", "merry", "nimble", "noble",
    "patient", "plucky", "quiet", "rapid", "serene", "sharp", "steady", "sunny", "swift", "tender",
    "vivid", "witty",
];

const SURNAMES: [&str; 32] = [
    "agnesi", "babbage", "bell", "boole", "cantor", "curie", "darwin", "dijkstra", "euler",
    "faraday", "fermi", "gauss", "hamilton", "hopper", "hypatia", "kepler", "knuth", "lamarr",
    "leibniz", "lovelace", "maxwell", "meitner", "noether", "pascal", "planck", "ritchie",
    "shannon", "tesla", "thompson", "turing", "volta", "wozniak",
];

/// A random `adjective_surname`; `attempt` > 0 appends a digit, as docker does on a clash.
pub fn random_name(attempt: u32) -> String {
    let mut bytes = [0u8; 2];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes = [(t & 0xff) as u8, ((t >> 8) & 0xff) as u8];
    }
    let adj = ADJECTIVES[usize::from(bytes[0]) % ADJECTIVES.len()];
    let sur = SURNAMES[usize::from(bytes[1]) % SURNAMES.len()];
    if attempt == 0 {
        format!("{adj}_{sur}")
    } else {
        format!("{adj}_{sur}{}", attempt % 10)
    }
}

/// docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (a leading `/` is dropped, as docker does).
pub fn valid_name(name: &str) -> bool {
    let name = name.strip_prefix('/').unwrap_or(name);
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    name.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_names_are_valid_adjective_surname_pairs() {
        for i in 0..20 {
            let n = random_name(i % 2);
            assert!(valid_name(&n), "{n}");
            let (a, s) = n.split_once('_').unwrap();
            assert!(ADJECTIVES.contains(&a));
            assert!(SURNAMES.iter().any(|x| s.starts_with(x)));
        }
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert!(valid_name("web-1"));
        assert!(valid_name("/web.a_b"));
        assert!(!valid_name("a"));
        assert!(!valid_name("-web"));
        assert!(!valid_name("we b"));
        assert!(!valid_name("web/1"));
        assert!(!valid_name(""));
    }
}
