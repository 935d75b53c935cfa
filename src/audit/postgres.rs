//! Audit records, checkpoints and used tokens in PostgreSQL, for several
//! brokers on one database. The chain is one line for all of them: every
//! append locks the single `audit_head` row, so replicas take turns and
//! seq stays gap-free; a replica killed mid-commit leaves nothing behind.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::{Client, NoTls, Row};

use super::chain::{self, Checkpoint};
use super::columns::{json_text, now_rfc3339, record_from, unavailable};
use super::{AuditError, AuditQuery, AuditRecord, AuditSink, ChainKeys, Outcome};

const MIGRATIONS: &str = "
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
";

async fn connect(url: &str) -> Result<Client, AuditError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| AuditError::Config(format!("audit store {}: {e}", redact(url))))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %e, "audit database connection ended");
        }
    });
    Ok(client)
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

struct Pending {
    record: AuditRecord,
    done: oneshot::Sender<Result<AuditRecord, AuditError>>,
}

/// An audit log in PostgreSQL.
pub struct PostgresSink {
    reads: Arc<Mutex<Client>>,
    chain: Option<Arc<ChainKeys>>,
    writer: Option<mpsc::UnboundedSender<Pending>>,
}

const MAX_GROUP: usize = 256;

impl PostgresSink {
    /// Connects, runs migrations, and starts the writer.
    pub async fn open(url: &str, chain: ChainKeys) -> Result<PostgresSink, AuditError> {
        let reads = connect(url).await?;
        reads
            .batch_execute(MIGRATIONS)
            .await
            .map_err(|e| AuditError::Config(format!("audit store migrations: {e}")))?;
        let writes = connect(url).await?;
        let keys = Arc::new(chain);
        let (writer, queue) = mpsc::unbounded_channel();
        tokio::spawn(writer_loop(writes, keys.clone(), queue));
        Ok(PostgresSink {
            reads: Arc::new(Mutex::new(reads)),
            chain: Some(keys),
            writer: Some(writer),
        })
    }

    /// Connects for reading only (no migrations, no writer).
    pub async fn open_existing(url: &str) -> Result<PostgresSink, AuditError> {
        Ok(PostgresSink {
            reads: Arc::new(Mutex::new(connect(url).await?)),
            chain: None,
            writer: None,
        })
    }
}

/// The single writer of this process: queued records share one
/// transaction (group commit); the head row lock orders all replicas.
async fn writer_loop(mut client: Client, keys: Arc<ChainKeys>, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let group = keys.group_commit;
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while group && batch.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let result = write_batch(&mut client, &keys, &mut batch).await;
        for pending in batch {
            let _ = pending.done.send(result.clone().map(|()| pending.record));
        }
    }
}

async fn write_batch(client: &mut Client, keys: &ChainKeys, batch: &mut [Pending]) -> Result<(), AuditError> {
    let tx = client.transaction().await.map_err(unavailable)?;
    let head = tx
        .query_one("SELECT seq, record_hash FROM audit_head WHERE id = 1 FOR UPDATE", &[])
        .await
        .map_err(unavailable)?;
    let (mut seq, mut hash): (i64, String) = (head.get(0), head.get(1));
    if seq > 0 {
        // A head edited without the key is never extended or signed.
        let row = tx
            .query_one("SELECT * FROM audit_records WHERE seq = $1", &[&seq])
            .await
            .map_err(unavailable)?;
        let last = read_row(&row)?;
        if last.record_hash.as_deref() != Some(hash.as_str()) {
            return Err(AuditError::Unavailable(format!(
                "the audit head row and record {seq} disagree"
            )));
        }
        chain::check_head(&last, &keys.key).map_err(AuditError::Unavailable)?;
    }
    for pending in batch.iter_mut() {
        let r = &mut pending.record;
        let previous = (seq > 0).then(|| (seq, hash.clone()));
        chain::link(r, previous, &keys.key);
        let ttl = r.ttl_seconds.and_then(|t| i64::try_from(t).ok());
        let version = i32::try_from(chain::CHAIN_VERSION).unwrap_or(1);
        tx.execute(
            "INSERT INTO audit_records (seq, time, request_id, outcome, reason, grant_name, kind, issuer, subject,
                claims, token_jti_hmac, issuance_id, ttl_seconds, expires_at, client_addr, detail,
                chain_version, prev_hash, record_hash, record_mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
            &[
                &r.seq,
                &r.time,
                &r.request_id,
                &r.outcome.as_str(),
                &r.reason,
                &r.grant,
                &r.kind,
                &r.issuer,
                &r.subject,
                &json_text(&r.claims),
                &r.token_jti_hmac,
                &r.issuance_id,
                &ttl,
                &r.expires_at,
                &r.client_addr,
                &json_text(&r.detail),
                &version,
                &r.prev_hash,
                &r.record_hash,
                &r.record_mac,
            ],
        )
        .await
        .map_err(unavailable)?;
        seq = r.seq.unwrap_or(seq + 1);
        hash = r.record_hash.clone().unwrap_or_default();
        let every = i64::try_from(keys.checkpoint_every.max(1)).unwrap_or(i64::MAX);
        if seq % every == 0 {
            insert_checkpoint(&tx, &keys.signer.sign(seq, &hash, &now_rfc3339())).await?;
        }
    }
    tx.execute(
        "UPDATE audit_head SET seq = $1, record_hash = $2 WHERE id = 1",
        &[&seq, &hash],
    )
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)
}

async fn insert_checkpoint(tx: &tokio_postgres::Transaction<'_>, c: &Checkpoint) -> Result<(), AuditError> {
    tx.execute(
        "INSERT INTO audit_checkpoints (seq, record_hash, time, signature, kid) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (seq) DO NOTHING",
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
    async fn append(&self, record: &AuditRecord) -> Result<AuditRecord, AuditError> {
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| unavailable("the audit log is open read-only"))?;
        let (done, answer) = oneshot::channel();
        writer
            .send(Pending {
                record: record.clone(),
                done,
            })
            .map_err(|_| unavailable("the audit writer has stopped"))?;
        answer.await.map_err(|_| unavailable("the audit writer has stopped"))?
    }

    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let limit = i64::from(q.limit.unwrap_or(50));
        let outcome = q.outcome.map(Outcome::as_str);
        let rows = self
            .reads
            .lock()
            .await
            .query(
                "SELECT * FROM audit_records
                 WHERE ($1::TEXT IS NULL OR grant_name = $1) AND ($2::TEXT IS NULL OR subject = $2)
                   AND ($3::TEXT IS NULL OR outcome = $3) AND ($4::TEXT IS NULL OR request_id = $4)
                   AND ($6::TEXT IS NULL OR token_jti_hmac = $6)
                   AND ($7::TEXT IS NULL OR time >= $7) AND ($8::TEXT IS NULL OR time < $8)
                   AND ($9::BIGINT IS NULL OR seq < $9)
                 ORDER BY seq DESC LIMIT $5",
                &[
                    &q.grant,
                    &q.subject,
                    &outcome,
                    &q.request_id,
                    &limit,
                    &q.token_jti_hmac,
                    &q.since,
                    &q.until,
                    &q.before_seq,
                ],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(read_row).collect()
    }

    async fn check(&self) -> Result<(), AuditError> {
        self.reads
            .lock()
            .await
            .query_one("SELECT seq FROM audit_head WHERE id = 1", &[])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn chain(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>, AuditError> {
        let rows = self
            .reads
            .lock()
            .await
            .query(
                "SELECT * FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(read_row).collect()
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        let rows = self
            .reads
            .lock()
            .await
            .query(
                "SELECT seq, record_hash, time, signature, kid FROM audit_checkpoints ORDER BY seq",
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| Checkpoint {
                seq: r.get(0),
                record_hash: r.get(1),
                time: r.get(2),
                signature: r.get(3),
                kid: r.get(4),
            })
            .collect())
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let keys = self
            .chain
            .clone()
            .ok_or_else(|| unavailable("the audit log is open read-only"))?;
        let mut client = self.reads.lock().await;
        let tx = client.transaction().await.map_err(unavailable)?;
        let head = tx
            .query_one("SELECT seq, record_hash FROM audit_head WHERE id = 1 FOR UPDATE", &[])
            .await
            .map_err(unavailable)?;
        let (seq, hash): (i64, String) = (head.get(0), head.get(1));
        if seq > 0 {
            let row = tx
                .query_one("SELECT * FROM audit_records WHERE seq = $1", &[&seq])
                .await
                .map_err(unavailable)?;
            let record = read_row(&row)?;
            if record.record_hash.as_deref() != Some(hash.as_str()) {
                return Err(AuditError::Unavailable(format!(
                    "the audit head row and record {seq} disagree"
                )));
            }
            chain::check_head(&record, &keys.key).map_err(AuditError::Unavailable)?;
        }
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

    async fn first_use(&self, key: &str, expires_at: i64) -> Result<bool, AuditError> {
        let client = self.reads.lock().await;
        client
            .execute(
                "DELETE FROM used_tokens WHERE expires_at < $1",
                &[&crate::identity::now()],
            )
            .await
            .map_err(unavailable)?;
        let inserted = client
            .execute(
                "INSERT INTO used_tokens (key, expires_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &expires_at],
            )
            .await
            .map_err(unavailable)?;
        Ok(inserted == 1)
    }
}
