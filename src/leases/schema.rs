//! The lease table's shape. A broker, which writes leases, creates the
//! table and brings a table made by an older broker up to date; `stint
//! leases list` only looks at what is there, so that it works with read
//! access alone (a read-only SQLite file, a PostgreSQL role with SELECT).

use rusqlite::Connection;

use crate::audit::AuditError;

/// The table as this version writes it. `CREATE ... IF NOT EXISTS`: a
/// table made by an older broker keeps its columns, and [`ADDED`] fills in
/// the rest.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leases (
    id                TEXT PRIMARY KEY,
    grant_name        TEXT NOT NULL,
    database_name     TEXT NOT NULL,
    username          TEXT NOT NULL,
    issuer            TEXT NOT NULL,
    subject           TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    state             TEXT NOT NULL,
    revoke_reason     TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    next_attempt_at   BIGINT NOT NULL DEFAULT 0,
    revoked_at        BIGINT,
    claimed_by        TEXT,
    claimed_until     BIGINT NOT NULL DEFAULT 0,
    revoke_by_issuer  TEXT,
    revoke_by_subject TEXT,
    revoke_request_id TEXT,
    kind              TEXT,
    sealed_secret     TEXT
);
CREATE INDEX IF NOT EXISTS leases_due ON leases (state, expires_at);
CREATE UNIQUE INDEX IF NOT EXISTS leases_active_name ON leases (database_name, username) WHERE state = 'active';
";

/// Columns every lease table has had since the first release, in the
/// order the row readers expect them.
const BASE: &[&str] = &[
    "id",
    "grant_name",
    "database_name",
    "username",
    "issuer",
    "subject",
    "created_at",
    "expires_at",
    "state",
    "revoke_reason",
    "attempts",
    "last_error",
    "next_attempt_at",
    "revoked_at",
];

/// Columns added since, with their type, read after [`BASE`]: who asked
/// for an early end, so that the reaper's record names them when it, not
/// the request, drops the role; what kind of credential the lease ends.
const ADDED: &[(&str, &str)] = &[
    ("revoke_by_issuer", "TEXT"),
    ("revoke_by_subject", "TEXT"),
    ("revoke_request_id", "TEXT"),
    // What the lease ends (NULL: a postgres role, as before there were
    // other kinds) and, for a GitHub token, the token sealed with a key
    // derived from the audit key, since revoking it needs the token.
    ("kind", "TEXT"),
    ("sealed_secret", "TEXT"),
];

/// The select list for a table that has `present` columns. A broker's own
/// table has them all; a table only read (by `stint leases list`) may
/// predate [`ADDED`], whose columns then read as NULL.
pub(super) fn select_list(present: &[String]) -> String {
    let added = ADDED.iter().map(|(name, _)| {
        if present.iter().any(|p| p == name) {
            (*name).to_string()
        } else {
            format!("NULL AS {name}")
        }
    });
    BASE.iter()
        .map(|c| (*c).to_string())
        .chain(added)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The select list of a table this version made or brought up to date.
pub(super) fn full_select_list() -> String {
    let all: Vec<String> = ADDED.iter().map(|(name, _)| (*name).to_string()).collect();
    select_list(&all)
}

/// Columns of the `leases` table; empty when there is none.
pub(super) fn sqlite_columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info('leases')")?;
    let names = statement.query_map([], |r| r.get(0))?;
    names.collect()
}

/// Creates the table, or adds the columns an older broker's table lacks.
/// One write transaction, so brokers starting at once do not both add.
pub(super) fn sqlite_prepare(conn: &mut Connection) -> Result<(), AuditError> {
    let fail = |e: rusqlite::Error| AuditError::Config(format!("lease table: {e}"));
    conn.execute_batch(&SCHEMA.replace("BIGINT", "INTEGER")).map_err(fail)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(fail)?;
    let present = sqlite_columns(&tx).map_err(fail)?;
    for (name, kind) in ADDED.iter().filter(|(name, _)| !present.iter().any(|p| p == name)) {
        tx.execute_batch(&format!("ALTER TABLE leases ADD COLUMN {name} {kind}"))
            .map_err(fail)?;
    }
    tx.commit().map_err(fail)
}

/// Columns of the `leases` table the connection's search path finds;
/// empty when there is none.
pub(super) async fn pg_columns(client: &tokio_postgres::Client) -> Result<Vec<String>, AuditError> {
    let rows = client
        .query(
            "SELECT attname::text FROM pg_attribute
             WHERE attrelid = to_regclass('leases') AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .map_err(|e| AuditError::Config(format!("lease table: {e}")))?;
    Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
}

/// Creates the table, or adds the columns an older broker's table lacks
/// (`IF NOT EXISTS`: brokers starting at once may both try).
pub(super) async fn pg_prepare(client: &tokio_postgres::Client) -> Result<(), AuditError> {
    let fail = |e: tokio_postgres::Error| AuditError::Config(format!("lease table: {e}"));
    client.batch_execute(SCHEMA).await.map_err(fail)?;
    let present = pg_columns(client).await?;
    let missing: Vec<String> = ADDED
        .iter()
        .filter(|(name, _)| !present.iter().any(|p| p == name))
        .map(|(name, kind)| format!("ADD COLUMN IF NOT EXISTS {name} {kind}"))
        .collect();
    if !missing.is_empty() {
        client
            .batch_execute(&format!("ALTER TABLE leases {}", missing.join(", ")))
            .await
            .map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_table_is_brought_up_to_date_and_keeps_its_leases() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = Connection::open_in_memory()?;
        // The table as the first release made it.
        conn.execute_batch(
            "CREATE TABLE leases (id TEXT PRIMARY KEY, grant_name TEXT NOT NULL, database_name TEXT NOT NULL,
                 username TEXT NOT NULL, issuer TEXT NOT NULL, subject TEXT NOT NULL, created_at INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL, state TEXT NOT NULL, revoke_reason TEXT,
                 attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at INTEGER NOT NULL DEFAULT 0,
                 revoked_at INTEGER, claimed_by TEXT, claimed_until INTEGER NOT NULL DEFAULT 0);
             INSERT INTO leases (id, grant_name, database_name, username, issuer, subject, created_at, expires_at, state)
                 VALUES ('l1', 'g', 'd', 'u', 'ci', 'sub', 1, 2, 'active');",
        )
        ?;
        let before = sqlite_columns(&conn)?;
        assert!(select_list(&before).contains("NULL AS revoke_by_subject"));
        sqlite_prepare(&mut conn)?;
        sqlite_prepare(&mut conn)?;
        let after = sqlite_columns(&conn)?;
        assert_eq!(select_list(&after), full_select_list());
        let kept: String = conn.query_row(&format!("SELECT {} FROM leases", full_select_list()), [], |r| r.get(0))?;
        assert_eq!(kept, "l1");
        Ok(())
    }
}
