//! Wall-clock time as stint writes it: seconds since the epoch for
//! comparisons, RFC 3339 UTC for people and records. At the bottom of the
//! crate (it depends on nothing of stint's), so identity, audit, metrics and
//! the providers can all tell the time without depending on each other.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Seconds since the epoch (0 if the clock is before it).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 UTC for seconds since the epoch (the bare number if out of range).
pub fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Now, RFC 3339 UTC with sub-seconds (whole seconds if formatting fails).
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| rfc3339(now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_and_survives_out_of_range() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
        assert!(now() > 1_700_000_000);
        assert!(now_rfc3339().ends_with('Z'));
    }
}
