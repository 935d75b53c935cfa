//! The log at a glance, for the console's overview: counts per time
//! bucket and outcome, per grant, denials by reason and the busiest
//! subjects, over a time range. Every count is computed by the store in
//! SQL over the `time` index, never by reading records into stint.

use serde::Serialize;

use super::Outcome;

/// How wide a bar of the time series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// One per hour (`2026-12-05T01`).
    Hour,
    /// One per day (`2026-12-05`).
    Day,
}

impl Bucket {
    /// Characters of an RFC 3339 UTC time that name the bucket.
    pub fn prefix_len(self) -> usize {
        match self {
            Bucket::Hour => 13,
            Bucket::Day => 10,
        }
    }
}

/// What to summarise: `[since, until)` as RFC 3339 UTC times.
#[derive(Debug, Clone)]
pub struct SummaryQuery {
    /// Start, inclusive.
    pub since: String,
    /// End, exclusive.
    pub until: String,
    /// Width of the time series' bars.
    pub bucket: Bucket,
    /// Only the top rows of the per-grant, reason and subject lists
    /// ([`TOP_GRANTS`], ...); `false`: every row, for sums over ranges.
    pub top: bool,
}

/// Counts over one range.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// (bucket, outcome, records), buckets ascending.
    pub series: Vec<(String, Outcome, u64)>,
    /// (grant, outcome, records), busiest first; at most [`TOP_GRANTS`] rows.
    pub by_grant: Vec<(String, Outcome, u64)>,
    /// (reason, denials), most first.
    pub denial_reasons: Vec<(String, u64)>,
    /// (subject, records), most first; at most [`TOP_SUBJECTS`].
    pub subjects: Vec<(String, u64)>,
}

/// Rows of the per-grant table.
pub const TOP_GRANTS: u32 = 60;
/// Rows of the busiest-subjects table.
pub const TOP_SUBJECTS: u32 = 10;
/// Rows of the denial-reasons table.
pub const TOP_REASONS: u32 = 20;

/// The four statements, with `since` and `until` as the first and second
/// parameter, written with `p1`/`p2` as the placeholders of the store
/// (`?1`/`?2` or `$1`/`$2`). `not_indexed` is put before a column that must
/// not lead the plan (`+` for SQLite, whose planner would otherwise walk
/// every denial through the outcome index instead of the range through
/// the time index; empty for PostgreSQL, which has statistics).
pub fn statements(bucket: Bucket, p1: &str, p2: &str, top: bool, not_indexed: &str) -> [String; 4] {
    let range = format!("time >= {p1} AND time < {p2}");
    let len = bucket.prefix_len();
    let limit = |n: u32| if top { format!(" LIMIT {n}") } else { String::new() };
    [
        format!(
            "SELECT substr(time, 1, {len}) AS bucket, outcome, count(*) FROM audit_records
             WHERE {range} GROUP BY bucket, outcome ORDER BY bucket"
        ),
        format!(
            "SELECT coalesce(grant_name, ''), outcome, count(*) FROM audit_records
             WHERE {range} GROUP BY 1, 2 ORDER BY 3 DESC, 1{}",
            limit(TOP_GRANTS)
        ),
        format!(
            "SELECT coalesce(reason, ''), count(*) FROM audit_records
             WHERE {range} AND {not_indexed}outcome = 'denied' GROUP BY 1 ORDER BY 2 DESC, 1{}",
            limit(TOP_REASONS)
        ),
        format!(
            "SELECT subject, count(*) FROM audit_records
             WHERE {range} AND subject IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1{}",
            limit(TOP_SUBJECTS)
        ),
    ]
}
