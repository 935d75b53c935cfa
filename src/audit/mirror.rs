//! An optional copy of every record as a JSON line on stdout or in a file,
//! for log shippers. It never replaces the durable store: the copy is
//! written after the store's commit and a failed copy is only logged.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::{AuditError, AuditQuery, AuditRecord, AuditSink, Checkpoint};

/// A sink that forwards to `inner` and mirrors appends.
pub struct MirroredSink {
    inner: Arc<dyn AuditSink>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl MirroredSink {
    /// Mirrors to `target`: `stdout`, or `file:PATH` (appended; created
    /// 0600, never through a symlink).
    pub fn new(inner: Arc<dyn AuditSink>, target: &str) -> Result<MirroredSink, AuditError> {
        let out: Box<dyn Write + Send> = match target {
            "stdout" => Box::new(std::io::stdout()),
            other => match other.strip_prefix("file:") {
                // Created 0600: the records name subjects and grants.
                Some(path) => Box::new(
                    crate::private_file::open_append(std::path::Path::new(path))
                        .map_err(|e| AuditError::Config(format!("audit.mirror {path}: {e}")))?,
                ),
                None => {
                    return Err(AuditError::Config(format!(
                        "audit.mirror `{other}`: use stdout or file:PATH"
                    )));
                }
            },
        };
        Ok(MirroredSink {
            inner,
            out: Mutex::new(out),
        })
    }
}

#[async_trait::async_trait]
impl AuditSink for MirroredSink {
    async fn append(&self, record: AuditRecord) -> Result<AuditRecord, AuditError> {
        let stored = self.inner.append(record).await?;
        let line = serde_json::to_string(&stored).unwrap_or_default();
        let written = self
            .out
            .lock()
            .map(|mut out| writeln!(out, "{line}").and_then(|()| out.flush()));
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!(request_id = %stored.request_id, "audit mirror write failed; the store has the record");
        }
        Ok(stored)
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
