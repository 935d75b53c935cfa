//! How the SQLite log finds the records of one subject, grant or token
//! without an index on those columns.
//!
//! An index whose new entries land anywhere in its B-tree (a token's HMAC,
//! one subject among hundreds) makes every append write a page of its own
//! to the WAL, and again at the checkpoint: measured, the subject, grant
//! and token indexes were most of the writer's work (docs/performance.md,
//! "What the audit indexes cost"). Instead the log is cut into blocks of
//! [`BLOCK`] records by `seq`. The commit that completes a block also
//! writes the block's lookup rows, one per (value, record), sorted, so they
//! are appended at the end of one table: a few pages per block instead of
//! a page per record per index.
//!
//! A lookup walks the blocks newest first and stops at its limit: in a
//! built block it seeks the value's rows, in the others (the block being
//! filled, or one an older broker completed) it reads the block's records
//! through the primary key. A key is 64 bits of SHA-256 of the column and
//! the value; the query compares the column itself too, so a collision
//! costs a read, never a wrong answer. The lookup is only an accelerator:
//! the records stay the truth, and `stint audit verify` checks them.

use std::collections::BTreeSet;

use aws_lc_rs::digest;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use super::columns::unavailable;
use super::sqlite::read_row;
use super::{AuditError, AuditQuery, AuditRecord};

/// Records per block: the lookup rows are written once per this many
/// records, and a lookup reads at most this many records unindexed (the
/// block being filled). The library's own tests use small blocks, so a
/// log of a few blocks is quick to write.
pub(super) const BLOCK: i64 = if cfg!(test) { 64 } else { 4096 };

/// The lookup tables; the indexes they replace are dropped, which a log
/// from an earlier version had.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_lookup (
    block INTEGER NOT NULL,
    key   INTEGER NOT NULL,
    seq   INTEGER NOT NULL,
    PRIMARY KEY (block, key, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_lookup_blocks (block INTEGER PRIMARY KEY);
DROP INDEX IF EXISTS audit_records_grant;
DROP INDEX IF EXISTS audit_records_subject;
DROP INDEX IF EXISTS audit_records_token;
";

/// A column found through the lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Subject,
    Grant,
    Token,
}

const FIELDS: [Field; 3] = [Field::Subject, Field::Grant, Field::Token];

impl Field {
    fn column(self) -> &'static str {
        match self {
            Field::Subject => "subject",
            Field::Grant => "grant_name",
            Field::Token => "token_jti_hmac",
        }
    }

    /// Part of the key, so equal text in two columns gets two keys.
    fn tag(self) -> u8 {
        match self {
            Field::Subject => 1,
            Field::Grant => 2,
            Field::Token => 3,
        }
    }
}

/// The lookup key of `value` in `field`'s column.
pub(super) fn key(field: Field, value: &str) -> i64 {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(&[field.tag()]);
    context.update(value.as_bytes());
    let mut first = [0u8; 8];
    for (to, from) in first.iter_mut().zip(context.finish().as_ref()) {
        *to = *from;
    }
    i64::from_be_bytes(first)
}

/// The block `seq` belongs to.
fn block_of(seq: i64) -> i64 {
    seq.div_euclid(BLOCK)
}

/// Whether the record at `seq` is the last of its block (its commit then
/// writes the block's lookup rows).
pub(super) fn completes_block(seq: i64) -> bool {
    (seq + 1).rem_euclid(BLOCK) == 0
}

/// Writes the lookup rows of `block` unless they are there already. Runs
/// inside the caller's write transaction, which it never commits.
pub(super) fn build(conn: &Connection, block: i64) -> rusqlite::Result<()> {
    let new = conn
        .prepare_cached("INSERT OR IGNORE INTO audit_lookup_blocks (block) VALUES (?1)")?
        .execute([block])?;
    if new == 0 {
        return Ok(());
    }
    let mut rows = Vec::new();
    let columns = FIELDS.map(Field::column).join(", ");
    let mut select = conn.prepare_cached(&format!(
        "SELECT seq, {columns} FROM audit_records WHERE seq >= ?1 AND seq < ?2"
    ))?;
    let mut found = select.query([block * BLOCK, (block + 1) * BLOCK])?;
    while let Some(row) = found.next()? {
        let seq: i64 = row.get(0)?;
        for (i, field) in FIELDS.into_iter().enumerate() {
            if let Some(value) = row.get_ref(i + 1)?.as_str_or_null()? {
                rows.push((key(field, value), seq));
            }
        }
    }
    // In key order, so the rows go to the end of the table page by page.
    rows.sort_unstable();
    rows.dedup();
    // Many rows per statement: one statement per row was most of the
    // build's time.
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut insert = conn.prepare_cached(&insert_sql(chunk.len()))?;
        let values = chunk.iter().flat_map(|&(key, seq)| [block, key, seq]);
        insert.execute(params_from_iter(values))?;
    }
    Ok(())
}

/// Lookup rows per `INSERT` (3 parameters each; SQLite allows 32,766).
/// Fewer in the library's tests, so their small blocks take several.
const ROWS_PER_INSERT: usize = if cfg!(test) { 50 } else { 256 };

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT OR IGNORE INTO audit_lookup (block, key, seq) VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(?, ?, ?)" } else { ", (?, ?, ?)" });
    }
    sql
}

/// The complete blocks that have no lookup rows yet: all of them on a log
/// from before the lookup, and any an older broker completed since.
pub(super) fn missing(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    let complete = last_seq(conn)?.map_or(0, |last| block_of(last + 1));
    let built = built_blocks(conn, complete)?;
    Ok((0..complete).filter(|block| !built.contains(block)).collect())
}

/// The log's last seq (`None` when it is empty).
fn last_seq(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT max(seq) FROM audit_records", [], |r| r.get(0))
}

/// The blocks up to `upto` that have lookup rows (none on a log no broker
/// of this version has written: the `stint audit` commands open such a log
/// read-only and never create the tables).
fn built_blocks(conn: &Connection, upto: i64) -> rusqlite::Result<BTreeSet<i64>> {
    let exists = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_lookup_blocks'",
            [],
            |_| Ok(()),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(BTreeSet::new());
    }
    let mut statement = conn.prepare_cached("SELECT block FROM audit_lookup_blocks WHERE block <= ?1")?;
    let blocks = statement.query_map([upto], |r| r.get(0))?;
    blocks.collect()
}

/// The filter a query looks up, if it has one: the one likely to match
/// fewest records (a request id, which has an index, leads over all).
pub(super) fn lookup_filter(q: &AuditQuery) -> Option<(Field, &str)> {
    if q.request_id.is_some() {
        return None;
    }
    [
        (Field::Token, &q.token_jti_hmac),
        (Field::Subject, &q.subject),
        (Field::Grant, &q.grant),
    ]
    .into_iter()
    .find_map(|(field, value)| value.as_deref().map(|value| (field, value)))
}

/// The two statements of a walk and the values of their filters, which
/// are `?1` to `?n` in both; the statements' own parameters follow.
struct Walk {
    /// Records of one built block: then block, key, seq bound
    /// (exclusive), limit.
    built: String,
    /// Records of one block without lookup rows: then first seq, seq bound
    /// (exclusive), limit.
    unbuilt: String,
    filters: Vec<Value>,
}

impl Walk {
    fn new(q: &AuditQuery) -> Walk {
        let outcome = q.outcome.map(|o| o.as_str().to_string());
        let checks = [
            ("subject", "=", &q.subject),
            ("grant_name", "=", &q.grant),
            ("token_jti_hmac", "=", &q.token_jti_hmac),
            ("outcome", "=", &outcome),
            ("kind", "=", &q.kind),
            ("reason", "=", &q.reason),
            ("time", ">=", &q.since),
            ("time", "<", &q.until),
        ];
        let (mut filters, mut terms) = (Vec::new(), String::new());
        for (column, op, value) in checks {
            if let Some(value) = value {
                filters.push(Value::Text(value.clone()));
                // `+`: checked on the records found, never an index. Only
                // `audit_records` has these columns, so the join needs no
                // alias on them.
                terms.push_str(&format!(" AND +{column} {op} ?{}", filters.len()));
            }
        }
        let p = |i: usize| filters.len() + i;
        Walk {
            built: format!(
                "SELECT r.* FROM audit_lookup l CROSS JOIN audit_records r ON r.seq = l.seq
                 WHERE l.block = ?{} AND l.key = ?{} AND l.seq < ?{}{terms}
                 ORDER BY l.seq DESC LIMIT ?{}",
                p(1),
                p(2),
                p(3),
                p(4)
            ),
            unbuilt: format!(
                "SELECT * FROM audit_records WHERE seq >= ?{} AND seq < ?{}{terms}
                 ORDER BY seq DESC LIMIT ?{}",
                p(1),
                p(2),
                p(3)
            ),
            filters,
        }
    }
}

/// The records `q` asks for, found through the lookup of `field`: newest
/// first, at most `q.limit`. One read transaction: the walk's statements
/// (a few thousand on a large log) see one snapshot and take the read
/// lock once.
pub(super) fn query(
    conn: &Connection,
    q: &AuditQuery,
    field: Field,
    value: &str,
) -> Result<Vec<AuditRecord>, AuditError> {
    conn.execute_batch("BEGIN").map_err(unavailable)?;
    let result = walk(conn, q, field, value);
    // A read transaction has nothing to lose; ending it always matters
    // (a reader left inside one pins an old snapshot).
    let _ = conn.execute_batch("COMMIT");
    result
}

fn walk(conn: &Connection, q: &AuditQuery, field: Field, value: &str) -> Result<Vec<AuditRecord>, AuditError> {
    let limit = i64::from(q.limit.unwrap_or(50));
    let Some(last) = last_seq(conn).map_err(unavailable)? else {
        return Ok(Vec::new());
    };
    // The walk's exclusive upper bound.
    let bound = q.before_seq.map_or(last + 1, |before| before.min(last + 1));
    if bound <= 0 || limit <= 0 {
        return Ok(Vec::new());
    }
    let built = built_blocks(conn, block_of(bound - 1)).map_err(unavailable)?;
    let walk = Walk::new(q);
    let key = key(field, value);
    let mut records = Vec::new();
    let mut block = block_of(bound - 1);
    while block >= 0 {
        let remaining = limit - i64::try_from(records.len()).unwrap_or(i64::MAX);
        if remaining <= 0 {
            break;
        }
        let upper = bound.min((block + 1) * BLOCK);
        let (sql, fixed) = if built.contains(&block) {
            (&walk.built, vec![block, key, upper, remaining])
        } else {
            (&walk.unbuilt, vec![block * BLOCK, upper, remaining])
        };
        let values = walk
            .filters
            .iter()
            .cloned()
            .chain(fixed.into_iter().map(Value::Integer));
        let mut statement = conn.prepare_cached(sql).map_err(unavailable)?;
        let rows = statement
            .query_map(params_from_iter(values), read_row)
            .map_err(unavailable)?;
        for row in rows {
            records.push(row.map_err(unavailable)?);
        }
        block -= 1;
    }
    Ok(records)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a failed step is the test's report
mod tests {
    use super::*;
    use crate::audit::Outcome;
    use rusqlite::params;

    /// A log of two and a half blocks, the first two built: subjects,
    /// grants and tokens that repeat across blocks and within them.
    fn log() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("audit.db")).unwrap();
        super::super::sqlite::create_schema(&conn).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for seq in 1..=(2 * BLOCK + BLOCK / 2) {
            let outcome = if seq % 3 == 0 { "denied" } else { "issued" };
            conn.execute(
                "INSERT INTO audit_records (seq, time, request_id, outcome, grant_name, subject, claims, token_jti_hmac, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}', ?7, '{}')",
                params![
                    seq,
                    format!("2026-12-05T00:00:{:05}Z", seq),
                    format!("req-{seq}"),
                    outcome,
                    format!("grant-{}", seq % 7),
                    (seq % 11 != 0).then(|| format!("repo:acme/{}", seq % 31)),
                    format!("jti-{}", (seq + 1) / 2),
                ],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(missing(&conn).unwrap(), vec![0, 1]);
        for block in missing(&conn).unwrap() {
            build(&conn, block).unwrap();
        }
        assert!(missing(&conn).unwrap().is_empty());
        (dir, conn)
    }

    /// What a query must return: every record, filtered in Rust.
    fn expected(conn: &Connection, q: &AuditQuery) -> Vec<i64> {
        let mut statement = conn.prepare("SELECT * FROM audit_records ORDER BY seq DESC").unwrap();
        let all: Vec<AuditRecord> = statement
            .query_map([], read_row)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let same = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        all.into_iter()
            .filter(|r| {
                same(&q.subject, &r.subject)
                    && same(&q.grant, &r.grant)
                    && same(&q.token_jti_hmac, &r.token_jti_hmac)
                    && q.outcome.is_none_or(|o| o == r.outcome)
                    && q.since.as_ref().is_none_or(|s| r.time >= *s)
                    && q.before_seq.is_none_or(|b| r.seq.unwrap() < b)
            })
            .take(q.limit.unwrap_or(50) as usize)
            .map(|r| r.seq.unwrap())
            .collect()
    }

    fn found(conn: &Connection, q: &AuditQuery) -> Vec<i64> {
        let (field, value) = lookup_filter(q).unwrap();
        query(conn, q, field, value)
            .unwrap()
            .into_iter()
            .map(|r| r.seq.unwrap())
            .collect()
    }

    #[test]
    fn lookups_find_what_a_pass_over_the_log_finds_across_built_and_unbuilt_blocks() {
        let (_dir, conn) = log();
        let text = |s: &str| Some(s.to_string());
        let queries = [
            AuditQuery {
                subject: text("repo:acme/5"),
                limit: Some(500),
                ..Default::default()
            },
            AuditQuery {
                subject: text("repo:acme/5"),
                outcome: Some(Outcome::Denied),
                before_seq: Some(BLOCK + 17),
                limit: Some(30),
                ..Default::default()
            },
            AuditQuery {
                grant: text("grant-3"),
                limit: Some(1000),
                ..Default::default()
            },
            AuditQuery {
                grant: text("grant-3"),
                outcome: Some(Outcome::Issued),
                since: text("2026-12-05T00:00:00100Z"),
                limit: Some(1000),
                ..Default::default()
            },
            AuditQuery {
                subject: text("repo:acme/8"),
                grant: text("grant-3"),
                ..Default::default()
            },
            // A token's two records, in a built block and on either side
            // of a block's edge.
            AuditQuery {
                token_jti_hmac: text("jti-10"),
                ..Default::default()
            },
            AuditQuery {
                token_jti_hmac: text(&format!("jti-{}", BLOCK / 2)),
                ..Default::default()
            },
            AuditQuery {
                token_jti_hmac: text(&format!("jti-{}", BLOCK + 10)),
                ..Default::default()
            },
            AuditQuery {
                subject: text("repo:acme/nobody"),
                ..Default::default()
            },
        ];
        for q in queries {
            let want = expected(&conn, &q);
            assert!(
                !want.is_empty() || q.subject.as_deref() == Some("repo:acme/nobody"),
                "{q:?}"
            );
            assert_eq!(found(&conn, &q), want, "{q:?}");
        }
    }

    #[test]
    fn a_key_that_collides_finds_no_other_record() {
        let (_dir, conn) = log();
        // Point the key of a subject nobody has at a record of another
        // subject, as a hash collision would.
        conn.execute(
            "INSERT INTO audit_lookup (block, key, seq) VALUES (0, ?1, 5)",
            [key(Field::Subject, "repo:nobody/x")],
        )
        .unwrap();
        let q = AuditQuery {
            subject: Some("repo:nobody/x".into()),
            ..Default::default()
        };
        assert_eq!(found(&conn, &q), Vec::<i64>::new());
    }

    #[test]
    fn the_writer_builds_each_block_as_it_completes_it() {
        assert!(completes_block(BLOCK - 1));
        assert!(completes_block(2 * BLOCK - 1));
        assert!(!completes_block(BLOCK));
        assert_eq!(block_of(BLOCK - 1), 0);
        assert_eq!(block_of(BLOCK), 1);
    }

    /// Both statements of a walk seek: the built one through the lookup's
    /// primary key and the records' rowid, the other through the rowid.
    #[test]
    fn a_walk_never_scans_a_table() {
        let (_dir, conn) = log();
        let walk = Walk::new(&AuditQuery {
            subject: Some("repo:acme/5".into()),
            outcome: Some(Outcome::Issued),
            since: Some("2026".into()),
            ..Default::default()
        });
        let plan = |sql: &str, fixed: &[i64]| {
            let values = walk
                .filters
                .iter()
                .cloned()
                .chain(fixed.iter().copied().map(Value::Integer));
            let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows: Vec<String> = statement
                .query_map(params_from_iter(values), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.join("; ")
        };
        let built = plan(&walk.built, &[0, 1, 10, 5]);
        assert!(
            built.contains("SEARCH l USING PRIMARY KEY (block=? AND key=? AND seq<?)"),
            "{built}"
        );
        assert!(
            built.contains("SEARCH r USING INTEGER PRIMARY KEY (rowid=?)"),
            "{built}"
        );
        assert!(!built.contains("SCAN") && !built.contains("TEMP B-TREE"), "{built}");
        let unbuilt = plan(&walk.unbuilt, &[0, 10, 5]);
        assert!(
            unbuilt.contains("SEARCH audit_records USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
            "{unbuilt}"
        );
        assert!(!unbuilt.contains("TEMP B-TREE"), "{unbuilt}");
    }
}
