//! Times on the command line: RFC 3339, or an age (`30s`, `10m`, `2h`, `7d`) before now.

use chrono::{DateTime, Duration, Utc};

use crate::error::CliError;

/// Parses `text` as an RFC 3339 time or an age before `now`.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, CliError> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        CliError::Input(format!(
            "invalid time {text:?}: use RFC 3339 (2026-01-31T12:00:00Z) or an age (30s, 10m, 2h, 7d)"
        ))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let age = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    now.checked_sub_signed(age).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_rfc3339() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let t = parse_time("2h", now).expect("age");
        assert_eq!(t.to_rfc3339(), "2026-01-01T22:00:00+00:00");
        assert_eq!(
            parse_time("1d", now).expect("days").to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        let t = parse_time("2026-01-01T10:00:00+02:00", now).expect("rfc3339");
        assert_eq!(t.to_rfc3339(), "2026-01-01T08:00:00+00:00");
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("5w", now).is_err());
        assert!(parse_time("", now).is_err());
    }
}
