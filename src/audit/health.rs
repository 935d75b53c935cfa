//! Whether the audit log is taking writes, as `/readyz` reports it. A store
//! can answer a cheap read and still not commit (a held lock, a full disk,
//! a stalled connection), so readiness also watches the appends themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{AuditError, AuditQuery, AuditRecord, AuditSink, Checkpoint};

/// Appends waiting this long with none finishing mean the store is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(2);
/// A failed append keeps the broker unready this long unless
/// a later append succeeds. Bounded, so a broker taken out of a load
/// balancer's rotation (and so receiving no appends) becomes ready again.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(10);

/// Counters shared by the watched sink and `/readyz`. Times are
/// milliseconds since `epoch`, 0 meaning never.
pub struct WriteHealth {
    epoch: Instant,
    pending: AtomicUsize,
    busy_since: AtomicU64,
    last_done: AtomicU64,
    last_ok: AtomicU64,
    last_failed: AtomicU64,
}

/// What `/readyz` says about appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteState {
    /// Appends commit (or none were tried lately).
    Ok,
    /// Appends are waiting and none has finished for [`STALL_AFTER`].
    Stalled,
    /// The latest append failed, within [`FAILURE_WINDOW`].
    Failing,
}

impl WriteState {
    /// The word `/readyz` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteState::Ok => "ok",
            WriteState::Stalled => "stalled",
            WriteState::Failing => "failing",
        }
    }
}

impl Default for WriteHealth {
    fn default() -> WriteHealth {
        WriteHealth {
            epoch: Instant::now(),
            pending: AtomicUsize::new(0),
            busy_since: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
            last_ok: AtomicU64::new(0),
            last_failed: AtomicU64::new(0),
        }
    }
}

impl WriteHealth {
    fn now(&self) -> u64 {
        // +1 keeps 0 free for "never".
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn begin(&self) {
        if self.pending.fetch_add(1, Ordering::AcqRel) == 0 {
            self.busy_since.store(self.now(), Ordering::Release);
        }
    }

    fn end(&self, ok: bool) {
        let now = self.now();
        self.last_done.store(now, Ordering::Release);
        if ok {
            self.last_ok.store(now, Ordering::Release);
        } else {
            self.last_failed.store(now, Ordering::Release);
        }
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// The state now.
    pub fn state(&self) -> WriteState {
        let now = self.now();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if self.pending.load(Ordering::Acquire) > 0 {
            let progress = self
                .busy_since
                .load(Ordering::Acquire)
                .max(self.last_done.load(Ordering::Acquire));
            if now.saturating_sub(progress) > millis(STALL_AFTER) {
                return WriteState::Stalled;
            }
        }
        let failed = self.last_failed.load(Ordering::Acquire);
        if failed != 0
            && failed >= self.last_ok.load(Ordering::Acquire)
            && now.saturating_sub(failed) <= millis(FAILURE_WINDOW)
        {
            return WriteState::Failing;
        }
        WriteState::Ok
    }
}

/// Ends an append in [`WriteHealth`]. It lives in the spawned append task,
/// so it ends with the store's own answer; dropped unfinished (the store
/// panicked, or the runtime is shutting down) it counts as a failure.
struct InFlight {
    health: Arc<WriteHealth>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    started: std::time::Instant,
    finished: bool,
}

impl InFlight {
    fn finish(mut self, ok: bool) {
        self.finished = true;
        self.end(ok);
    }

    fn end(&self, ok: bool) {
        self.health.end(ok);
        if let Some(metrics) = &self.metrics {
            metrics.audit_append(ok, self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.finished {
            self.end(false);
        }
    }
}

/// A sink that forwards to `inner` and keeps [`WriteHealth`] and metrics.
pub struct WatchedSink {
    inner: Arc<dyn AuditSink>,
    health: Arc<WriteHealth>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl WatchedSink {
    /// Watches `inner`; `health` is what `/readyz` reads.
    pub fn new(
        inner: Arc<dyn AuditSink>,
        health: Arc<WriteHealth>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> WatchedSink {
        WatchedSink { inner, health, metrics }
    }
}

#[async_trait::async_trait]
impl AuditSink for WatchedSink {
    /// The append runs in its own task: a caller that goes away (a client
    /// that closed its socket, a request timeout) drops only its wait, not
    /// the write. So the record is always written or really refused, and
    /// `/readyz` hears the store's answer, never the caller's impatience.
    /// The caller still sees the result before anything is released: the
    /// broker awaits this and hands out a credential only on `Ok`.
    async fn append(&self, record: AuditRecord) -> Result<AuditRecord, AuditError> {
        self.health.begin();
        let watch = InFlight {
            health: self.health.clone(),
            metrics: Some(self.metrics.clone()),
            started: std::time::Instant::now(),
            finished: false,
        };
        let inner = self.inner.clone();
        let write = async move {
            let result = inner.append(record).await;
            watch.finish(result.is_ok());
            result
        };
        match tokio::spawn(write.in_current_span()).await {
            Ok(result) => result,
            // Only a panicking store gets here; its guard counted the failure.
            Err(e) => Err(AuditError::Unavailable(format!("the audit write task failed: {e}"))),
        }
    }
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        self.inner.query(query).await
    }
    async fn check(&self) -> Result<(), AuditError> {
        self.inner.check().await
    }
    async fn chain(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>, AuditError> {
        self.inner.chain(after, limit).await
    }
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        self.inner.checkpoints().await
    }
    async fn checkpoints_between(&self, after: i64, upto: i64) -> Result<Vec<Checkpoint>, AuditError> {
        self.inner.checkpoints_between(after, upto).await
    }
    async fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        self.inner.checkpoint().await
    }
    async fn first_use(&self, key: &str, expires_at: i64) -> Result<bool, AuditError> {
        self.inner.first_use(key, expires_at).await
    }

    async fn summary(&self, query: &super::SummaryQuery) -> Result<super::Summary, AuditError> {
        self.inner.summary(query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_cleared_by_a_later_success() {
        let health = WriteHealth::default();
        assert_eq!(health.state(), WriteState::Ok);
        health.begin();
        health.end(false);
        assert_eq!(health.state(), WriteState::Failing);
        std::thread::sleep(Duration::from_millis(3));
        health.begin();
        health.end(true);
        assert_eq!(health.state(), WriteState::Ok);
    }

    #[test]
    fn an_append_task_that_dies_unfinished_counts_as_a_failure() {
        let health = Arc::new(WriteHealth::default());
        health.begin();
        drop(InFlight {
            health: health.clone(),
            metrics: None,
            started: std::time::Instant::now(),
            finished: false,
        });
        assert_eq!(health.state(), WriteState::Failing);
        assert_eq!(health.pending.load(Ordering::Acquire), 0);
    }
}
