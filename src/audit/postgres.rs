//! Audit records, checkpoints and used tokens in PostgreSQL, for several
//! brokers on one database. The chain is one line for all of them: every
//! append locks the single `audit_head` row, so replicas take turns and
//! seq stays gap-free; a replica killed mid-commit leaves nothing behind.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::{Client, GenericClient, NoTls, Row, Statement};

use super::chain::{self, Checkpoint};
use super::columns::{JsonColumns, record_from, unavailable};
use super::job::Job;
use super::{AuditError, AuditQuery, AuditRecord, AuditSink, ChainKeys};
use crate::clock::now_rfc3339;

pub(super) const MIGRATIONS: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    seq            BIGINT PRIMARY KEY,
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
    ttl_seconds    BIGINT,
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
CREATE TABLE IF NOT EXISTS audit_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    record_hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, record_hash) VALUES (1, 0, '') ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq         BIGINT PRIMARY KEY,
    record_hash TEXT NOT NULL,
    time        TEXT NOT NULL,
    signature   TEXT NOT NULL,
    kid         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS used_tokens (
    key        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS used_tokens_expiry ON used_tokens (expires_at);
";

/// Forgets the single-use tokens that can no longer be presented anyway,
/// in each writer transaction that records some, through
/// `used_tokens_expiry` (without it, a scan of the whole table each time).
pub(super) const FORGET_EXPIRED: &str = "DELETE FROM used_tokens WHERE expires_at < $1";

/// Splits stint's TLS settings off a connection URL: `sslmode=verify-full`
/// (or `require`, which stint verifies just the same) with an optional
/// `sslrootcert=PATH`; `disable`, `prefer` or none: plain TCP (stint never
/// encrypts without verifying). Returns the URL tokio-postgres gets and,
/// with TLS, the CA file (if any).
pub(crate) fn split_tls(url: &str) -> Result<(String, Option<Option<std::path::PathBuf>>), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok((url.to_string(), None));
    }
    // The raw query is kept as written (re-encoding it would turn the
    // `%20` of `options=-c%20search_path...` into `+`).
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = None;
    let mut root = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .to_string()
        };
        match key {
            "sslmode" => mode = Some(decoded()),
            "sslrootcert" => root = Some(std::path::PathBuf::from(decoded())),
            _ => kept.push(pair),
        }
    }
    let tls = match mode.as_deref() {
        Some("verify-full" | "require") => Some(root),
        None | Some("disable" | "prefer") => {
            if root.is_some() {
                return Err("sslrootcert needs sslmode=verify-full".into());
            }
            None
        }
        Some(other) => {
            return Err(format!(
                "sslmode={other} is not supported: use verify-full (TLS, certificate and name checked) or disable"
            ));
        }
    };
    kept.push(if tls.is_some() {
        "sslmode=require"
    } else {
        "sslmode=disable"
    });
    Ok((format!("{base}?{}", kept.join("&")), tls))
}

pub(crate) async fn connect(url: &str, timeout: Duration) -> Result<Client, AuditError> {
    let fail = |e: String| AuditError::Config(format!("audit store {}: {e}", redact(url)));
    let (plain_url, tls) = split_tls(url).map_err(fail)?;
    let client = match tls {
        None => {
            let (client, connection) = tokio_postgres::connect(&plain_url, NoTls)
                .await
                .map_err(|e| fail(e.to_string()))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!(error = %e, "audit database connection ended");
                }
            });
            client
        }
        Some(ca_file) => {
            let config = crate::pg_tls::client_config(ca_file.as_deref()).map_err(fail)?;
            let (client, connection) =
                tokio_postgres::connect(&plain_url, tokio_postgres_rustls::MakeRustlsConnect::new(config))
                    .await
                    .map_err(|e| fail(crate::pg_tls::describe(&e)))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!(error = %e, "audit database connection ended");
                }
            });
            client
        }
    };
    // The server's side of the same bound: a broker that vanished inside a
    // transaction must not hold the head row (and so every replica) until
    // TCP keepalive notices, and a writer queued behind a stuck lock gives up.
    let millis = timeout.as_millis().max(1);
    client
        .batch_execute(&format!(
            "SET lock_timeout = {millis}; SET idle_in_transaction_session_timeout = {}",
            millis.saturating_mul(2)
        ))
        .await
        .map_err(|e| AuditError::Config(format!("audit store {}: {e}", redact(url))))?;
    Ok(client)
}

/// A connection that is opened again when it was lost, and given up (so
/// opened again next time) when an operation on it takes longer than
/// `timeout`: a store that stops answering must not hold the broker forever.
pub(crate) struct Session {
    url: String,
    timeout: Duration,
    client: Mutex<Option<Client>>,
    /// How many times the connection was opened again: a statement
    /// prepared on it is valid while this number is unchanged.
    reopened: AtomicU64,
}

impl Session {
    pub(crate) fn new(url: &str, timeout: Duration, client: Client) -> Session {
        Session {
            url: url.to_string(),
            timeout,
            client: Mutex::new(Some(client)),
            reopened: AtomicU64::new(0),
        }
    }

    /// Runs `op` on the connection, reconnecting first if it was lost.
    pub(crate) async fn run<T>(
        &self,
        op: impl for<'c> FnOnce(&'c mut Client) -> BoxFuture<'c, Result<T, AuditError>>,
    ) -> Result<T, AuditError> {
        self.run_counted(|client, _| op(client)).await
    }

    /// [`Session::run`], telling `op` which connection it runs on (how
    /// many times it was opened again), so it can keep statements it
    /// prepared on that connection.
    pub(crate) async fn run_counted<T>(
        &self,
        op: impl for<'c> FnOnce(&'c mut Client, u64) -> BoxFuture<'c, Result<T, AuditError>>,
    ) -> Result<T, AuditError> {
        let mut slot = self.client.lock().await;
        let timeout = self.timeout;
        let outcome = tokio::time::timeout(timeout, async {
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = None;
                let fresh = connect(&self.url, timeout)
                    .await
                    .map_err(|e| AuditError::Unavailable(e.to_string()))?;
                tracing::info!("audit database connection opened again");
                *slot = Some(fresh);
                self.reopened.fetch_add(1, Ordering::Relaxed);
            }
            let connection = self.reopened.load(Ordering::Relaxed);
            match slot.as_mut() {
                Some(client) => op(client, connection).await,
                None => Err(unavailable("no audit database connection")),
            }
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                // Whatever the server did with the transaction, dropping the
                // connection ends it; the chain is re-read from the head row.
                *slot = None;
                Err(AuditError::Unavailable(format!(
                    "the audit database did not answer within {}s",
                    timeout.as_secs_f64()
                )))
            }
        }
    }
}

/// The URL without its passwords (any form), for messages.
fn redact(url: &str) -> String {
    crate::redact::connection_string(url)
}

/// A group's single-use tokens, each key once, in key order: two brokers
/// inserting the same keys then wait for each other in one order, never in
/// a cycle (a deadlock PostgreSQL would break by failing one group).
struct UsedKeys {
    keys: Vec<String>,
    expires_at: Vec<i64>,
}

impl UsedKeys {
    fn of<'a>(uses: impl Iterator<Item = (&'a str, i64)>) -> UsedKeys {
        let mut sorted: Vec<(&str, i64)> = uses.collect();
        // Stable: of one key twice, the first to come is kept.
        sorted.sort_by_key(|(key, _)| *key);
        sorted.dedup_by_key(|(key, _)| *key);
        UsedKeys {
            keys: sorted.iter().map(|(key, _)| (*key).to_string()).collect(),
            expires_at: sorted.iter().map(|(_, expires_at)| *expires_at).collect(),
        }
    }
}

/// An audit log in PostgreSQL.
pub struct PostgresSink {
    reads: Session,
    chain: Option<Arc<ChainKeys>>,
    writer: Option<mpsc::Sender<Job>>,
}

const MAX_GROUP: usize = 256;
/// Reads and writes of the read-only sink (`stint audit ...`).
const READ_ONLY_TIMEOUT: Duration = Duration::from_secs(60);

impl PostgresSink {
    /// Connects, runs migrations, and starts the writer.
    pub async fn open(url: &str, chain: ChainKeys) -> Result<PostgresSink, AuditError> {
        let reads = connect(url, chain.store_timeout).await?;
        reads
            .batch_execute(MIGRATIONS)
            .await
            .map_err(|e| AuditError::Config(format!("audit store migrations: {e}")))?;
        let writes = Session::new(url, chain.store_timeout, connect(url, chain.store_timeout).await?);
        let keys = Arc::new(chain);
        let (writer, queue) = mpsc::channel(super::MAX_QUEUED);
        tokio::spawn(writer_loop(writes, keys.clone(), queue));
        Ok(PostgresSink {
            reads: Session::new(url, keys.store_timeout, reads),
            chain: Some(keys),
            writer: Some(writer),
        })
    }

    /// Queues a job for the writer task and waits for its answer, which
    /// comes once the job's transaction is committed (or failed).
    async fn ask_writer<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, AuditError>>) -> Job,
    ) -> Result<T, AuditError> {
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| unavailable("the audit log is open read-only"))?;
        let (done, answer) = oneshot::channel();
        writer.try_send(job(done)).map_err(super::queue_refused)?;
        answer.await.map_err(|_| unavailable("the audit writer has stopped"))?
    }

    /// Connects for reading only (no migrations, no writer).
    pub async fn open_existing(url: &str) -> Result<PostgresSink, AuditError> {
        Ok(PostgresSink {
            reads: Session::new(url, READ_ONLY_TIMEOUT, connect(url, READ_ONLY_TIMEOUT).await?),
            chain: None,
            writer: None,
        })
    }
}

/// The single writer of this process: queued records share one
/// transaction (group commit); the head row lock orders all replicas.
async fn writer_loop(session: Session, keys: Arc<ChainKeys>, mut queue: mpsc::Receiver<Job>) {
    let group = keys.group_commit;
    let mut own: Option<OwnHead> = None;
    let mut prepared: Option<Prepared> = None;
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while group && batch.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut records = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        let mut uses = Vec::new();
        for job in batch {
            match job {
                Job::Append { record, json, done } => {
                    records.push((record, json));
                    waiting.push(done);
                }
                Job::FirstUse { key, expires_at, done } => uses.push((key, expires_at, done)),
            }
        }
        let used = UsedKeys::of(uses.iter().map(|(key, expires_at, _)| (key.as_str(), *expires_at)));
        let (keys, known, cached) = (keys.clone(), own.take(), prepared.take());
        match session
            .run_counted(move |client, connection| {
                Box::pin(write_batch(client, connection, keys, records, used, known, cached))
            })
            .await
        {
            Ok((stored, head, statements, mut new)) => {
                own = head;
                prepared = Some(statements);
                for (record, done) in stored.into_iter().zip(waiting) {
                    let _ = done.send(Ok(record));
                }
                // A key twice in the group: new for the first caller only.
                for (key, _, done) in uses {
                    let _ = done.send(Ok(new.remove(&key)));
                }
            }
            Err(e) => {
                for done in waiting {
                    let _ = done.send(Err(e.clone()));
                }
                for (_, _, done) in uses {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The head this writer committed last: its seq and hash, and the id of
/// the transaction that wrote it. A record's `xmin` changes with every
/// `UPDATE` of it, so when the head row still names this record and the
/// record's `xmin` is still this transaction's, nobody has edited it since
/// this writer verified and wrote it, and the next group need not read it
/// back and verify it again (a round trip). Any other writer (another
/// broker) or any edit changes one of them, and the head is verified as
/// before.
struct OwnHead {
    seq: i64,
    hash: String,
    xid: String,
}

/// Locks the head row and reads it, with the `xmin` of the record it names
/// (NULL when that record is not visible to this statement's snapshot: it
/// was committed by a writer this one waited for, and is verified then).
const LOCK_HEAD: &str = "SELECT h.seq, h.record_hash,
        (SELECT r.xmin::text FROM audit_records r WHERE r.seq = h.seq)
    FROM audit_head h WHERE h.id = 1 FOR UPDATE OF h";

/// The writer's statements as prepared on one connection (numbered by
/// [`Session::run_counted`]): parsed and planned once per connection, not
/// once per group.
struct Prepared {
    connection: u64,
    lock_head: Statement,
    insert: Statement,
    checkpoint: Statement,
    forget: Statement,
    remember: Statement,
}

impl Prepared {
    /// The statements on `connection`: `cached` when they were prepared
    /// there, else prepared now (all in one round trip).
    async fn on(client: &Client, connection: u64, cached: Option<Prepared>) -> Result<Prepared, AuditError> {
        if let Some(cached) = cached.filter(|cached| cached.connection == connection) {
            return Ok(cached);
        }
        let (lock_head, insert, checkpoint, forget, remember) = tokio::try_join!(
            client.prepare(LOCK_HEAD),
            client.prepare(INSERT_GROUP),
            client.prepare(INSERT_CHECKPOINT),
            client.prepare(FORGET_EXPIRED),
            client.prepare(REMEMBER_USED),
        )
        .map_err(unavailable)?;
        Ok(Prepared {
            connection,
            lock_head,
            insert,
            checkpoint,
            forget,
            remember,
        })
    }
}

/// Records a group's single-use keys; returns those that were new.
const REMEMBER_USED: &str = "INSERT INTO used_tokens (key, expires_at)
    SELECT * FROM UNNEST($1::text[], $2::bigint[]) ON CONFLICT (key) DO NOTHING RETURNING key";

/// Inserts a group (one array per column) and moves the head; returns the
/// transaction id that wrote them.
const INSERT_GROUP: &str = "WITH inserted AS (
        INSERT INTO audit_records (seq, time, request_id, outcome, reason, grant_name, kind, issuer, subject,
            claims, token_jti_hmac, issuance_id, ttl_seconds, expires_at, client_addr, detail,
            chain_version, prev_hash, record_hash, record_mac)
        SELECT seq, time, request_id, outcome, reason, grant_name, kind, issuer, subject,
            claims, token_jti_hmac, issuance_id, ttl_seconds, expires_at, client_addr, detail,
            $17, prev_hash, record_hash, record_mac
        FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::text[],
            $15::text[], $16::text[], $18::text[], $19::text[], $20::text[])
            AS r(seq, time, request_id, outcome, reason, grant_name, kind, issuer, subject, claims,
                 token_jti_hmac, issuance_id, ttl_seconds, expires_at, client_addr, detail,
                 prev_hash, record_hash, record_mac)
        RETURNING 1
    )
    UPDATE audit_head SET seq = $21, record_hash = $22 WHERE id = 1 RETURNING xmin::text";

/// Links and inserts `records` and records the `used` keys in one
/// transaction; returns the records as stored, the head they leave (`own`
/// again when there were none), the statements, prepared on `connection`
/// (`cached`, when given, holds them if they were prepared there before),
/// and the keys that were new. A round trip costs more than the work of a
/// record, so the statements do not grow with the group, and they are
/// pipelined: `BEGIN` and locking the head go in one round trip; the
/// single-use keys, the insert, any checkpoints and `COMMIT` in another. The head is read back and verified in a third only when `own`
/// does not vouch for it, and a connection's first group prepares the
/// statements in one more.
async fn write_batch(
    client: &mut Client,
    connection: u64,
    keys: Arc<ChainKeys>,
    records: Vec<(AuditRecord, JsonColumns)>,
    used: UsedKeys,
    own: Option<OwnHead>,
    cached: Option<Prepared>,
) -> Result<Written, AuditError> {
    let result = write_pipelined(client, connection, &keys, records, &used, own, cached).await;
    if result.is_err() {
        // Whatever failed, end the transaction, so the connection is
        // clean for the next group (after a failed insert the COMMIT
        // already rolled back, and this is a harmless no-op).
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// What a group's transaction leaves: the records as stored, the head, the
/// statements, and the single-use keys that were new.
type Written = (Vec<AuditRecord>, Option<OwnHead>, Prepared, HashSet<String>);

async fn write_pipelined(
    client: &Client,
    connection: u64,
    keys: &ChainKeys,
    mut records: Vec<(AuditRecord, JsonColumns)>,
    used: &UsedKeys,
    own: Option<OwnHead>,
    cached: Option<Prepared>,
) -> Result<Written, AuditError> {
    let statements = Prepared::on(client, connection, cached).await?;
    let now = crate::clock::now();
    // Sent in the transaction before the records (or alone, in one round
    // trip, for a group of tokens only): nothing when there are none.
    let forget = async {
        if used.keys.is_empty() {
            return Ok(0);
        }
        client.execute(&statements.forget, &[&now]).await
    };
    let remember = async {
        if used.keys.is_empty() {
            return Ok(Vec::new());
        }
        client
            .query(&statements.remember, &[&used.keys, &used.expires_at])
            .await
    };
    if records.is_empty() {
        // No record, so no head: its lock and row stay as they are, and so
        // does what `own` vouches for.
        let (begin, forgot, remembered, commit) = tokio::join!(
            client.batch_execute("BEGIN"),
            forget,
            remember,
            client.batch_execute("COMMIT")
        );
        begin.map_err(unavailable)?;
        forgot.map_err(unavailable)?;
        let new = new_keys(remembered)?;
        commit.map_err(unavailable)?;
        return Ok((Vec::new(), own, statements, new));
    }
    let (begin, head) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.query_opt(&statements.lock_head, &[]),
    );
    begin.map_err(unavailable)?;
    let head = head
        .map_err(unavailable)?
        .ok_or_else(|| unavailable("the audit_head row is missing"))?;
    let (mut seq, mut hash): (i64, String) = (
        head.try_get(0).map_err(unavailable)?,
        head.try_get(1).map_err(unavailable)?,
    );
    let head_xid: Option<String> = head.try_get(2).map_err(unavailable)?;
    let vouched = own.is_some_and(|own| own.seq == seq && own.hash == hash && head_xid.as_ref() == Some(&own.xid));
    if !vouched {
        // A head edited without the key is never extended or signed. Read
        // after the lock was granted: a statement of its own sees the
        // head's record that the writer before this one committed.
        verify_head(client, seq, &hash, keys).await?;
    }
    let mut checkpoints = Vec::new();
    let every = i64::try_from(keys.checkpoint_every.max(1)).unwrap_or(i64::MAX);
    for (r, json) in &mut records {
        let previous = (seq > 0).then(|| (seq, hash.clone()));
        chain::link_serialized(r, json, previous, &keys.key);
        seq = r.seq.unwrap_or(seq + 1);
        hash = r.record_hash.clone().unwrap_or_default();
        if seq % every == 0 {
            checkpoints.push(keys.signer.sign(seq, &hash, &now_rfc3339()));
        }
    }
    let columns = GroupColumns::of(&records);
    let version = i32::try_from(chain::CHAIN_VERSION).unwrap_or(1);
    let c = &columns;
    let values: [&(dyn tokio_postgres::types::ToSql + Sync); 22] = [
        &c.seq,
        &c.time,
        &c.request_id,
        &c.outcome,
        &c.reason,
        &c.grant,
        &c.kind,
        &c.issuer,
        &c.subject,
        &c.claims,
        &c.token_jti_hmac,
        &c.issuance_id,
        &c.ttl_seconds,
        &c.expires_at,
        &c.client_addr,
        &c.detail,
        &version,
        &c.prev_hash,
        &c.record_hash,
        &c.record_mac,
        &seq,
        &hash,
    ];
    // The COMMIT is sent behind the statements without waiting for them
    // (each is sent when first polled, in this order: all are prepared
    // already). If one of them fails, PostgreSQL ends the transaction at
    // that COMMIT with a rollback, and the failure is reported from here.
    let checkpoint = &statements.checkpoint;
    let signs = checkpoints.iter().map(|c| async move {
        client
            .execute(checkpoint, &[&c.seq, &c.record_hash, &c.time, &c.signature, &c.kid])
            .await
    });
    let (forgot, remembered, inserted, signed, commit) = tokio::join!(
        forget,
        remember,
        client.query_one(&statements.insert, &values),
        futures_util::future::join_all(signs),
        client.batch_execute("COMMIT"),
    );
    forgot.map_err(unavailable)?;
    let new = new_keys(remembered)?;
    let xid: String = inserted.map_err(unavailable)?.try_get(0).map_err(unavailable)?;
    signed
        .into_iter()
        .collect::<Result<Vec<u64>, _>>()
        .map_err(unavailable)?;
    commit.map_err(unavailable)?;
    let stored = records.into_iter().map(|(record, _)| record).collect();
    Ok((stored, Some(OwnHead { seq, hash, xid }), statements, new))
}

/// The keys `REMEMBER_USED` inserted.
fn new_keys(rows: Result<Vec<Row>, tokio_postgres::Error>) -> Result<HashSet<String>, AuditError> {
    rows.map_err(unavailable)?
        .iter()
        .map(|row| row.try_get::<_, String>(0).map_err(unavailable))
        .collect()
}

/// A group's records as one array per column, for `UNNEST`, borrowed
/// from the records and their serialized claims and detail.
struct GroupColumns<'a> {
    seq: Vec<Option<i64>>,
    time: Vec<&'a str>,
    request_id: Vec<&'a str>,
    outcome: Vec<&'static str>,
    reason: Vec<Option<&'a str>>,
    grant: Vec<Option<&'a str>>,
    kind: Vec<Option<&'a str>>,
    issuer: Vec<Option<&'a str>>,
    subject: Vec<Option<&'a str>>,
    claims: Vec<&'a str>,
    token_jti_hmac: Vec<Option<&'a str>>,
    issuance_id: Vec<Option<&'a str>>,
    ttl_seconds: Vec<Option<i64>>,
    expires_at: Vec<Option<&'a str>>,
    client_addr: Vec<Option<&'a str>>,
    detail: Vec<&'a str>,
    prev_hash: Vec<Option<&'a str>>,
    record_hash: Vec<Option<&'a str>>,
    record_mac: Vec<Option<&'a str>>,
}

impl<'a> GroupColumns<'a> {
    fn of(records: &'a [(AuditRecord, JsonColumns)]) -> GroupColumns<'a> {
        fn column<'a, T>(records: &'a [(AuditRecord, JsonColumns)], value: impl Fn(&'a AuditRecord) -> T) -> Vec<T> {
            records.iter().map(|(record, _)| value(record)).collect()
        }
        let json = |text: fn(&'a JsonColumns) -> &'a str| -> Vec<&'a str> {
            records.iter().map(|(_, json)| text(json)).collect()
        };
        GroupColumns {
            seq: column(records, |r| r.seq),
            time: column(records, |r| r.time.as_str()),
            request_id: column(records, |r| r.request_id.as_str()),
            outcome: column(records, |r| r.outcome.as_str()),
            reason: column(records, |r| r.reason.as_deref()),
            grant: column(records, |r| r.grant.as_deref()),
            kind: column(records, |r| r.kind.as_deref()),
            issuer: column(records, |r| r.issuer.as_deref()),
            subject: column(records, |r| r.subject.as_deref()),
            claims: json(|j| &j.claims),
            token_jti_hmac: column(records, |r| r.token_jti_hmac.as_deref()),
            issuance_id: column(records, |r| r.issuance_id.as_deref()),
            ttl_seconds: column(records, |r| r.ttl_seconds.and_then(|t| i64::try_from(t).ok())),
            expires_at: column(records, |r| r.expires_at.as_deref()),
            client_addr: column(records, |r| r.client_addr.as_deref()),
            detail: json(|j| &j.detail),
            prev_hash: column(records, |r| r.prev_hash.as_deref()),
            record_hash: column(records, |r| r.record_hash.as_deref()),
            record_mac: column(records, |r| r.record_mac.as_deref()),
        }
    }
}

const INSERT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints (seq, record_hash, time, signature, kid)
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING";

async fn insert_checkpoint(client: &impl GenericClient, c: &Checkpoint) -> Result<(), AuditError> {
    client
        .execute(
            INSERT_CHECKPOINT,
            &[&c.seq, &c.record_hash, &c.time, &c.signature, &c.kid],
        )
        .await
        .map_err(unavailable)?;
    Ok(())
}

fn read_row(row: &Row) -> Result<AuditRecord, AuditError> {
    record_from(row).map_err(unavailable)
}

#[async_trait::async_trait]
impl AuditSink for PostgresSink {
    async fn append(&self, record: AuditRecord) -> Result<AuditRecord, AuditError> {
        let json = JsonColumns::of(&record);
        self.ask_writer(|done| Job::Append { record, json, done }).await
    }

    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let q = q.clone();
        self.reads
            .run(move |client| {
                Box::pin(async move {
                    let (sql, values) = super::postgres_read::query_sql(&q);
                    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        values.iter().map(super::postgres_read::Param::as_sql).collect();
                    let rows = client.query(sql.as_str(), &params).await.map_err(unavailable)?;
                    rows.iter().map(read_row).collect()
                })
            })
            .await
    }

    async fn summary(&self, query: &super::SummaryQuery) -> Result<super::Summary, AuditError> {
        let [series, grants, reasons, subjects] = super::summary::statements(query.bucket, "$1", "$2", query.top, "");
        let (since, until) = (query.since.clone(), query.until.clone());
        self.reads
            .run(move |client| {
                let (series, grants, reasons, subjects) =
                    (series.clone(), grants.clone(), reasons.clone(), subjects.clone());
                let (since, until) = (since.clone(), until.clone());
                Box::pin(async move {
                    let outcome = |text: &str| super::Outcome::parse(text).unwrap_or(super::Outcome::Error);
                    let count = |n: i64| u64::try_from(n).unwrap_or(0);
                    let range: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&since, &until];
                    let mut out = super::Summary::default();
                    for row in client.query(series.as_str(), &range).await.map_err(unavailable)? {
                        let (bucket, o, n): (String, &str, i64) = (
                            row.try_get(0).map_err(unavailable)?,
                            row.try_get(1).map_err(unavailable)?,
                            row.try_get(2).map_err(unavailable)?,
                        );
                        out.series.push((bucket, outcome(o), count(n)));
                    }
                    for row in client.query(grants.as_str(), &range).await.map_err(unavailable)? {
                        let (grant, o, n): (String, &str, i64) = (
                            row.try_get(0).map_err(unavailable)?,
                            row.try_get(1).map_err(unavailable)?,
                            row.try_get(2).map_err(unavailable)?,
                        );
                        out.by_grant.push((grant, outcome(o), count(n)));
                    }
                    for row in client.query(reasons.as_str(), &range).await.map_err(unavailable)? {
                        out.denial_reasons.push((
                            row.try_get(0).map_err(unavailable)?,
                            count(row.try_get(1).map_err(unavailable)?),
                        ));
                    }
                    for row in client.query(subjects.as_str(), &range).await.map_err(unavailable)? {
                        out.subjects.push((
                            row.try_get(0).map_err(unavailable)?,
                            count(row.try_get(1).map_err(unavailable)?),
                        ));
                    }
                    Ok(out)
                })
            })
            .await
    }

    async fn check(&self) -> Result<(), AuditError> {
        let keys = self.chain.clone();
        self.reads
            .run(|client| {
                Box::pin(async move {
                    let head = client
                        .query_one("SELECT seq, record_hash FROM audit_head WHERE id = 1", &[])
                        .await
                        .map_err(unavailable)?;
                    // The writer's own head check, so a tampered store makes
                    // the broker unready before a caller's request finds it.
                    match keys {
                        Some(keys) => verify_head(client, head.get(0), head.get(1), &keys).await,
                        None => Ok(()),
                    }
                })
            })
            .await
    }

    async fn chain(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>, AuditError> {
        self.reads
            .run(move |client| {
                Box::pin(async move {
                    let rows = client
                        .query(
                            "SELECT * FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2",
                            &[&after, &i64::from(limit)],
                        )
                        .await
                        .map_err(unavailable)?;
                    rows.iter().map(read_row).collect()
                })
            })
            .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        self.checkpoints_between(i64::MIN, i64::MAX).await
    }

    async fn checkpoints_between(&self, after: i64, upto: i64) -> Result<Vec<Checkpoint>, AuditError> {
        self.reads
            .run(move |client| {
                Box::pin(async move {
                    let rows = client
                        .query(
                            "SELECT seq, record_hash, time, signature, kid FROM audit_checkpoints
                             WHERE seq > $1 AND seq <= $2 ORDER BY seq",
                            &[&after, &upto],
                        )
                        .await
                        .map_err(unavailable)?;
                    rows.iter()
                        .map(|r| {
                            Ok(Checkpoint {
                                seq: r.try_get(0).map_err(unavailable)?,
                                record_hash: r.try_get(1).map_err(unavailable)?,
                                time: r.try_get(2).map_err(unavailable)?,
                                signature: r.try_get(3).map_err(unavailable)?,
                                kid: r.try_get(4).map_err(unavailable)?,
                            })
                        })
                        .collect()
                })
            })
            .await
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let keys = self
            .chain
            .clone()
            .ok_or_else(|| unavailable("the audit log is open read-only"))?;
        self.reads
            .run(move |client| Box::pin(checkpoint_head(client, keys)))
            .await
    }

    async fn first_use(&self, key: &str, expires_at: i64) -> Result<bool, AuditError> {
        let key = key.to_string();
        self.ask_writer(|done| Job::FirstUse { key, expires_at, done }).await
    }
}

/// Checks that the head row `(seq, hash)` names a record that is in the
/// store, carries that hash (a NULL `record_hash` never does), and
/// verifies under the key. Any of these failing means someone with write
/// access but not the key edited the store.
async fn verify_head(client: &impl GenericClient, seq: i64, hash: &str, keys: &ChainKeys) -> Result<(), AuditError> {
    if seq == 0 {
        return Ok(());
    }
    let tampered = |e: String| {
        tracing::error!(error = %e, "audit store tampered with");
        AuditError::Tampered(e)
    };
    let Some(row) = client
        .query_opt("SELECT * FROM audit_records WHERE seq = $1", &[&seq])
        .await
        .map_err(unavailable)?
    else {
        return Err(tampered(format!(
            "the audit head row names record {seq}, which is not in the store"
        )));
    };
    let record = read_row(&row)?;
    if record.record_hash.as_deref() != Some(hash) {
        return Err(tampered(format!("the audit head row and record {seq} disagree")));
    }
    chain::check_head(&record, &keys.key).map_err(tampered)
}

/// Signs the chain head if it moved since the last checkpoint.
async fn checkpoint_head(client: &mut Client, keys: Arc<ChainKeys>) -> Result<Option<Checkpoint>, AuditError> {
    let tx = client.transaction().await.map_err(unavailable)?;
    let head = tx
        .query_one("SELECT seq, record_hash FROM audit_head WHERE id = 1 FOR UPDATE", &[])
        .await
        .map_err(unavailable)?;
    let (seq, hash): (i64, String) = (head.get(0), head.get(1));
    verify_head(&tx, seq, &hash, &keys).await?;
    let last: Option<i64> = tx
        .query_one("SELECT MAX(seq) FROM audit_checkpoints", &[])
        .await
        .map_err(unavailable)?
        .get(0);
    if seq == 0 || last.is_some_and(|l| l >= seq) {
        return Ok(None);
    }
    let checkpoint = keys.signer.sign(seq, &hash, &now_rfc3339());
    insert_checkpoint(&tx, &checkpoint).await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(Some(checkpoint))
}

#[cfg(test)]
mod tests {
    use super::{UsedKeys, split_tls};

    #[test]
    fn a_groups_keys_go_in_key_order_each_once_as_first_asked() {
        let used = UsedKeys::of([("b", 2), ("a", 1), ("b", 9)].into_iter());
        assert_eq!(used.keys, ["a", "b"]);
        assert_eq!(used.expires_at, [1, 2]);
    }

    #[test]
    fn tls_settings_are_split_off_the_url_and_the_rest_kept_as_written() {
        let url =
            "postgres://u@db:5432/audit?options=-c%20search_path%3Dx&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem";
        let Ok((plain, tls)) = split_tls(url) else {
            unreachable!()
        };
        assert_eq!(
            plain,
            "postgres://u@db:5432/audit?options=-c%20search_path%3Dx&sslmode=require"
        );
        assert_eq!(tls, Some(Some(std::path::PathBuf::from("/etc/ca.pem"))));
        let Ok((plain, tls)) = split_tls("postgres://u@db/audit") else {
            unreachable!()
        };
        assert_eq!((plain.as_str(), tls), ("postgres://u@db/audit?sslmode=disable", None));
        assert!(split_tls("postgres://u@db/a?sslmode=verify-ca").is_err_and(|e| e.contains("verify-full")));
        assert!(split_tls("postgres://u@db/a?sslrootcert=/x").is_err());
    }
}
