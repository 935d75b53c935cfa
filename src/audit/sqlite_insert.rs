//! A group's records go into `audit_records` in multi-row `INSERT`s.
//!
//! One statement per record cost the writer about 15% of its instructions
//! in statement overhead alone: finding the cached statement (its SQL text
//! hashed), stepping the program from its start, halting and resetting it.
//! A group (up to 256 records) now takes one
//! statement per power of two in its size, each from a small set of cached
//! statements.

use std::sync::LazyLock;

use rusqlite::{Connection, Statement};

use super::chain;
use super::columns::{JsonColumns, unavailable};
use super::{AuditError, AuditRecord};

/// The columns one record fills, in [`bind`]'s order.
const COLUMNS: [&str; 20] = [
    "seq",
    "time",
    "request_id",
    "outcome",
    "reason",
    "grant_name",
    "kind",
    "issuer",
    "subject",
    "claims",
    "token_jti_hmac",
    "issuance_id",
    "ttl_seconds",
    "expires_at",
    "client_addr",
    "detail",
    "chain_version",
    "prev_hash",
    "record_hash",
    "record_mac",
];

/// Rows per statement, largest first: a group is cut into these, so at
/// most [`CHUNKS`]`.len()` statements are ever cached. 32 rows bind 640
/// parameters (SQLite allows 32,766).
const CHUNKS: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// The SQL of each chunk size, built once.
static SQL: LazyLock<[String; CHUNKS.len()]> = LazyLock::new(|| CHUNKS.map(insert_sql));

fn insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; COLUMNS.len()].join(", "));
    format!(
        "INSERT INTO audit_records ({}) VALUES {}",
        COLUMNS.join(", "),
        vec![one; rows].join(", ")
    )
}

/// Inserts `records` (already linked into the chain) inside the caller's
/// write transaction, in order.
pub(super) fn insert_records(conn: &Connection, records: &[(&AuditRecord, &JsonColumns)]) -> Result<(), AuditError> {
    let mut rest = records;
    while !rest.is_empty() {
        let (size, sql) = CHUNKS
            .iter()
            .zip(SQL.iter())
            .find(|(size, _)| **size <= rest.len())
            .ok_or_else(|| unavailable("no INSERT fits the group"))?; // never: the last size is 1
        let (now, later) = rest.split_at(*size);
        let mut insert = conn.prepare_cached(sql).map_err(unavailable)?;
        for (row, (record, json)) in now.iter().enumerate() {
            bind(&mut insert, row * COLUMNS.len(), record, json).map_err(unavailable)?;
        }
        insert.raw_execute().map_err(unavailable)?;
        rest = later;
    }
    Ok(())
}

/// Binds one record's columns as parameters `at + 1 ..= at + 20`.
fn bind(insert: &mut Statement<'_>, at: usize, r: &AuditRecord, json: &JsonColumns) -> rusqlite::Result<()> {
    insert.raw_bind_parameter(at + 1, r.seq)?;
    insert.raw_bind_parameter(at + 2, &r.time)?;
    insert.raw_bind_parameter(at + 3, &r.request_id)?;
    insert.raw_bind_parameter(at + 4, r.outcome.as_str())?;
    insert.raw_bind_parameter(at + 5, &r.reason)?;
    insert.raw_bind_parameter(at + 6, &r.grant)?;
    insert.raw_bind_parameter(at + 7, &r.kind)?;
    insert.raw_bind_parameter(at + 8, &r.issuer)?;
    insert.raw_bind_parameter(at + 9, &r.subject)?;
    insert.raw_bind_parameter(at + 10, &json.claims)?;
    insert.raw_bind_parameter(at + 11, &r.token_jti_hmac)?;
    insert.raw_bind_parameter(at + 12, &r.issuance_id)?;
    insert.raw_bind_parameter(at + 13, r.ttl_seconds.and_then(|t| i64::try_from(t).ok()))?;
    insert.raw_bind_parameter(at + 14, &r.expires_at)?;
    insert.raw_bind_parameter(at + 15, &r.client_addr)?;
    insert.raw_bind_parameter(at + 16, &json.detail)?;
    insert.raw_bind_parameter(at + 17, chain::CHAIN_VERSION)?;
    insert.raw_bind_parameter(at + 18, &r.prev_hash)?;
    insert.raw_bind_parameter(at + 19, &r.record_hash)?;
    insert.raw_bind_parameter(at + 20, &r.record_mac)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // a failed step is the test's report
mod tests {
    use serde_json::json;

    use super::*;
    use crate::audit::Outcome;
    use crate::audit::sqlite::{create_schema, read_row};

    /// A record whose every column holds a value of its own, so a
    /// parameter bound to the wrong column or row shows.
    fn record(n: i64) -> AuditRecord {
        let text = |column: &str| Some(format!("{column}-{n}"));
        AuditRecord {
            seq: Some(n),
            time: format!("2026-12-05T10:{:02}:{:02}Z", n / 60, n % 60),
            request_id: format!("request-{n}"),
            outcome: if n % 2 == 0 { Outcome::Issued } else { Outcome::Denied },
            reason: text("reason"),
            grant: text("grant"),
            kind: text("kind"),
            issuer: text("issuer"),
            subject: text("subject"),
            claims: json!({"sub": format!("claims-{n}")}).as_object().cloned().unwrap(),
            token_jti_hmac: text("jti"),
            issuance_id: text("issuance"),
            ttl_seconds: Some(u64::try_from(n).unwrap() + 300),
            expires_at: text("expires"),
            client_addr: text("client"),
            detail: json!({"n": n}).as_object().cloned().unwrap(),
            prev_hash: text("prev"),
            record_hash: text("hash"),
            record_mac: text("mac"),
        }
    }

    /// Groups of every shape (one size, several, sizes past the largest
    /// statement) come back record for record, in order.
    #[test]
    fn a_group_of_any_size_is_stored_record_for_record() {
        let conn = Connection::open_in_memory().unwrap();
        create_schema(&conn).unwrap();
        let mut next = 1;
        for size in [1, 3, 7, 32, 33, 70, 256] {
            let records: Vec<AuditRecord> = (next..next + size).map(record).collect();
            let json: Vec<JsonColumns> = records.iter().map(JsonColumns::of).collect();
            let rows: Vec<_> = records.iter().zip(&json).collect();
            insert_records(&conn, &rows).unwrap();
            let mut select = conn
                .prepare("SELECT * FROM audit_records WHERE seq >= ?1 ORDER BY seq")
                .unwrap();
            let stored: Vec<AuditRecord> = select
                .query_map([next], read_row)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(stored, records, "a group of {size}");
            next += size;
        }
    }
}
