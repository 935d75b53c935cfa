//! Step 5 of the flow: every issuance and every denial becomes an
//! [`AuditRecord`], written durably before the caller gets an answer.
//! Records hold who asked, for what, and why the answer was what it was;
//! never a token, a secret or a key (only keyed hashes of token ids).

pub mod chain;
mod columns;
pub(crate) use columns::unavailable;
pub mod commands;
mod health;
mod job;
mod key;
mod mirror;
pub(crate) mod postgres;
mod postgres_read;
mod sqlite;
mod sqlite_insert;
mod sqlite_lookup;
mod sqlite_read;
mod sqlite_writer;
pub mod summary;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use chain::{Checkpoint, CheckpointSigner};
pub use health::{WatchedSink, WriteHealth, WriteState};
pub use key::AuditKey;
pub use mirror::MirroredSink;
pub use postgres::PostgresSink;
pub use sqlite::SqliteSink;
pub use summary::{Bucket, Summary, SummaryQuery};

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A credential was issued.
    Issued,
    /// The caller was refused (bad token, policy, bad request).
    Denied,
    /// stint or an upstream failed.
    Error,
    /// A lease ended: its database role was dropped.
    Revoked,
}

impl Outcome {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
            Outcome::Revoked => "revoked",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Outcome> {
        match text {
            "issued" => Some(Outcome::Issued),
            "denied" => Some(Outcome::Denied),
            "error" => Some(Outcome::Error),
            "revoked" => Some(Outcome::Revoked),
            _ => None,
        }
    }
}

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, assigned by the store.
    #[serde(default)]
    pub seq: Option<i64>,
    /// RFC 3339 UTC time the request was decided.
    pub time: String,
    /// Same id as the `x-request-id` response header.
    pub request_id: String,
    /// Issued, denied or error.
    pub outcome: Outcome,
    /// Reason code of a denial or error (`token_expired`, `claims_mismatch`, ...).
    pub reason: Option<String>,
    /// Grant name as requested.
    pub grant: Option<String>,
    /// Grant kind, when the grant exists.
    pub kind: Option<String>,
    /// Issuer config name, once the token is verified.
    pub issuer: Option<String>,
    /// Token `sub`, once verified.
    pub subject: Option<String>,
    /// Policy-relevant claims of the verified token.
    pub claims: Map<String, Value>,
    /// HMAC-SHA256 of the token's `jti` under the audit key (hex).
    pub token_jti_hmac: Option<String>,
    /// Id of the issued credential.
    pub issuance_id: Option<String>,
    /// Lifetime granted, in seconds.
    pub ttl_seconds: Option<u64>,
    /// RFC 3339 expiry of the issued credential.
    pub expires_at: Option<String>,
    /// Peer address of the caller.
    pub client_addr: Option<String>,
    /// Non-secret facts from the provider (rule index, key id, audience, ...).
    pub detail: Map<String, Value>,
    /// Hash of the previous record (the chain), set by the store.
    #[serde(default)]
    pub prev_hash: Option<String>,
    /// SHA-256 of this record's canonical encoding, set by the store.
    #[serde(default)]
    pub record_hash: Option<String>,
    /// HMAC of `record_hash` under the audit key, set by the store.
    #[serde(default)]
    pub record_mac: Option<String>,
}

/// One record as a line of `stint audit export` (and of the `stint`
/// format a shipper sends): the record's JSON in field order.
pub fn record_line(record: &AuditRecord) -> String {
    // Serializing strings, maps and integers cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

/// One checkpoint as its export line, `{"checkpoint": {...}}`.
pub fn checkpoint_line(checkpoint: &Checkpoint) -> String {
    serde_json::json!({ "checkpoint": checkpoint }).to_string()
}

/// Filters for reading the log back, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this grant.
    pub grant: Option<String>,
    /// Only this subject.
    pub subject: Option<String>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only this request id.
    pub request_id: Option<String>,
    /// Only this kind of grant (`token`, `aws`, ...). Not indexed: it
    /// narrows another filter, or the walk from the newest record.
    pub kind: Option<String>,
    /// Only this reason code. Not indexed, like `kind`.
    pub reason: Option<String>,
    /// Only records at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only records before this RFC 3339 time.
    pub until: Option<String>,
    /// Only records with a smaller seq (the pagination cursor).
    pub before_seq: Option<i64>,
    /// Only records of the token whose `jti` has this HMAC ([`AuditKey::hash`]).
    pub token_jti_hmac: Option<String>,
    /// At most this many (default 50).
    pub limit: Option<u32>,
}

/// Why the audit store failed. Storage detail stays here; callers only
/// learn that the log is unavailable.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The store cannot be written or read.
    #[error("audit store unavailable: {0}")]
    Unavailable(String),
    /// The chain head does not verify under the audit key: the store was
    /// edited by someone without it. Nothing is appended or signed, and
    /// `/readyz` says `tampered`.
    #[error("audit store tampered with: {0}")]
    Tampered(String),
    /// The store location in config is not usable.
    #[error("{0}")]
    Config(String),
}

/// Where audit records go. Implementations must make [`AuditSink::append`]
/// durable before returning `Ok`: the broker releases credentials on it.
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync {
    /// Appends one record durably; returns it as stored (seq and hashes
    /// set). The record is moved, not copied: it travels to the writer and
    /// back.
    async fn append(&self, record: AuditRecord) -> Result<AuditRecord, AuditError>;
    /// Reads records back, newest first.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError>;
    /// Cheap liveness check for `/readyz`.
    async fn check(&self) -> Result<(), AuditError>;
    /// Records in chain order, `seq > after`, at most `limit`.
    async fn chain(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>, AuditError>;
    /// Every checkpoint, ascending.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError>;
    /// The checkpoints with `after < seq <= upto`, ascending (a shipper's
    /// next ones, without reading every checkpoint of a long log).
    async fn checkpoints_between(&self, after: i64, upto: i64) -> Result<Vec<Checkpoint>, AuditError> {
        let all = self.checkpoints().await?;
        Ok(all.into_iter().filter(|c| c.seq > after && c.seq <= upto).collect())
    }
    /// Signs the chain head now if it moved since the last checkpoint.
    async fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError>;
    /// Records `key` as used until `expires_at` (epoch seconds); `true` if it
    /// was not used before. Durable and shared by every broker on the store.
    async fn first_use(&self, key: &str, expires_at: i64) -> Result<bool, AuditError>;
    /// Counts over a time range, computed by the store.
    async fn summary(&self, query: &SummaryQuery) -> Result<Summary, AuditError>;
}

/// Appends waiting for a store's writer before new ones are refused at
/// once: a store that stalls must not let the queue grow without bound.
pub(crate) const MAX_QUEUED: usize = 8192;

fn queue_refused<T>(e: tokio::sync::mpsc::error::TrySendError<T>) -> AuditError {
    match e {
        tokio::sync::mpsc::error::TrySendError::Full(_) => {
            AuditError::Unavailable(format!("{MAX_QUEUED} records are already waiting for the audit store"))
        }
        tokio::sync::mpsc::error::TrySendError::Closed(_) => {
            AuditError::Unavailable("the audit writer has stopped".into())
        }
    }
}

/// What a writing store needs to keep the chain.
pub struct ChainKeys {
    /// MACs of record hashes.
    pub key: AuditKey,
    /// Checkpoint signatures.
    pub signer: CheckpointSigner,
    /// Sign a checkpoint every this many records.
    pub checkpoint_every: u64,
    /// Let concurrent appends share one commit (one fsync).
    pub group_commit: bool,
    /// Longest one operation on a networked store (PostgreSQL) may take
    /// before its connection is dropped and opened again.
    pub store_timeout: std::time::Duration,
}

/// Opens an existing store read-only, for queries.
pub async fn open_existing(store: &str) -> Result<std::sync::Arc<dyn AuditSink>, AuditError> {
    if let Some(path) = store.strip_prefix("sqlite://") {
        return Ok(std::sync::Arc::new(SqliteSink::open_existing(std::path::Path::new(
            path,
        ))?));
    }
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(PostgresSink::open_existing(store).await?));
    }
    Err(AuditError::Config(format!(
        "unsupported audit store `{}`: use sqlite://PATH or postgres://...",
        scheme(store)
    )))
}

fn scheme(store: &str) -> &str {
    store.split("://").next().unwrap_or(store)
}

/// Opens the store named by a URL (`sqlite://PATH` or `postgres://...`)
/// for writing; PostgreSQL migrations run here.
pub async fn open(store: &str, chain: ChainKeys) -> Result<std::sync::Arc<dyn AuditSink>, AuditError> {
    if let Some(path) = store.strip_prefix("sqlite://") {
        let group = chain.group_commit;
        return Ok(std::sync::Arc::new(SqliteSink::open(
            std::path::Path::new(path),
            chain,
            group,
        )?));
    }
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(PostgresSink::open(store, chain).await?));
    }
    Err(AuditError::Config(format!(
        "unsupported audit store `{}`: use sqlite://PATH or postgres://...",
        scheme(store)
    )))
}
