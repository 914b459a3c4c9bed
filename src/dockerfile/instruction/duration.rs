//! Go's duration syntax (`30s`, `1m30s`, `1.5h`, `250ms`), which HEALTHCHECK flags use
//! because BuildKit reads them with Go's `time.ParseDuration`.

use super::text::go_quote;

/// Parses a Go duration into signed nanoseconds, with Go's error texts.
pub fn parse_go_duration(input: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(input));
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    // A bare zero is the one number allowed without a unit.
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    // Accumulated in u64 nanoseconds; 1<<63 is allowed only for the negative minimum.
    let limit: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !s.is_empty() {
        let bytes = s.as_bytes();
        if !(bytes[0] == b'.' || bytes[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut whole: u64 = 0;
        for &b in &bytes[..int_len] {
            whole = whole
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .filter(|&v| v <= limit)
                .ok_or_else(invalid)?;
        }
        s = &s[int_len..];
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut frac_len = 0;
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            frac_len = s.bytes().take_while(|b| b.is_ascii_digit()).count();
            let mut overflow = false;
            for b in s[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                // Digits beyond u64 precision no longer change the result.
                match fraction
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                {
                    Some(v) => {
                        fraction = v;
                        scale *= 10.0;
                    }
                    None => overflow = true,
                }
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(format!(
                "time: missing unit in duration {}",
                go_quote(input)
            ));
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u64 = match unit_name {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit_name),
                    go_quote(input)
                ))
            }
        };
        if whole > limit / unit {
            return Err(invalid());
        }
        let mut value = whole * unit;
        if fraction > 0 {
            // Float precision is what Go uses here too.
            let extra = (fraction as f64 * (unit as f64 / scale)) as u64;
            value = value.checked_add(extra).ok_or_else(invalid)?;
            if value > limit {
                return Err(invalid());
            }
        }
        total = total
            .checked_add(value)
            .filter(|&v| v <= limit)
            .ok_or_else(invalid)?;
    }
    if negative {
        // total <= 1<<63, so the negation fits.
        return Ok((total as i128).wrapping_neg() as i64);
    }
    i64::try_from(total).map_err(|_| invalid())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn valid() {
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("50ns"), Ok(50));
        assert_eq!(parse_go_duration("1ms"), Ok(1_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("-2us"), Ok(-2_000));
        assert_eq!(parse_go_duration("3µs"), Ok(3_000));
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Ok(i64::MIN));
    }

    #[test]
    fn invalid() {
        assert_eq!(
            parse_go_duration("1").unwrap_err(),
            "time: missing unit in duration \"1\""
        );
        assert_eq!(
            parse_go_duration("1x").unwrap_err(),
            "time: unknown unit \"x\" in duration \"1x\""
        );
        for bad in [
            "",
            "-",
            ".",
            "s",
            "1.s.",
            "9223372036854775808ns",
            "99999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
