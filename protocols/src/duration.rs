//! The one grammar for durations, in settings and in query parameters:
//! numbers with units, one or more in a row, optionally separated by
//! spaces: `250ms`, `1.5s`, `1h30m`, `1h 30m`, `7d`. Units as Go and
//! Prometheus write them (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d`, `w`)
//! and the longer names humantime accepts (`sec`, `min`, `hours`, `days`,
//! ...). A bare number is refused: its unit would be a guess.

use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "{0:?} is not a duration: use numbers with units (ns, us, ms, s, m, h, d, w), e.g. 250ms, 1m30s or 7d"
    )]
    Syntax(String),
    #[error("{0:?} is too long")]
    TooLong(String),
}

fn unit_nanos(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" | "nsec" | "nanos" => 1.0,
        "us" | "µs" | "usec" | "micros" => 1e3,
        "ms" | "msec" | "millis" => 1e6,
        "s" | "sec" | "secs" | "second" | "seconds" => 1e9,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e9,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600e9,
        "d" | "day" | "days" => 86_400e9,
        "w" | "week" | "weeks" => 604_800e9,
        _ => return None,
    })
}

/// The duration in nanoseconds.
pub fn parse_nanos(text: &str) -> Result<i64, DurationError> {
    let bad = || DurationError::Syntax(text.to_string());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(rest.len());
        total += number * unit_nanos(&rest[..unit_len]).ok_or_else(bad)?;
        rest = rest[unit_len..].trim_start();
    }
    if total > i64::MAX as f64 {
        return Err(DurationError::TooLong(text.to_string()));
    }
    Ok(total.round() as i64)
}

/// The duration as a [`Duration`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_nanos(text).map(|ns| Duration::from_nanos(ns as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar_for_settings_and_parameters() {
        let ns = |t| parse_nanos(t).unwrap();
        assert_eq!(ns("250ms"), 250_000_000);
        assert_eq!(ns("1.5s"), 1_500_000_000);
        assert_eq!(ns("1h30m"), 5_400_000_000_000);
        assert_eq!(ns("1h 30m"), 5_400_000_000_000);
        assert_eq!(ns(" 2 hours "), 7_200_000_000_000);
        assert_eq!(ns("7d"), 7 * 86_400_000_000_000);
        assert_eq!(ns("1w"), 7 * 86_400_000_000_000);
        assert_eq!(ns("3us"), 3_000);
        assert_eq!(ns("3µs"), 3_000);
        assert_eq!(ns("15min"), 900_000_000_000);
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn what_is_not_a_duration_says_so() {
        for bad in [
            "",
            "10",
            "fast",
            "1x",
            "ms",
            "1.2.3s",
            "1..2s",
            "-1s",
            "1h-30m",
            "5 parsecs",
        ] {
            let e = parse_nanos(bad).unwrap_err();
            assert_eq!(e, DurationError::Syntax(bad.to_string()), "{bad:?}");
            assert!(e.to_string().contains("is not a duration"), "{e}");
        }
        assert!(matches!(
            parse_nanos("999999999999h"),
            Err(DurationError::TooLong(_))
        ));
    }
}
