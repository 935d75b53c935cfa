//! Audit records in SQLite: WAL with `synchronous=FULL`, so an `Ok` from
//! [`SqliteSink::append`] means the record survives a power cut. Appends
//! take the write lock (`BEGIN IMMEDIATE`), so the chain stays one line even
//! with several processes on one file.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::chain::{self, Checkpoint};
use super::columns::{json_text, record_from, unavailable};
use super::{AuditError, AuditQuery, AuditRecord, AuditSink, ChainKeys, Outcome};
use crate::clock::now_rfc3339;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    seq            INTEGER PRIMARY KEY,
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
    detail         TEXT NOT NULL,
    chain_version  INTEGER NOT NULL DEFAULT 1,
    prev_hash      TEXT,
    record_hash    TEXT,
    record_mac     TEXT
);
CREATE INDEX IF NOT EXISTS audit_records_grant ON audit_records (grant_name, seq);
CREATE INDEX IF NOT EXISTS audit_records_subject ON audit_records (subject, seq);
CREATE INDEX IF NOT EXISTS audit_records_request ON audit_records (request_id);
CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (time);
CREATE TABLE IF NOT EXISTS used_tokens (
    key        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq         INTEGER PRIMARY KEY,
    record_hash TEXT NOT NULL,
    time        TEXT NOT NULL,
    signature   TEXT NOT NULL,
    kid         TEXT NOT NULL
);
";

/// An audit log in one SQLite file.
pub struct SqliteSink {
    conn: Arc<Mutex<Connection>>,
    chain: Option<Arc<ChainKeys>>,
    writer: Option<tokio::sync::mpsc::Sender<Pending>>,
}

/// A record waiting for the writer, and who to tell when it is durable.
struct Pending {
    record: AuditRecord,
    done: tokio::sync::oneshot::Sender<Result<AuditRecord, AuditError>>,
}

/// Most records one commit may carry.
const MAX_GROUP: usize = 256;

/// The single writer. With group commit, every record that queued while
/// the previous commit was being synced goes into the next transaction, so
/// concurrent requests share one fsync instead of waiting in line for their
/// own; each caller still hears back only after its record is durable.
fn writer_loop(
    conn: Arc<Mutex<Connection>>,
    keys: Arc<ChainKeys>,
    group: bool,
    mut queue: tokio::sync::mpsc::Receiver<Pending>,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while group && batch.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let result = match conn.lock() {
            Ok(conn) => write_transaction(&conn, || {
                // The head found in the store is checked once per batch; the
                // rest of the batch extends records this writer just made.
                let mut head_now = None;
                for (n, pending) in batch.iter_mut().enumerate() {
                    append_one(&conn, &keys, &mut pending.record, n == 0, &mut head_now)?;
                }
                Ok(())
            }),
            Err(_) => Err(unavailable("audit connection poisoned")),
        };
        for pending in batch {
            let _ = pending.done.send(result.clone().map(|()| pending.record));
        }
    }
}

/// Links one record to the head and inserts it (inside a transaction).
/// `head_now`: the head this batch just wrote, so only its first record
/// reads the head from the store.
fn append_one(
    conn: &Connection,
    keys: &ChainKeys,
    r: &mut AuditRecord,
    check: bool,
    head_now: &mut Option<(i64, String)>,
) -> Result<(), AuditError> {
    if check {
        verified_head(conn, keys)?;
    }
    let previous = match head_now.take() {
        Some(previous) => Some(previous),
        None => head(conn)?,
    };
    chain::link(r, previous, &keys.key);
    // Cached statements: parsing SQL showed up in profiles of the hot path.
    conn.prepare_cached(
        "INSERT INTO audit_records (seq, time, request_id, outcome, reason, grant_name, kind, issuer, subject,
            claims, token_jti_hmac, issuance_id, ttl_seconds, expires_at, client_addr, detail,
            chain_version, prev_hash, record_hash, record_mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            r.seq,
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
            chain::CHAIN_VERSION,
            r.prev_hash,
            r.record_hash,
            r.record_mac,
        ])
    })
    .map_err(unavailable)?;
    let seq = r.seq.unwrap_or(0);
    *head_now = Some((seq, r.record_hash.clone().unwrap_or_default()));
    let every = i64::try_from(keys.checkpoint_every.max(1)).unwrap_or(i64::MAX);
    if seq % every == 0 {
        let hash = r.record_hash.clone().unwrap_or_default();
        insert_checkpoint(conn, &keys.signer.sign(seq, &hash, &now_rfc3339()))?;
    }
    Ok(())
}

impl SqliteSink {
    /// Opens (and creates) the log at `path` for appending.
    pub fn open(path: &Path, chain: ChainKeys, group_commit: bool) -> Result<SqliteSink, AuditError> {
        let config = |e: &dyn std::fmt::Display| AuditError::Config(format!("audit store {}: {e}", path.display()));
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| config(&e))?;
        }
        crate::private_file::create_if_missing(path).map_err(|e| config(&e))?;
        let conn = Connection::open(path).map_err(|e| config(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(|e| config(&e))?;
        migrate(&conn).map_err(|e| config(&e))?;
        let conn = Arc::new(Mutex::new(conn));
        let keys = Arc::new(chain);
        let (writer, queue) = tokio::sync::mpsc::channel(super::MAX_QUEUED);
        let (writer_conn, writer_keys) = (conn.clone(), keys.clone());
        std::thread::Builder::new()
            .name("stint-audit-writer".into())
            .spawn(move || writer_loop(writer_conn, writer_keys, group_commit, queue))
            .map_err(|e| config(&e))?;
        Ok(SqliteSink {
            conn,
            chain: Some(keys),
            writer: Some(writer),
        })
    }

    /// Opens an existing log read-only (for `stint audit query/verify`): a
    /// mistyped path is an error, not a new empty log.
    pub fn open_existing(path: &Path) -> Result<SqliteSink, AuditError> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| AuditError::Config(format!("audit store {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        Ok(SqliteSink {
            conn: Arc::new(Mutex::new(conn)),
            chain: None,
            writer: None,
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

    fn keys(&self) -> Result<Arc<ChainKeys>, AuditError> {
        self.chain
            .clone()
            .ok_or_else(|| unavailable("the audit log is open read-only"))
    }
}

/// Adds the chain columns to a log created before they existed. Its old
/// records stay unchained: `stint audit verify` reports them at seq 1.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('audit_records')")?;
    let columns: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for (column, kind) in [
        ("chain_version", "INTEGER NOT NULL DEFAULT 1"),
        ("prev_hash", "TEXT"),
        ("record_hash", "TEXT"),
        ("record_mac", "TEXT"),
    ] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE audit_records ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    record_from(row)
}

fn head(conn: &Connection) -> Result<Option<(i64, String)>, AuditError> {
    conn.prepare_cached("SELECT seq, record_hash FROM audit_records ORDER BY seq DESC LIMIT 1")
        .and_then(|mut statement| {
            statement
                .query_row([], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default()))
                })
                .optional()
        })
        .map_err(unavailable)
}

/// The last record, refused when it does not verify under the key.
fn verified_head(conn: &Connection, keys: &ChainKeys) -> Result<(), AuditError> {
    let last = conn
        .prepare_cached("SELECT * FROM audit_records ORDER BY seq DESC LIMIT 1")
        .and_then(|mut statement| statement.query_row([], read_row).optional())
        .map_err(unavailable)?;
    if let Some(last) = last {
        chain::check_head(&last, &keys.key).map_err(|e| {
            tracing::error!(error = %e, "audit store tampered with");
            AuditError::Unavailable(e)
        })?;
    }
    Ok(())
}

fn insert_checkpoint(conn: &Connection, checkpoint: &Checkpoint) -> Result<(), AuditError> {
    conn.execute(
        "INSERT OR IGNORE INTO audit_checkpoints (seq, record_hash, time, signature, kid) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            checkpoint.seq,
            checkpoint.record_hash,
            checkpoint.time,
            checkpoint.signature,
            checkpoint.kid
        ],
    )
    .map_err(unavailable)?;
    Ok(())
}

/// Runs `work` inside `BEGIN IMMEDIATE` ... `COMMIT`, rolling back on error.
fn write_transaction<T>(conn: &Connection, work: impl FnOnce() -> Result<T, AuditError>) -> Result<T, AuditError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(unavailable)?;
    match work() {
        Ok(value) => match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(value),
            Err(e) => {
                // Leave no half-open transaction behind for the next append.
                let _ = conn.execute_batch("ROLLBACK");
                Err(unavailable(e))
            }
        },
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[async_trait::async_trait]
impl AuditSink for SqliteSink {
    async fn append(&self, record: &AuditRecord) -> Result<AuditRecord, AuditError> {
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| unavailable("the audit log is open read-only"))?;
        let (done, answer) = tokio::sync::oneshot::channel();
        writer
            .try_send(Pending {
                record: record.clone(),
                done,
            })
            .map_err(super::queue_refused)?;
        answer.await.map_err(|_| unavailable("the audit writer has stopped"))?
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
                       AND (?7 IS NULL OR time >= ?7) AND (?8 IS NULL OR time < ?8)
                       AND (?9 IS NULL OR seq < ?9)
                     ORDER BY seq DESC LIMIT ?5",
                )
                .map_err(unavailable)?;
            let limit = q.limit.unwrap_or(50);
            let outcome = q.outcome.map(Outcome::as_str);
            let rows = stmt
                .query_map(
                    params![
                        q.grant,
                        q.subject,
                        outcome,
                        q.request_id,
                        limit,
                        q.token_jti_hmac,
                        q.since,
                        q.until,
                        q.before_seq
                    ],
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
            write_transaction(conn, || head(conn).map(|_| ()))
        })
        .await
    }

    async fn chain(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>, AuditError> {
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare("SELECT * FROM audit_records WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(unavailable)?;
            let rows = stmt.query_map(params![after, limit], read_row).map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare("SELECT seq, record_hash, time, signature, kid FROM audit_checkpoints ORDER BY seq")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Checkpoint {
                        seq: r.get(0)?,
                        record_hash: r.get(1)?,
                        time: r.get(2)?,
                        signature: r.get(3)?,
                        kid: r.get(4)?,
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let keys = self.keys()?;
        self.with_conn(move |conn| {
            write_transaction(conn, || {
                verified_head(conn, &keys)?;
                let Some((seq, hash)) = head(conn)? else {
                    return Ok(None);
                };
                let last: Option<i64> = conn
                    .query_row("SELECT MAX(seq) FROM audit_checkpoints", [], |r| r.get(0))
                    .map_err(unavailable)?;
                if last.is_some_and(|last| last >= seq) {
                    return Ok(None);
                }
                let checkpoint = keys.signer.sign(seq, &hash, &now_rfc3339());
                insert_checkpoint(conn, &checkpoint)?;
                Ok(Some(checkpoint))
            })
        })
        .await
    }

    async fn first_use(&self, key: &str, expires_at: i64) -> Result<bool, AuditError> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            write_transaction(conn, || {
                // Forget tokens that can no longer be presented anyway.
                conn.execute("DELETE FROM used_tokens WHERE expires_at < ?1", [crate::clock::now()])
                    .map_err(unavailable)?;
                let inserted = conn
                    .execute(
                        "INSERT OR IGNORE INTO used_tokens (key, expires_at) VALUES (?1, ?2)",
                        params![key, expires_at],
                    )
                    .map_err(unavailable)?;
                Ok(inserted == 1)
            })
        })
        .await
    }
}
