//! Leases in the audit store's database (SQLite or PostgreSQL). A lease is
//! claimed by one broker before it is revoked: `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, a write transaction on SQLite. The claim expires, so a broker
//! that dies holding one does not strand the lease.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio_postgres::Row;

use super::{Lease, LeaseState};
use crate::audit::postgres::{Session, connect};
use crate::audit::{AuditError, unavailable};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leases (
    id              TEXT PRIMARY KEY,
    grant_name      TEXT NOT NULL,
    database_name   TEXT NOT NULL,
    username        TEXT NOT NULL,
    issuer          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    state           TEXT NOT NULL,
    revoke_reason   TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    revoked_at      BIGINT,
    claimed_by      TEXT,
    claimed_until   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS leases_due ON leases (state, expires_at);
CREATE UNIQUE INDEX IF NOT EXISTS leases_active_name ON leases (database_name, username) WHERE state = 'active';
";

const COLUMNS: &str = "id, grant_name, database_name, username, issuer, subject, created_at, expires_at, state, \
                       revoke_reason, attempts, last_error, next_attempt_at, revoked_at";

/// Where leases are kept.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// Records a new active lease (before its role is created).
    async fn create(&self, lease: &Lease) -> Result<(), AuditError>;
    /// One lease.
    async fn get(&self, id: &str) -> Result<Option<Lease>, AuditError>;
    /// Claims for `owner` until `claim_until` up to `limit` active leases
    /// that are due (expired, retry time come) and not claimed by another.
    async fn claim_due(&self, now: i64, owner: &str, claim_until: i64, limit: u32) -> Result<Vec<Lease>, AuditError>;
    /// Claims one active lease (for an early revoke), if nobody holds it.
    async fn claim(&self, id: &str, now: i64, owner: &str, claim_until: i64) -> Result<Option<Lease>, AuditError>;
    /// Marks a claimed lease revoked; false if `owner` no longer held it.
    async fn finish(&self, id: &str, owner: &str, now: i64, reason: &str) -> Result<bool, AuditError>;
    /// Records a failed attempt and when to try again; releases the claim.
    async fn failed(&self, id: &str, owner: &str, error: &str, next_attempt_at: i64) -> Result<(), AuditError>;
    /// Makes an active lease due now, with the reason it ends early.
    async fn expire_now(&self, id: &str, now: i64, reason: &str) -> Result<bool, AuditError>;
    /// Leases, newest first; only active ones failing to be revoked when `failing`.
    async fn list(&self, failing: bool, limit: u32) -> Result<Vec<Lease>, AuditError>;
    /// Role names of active leases on `database`.
    async fn active_usernames(&self, database: &str) -> Result<Vec<String>, AuditError>;
}

/// Opens the lease table in the store named by `url` (creating it).
pub async fn open_store(url: &str, timeout: Duration) -> Result<Arc<dyn LeaseStore>, AuditError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(SqliteLeases::open(Path::new(path))?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let client = connect(url, timeout).await?;
        client
            .batch_execute(SCHEMA)
            .await
            .map_err(|e| AuditError::Config(format!("lease table: {e}")))?;
        return Ok(Arc::new(PostgresLeases {
            session: Session::new(url, timeout, client),
        }));
    }
    Err(AuditError::Config(format!(
        "leases: unsupported store `{}`",
        crate::redact::connection_string(url)
    )))
}

fn state(text: &str) -> LeaseState {
    if text == "revoked" {
        LeaseState::Revoked
    } else {
        LeaseState::Active
    }
}

struct SqliteLeases {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteLeases {
    fn open(path: &Path) -> Result<SqliteLeases, AuditError> {
        let conn = Connection::open(path).map_err(|e| AuditError::Config(format!("leases {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.execute_batch(&SCHEMA.replace("BIGINT", "INTEGER"))
            .map_err(|e| AuditError::Config(format!("lease table: {e}")))?;
        Ok(SqliteLeases {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, AuditError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| unavailable("lease connection poisoned"))?;
            work(&mut guard).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}

fn sqlite_lease(row: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        id: row.get(0)?,
        grant: row.get(1)?,
        database: row.get(2)?,
        username: row.get(3)?,
        issuer: row.get(4)?,
        subject: row.get(5)?,
        created_at: row.get(6)?,
        expires_at: row.get(7)?,
        state: state(&row.get::<_, String>(8)?),
        revoke_reason: row.get(9)?,
        attempts: row.get(10)?,
        last_error: row.get(11)?,
        next_attempt_at: row.get(12)?,
        revoked_at: row.get(13)?,
    })
}

#[async_trait::async_trait]
impl LeaseStore for SqliteLeases {
    async fn create(&self, lease: &Lease) -> Result<(), AuditError> {
        let l = lease.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO leases (id, grant_name, database_name, username, issuer, subject, created_at, expires_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active')",
                params![l.id, l.grant, l.database, l.username, l.issuer, l.subject, l.created_at, l.expires_at],
            )
            .map(|_| ())
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<Lease>, AuditError> {
        let id = id.to_string();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM leases WHERE id = ?1"),
                [id],
                sqlite_lease,
            )
            .optional()
        })
        .await
    }

    async fn claim_due(&self, now: i64, owner: &str, claim_until: i64, limit: u32) -> Result<Vec<Lease>, AuditError> {
        let owner = owner.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let leases = {
                let mut statement = tx.prepare(&format!(
                    "UPDATE leases SET claimed_by = ?1, claimed_until = ?2
                     WHERE id IN (SELECT id FROM leases WHERE state = 'active' AND expires_at <= ?3
                                  AND next_attempt_at <= ?3 AND claimed_until < ?3
                                  ORDER BY expires_at LIMIT ?4)
                     RETURNING {COLUMNS}"
                ))?;
                let rows = statement.query_map(params![owner, claim_until, now, limit], sqlite_lease)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.commit()?;
            Ok(leases)
        })
        .await
    }

    async fn claim(&self, id: &str, now: i64, owner: &str, claim_until: i64) -> Result<Option<Lease>, AuditError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.with(move |c| {
            c.query_row(
                &format!(
                    "UPDATE leases SET claimed_by = ?1, claimed_until = ?2
                     WHERE id = ?3 AND state = 'active' AND claimed_until < ?4 RETURNING {COLUMNS}"
                ),
                params![owner, claim_until, id, now],
                sqlite_lease,
            )
            .optional()
        })
        .await
    }

    async fn finish(&self, id: &str, owner: &str, now: i64, reason: &str) -> Result<bool, AuditError> {
        let (id, owner, reason) = (id.to_string(), owner.to_string(), reason.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE leases SET state = 'revoked', revoked_at = ?1, claimed_until = 0,
                    revoke_reason = COALESCE(revoke_reason, ?2)
                 WHERE id = ?3 AND claimed_by = ?4 AND state = 'active'",
                params![now, reason, id, owner],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn failed(&self, id: &str, owner: &str, error: &str, next_attempt_at: i64) -> Result<(), AuditError> {
        let (id, owner, error) = (id.to_string(), owner.to_string(), error.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE leases SET attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2, claimed_until = 0
                 WHERE id = ?3 AND claimed_by = ?4",
                params![error, next_attempt_at, id, owner],
            )
            .map(|_| ())
        })
        .await
    }

    async fn expire_now(&self, id: &str, now: i64, reason: &str) -> Result<bool, AuditError> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE leases SET expires_at = MIN(expires_at, ?1), next_attempt_at = 0, revoke_reason = ?2
                 WHERE id = ?3 AND state = 'active'",
                params![now, reason, id],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn list(&self, failing: bool, limit: u32) -> Result<Vec<Lease>, AuditError> {
        self.with(move |c| {
            let filter = if failing {
                format!("WHERE state = 'active' AND attempts >= {}", super::FAILING_AFTER)
            } else {
                String::new()
            };
            let mut statement = c.prepare(&format!(
                "SELECT {COLUMNS} FROM leases {filter} ORDER BY created_at DESC, id DESC LIMIT ?1"
            ))?;
            let rows = statement.query_map([limit], sqlite_lease)?;
            rows.collect()
        })
        .await
    }

    async fn active_usernames(&self, database: &str) -> Result<Vec<String>, AuditError> {
        let database = database.to_string();
        self.with(move |c| {
            let mut statement =
                c.prepare("SELECT username FROM leases WHERE state = 'active' AND database_name = ?1")?;
            let rows = statement.query_map([database], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }
}

struct PostgresLeases {
    session: Session,
}

fn pg_lease(row: &Row) -> Result<Lease, AuditError> {
    let get_i32 = |i: usize| row.try_get::<_, i32>(i).map_err(unavailable);
    Ok(Lease {
        id: row.try_get(0).map_err(unavailable)?,
        grant: row.try_get(1).map_err(unavailable)?,
        database: row.try_get(2).map_err(unavailable)?,
        username: row.try_get(3).map_err(unavailable)?,
        issuer: row.try_get(4).map_err(unavailable)?,
        subject: row.try_get(5).map_err(unavailable)?,
        created_at: row.try_get(6).map_err(unavailable)?,
        expires_at: row.try_get(7).map_err(unavailable)?,
        state: state(row.try_get::<_, &str>(8).map_err(unavailable)?),
        revoke_reason: row.try_get(9).map_err(unavailable)?,
        attempts: u32::try_from(get_i32(10)?).unwrap_or(0),
        last_error: row.try_get(11).map_err(unavailable)?,
        next_attempt_at: row.try_get(12).map_err(unavailable)?,
        revoked_at: row.try_get(13).map_err(unavailable)?,
    })
}

#[async_trait::async_trait]
impl LeaseStore for PostgresLeases {
    async fn create(&self, lease: &Lease) -> Result<(), AuditError> {
        let l = lease.clone();
        self.session
            .run(move |c| {
                Box::pin(async move {
                    c.execute(
                        "INSERT INTO leases (id, grant_name, database_name, username, issuer, subject, created_at, expires_at, state)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active')",
                        &[&l.id, &l.grant, &l.database, &l.username, &l.issuer, &l.subject, &l.created_at, &l.expires_at],
                    )
                    .await
                    .map(|_| ())
                    .map_err(unavailable)
                })
            })
            .await
    }

    async fn get(&self, id: &str) -> Result<Option<Lease>, AuditError> {
        let id = id.to_string();
        self.session
            .run(move |c| {
                Box::pin(async move {
                    let row = c
                        .query_opt(&format!("SELECT {COLUMNS} FROM leases WHERE id = $1"), &[&id])
                        .await
                        .map_err(unavailable)?;
                    row.as_ref().map(pg_lease).transpose()
                })
            })
            .await
    }

    async fn claim_due(&self, now: i64, owner: &str, claim_until: i64, limit: u32) -> Result<Vec<Lease>, AuditError> {
        let owner = owner.to_string();
        let limit = i64::from(limit);
        self.session
            .run(move |c| {
                Box::pin(async move {
                    // SKIP LOCKED: brokers reaping at once each take other leases.
                    let rows = c
                        .query(
                            &format!(
                                "UPDATE leases SET claimed_by = $1, claimed_until = $2
                                 WHERE id IN (SELECT id FROM leases WHERE state = 'active' AND expires_at <= $3
                                              AND next_attempt_at <= $3 AND claimed_until < $3
                                              ORDER BY expires_at LIMIT $4 FOR UPDATE SKIP LOCKED)
                                 RETURNING {COLUMNS}"
                            ),
                            &[&owner, &claim_until, &now, &limit],
                        )
                        .await
                        .map_err(unavailable)?;
                    rows.iter().map(pg_lease).collect()
                })
            })
            .await
    }

    async fn claim(&self, id: &str, now: i64, owner: &str, claim_until: i64) -> Result<Option<Lease>, AuditError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.session
            .run(move |c| {
                Box::pin(async move {
                    let row = c
                        .query_opt(
                            &format!(
                                "UPDATE leases SET claimed_by = $1, claimed_until = $2
                                 WHERE id = $3 AND state = 'active' AND claimed_until < $4 RETURNING {COLUMNS}"
                            ),
                            &[&owner, &claim_until, &id, &now],
                        )
                        .await
                        .map_err(unavailable)?;
                    row.as_ref().map(pg_lease).transpose()
                })
            })
            .await
    }

    async fn finish(&self, id: &str, owner: &str, now: i64, reason: &str) -> Result<bool, AuditError> {
        let (id, owner, reason) = (id.to_string(), owner.to_string(), reason.to_string());
        self.session
            .run(move |c| {
                Box::pin(async move {
                    c.execute(
                        "UPDATE leases SET state = 'revoked', revoked_at = $1, claimed_until = 0,
                            revoke_reason = COALESCE(revoke_reason, $2)
                         WHERE id = $3 AND claimed_by = $4 AND state = 'active'",
                        &[&now, &reason, &id, &owner],
                    )
                    .await
                    .map(|n| n == 1)
                    .map_err(unavailable)
                })
            })
            .await
    }

    async fn failed(&self, id: &str, owner: &str, error: &str, next_attempt_at: i64) -> Result<(), AuditError> {
        let (id, owner, error) = (id.to_string(), owner.to_string(), error.to_string());
        self.session
            .run(move |c| {
                Box::pin(async move {
                    c.execute(
                        "UPDATE leases SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, claimed_until = 0
                         WHERE id = $3 AND claimed_by = $4",
                        &[&error, &next_attempt_at, &id, &owner],
                    )
                    .await
                    .map(|_| ())
                    .map_err(unavailable)
                })
            })
            .await
    }

    async fn expire_now(&self, id: &str, now: i64, reason: &str) -> Result<bool, AuditError> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.session
            .run(move |c| {
                Box::pin(async move {
                    c.execute(
                        "UPDATE leases SET expires_at = LEAST(expires_at, $1), next_attempt_at = 0, revoke_reason = $2
                         WHERE id = $3 AND state = 'active'",
                        &[&now, &reason, &id],
                    )
                    .await
                    .map(|n| n == 1)
                    .map_err(unavailable)
                })
            })
            .await
    }

    async fn list(&self, failing: bool, limit: u32) -> Result<Vec<Lease>, AuditError> {
        let limit = i64::from(limit);
        let min_attempts = if failing {
            i32::try_from(super::FAILING_AFTER).unwrap_or(3)
        } else {
            0
        };
        self.session
            .run(move |c| {
                Box::pin(async move {
                    let rows = c
                        .query(
                            &format!(
                                "SELECT {COLUMNS} FROM leases
                                 WHERE ($1 = 0 OR (state = 'active' AND attempts >= $1))
                                 ORDER BY created_at DESC, id DESC LIMIT $2"
                            ),
                            &[&min_attempts, &limit],
                        )
                        .await
                        .map_err(unavailable)?;
                    rows.iter().map(pg_lease).collect()
                })
            })
            .await
    }

    async fn active_usernames(&self, database: &str) -> Result<Vec<String>, AuditError> {
        let database = database.to_string();
        self.session
            .run(move |c| {
                Box::pin(async move {
                    let rows = c
                        .query(
                            "SELECT username FROM leases WHERE state = 'active' AND database_name = $1",
                            &[&database],
                        )
                        .await
                        .map_err(unavailable)?;
                    rows.iter().map(|r| r.try_get(0).map_err(unavailable)).collect()
                })
            })
            .await
    }
}
