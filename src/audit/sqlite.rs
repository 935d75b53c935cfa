//! Audit records in SQLite: WAL with `synchronous=FULL`, so an `Ok` from
//! [`SqliteSink::append`] means the record survives a power cut. Appends
//! take the write lock (`BEGIN IMMEDIATE`), so the chain stays one line even
//! with several processes on one file. Reads go through
//! [`Readers`](super::sqlite_read::Readers), connections of their own.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::chain::{self, Checkpoint};
use super::columns::{JsonColumns, record_from, unavailable};
use super::job::Job;
use super::sqlite_lookup as lookup;
use super::sqlite_read::{Readers, query_sql};
use super::sqlite_writer::writer_loop;
use super::{AuditError, AuditQuery, AuditRecord, AuditSink, ChainKeys};
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
CREATE INDEX IF NOT EXISTS audit_records_request ON audit_records (request_id);
CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (time);
CREATE INDEX IF NOT EXISTS audit_records_outcome ON audit_records (outcome, seq);
CREATE TABLE IF NOT EXISTS used_tokens (
    key        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS used_tokens_expiry ON used_tokens (expires_at);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq         INTEGER PRIMARY KEY,
    record_hash TEXT NOT NULL,
    time        TEXT NOT NULL,
    signature   TEXT NOT NULL,
    kid         TEXT NOT NULL
);
";

/// Forgets the single-use tokens that can no longer be presented anyway,
/// in each writer transaction that records some. Through
/// `used_tokens_expiry`: without it each one scanned the whole table (5 ms
/// at 100,000 tokens) while the audit writer waited.
pub(super) const FORGET_EXPIRED: &str = "DELETE FROM used_tokens WHERE expires_at < ?1";

/// An audit log in one SQLite file.
pub struct SqliteSink {
    /// The writer's connection: appends, checkpoints, used tokens and the
    /// readiness check. `None` when the log is open read-only.
    conn: Option<Arc<Mutex<Connection>>>,
    /// Queries, chain walks and checkpoint lists.
    readers: Arc<Readers>,
    chain: Option<Arc<ChainKeys>>,
    writer: Option<tokio::sync::mpsc::Sender<Job>>,
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
        // Room for every statement the writer keeps (six INSERT sizes among
        // them) with no eviction between groups.
        conn.set_prepared_statement_cache_capacity(32);
        create_schema(&conn).map_err(|e| config(&e))?;
        build_missing_lookups(&conn)?;
        let readers = Readers::open(path)?;
        let conn = Arc::new(Mutex::new(conn));
        let keys = Arc::new(chain);
        let (writer, queue) = tokio::sync::mpsc::channel(super::MAX_QUEUED);
        let (writer_conn, writer_keys) = (conn.clone(), keys.clone());
        std::thread::Builder::new()
            .name("stint-audit-writer".into())
            .spawn(move || writer_loop(writer_conn, writer_keys, group_commit, queue))
            .map_err(|e| config(&e))?;
        Ok(SqliteSink {
            conn: Some(conn),
            readers,
            chain: Some(keys),
            writer: Some(writer),
        })
    }

    /// Opens an existing log read-only (for `stint audit query/verify`): a
    /// mistyped path is an error, not a new empty log.
    pub fn open_existing(path: &Path) -> Result<SqliteSink, AuditError> {
        Ok(SqliteSink {
            conn: None,
            readers: Readers::open(path)?,
            chain: None,
            writer: None,
        })
    }

    /// Runs `work` on the writer's connection (not for reads: they would
    /// hold the writer).
    async fn with_conn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, AuditError> {
        let conn = self
            .conn
            .clone()
            .ok_or_else(|| unavailable("the audit log is open read-only"))?;
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().map_err(|_| unavailable("audit connection poisoned"))?;
            work(&guard)
        })
        .await
        .map_err(unavailable)?
    }

    /// Queues a job for the writer thread and waits for its answer, which
    /// comes once the job's transaction is committed (or failed).
    async fn ask_writer<T>(
        &self,
        job: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, AuditError>>) -> Job,
    ) -> Result<T, AuditError> {
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| unavailable("the audit log is open read-only"))?;
        let (done, answer) = tokio::sync::oneshot::channel();
        writer.try_send(job(done)).map_err(super::queue_refused)?;
        answer.await.map_err(|_| unavailable("the audit writer has stopped"))?
    }

    fn keys(&self) -> Result<Arc<ChainKeys>, AuditError> {
        self.chain
            .clone()
            .ok_or_else(|| unavailable("the audit log is open read-only"))
    }
}

/// Creates the tables and indexes a log lacks. A log from an earlier
/// version gets the newer indexes here (`IF NOT EXISTS`), built once at the
/// first start: a few seconds for a million records.
pub(super) fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(lookup::SCHEMA)?;
    migrate(conn)
}

/// Builds the lookup rows of every complete block that lacks them, one
/// block per transaction: the whole log, once, on a log from before the
/// lookup (500,000 records took 1.0 s); a block or two after an older
/// broker wrote to the file.
fn build_missing_lookups(conn: &Connection) -> Result<(), AuditError> {
    let missing = lookup::missing(conn).map_err(unavailable)?;
    let total = missing.len();
    let started = std::time::Instant::now();
    if total > 1 {
        tracing::info!(
            blocks = total,
            "building the audit log's lookup before serving (once, after an upgrade; progress is kept across restarts)"
        );
    }
    let mut reported = started;
    for (done, block) in missing.into_iter().enumerate() {
        write_transaction(conn, || lookup::build(conn, block).map_err(unavailable))?;
        // A large log takes a while: say how far it got, every 10 s.
        if reported.elapsed().as_secs() >= 10 {
            reported = std::time::Instant::now();
            tracing::info!(built = done + 1, blocks = total, "building the audit log's lookup");
        }
    }
    if total > 1 {
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(blocks = total, seconds, "built the audit log's lookup");
    }
    Ok(())
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

pub(super) fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    record_from(row)
}

/// The last record's seq and hash, refused when it does not verify under
/// the key; `None` for an empty log.
pub(super) fn verified_head(conn: &Connection, keys: &ChainKeys) -> Result<Option<(i64, String)>, AuditError> {
    let last = conn
        .prepare_cached("SELECT * FROM audit_records ORDER BY seq DESC LIMIT 1")
        .and_then(|mut statement| statement.query_row([], read_row).optional())
        .map_err(unavailable)?;
    let Some(last) = last else {
        return Ok(None);
    };
    let verdict = if last.record_hash.is_none() && chained(conn)? {
        // Only a log written before the chain existed has heads without a
        // hash. Once it is chained, a head without one was edited by
        // someone who could not compute it: otherwise nulling the hash
        // would let any edit of the last record pass.
        Err(format!(
            "the audit chain head (seq {}) has no record_hash in a chained log: the store was changed \
             without the audit key; nothing is appended until `stint audit verify` is clean",
            last.seq.unwrap_or(0)
        ))
    } else {
        chain::check_head(&last, &keys.key)
    };
    verdict.map_err(|e| {
        tracing::error!(error = %e, "audit store tampered with");
        AuditError::Tampered(e)
    })?;
    Ok(Some((last.seq.unwrap_or(0), last.record_hash.unwrap_or_default())))
}

/// Whether any record was written with the chain (or any checkpoint
/// signed). Called only when the head has no hash: on a log from before
/// the chain, it walks the log once; the next append chains the head.
fn chained(conn: &Connection) -> Result<bool, AuditError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM audit_checkpoints)
             OR EXISTS (SELECT 1 FROM audit_records WHERE record_hash IS NOT NULL)",
        [],
        |r| r.get(0),
    )
    .map_err(unavailable)
}

pub(super) fn insert_checkpoint(conn: &Connection, checkpoint: &Checkpoint) -> Result<(), AuditError> {
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
pub(super) fn write_transaction<T>(
    conn: &Connection,
    work: impl FnOnce() -> Result<T, AuditError>,
) -> Result<T, AuditError> {
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
    async fn append(&self, record: AuditRecord) -> Result<AuditRecord, AuditError> {
        let json = JsonColumns::of(&record);
        self.ask_writer(|done| Job::Append { record, json, done }).await
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let query = query.clone();
        self.readers
            .run(move |conn| match lookup::lookup_filter(&query) {
                Some((field, value)) => lookup::query(conn, &query, field, value),
                None => {
                    let (sql, values) = query_sql(&query);
                    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
                    let rows = stmt
                        .query_map(rusqlite::params_from_iter(values.iter()), read_row)
                        .map_err(unavailable)?;
                    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
                }
            })
            .await
    }

    async fn summary(&self, query: &super::SummaryQuery) -> Result<super::Summary, AuditError> {
        let [series, grants, reasons, subjects] = super::summary::statements(query.bucket, "?1", "?2", query.top, "+");
        let range = [query.since.clone(), query.until.clone()];
        self.readers
            .run(move |conn| {
                // One read transaction: the four counts see the same log.
                conn.execute_batch("BEGIN").map_err(unavailable)?;
                let result = (|| {
                    let outcome = |text: String| super::Outcome::parse(&text).unwrap_or(super::Outcome::Error);
                    let count = |n: i64| u64::try_from(n).unwrap_or(0);
                    let mut out = super::Summary::default();
                    let mut stmt = conn.prepare(&series).map_err(unavailable)?;
                    let rows = stmt
                        .query_map(rusqlite::params_from_iter(range.iter()), |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                        })
                        .map_err(unavailable)?;
                    for row in rows {
                        let (bucket, o, n) = row.map_err(unavailable)?;
                        out.series.push((bucket, outcome(o), count(n)));
                    }
                    let mut stmt = conn.prepare(&grants).map_err(unavailable)?;
                    let rows = stmt
                        .query_map(rusqlite::params_from_iter(range.iter()), |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                        })
                        .map_err(unavailable)?;
                    for row in rows {
                        let (grant, o, n) = row.map_err(unavailable)?;
                        out.by_grant.push((grant, outcome(o), count(n)));
                    }
                    for (sql, into) in [(&reasons, &mut out.denial_reasons), (&subjects, &mut out.subjects)] {
                        let mut stmt = conn.prepare(sql).map_err(unavailable)?;
                        let rows = stmt
                            .query_map(rusqlite::params_from_iter(range.iter()), |r| {
                                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                            })
                            .map_err(unavailable)?;
                        for row in rows {
                            let (name, n) = row.map_err(unavailable)?;
                            into.push((name, count(n)));
                        }
                    }
                    Ok(out)
                })();
                let _ = conn.execute_batch("COMMIT");
                result
            })
            .await
    }

    async fn check(&self) -> Result<(), AuditError> {
        let keys = self.keys()?;
        self.with_conn(move |conn| {
            // Take the write lock and give it back: a read-only or locked
            // file fails here, before a caller's credential would; and a
            // tampered head is found before a caller's request finds it.
            write_transaction(conn, || verified_head(conn, &keys).map(drop))
        })
        .await
    }

    async fn chain(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>, AuditError> {
        self.readers
            .run(move |conn| {
                let mut stmt = conn
                    .prepare("SELECT * FROM audit_records WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                    .map_err(unavailable)?;
                let rows = stmt.query_map(params![after, limit], read_row).map_err(unavailable)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
            })
            .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        self.checkpoints_between(i64::MIN, i64::MAX).await
    }

    async fn checkpoints_between(&self, after: i64, upto: i64) -> Result<Vec<Checkpoint>, AuditError> {
        self.readers
            .run(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT seq, record_hash, time, signature, kid FROM audit_checkpoints
                         WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
                    )
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![after, upto], |r| {
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
                let Some((seq, hash)) = verified_head(conn, &keys)? else {
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
        self.ask_writer(|done| Job::FirstUse { key, expires_at, done }).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a failed step is the test's report
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::{AuditKey, CheckpointSigner, Outcome};

    fn keys() -> ChainKeys {
        let key = AuditKey::from_bytes(&[7; 32]);
        ChainKeys {
            signer: CheckpointSigner::from_audit_key(&key).unwrap(),
            key,
            checkpoint_every: 2,
            group_commit: true,
            store_timeout: Duration::from_secs(10),
        }
    }

    fn record(n: usize) -> AuditRecord {
        AuditRecord {
            seq: None,
            time: format!("2026-11-28T10:00:{:02}Z", n % 60),
            request_id: format!("req-{n}"),
            outcome: Outcome::Issued,
            reason: None,
            grant: Some("deploy".into()),
            kind: Some("token".into()),
            issuer: Some("ci".into()),
            subject: Some("repo:acme/api".into()),
            claims: serde_json::Map::new(),
            token_jti_hmac: None,
            issuance_id: None,
            ttl_seconds: Some(300),
            expires_at: None,
            client_addr: None,
            detail: serde_json::Map::new(),
            prev_hash: None,
            record_hash: None,
            record_mac: None,
        }
    }

    /// An auditor's query that is still reading (here: a read transaction
    /// held open on the reader's connection, as a long scan would) does
    /// not hold the writer: appends, checkpoints, the readiness check and
    /// other queries all finish meanwhile. The bound only catches a hang.
    /// The append that completes a block writes the block's lookup, and a
    /// broker that starts on a log with complete blocks and no lookup (a
    /// log from an earlier version) builds it before its first append.
    #[tokio::test]
    async fn appends_build_the_lookup_and_a_restart_builds_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let sink = SqliteSink::open(&path, keys(), true).unwrap();
        let total = usize::try_from(2 * lookup::BLOCK + 3).unwrap();
        for n in 0..total {
            let mut r = record(n);
            r.subject = Some(format!("repo:acme/{}", n % 5));
            sink.append(r.clone()).await.unwrap();
        }
        let blocks = |path: &Path| {
            let conn = Connection::open(path).unwrap();
            let mut statement = conn
                .prepare("SELECT block FROM audit_lookup_blocks ORDER BY block")
                .unwrap();
            statement
                .query_map([], |r| r.get::<_, i64>(0))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        };
        assert_eq!(blocks(&path), [0, 1], "blocks 0 and 1 are complete, block 2 is not");
        let subject_4 = AuditQuery {
            subject: Some("repo:acme/4".into()),
            limit: Some(1000),
            ..Default::default()
        };
        let want: Vec<i64> = (1..=i64::try_from(total).unwrap())
            .rev()
            .filter(|seq| (seq - 1) % 5 == 4)
            .collect();
        assert_eq!(seqs(&sink, &subject_4).await, want);
        drop(sink);
        // Forget the lookup, as a log from before it has none.
        Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE audit_lookup; DROP TABLE audit_lookup_blocks;")
            .unwrap();
        let sink = SqliteSink::open(&path, keys(), true).unwrap();
        assert_eq!(blocks(&path), [0, 1]);
        assert_eq!(seqs(&sink, &subject_4).await, want);
    }

    /// Forgetting expired single-use tokens seeks the expiry index on a
    /// log with the broker's schema, a new one or one from before the
    /// index: it never scans the table.
    #[test]
    fn forgetting_expired_tokens_seeks_the_expiry_index() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE used_tokens (key TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);")
            .unwrap();
        create_schema(&conn).unwrap();
        let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {FORGET_EXPIRED}")).unwrap();
        let plan: Vec<String> = explain
            .query_map([0], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("INDEX used_tokens_expiry (expires_at<?)")),
            "{plan:?}"
        );
    }

    async fn seqs(sink: &SqliteSink, query: &AuditQuery) -> Vec<i64> {
        let records = sink.query(query).await.unwrap();
        records.iter().map(|r| r.seq.unwrap()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_read_does_not_hold_appends() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(SqliteSink::open(&dir.path().join("audit.db"), keys(), true).unwrap());
        sink.append(record(0)).await.unwrap();
        let (started, reading) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let reader = {
            let sink = sink.clone();
            tokio::spawn(async move {
                sink.readers
                    .run(move |conn| {
                        conn.execute_batch("BEGIN").map_err(unavailable)?;
                        let seen: i64 = conn
                            .query_row("SELECT count(*) FROM audit_records", [], |r| r.get(0))
                            .map_err(unavailable)?;
                        let _ = started.send(());
                        let _ = released.recv();
                        conn.execute_batch("COMMIT").map_err(unavailable)?;
                        Ok(seen)
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || reading.recv())
            .await
            .unwrap()
            .unwrap();
        let hang = Duration::from_secs(20);
        for n in 1..4 {
            let stored = tokio::time::timeout(hang, sink.append(record(n)))
                .await
                .expect("an append waited for the reader")
                .unwrap();
            assert_eq!(stored.seq, Some(i64::try_from(n).unwrap() + 1));
        }
        tokio::time::timeout(hang, sink.check())
            .await
            .expect("/readyz waited")
            .unwrap();
        let others = tokio::time::timeout(hang, sink.query(&AuditQuery::default()))
            .await
            .expect("a second query waited")
            .unwrap();
        assert_eq!(others.len(), 4, "a second reader sees the new records");
        release.send(()).unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), 1, "the held reader kept its snapshot");
    }

    /// Once the log is chained, a head whose `record_hash` was set to NULL
    /// is an edit: nothing is appended or signed, and the check says so.
    #[tokio::test]
    async fn a_chained_head_without_a_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let sink = SqliteSink::open(&path, keys(), true).unwrap();
        for n in 0..3 {
            sink.append(record(n)).await.unwrap();
        }
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "UPDATE audit_records SET subject = 'repo:evil/x', record_hash = NULL, record_mac = NULL
                 WHERE seq = 3; DELETE FROM audit_checkpoints",
            )
            .unwrap();
        let err = sink.append(record(3)).await.unwrap_err();
        assert!(
            matches!(&err, AuditError::Tampered(e) if e.contains("(seq 3) has no record_hash")),
            "{err}"
        );
        assert!(matches!(sink.check().await, Err(AuditError::Tampered(_))));
        assert!(sink.checkpoint().await.is_err(), "and never signs it");
        assert_eq!(sink.query(&AuditQuery::default()).await.unwrap().len(), 3);
    }

    /// The writer links a batch to the head it committed itself without
    /// reading it back, but only while no other connection has written:
    /// two sinks on one file (two brokers) taking turns make one chain.
    #[tokio::test]
    async fn two_writers_on_one_file_take_turns_in_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (a, b) = (
            SqliteSink::open(&path, keys(), true).unwrap(),
            SqliteSink::open(&path, keys(), true).unwrap(),
        );
        let mut seqs = Vec::new();
        for n in 0..6 {
            let sink = if n % 3 == 0 { &b } else { &a };
            seqs.push(sink.append(record(n)).await.unwrap().seq.unwrap());
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        let records = a.chain(0, 100).await.unwrap();
        for pair in records.windows(2) {
            assert_eq!(
                pair[1].prev_hash, pair[0].record_hash,
                "seq {:?} follows its predecessor",
                pair[1].seq
            );
            chain::check_head(&pair[1], &keys().key).unwrap();
        }
    }

    /// A log written before the chain existed has heads without a hash,
    /// and is extended: its first chained record follows them.
    #[tokio::test]
    async fn a_log_from_before_the_chain_is_still_extended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let old = Connection::open(&path).unwrap();
        create_schema(&old).unwrap();
        old.execute_batch(
            "INSERT INTO audit_records (seq, time, request_id, outcome, claims, detail)
             VALUES (1, '2026-01-01T00:00:00Z', 'old', 'issued', '{}', '{}')",
        )
        .unwrap();
        let sink = SqliteSink::open(&path, keys(), true).unwrap();
        sink.check().await.unwrap();
        assert_eq!(sink.append(record(1)).await.unwrap().seq, Some(2));
    }
}
