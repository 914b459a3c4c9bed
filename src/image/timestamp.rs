//! RFC 3339 timestamps in the form docker writes (`2024-01-02T03:04:05.123456789Z`, UTC,
//! trailing zeros of the fraction dropped, as Go's `RFC3339Nano`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats `t` as RFC 3339 UTC; times before 1970 are clamped to the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    rfc3339_from_unix(since.as_secs(), since.subsec_nanos())
}

/// The current time, formatted by [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Formats seconds and nanoseconds since the Unix epoch (e.g. `SOURCE_DATE_EPOCH`).
pub fn rfc3339_from_unix(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut s = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos > 0 {
        let frac = format!("{:09}", nanos.min(999_999_999));
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

// Howard Hinnant's days-to-civil algorithm, restricted to dates after 1970.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_from_unix(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_unix(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_from_unix(1_704_164_645, 123_456_789),
            "2024-01-02T03:04:05.123456789Z"
        );
        assert_eq!(
            rfc3339_from_unix(1_704_164_645, 500_000_000),
            "2024-01-02T03:04:05.5Z"
        );
        assert_eq!(rfc3339_from_unix(4_102_444_799, 0), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn now_is_plausible() {
        let s = now_rfc3339();
        assert!(s.starts_with("20") && s.ends_with('Z'), "{s}");
    }
}
