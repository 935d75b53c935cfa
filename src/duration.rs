//! Human durations as they appear in config and requests: `90s`, `15m`, `1h30m`.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a duration (use a number with a unit: 90s, 15m, 1h, 1h30m)")]
pub struct DurationError {
    input: String,
}

/// Parses `1d2h3m4s`-style durations. Every number needs a unit so that `60`
/// cannot be read as minutes by one reader and seconds by another.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        input: input.to_string(),
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut saw_unit = false;
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit: u64 = match ch {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(err()),
        };
        let value: u64 = digits.parse().map_err(|_| err())?;
        digits.clear();
        total = value
            .checked_mul(unit)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(err)?;
        saw_unit = true;
    }
    if !digits.is_empty() || !saw_unit {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way [`parse`] reads it, largest units first.
pub fn format(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&(secs / unit).to_string());
            out.push(name);
            secs %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn refuses_bare_numbers_and_junk() {
        for bad in ["", "60", "15x", "m", "1h30", "-5m", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn format_round_trips() {
        for secs in [1, 59, 60, 61, 3600, 5400, 90_061] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
