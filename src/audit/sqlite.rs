//! Audit records in SQLite. An append is written to the store's journal
//! ([`super::journal`]) and synced before [`SqliteSink::append`] returns,
//! so an `Ok` means the record survives a power cut; an indexer thread then
//! moves records into the tables (WAL, `synchronous=FULL`) where queries
//! read them. Journal writers take a lock per group and the indexer takes
//! SQLite's write lock (`BEGIN IMMEDIATE`), so the chain stays one line even
//! with several processes on one file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use super::chain::{self, Checkpoint};
use super::columns::{json_text, now_rfc3339, record_from, unavailable};
use super::journal::{self, Cursor, Head, Journal};
use super::{AuditError, AuditQuery, AuditRecord, AuditSink, ChainKeys, Outcome};

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

/// An audit log in one SQLite file, written through its journal
/// ([`super::journal`]): an append is durable once the journal is synced,
/// and reaches the tables behind the answer.
pub struct SqliteSink {
    db: Arc<Mutex<Db>>,
    journal: PathBuf,
    /// What a writing sink has (a read-only one has none).
    writing: Option<Arc<Writing>>,
    writer: Option<tokio::sync::mpsc::Sender<Pending>>,
}

/// A writing sink's keys and the state its writer and indexer share.
struct Writing {
    keys: Arc<ChainKeys>,
    state: Arc<IndexState>,
}

/// The tables' connection, and where indexing the journal stopped.
struct Db {
    conn: Connection,
    cursor: Option<Cursor>,
}

/// A record waiting for the writer, and who to tell when it is durable.
struct Pending {
    record: AuditRecord,
    done: tokio::sync::oneshot::Sender<Result<AuditRecord, AuditError>>,
}

/// Most records one journal write may carry.
const MAX_GROUP: usize = 256;
/// The indexer waits this long after a step before the next, so that
/// under load each SQLite transaction carries many records.
const INDEX_PACE: Duration = Duration::from_millis(50);
/// A failed indexing step is tried again after this long.
const INDEX_RETRY: Duration = Duration::from_secs(1);
/// How long the indexer waits for SQLite's write lock before it gives the
/// connection back (to `/readyz`, reads) and tries again later.
const INDEXER_WAIT: Duration = Duration::from_millis(100);
/// How long anything else waits for SQLite's write lock.
const BUSY_WAIT: Duration = Duration::from_secs(5);
/// Records the tables may lag behind the journal before appends are
/// refused: the journal must not grow without bound when SQLite is stuck.
const MAX_LAG: i64 = 1_000_000;

/// What the indexer tells the writer.
#[derive(Default)]
struct IndexState {
    /// A chain that does not verify (tampering, a damaged journal, missing
    /// records): nothing is appended while it is set.
    refused: Mutex<Option<String>>,
    /// Last seq known to be in the tables.
    indexed: AtomicI64,
    /// Last seq this process's writer appended to the journal.
    appended: AtomicI64,
    /// Groups this process's writer made durable, for the indexer: records
    /// it linked itself need not be read back from the journal and checked.
    written: Mutex<Vec<Written>>,
}

/// One group as the writer appended it.
struct Written {
    records: Vec<AuditRecord>,
    /// The journal just after the group.
    end: Cursor,
}

/// Groups handed over beyond this many records are dropped: the indexer
/// reads them from the journal instead (it is stuck, or far behind).
const MAX_WRITTEN: usize = 65_536;

impl IndexState {
    fn hand_over(&self, records: &[AuditRecord], end: Cursor) {
        if let Ok(mut written) = self.written.lock() {
            if written.iter().map(|w| w.records.len()).sum::<usize>() + records.len() > MAX_WRITTEN {
                written.clear();
            }
            written.push(Written {
                records: records.to_vec(),
                end,
            });
        }
    }

    fn take_written(&self) -> Vec<Written> {
        self.written
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }
}

/// The single writer. With group commit, every record that queued while
/// the previous group was being synced goes into the next write, so
/// concurrent requests share one `fdatasync` instead of waiting in line
/// for their own; each caller still hears back only after its record is
/// durable.
fn writer_loop(
    mut journal: Journal,
    tables: Connection,
    keys: Arc<ChainKeys>,
    group: bool,
    state: Arc<IndexState>,
    wake_indexer: std::sync::mpsc::SyncSender<()>,
    mut queue: tokio::sync::mpsc::Receiver<Pending>,
) {
    let mut records = Vec::with_capacity(MAX_GROUP);
    let mut waiting = Vec::with_capacity(MAX_GROUP);
    let mut tables_check = TablesCheck::default();
    while let Some(first) = queue.blocking_recv() {
        records.push(first.record);
        waiting.push(first.done);
        while group && records.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => {
                    records.push(next.record);
                    waiting.push(next.done);
                }
                Err(_) => break,
            }
        }
        let result = refusal(&state, journal.head_seq())
            // The tables' last record is checked before a group whenever
            // they changed, as the store's head was before the journal: an
            // edit without the key stops the broker at once.
            .and_then(|()| tables_check.check(&tables, &keys))
            .and_then(|()| journal.append(&mut records, &keys.key));
        if result.is_ok() {
            state.hand_over(&records, journal.position());
            state.appended.store(journal.head_seq(), Ordering::Release);
        }
        let _ = wake_indexer.try_send(());
        for (record, done) in records.drain(..).zip(waiting.drain(..)) {
            let _ = done.send(result.clone().map(|()| record));
        }
    }
}

/// Checks the tables' last record when they changed since the last check
/// (`PRAGMA data_version` moves with every commit of another connection:
/// the indexer's, or someone editing the file).
#[derive(Default)]
struct TablesCheck {
    checked: Option<i64>,
}

impl TablesCheck {
    fn check(&mut self, tables: &Connection, keys: &ChainKeys) -> Result<(), AuditError> {
        let version: i64 = tables
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut statement| statement.query_row([], |r| r.get(0)))
            .map_err(unavailable)?;
        if self.checked != Some(version) {
            self.checked = None;
            verified_head(tables, keys)?;
            self.checked = Some(version);
        }
        Ok(())
    }
}

/// Why appends are refused now, if they are.
fn refusal(state: &IndexState, head: i64) -> Result<(), AuditError> {
    if let Some(why) = state.refused.lock().ok().and_then(|r| r.clone()) {
        return Err(AuditError::Unavailable(why));
    }
    let lag = head - state.indexed.load(Ordering::Acquire);
    if lag > MAX_LAG {
        return Err(unavailable(format!(
            "the audit tables are {lag} records behind the journal; is the SQLite file locked?"
        )));
    }
    Ok(())
}

/// Moves the journal's new records into the tables, in one transaction
/// per step, paced so that a busy broker writes many per transaction. A
/// step that failed (a locked file, a full disk) is tried again every
/// [`INDEX_RETRY`] even when no append comes to wake it.
fn indexer_loop(
    db: Arc<Mutex<Db>>,
    journal: PathBuf,
    keys: Arc<ChainKeys>,
    state: Arc<IndexState>,
    wake: std::sync::mpsc::Receiver<()>,
) {
    let mut behind = false;
    loop {
        let woken = wake.recv_timeout(INDEX_RETRY);
        match woken {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !behind => continue,
            _ => {}
        }
        let started = Instant::now();
        let step = match db.lock() {
            Ok(mut db) => index_journal(&mut db, &journal, &keys, &state, INDEXER_WAIT),
            Err(_) => Err(Indexing::Store(unavailable("audit connection poisoned"))),
        };
        match step {
            Ok(indexed) => {
                state.indexed.store(indexed, Ordering::Release);
                if let Ok(mut refused) = state.refused.lock() {
                    *refused = None;
                }
                if behind {
                    tracing::info!(seq = indexed, "audit tables caught up with the journal");
                }
                behind = false;
            }
            Err(Indexing::Chain(e)) => {
                if let Ok(mut refused) = state.refused.lock() {
                    *refused = Some(e.to_string());
                }
                behind = true;
            }
            Err(Indexing::Store(e)) => {
                // The journal holds the records; the tables wait.
                if !behind {
                    tracing::warn!(error = %e, "audit records wait in the journal until the tables can be written");
                }
                behind = true;
            }
        }
        if matches!(woken, Err(std::sync::mpsc::RecvTimeoutError::Disconnected)) {
            return; // the writer is gone and its last records are indexed
        }
        if let Err(e) = journal::prepare_spare(&journal) {
            tracing::warn!(error = %e, "could not make a spare audit journal segment ready");
        }
        std::thread::sleep(INDEX_PACE.saturating_sub(started.elapsed()));
    }
}

/// Why an indexing step failed.
enum Indexing {
    /// The journal does not continue the tables' chain: appends stop.
    Chain(AuditError),
    /// The tables could not be written now (a lock, a full disk).
    Store(AuditError),
}

impl From<Indexing> for AuditError {
    fn from(e: Indexing) -> AuditError {
        match e {
            Indexing::Chain(e) | Indexing::Store(e) => e,
        }
    }
}

/// Inserts the journal's records after the tables' head into the tables,
/// checking each link, and deletes the journal segments that are then
/// wholly in the tables. Returns the tables' new last seq.
fn index_journal(
    db: &mut Db,
    journal: &Path,
    keys: &ChainKeys,
    state: &IndexState,
    wait: Duration,
) -> Result<i64, Indexing> {
    let conn = &db.conn;
    let mut chain_error = None;
    let written = state.take_written();
    let _ = conn.busy_timeout(wait);
    let indexed = write_transaction(conn, || {
        let mut head = verified_head(conn, keys)?;
        let every = i64::try_from(keys.checkpoint_every.max(1)).unwrap_or(i64::MAX);
        let insert = |record: &AuditRecord, head: &Head| -> Result<(), AuditError> {
            insert_record(conn, record)?;
            if head.seq % every == 0 {
                insert_checkpoint(conn, &keys.signer.sign(head.seq, &head.hash, &now_rfc3339()))?;
            }
            Ok(())
        };
        // This process's own groups, while they continue the tables' head:
        // its writer linked them, so only the links are compared.
        let mut cursor = db.cursor.clone();
        'groups: for group in &written {
            for record in &group.records {
                if record.seq.unwrap_or(0) <= head.seq {
                    continue; // in the tables already (another indexer)
                }
                if record.seq != Some(head.seq + 1) || record.prev_hash.as_deref() != Some(head.hash.as_str()) {
                    break 'groups; // another writer's records come first: read the journal
                }
                let next = Head {
                    seq: head.seq + 1,
                    hash: record.record_hash.clone().unwrap_or_default(),
                };
                insert(record, &next)?;
                head = next;
            }
            cursor = Some(group.end.clone());
        }
        // Anything else (other brokers' records, a crash's leftovers) from
        // the journal, each link and MAC checked.
        let (records, cursor) = journal::records_after(journal, head.seq, cursor.as_ref()).inspect_err(|e| {
            chain_error = Some(AuditError::Unavailable(format!(
                "{e}; restore the journal folder {} with the database it belongs to",
                journal.display()
            )))
        })?;
        for record in &records {
            head = head
                .check_next(record, &keys.key)
                .inspect_err(|e| chain_error = Some(e.clone()))?;
            insert(record, &head)?;
        }
        Ok((head.seq, cursor))
    });
    let _ = conn.busy_timeout(BUSY_WAIT);
    match indexed {
        Ok((seq, cursor)) => {
            if let Some(cursor) = &cursor {
                journal::remove_before(journal, cursor);
            }
            db.cursor = cursor;
            Ok(seq)
        }
        Err(e) => {
            db.cursor = None;
            Err(match chain_error {
                Some(chain) => Indexing::Chain(chain),
                None => Indexing::Store(e),
            })
        }
    }
}

/// Moves the journal's records into the tables when this sink writes;
/// `true` if the tables now hold every record. A chain that does not
/// verify is an error; a locked file only means "not now".
fn catch_up(db: &mut Db, journal: &Path, writing: Option<&Writing>) -> Result<bool, AuditError> {
    let Some(Writing { keys, state }) = writing else {
        return Ok(false);
    };
    match index_journal(db, journal, keys, state, INDEXER_WAIT) {
        Ok(indexed) => {
            state.indexed.store(indexed, Ordering::Release);
            Ok(true)
        }
        Err(Indexing::Chain(e)) => Err(e),
        Err(Indexing::Store(_)) => Ok(false),
    }
}

fn insert_record(conn: &Connection, r: &AuditRecord) -> Result<(), AuditError> {
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
    .map(|_| ())
    .map_err(unavailable)
}

fn open_tables(path: &Path, config: impl Fn(&dyn std::fmt::Display) -> AuditError) -> Result<Connection, AuditError> {
    let conn = Connection::open(path).map_err(|e| config(&e))?;
    conn.busy_timeout(BUSY_WAIT).map_err(unavailable)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
    Ok(conn)
}

impl SqliteSink {
    /// Opens (and creates) the log at `path` for appending. Records the
    /// journal holds from before (a crash, another broker) are moved into
    /// the tables first.
    pub fn open(path: &Path, chain: ChainKeys, group_commit: bool) -> Result<SqliteSink, AuditError> {
        let config = |e: &dyn std::fmt::Display| AuditError::Config(format!("audit store {}: {e}", path.display()));
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| config(&e))?;
        }
        let conn = open_tables(path, config)?;
        conn.execute_batch(SCHEMA).map_err(|e| config(&e))?;
        migrate(&conn).map_err(|e| config(&e))?;
        let tables = open_tables(path, config)?;
        let keys = Arc::new(chain);
        let journal_dir = journal::dir_for(path);
        let journal = Journal::open(&journal_dir, &keys.key, || verified_head(&conn, &keys))?;
        let mut db = Db { conn, cursor: None };
        let state = Arc::new(IndexState::default());
        match index_journal(&mut db, &journal_dir, &keys, &state, BUSY_WAIT) {
            Ok(indexed) => state.indexed.store(indexed, Ordering::Release),
            Err(e) => return Err(e.into()),
        }
        let db = Arc::new(Mutex::new(db));
        let (writer, queue) = tokio::sync::mpsc::channel(super::MAX_QUEUED);
        let (wake_indexer, woken) = std::sync::mpsc::sync_channel(1);
        let (writer_keys, writer_state) = (keys.clone(), state.clone());
        std::thread::Builder::new()
            .name("stint-audit-writer".into())
            .spawn(move || {
                writer_loop(
                    journal,
                    tables,
                    writer_keys,
                    group_commit,
                    writer_state,
                    wake_indexer,
                    queue,
                )
            })
            .map_err(|e| config(&e))?;
        let (indexer_db, indexer_dir) = (db.clone(), journal_dir.clone());
        let (indexer_keys, indexer_state) = (keys.clone(), state.clone());
        std::thread::Builder::new()
            .name("stint-audit-indexer".into())
            .spawn(move || indexer_loop(indexer_db, indexer_dir, indexer_keys, indexer_state, woken))
            .map_err(|e| config(&e))?;
        Ok(SqliteSink {
            db,
            journal: journal_dir,
            writing: Some(Arc::new(Writing { keys, state })),
            writer: Some(writer),
        })
    }

    /// Opens an existing log read-only (for `stint audit query/verify`): a
    /// mistyped path is an error, not a new empty log. Reads see the
    /// journal's records too, even those not yet in the tables.
    pub fn open_existing(path: &Path) -> Result<SqliteSink, AuditError> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| AuditError::Config(format!("audit store {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        Ok(SqliteSink {
            db: Arc::new(Mutex::new(Db { conn, cursor: None })),
            journal: journal::dir_for(path),
            writing: None,
            writer: None,
        })
    }

    /// Runs `work` on the tables as they are.
    async fn with_tables<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, AuditError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let guard = db.lock().map_err(|_| unavailable("audit connection poisoned"))?;
            work(&guard.conn)
        })
        .await
        .map_err(unavailable)?
    }

    /// Runs `work` on the tables once they hold every record acknowledged
    /// so far: a writing sink moves the journal's records in first (unless
    /// someone else holds SQLite's write lock: then as they are).
    async fn with_indexed<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, AuditError> {
        let (db, journal, writing) = (self.db.clone(), self.journal.clone(), self.writing.clone());
        tokio::task::spawn_blocking(move || {
            let mut guard = db.lock().map_err(|_| unavailable("audit connection poisoned"))?;
            catch_up(&mut guard, &journal, writing.as_deref())?;
            work(&guard.conn)
        })
        .await
        .map_err(unavailable)?
    }

    /// Records read by `select` from the tables, and the journal's records
    /// after the tables' head. A writing sink moves those into the tables
    /// first; a read-only one cannot, nor can a writing one while someone
    /// else holds SQLite's write lock: then the journal is read too, so a
    /// broker's newest records, or those a crashed broker left there, are
    /// seen.
    async fn read_records(
        &self,
        select: impl Fn(&Connection) -> Result<Vec<AuditRecord>, AuditError> + Send + 'static,
    ) -> Result<(Vec<AuditRecord>, Vec<AuditRecord>), AuditError> {
        let (db, journal, writing) = (self.db.clone(), self.journal.clone(), self.writing.clone());
        tokio::task::spawn_blocking(move || {
            let mut guard = db.lock().map_err(|_| unavailable("audit connection poisoned"))?;
            if catch_up(&mut guard, &journal, writing.as_deref())? {
                return Ok((select(&guard.conn)?, Vec::new()));
            }
            let Db { conn, cursor } = &mut *guard;
            let mut attempts = 0;
            loop {
                // One snapshot for the head and the rows; the journal is
                // read after it, so the only records it can miss were
                // indexed past that head meanwhile: then read again.
                conn.execute_batch("BEGIN").map_err(unavailable)?;
                let read = head(conn).and_then(|top| Ok((top.map_or(0, |(seq, _)| seq), select(conn)?)));
                let _ = conn.execute_batch("COMMIT");
                let (top, rows) = read?;
                // The cursor saves reading the journal again from its start
                // while the tables' head stays where it was.
                match journal::records_after(&journal, top, cursor.as_ref()) {
                    Ok((tail, next)) => {
                        *cursor = next;
                        return Ok((rows, tail));
                    }
                    Err(_) if attempts < 3 => attempts += 1,
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .map_err(unavailable)?
    }

    fn keys(&self) -> Result<Arc<ChainKeys>, AuditError> {
        self.writing
            .as_ref()
            .map(|w| w.keys.clone())
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

/// The tables' last record, refused when it does not verify under the key.
fn verified_head(conn: &Connection, keys: &ChainKeys) -> Result<Head, AuditError> {
    let last = conn
        .prepare_cached("SELECT * FROM audit_records ORDER BY seq DESC LIMIT 1")
        .and_then(|mut statement| statement.query_row([], read_row).optional())
        .map_err(unavailable)?;
    let Some(last) = last else {
        return Ok(Head::empty());
    };
    chain::check_head(&last, &keys.key).map_err(|e| {
        tracing::error!(error = %e, "audit store tampered with");
        AuditError::Unavailable(e)
    })?;
    Ok(Head {
        seq: last.seq.unwrap_or(0),
        hash: last.record_hash.unwrap_or_default(),
    })
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

/// The rows `query` asks for, newest first.
fn select_query(conn: &Connection, q: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
    let mut stmt = conn
        .prepare_cached(
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
}

/// `select_query`'s filter, for records read from the journal.
fn matches(q: &AuditQuery, r: &AuditRecord) -> bool {
    let same = |wanted: &Option<String>, have: Option<&str>| wanted.as_deref().is_none_or(|w| have == Some(w));
    same(&q.grant, r.grant.as_deref())
        && same(&q.subject, r.subject.as_deref())
        && q.outcome.is_none_or(|o| o == r.outcome)
        && same(&q.request_id, Some(r.request_id.as_str()))
        && same(&q.token_jti_hmac, r.token_jti_hmac.as_deref())
        && q.since.as_deref().is_none_or(|since| r.time.as_str() >= since)
        && q.until.as_deref().is_none_or(|until| r.time.as_str() < until)
        && q.before_seq.is_none_or(|before| r.seq.unwrap_or(0) < before)
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
        let limit = usize::try_from(q.limit.unwrap_or(50)).unwrap_or(usize::MAX);
        let select = q.clone();
        let (rows, tail) = self.read_records(move |conn| select_query(conn, &select)).await?;
        // The journal's records are newer than every row.
        let mut found: Vec<AuditRecord> = tail.into_iter().rev().filter(|r| matches(&q, r)).take(limit).collect();
        found.extend(rows);
        found.truncate(limit);
        Ok(found)
    }

    async fn check(&self) -> Result<(), AuditError> {
        // Appends need the journal's lock and readable tables (each group
        // checks their head); a SQLite write lock held by someone else only
        // delays indexing.
        journal::check(&self.journal)?;
        self.with_tables(|conn| head(conn).map(|_| ())).await
    }

    async fn chain(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>, AuditError> {
        let (mut rows, tail) = self
            .read_records(move |conn| {
                let mut stmt = conn
                    .prepare("SELECT * FROM audit_records WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                    .map_err(unavailable)?;
                let rows = stmt.query_map(params![after, limit], read_row).map_err(unavailable)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
            })
            .await?;
        rows.extend(tail.into_iter().filter(|r| r.seq.unwrap_or(0) > after));
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(rows)
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        self.with_indexed(|conn| {
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
        self.with_indexed(move |conn| {
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

    fn journal_backlog(&self) -> u64 {
        self.writing.as_ref().map_or(0, |w| {
            let lag = w.state.appended.load(Ordering::Acquire) - w.state.indexed.load(Ordering::Acquire);
            u64::try_from(lag).unwrap_or(0)
        })
    }

    async fn first_use(&self, key: &str, expires_at: i64) -> Result<bool, AuditError> {
        let key = key.to_string();
        self.with_tables(move |conn| {
            write_transaction(conn, || {
                // Forget tokens that can no longer be presented anyway.
                conn.execute(
                    "DELETE FROM used_tokens WHERE expires_at < ?1",
                    [crate::identity::now()],
                )
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
