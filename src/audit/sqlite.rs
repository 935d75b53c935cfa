//! Audit records in SQLite: WAL with `synchronous=FULL`, so an `Ok` from
//! [`SqliteSink::append`] means the record survives a power cut.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::{AuditError, AuditQuery, AuditRecord, AuditSink, Outcome};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    time           TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    reason         TEXT,
    grant_name     TEXT,
    kind           TEXT,
    issuer         TEXT,
    subject        TEXT,
    claims         TEXT NOT NULL,
    token_jti_hmac TEXT,
    issuance_id    TEXT,
    ttl_seconds    INTEGER,
    expires_at     TEXT,
    client_addr    TEXT,
    detail         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_records_grant ON audit_records (grant_name, seq);
CREATE INDEX IF NOT EXISTS audit_records_subject ON audit_records (subject, seq);
CREATE INDEX IF NOT EXISTS audit_records_request ON audit_records (request_id);
";

/// An audit log in one SQLite file.
pub struct SqliteSink {
    conn: Arc<Mutex<Connection>>,
}

fn unavailable(e: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable(e.to_string())
}

impl SqliteSink {
    /// Opens (and creates) the log at `path`.
    pub fn open(path: &Path) -> Result<SqliteSink, AuditError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| AuditError::Config(format!("audit store {}: {e}", path.display())))?;
        }
        let conn =
            Connection::open(path).map_err(|e| AuditError::Config(format!("audit store {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| AuditError::Config(format!("audit store {}: {e}", path.display())))?;
        Ok(SqliteSink {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Opens an existing log read-only (for `stint audit query`): a mistyped
    /// path is an error, not a new empty log.
    pub fn open_existing(path: &Path) -> Result<SqliteSink, AuditError> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| AuditError::Config(format!("audit store {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        Ok(SqliteSink {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, AuditError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().map_err(|_| unavailable("audit connection poisoned"))?;
            work(&guard)
        })
        .await
        .map_err(unavailable)?
    }
}

fn json_text(map: &Map<String, Value>) -> String {
    Value::Object(map.clone()).to_string()
}

fn json_map(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    let outcome: String = row.get("outcome")?;
    let claims: String = row.get("claims")?;
    let detail: String = row.get("detail")?;
    let ttl: Option<i64> = row.get("ttl_seconds")?;
    Ok(AuditRecord {
        seq: row.get("seq")?,
        time: row.get("time")?,
        request_id: row.get("request_id")?,
        outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Error),
        reason: row.get("reason")?,
        grant: row.get("grant_name")?,
        kind: row.get("kind")?,
        issuer: row.get("issuer")?,
        subject: row.get("subject")?,
        claims: json_map(&claims),
        token_jti_hmac: row.get("token_jti_hmac")?,
        issuance_id: row.get("issuance_id")?,
        ttl_seconds: ttl.and_then(|t| u64::try_from(t).ok()),
        expires_at: row.get("expires_at")?,
        client_addr: row.get("client_addr")?,
        detail: json_map(&detail),
    })
}

#[async_trait::async_trait]
impl AuditSink for SqliteSink {
    async fn append(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let r = record.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO audit_records (time, request_id, outcome, reason, grant_name, kind, issuer, subject,
                    claims, token_jti_hmac, issuance_id, ttl_seconds, expires_at, client_addr, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    r.time,
                    r.request_id,
                    r.outcome.as_str(),
                    r.reason,
                    r.grant,
                    r.kind,
                    r.issuer,
                    r.subject,
                    json_text(&r.claims),
                    r.token_jti_hmac,
                    r.issuance_id,
                    r.ttl_seconds.and_then(|t| i64::try_from(t).ok()),
                    r.expires_at,
                    r.client_addr,
                    json_text(&r.detail),
                ],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let q = query.clone();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT * FROM audit_records
                     WHERE (?1 IS NULL OR grant_name = ?1) AND (?2 IS NULL OR subject = ?2)
                       AND (?3 IS NULL OR outcome = ?3) AND (?4 IS NULL OR request_id = ?4)
                       AND (?6 IS NULL OR token_jti_hmac = ?6)
                     ORDER BY seq DESC LIMIT ?5",
                )
                .map_err(unavailable)?;
            let limit = q.limit.unwrap_or(50);
            let outcome = q.outcome.map(Outcome::as_str);
            let rows = stmt
                .query_map(
                    params![q.grant, q.subject, outcome, q.request_id, limit, q.token_jti_hmac],
                    read_row,
                )
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn check(&self) -> Result<(), AuditError> {
        self.with_conn(|conn| {
            // Take the write lock and give it back: a read-only or locked
            // file fails here, before a caller's credential would.
            conn.execute_batch("BEGIN IMMEDIATE").map_err(unavailable)?;
            let probe = conn
                .query_row("SELECT seq FROM audit_records ORDER BY seq DESC LIMIT 1", [], |r| {
                    r.get::<_, i64>(0)
                })
                .optional();
            conn.execute_batch("ROLLBACK").map_err(unavailable)?;
            probe.map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}
