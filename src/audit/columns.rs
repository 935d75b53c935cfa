//! What both stores share: the columns of a stored record and how they
//! become an [`AuditRecord`], plus small encoding helpers. One mapping, so
//! SQLite and PostgreSQL can never read a record differently.

use serde_json::{Map, Value};

use super::{AuditError, AuditRecord, Outcome};

/// A store's "something went wrong" as the broker sees it.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable(e.to_string())
}

/// A claims/detail map as stored.
pub(super) fn json_text(map: &Map<String, Value>) -> String {
    // A map of strings and JSON values always serializes.
    serde_json::to_string(map).unwrap_or_else(|_| "{}".into())
}

/// A record's claims and detail as their columns hold them. Serialized
/// once, by the caller's task before the record is queued, and used twice
/// by the writer: as the columns, and inside the bytes the record's hash
/// covers (the same text, since both are serde_json's compact form). The
/// claims are most of a record, and the writer is the one thread every
/// request waits for.
#[derive(Debug, Clone)]
pub(crate) struct JsonColumns {
    pub(crate) claims: String,
    pub(crate) detail: String,
}

impl JsonColumns {
    pub(crate) fn of(record: &AuditRecord) -> JsonColumns {
        JsonColumns {
            claims: json_text(&record.claims),
            detail: json_text(&record.detail),
        }
    }
}

fn json_map(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Reads named columns of one row; each store implements it for its row type.
pub(super) trait Columns {
    /// The driver's error.
    type Error;
    /// A text column (NULL is `None`).
    fn text(&self, name: &str) -> Result<Option<String>, Self::Error>;
    /// An integer column (NULL is `None`).
    fn int(&self, name: &str) -> Result<Option<i64>, Self::Error>;
}

/// The record in `row` (columns as created by both stores' schemas).
pub(super) fn record_from<R: Columns>(row: &R) -> Result<AuditRecord, R::Error> {
    let text = |name: &str| row.text(name);
    let outcome = text("outcome")?.unwrap_or_default();
    Ok(AuditRecord {
        seq: row.int("seq")?,
        time: text("time")?.unwrap_or_default(),
        request_id: text("request_id")?.unwrap_or_default(),
        outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Error),
        reason: text("reason")?,
        grant: text("grant_name")?,
        kind: text("kind")?,
        issuer: text("issuer")?,
        subject: text("subject")?,
        claims: json_map(&text("claims")?.unwrap_or_default()),
        token_jti_hmac: text("token_jti_hmac")?,
        issuance_id: text("issuance_id")?,
        ttl_seconds: row.int("ttl_seconds")?.and_then(|t| u64::try_from(t).ok()),
        expires_at: text("expires_at")?,
        client_addr: text("client_addr")?,
        detail: json_map(&text("detail")?.unwrap_or_default()),
        prev_hash: text("prev_hash")?,
        record_hash: text("record_hash")?,
        record_mac: text("record_mac")?,
    })
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, name: &str) -> Result<Option<String>, Self::Error> {
        self.get(name)
    }
    fn int(&self, name: &str) -> Result<Option<i64>, Self::Error> {
        self.get(name)
    }
}

impl Columns for tokio_postgres::Row {
    type Error = tokio_postgres::Error;
    fn text(&self, name: &str) -> Result<Option<String>, Self::Error> {
        self.try_get(name)
    }
    fn int(&self, name: &str) -> Result<Option<i64>, Self::Error> {
        self.try_get(name)
    }
}
