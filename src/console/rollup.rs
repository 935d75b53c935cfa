//! The overview's counts, kept per hour. An hour that is over does not
//! change (a record's time is set before it is appended, and a commit
//! follows within the audit timeout), so its counts are read from the
//! store once, with the time index, and kept; a range is the sum of its
//! hours, and only the hour in progress is read each time. The console
//! warms the last 30 days in the background at start, so the 30-day view
//! of a large log does not wait for one scan of the whole range.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::audit::summary::{TOP_GRANTS, TOP_REASONS, TOP_SUBJECTS};
use crate::audit::{AuditError, AuditSink, Bucket, Outcome, Summary, SummaryQuery};

const HOUR: i64 = 3600;

/// An hour is kept once it ended this long ago: records stamped in it
/// may still be committing for up to the audit timeout.
const SETTLED_AFTER: i64 = 300;

/// How far back the console warms at start.
pub const WARM_DAYS: i64 = 30;

/// Counts of closed hours, by the hour's start (Unix seconds).
#[derive(Default)]
pub struct Rollup {
    hours: Mutex<BTreeMap<i64, Arc<Summary>>>,
}

impl Rollup {
    /// The counts of `[start, start + 1h)`, from the cache when the hour is
    /// settled.
    async fn hour(&self, store: &dyn AuditSink, start: i64, now: i64) -> Result<Arc<Summary>, AuditError> {
        if let Some(kept) = self.hours.lock().ok().and_then(|h| h.get(&start).cloned()) {
            return Ok(kept);
        }
        let summary = Arc::new(
            store
                .summary(&SummaryQuery {
                    since: crate::clock::rfc3339(start),
                    until: crate::clock::rfc3339(start + HOUR),
                    bucket: Bucket::Hour,
                    top: false,
                })
                .await?,
        );
        if start + HOUR + SETTLED_AFTER <= now
            && let Ok(mut hours) = self.hours.lock()
        {
            hours.insert(start, summary.clone());
        }
        Ok(summary)
    }

    /// Reads (and keeps) every settled hour of the last [`WARM_DAYS`],
    /// newest first, so the short ranges people open first are ready
    /// first.
    pub async fn warm(&self, store: &dyn AuditSink) {
        let now = crate::clock::now();
        let oldest = (now - WARM_DAYS * 86_400) / HOUR * HOUR;
        let mut start = (now - SETTLED_AFTER) / HOUR * HOUR - HOUR;
        while start >= oldest {
            if let Err(e) = self.hour(store, start, now).await {
                tracing::warn!(error = %e, "console: overview counts not warmed");
                return;
            }
            start -= HOUR;
        }
    }

    /// The counts of `[since, until)` (whole hours, `since` on an hour),
    /// with the time series in `bucket`s and the top rows of each list.
    /// With `grant`, the time series counts that grant's records only.
    pub async fn range(
        &self,
        store: &dyn AuditSink,
        since: i64,
        until: i64,
        bucket: Bucket,
        grant: Option<&str>,
    ) -> Result<Summary, AuditError> {
        let now = crate::clock::now();
        let mut series: BTreeMap<(String, &'static str), (Outcome, u64)> = BTreeMap::new();
        let mut grants: HashMap<(String, &'static str), (Outcome, u64)> = HashMap::new();
        let mut reasons: HashMap<String, u64> = HashMap::new();
        let mut subjects: HashMap<String, u64> = HashMap::new();
        let mut start = since;
        while start < until {
            let hour = self.hour(store, start, now).await?;
            match grant {
                None => {
                    for (label, outcome, n) in &hour.series {
                        let label: String = label.chars().take(bucket.prefix_len()).collect();
                        series.entry((label, outcome.as_str())).or_insert((*outcome, 0)).1 += n;
                    }
                }
                Some(only) => {
                    let label: String = crate::clock::rfc3339(start).chars().take(bucket.prefix_len()).collect();
                    for (_, outcome, n) in hour.by_grant.iter().filter(|(g, _, _)| g == only) {
                        series
                            .entry((label.clone(), outcome.as_str()))
                            .or_insert((*outcome, 0))
                            .1 += n;
                    }
                }
            }
            for (grant, outcome, n) in &hour.by_grant {
                grants
                    .entry((grant.clone(), outcome.as_str()))
                    .or_insert((*outcome, 0))
                    .1 += n;
            }
            for (reason, n) in &hour.denial_reasons {
                *reasons.entry(reason.clone()).or_default() += n;
            }
            for (subject, n) in &hour.subjects {
                *subjects.entry(subject.clone()).or_default() += n;
            }
            start += HOUR;
        }
        let mut by_grant: Vec<(String, Outcome, u64)> = grants.into_iter().map(|((g, _), (o, n))| (g, o, n)).collect();
        by_grant.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        by_grant.truncate(TOP_GRANTS as usize);
        let top = |map: HashMap<String, u64>, n: u32| {
            let mut rows: Vec<(String, u64)> = map.into_iter().collect();
            rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            rows.truncate(n as usize);
            rows
        };
        Ok(Summary {
            series: series.into_iter().map(|((label, _), (o, n))| (label, o, n)).collect(),
            by_grant,
            denial_reasons: top(reasons, TOP_REASONS),
            subjects: top(subjects, TOP_SUBJECTS),
        })
    }
}
