//! Reading the SQLite log. Reads have read-only connections of their own
//! (WAL lets them run beside the writer), so an auditor's long query never
//! holds the connection the writer appends on; and the SQL of a query names
//! only the filters given, so the planner answers each from an index
//! instead of scanning the whole log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use super::columns::unavailable;
use super::{AuditError, AuditQuery};

/// Reads running at once; more wait for a turn. A flood of audit queries
/// costs a few connections and cores, never the writer.
const READERS: usize = 4;

/// A few read-only connections to one SQLite file.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    turns: tokio::sync::Semaphore,
}

impl Readers {
    /// Opens the first connection now, so a missing or unreadable file is
    /// an error at start, not at the first query.
    pub(super) fn open(path: &Path) -> Result<Arc<Readers>, AuditError> {
        let first = connect(path).map_err(|e| AuditError::Config(format!("audit store {}: {e}", path.display())))?;
        Ok(Arc::new(Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(vec![first]),
            turns: tokio::sync::Semaphore::new(READERS),
        }))
    }

    /// Runs `work` on a reader connection, on a blocking thread.
    pub(super) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Connection) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, AuditError> {
        let _turn = self.turns.acquire().await.map_err(unavailable)?;
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let idle = readers
                .idle
                .lock()
                .map_err(|_| unavailable("audit readers poisoned"))?
                .pop();
            let conn = match idle {
                Some(conn) => conn,
                None => connect(&readers.path).map_err(unavailable)?,
            };
            let result = work(&conn);
            // A connection left inside a transaction (a panic in `work`
            // never gets here) would pin an old snapshot: drop it instead.
            if conn.is_autocommit()
                && let Ok(mut idle) = readers.idle.lock()
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(unavailable)?
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// The SQL of `q` and its parameters, newest first, for a query with a
/// request id or with none of the filters the block lookup answers
/// (subject, grant, token: see [`sqlite_lookup`](super::sqlite_lookup)).
///
/// Only the filters given appear (`(?1 IS NULL OR subject = ?1)` can use no
/// index). A request id leads through its index; else the outcome does.
/// The other filters are written `+column`, which SQLite does not look up
/// in an index, so the planner cannot walk, say, every `issued` record to
/// find one request. The outcome index ends in `seq`, so its walk is
/// already newest first and stops after `limit` records. With no equality
/// filter, `since`/`until` lead through the time index; then the records of
/// the window are sorted by `seq` (`+seq` keeps the planner from walking
/// the whole log in `seq` order instead, which costs the log's size when
/// the window is old or empty).
pub(super) fn query_sql(q: &AuditQuery) -> (String, Vec<Value>) {
    let equalities = [
        ("request_id", q.request_id.clone()),
        ("outcome", q.outcome.map(|o| o.as_str().to_string())),
    ];
    let mut terms = Vec::new();
    let mut values = Vec::new();
    let mut led = false;
    for (column, value) in equalities {
        if let Some(value) = value {
            let prefix = if led { "+" } else { "" };
            led = true;
            values.push(Value::Text(value));
            terms.push(format!("{prefix}{column} = ?{}", values.len()));
        }
    }
    // Never leading: the lookup answers the first three when no request id
    // is given, and no index has the last two.
    let others = [
        ("token_jti_hmac", &q.token_jti_hmac),
        ("subject", &q.subject),
        ("grant_name", &q.grant),
        ("kind", &q.kind),
        ("reason", &q.reason),
    ];
    for (column, value) in others {
        if let Some(value) = value {
            values.push(Value::Text(value.clone()));
            terms.push(format!("+{column} = ?{}", values.len()));
        }
    }
    let by_time = !led && (q.since.is_some() || q.until.is_some());
    let time = if led { "+time" } else { "time" };
    for (op, bound) in [(">=", &q.since), ("<", &q.until)] {
        if let Some(bound) = bound {
            values.push(Value::Text(bound.clone()));
            terms.push(format!("{time} {op} ?{}", values.len()));
        }
    }
    let seq = if by_time { "+seq" } else { "seq" };
    if let Some(before) = q.before_seq {
        values.push(Value::Integer(before));
        terms.push(format!("{seq} < ?{}", values.len()));
    }
    values.push(Value::Integer(i64::from(q.limit.unwrap_or(50))));
    let filter = if terms.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", terms.join(" AND "))
    };
    (
        format!(
            "SELECT * FROM audit_records{filter} ORDER BY {seq} DESC LIMIT ?{}",
            values.len()
        ),
        values,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a failed step is the test's report
mod tests {
    use super::*;
    use crate::audit::Outcome;

    /// Every filter the lookup does not answer, alone and with others,
    /// on a log with the broker's schema: the plan names an index, never a
    /// bare scan (the lookup's own plans: `sqlite_lookup`'s tests).
    #[test]
    fn every_filter_without_a_lookup_is_answered_from_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        super::super::sqlite::create_schema(&Connection::open(&path).unwrap()).unwrap();
        let conn = Connection::open(&path).unwrap();
        let text = |s: &str| Some(s.to_string());
        let cases = [
            (
                "outcome",
                AuditQuery {
                    outcome: Some(Outcome::Denied),
                    ..Default::default()
                },
                "audit_records_outcome",
            ),
            (
                "request id",
                AuditQuery {
                    request_id: text("r"),
                    ..Default::default()
                },
                "audit_records_request",
            ),
            (
                "since",
                AuditQuery {
                    since: text("2026-01-01T00:00:00Z"),
                    ..Default::default()
                },
                "audit_records_time",
            ),
            (
                "until",
                AuditQuery {
                    until: text("2026-01-01T00:00:00Z"),
                    ..Default::default()
                },
                "audit_records_time",
            ),
            (
                "window and cursor",
                AuditQuery {
                    since: text("2026-01-01T00:00:00Z"),
                    until: text("2026-02-01T00:00:00Z"),
                    before_seq: Some(9),
                    ..Default::default()
                },
                "audit_records_time",
            ),
            (
                "request id, subject and token: the request id leads",
                AuditQuery {
                    request_id: text("r"),
                    subject: text("nobody"),
                    token_jti_hmac: text("ab"),
                    before_seq: Some(9),
                    ..Default::default()
                },
                "audit_records_request",
            ),
            (
                "outcome and a window: the outcome leads",
                AuditQuery {
                    outcome: Some(Outcome::Issued),
                    since: text("2026-01-01T00:00:00Z"),
                    ..Default::default()
                },
                "audit_records_outcome",
            ),
        ];
        for (name, query, index) in cases {
            let (sql, values) = query_sql(&query);
            let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = statement
                .query_map(rusqlite::params_from_iter(values.iter()), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(plan.contains(&format!("USING INDEX {index} ")), "{name}: {plan}\n{sql}");
            assert!(!plan.contains("SCAN audit_records"), "{name}: {plan}\n{sql}");
        }
        // Paging the whole log walks the primary key from the cursor.
        let (sql, values) = query_sql(&AuditQuery {
            before_seq: Some(9),
            ..Default::default()
        });
        let plan: String = conn
            .query_row(
                &format!("EXPLAIN QUERY PLAN {sql}"),
                rusqlite::params_from_iter(values.iter()),
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("USING INTEGER PRIMARY KEY"), "{plan}");
    }
}
