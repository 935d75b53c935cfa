//! Leases in the audit store's database (SQLite or PostgreSQL). A lease is
//! claimed by one broker before it is revoked: `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, a write transaction on SQLite. The claim expires, so a broker
//! that dies holding one does not strand the lease.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio_postgres::Row;

use super::schema::{self, full_select_list, select_list};
use super::{Lease, LeaseKind, LeaseState, Requester};
use crate::audit::postgres::{Session, connect};
use crate::audit::{AuditError, unavailable};

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
    /// Makes an active lease due now, with the reason it ends early and
    /// who asked (replacing an earlier request's).
    async fn expire_now(&self, id: &str, now: i64, reason: &str, by: Option<&Requester>) -> Result<bool, AuditError>;
    /// Leases, newest first; only active ones failing to be revoked when `failing`.
    async fn list(&self, failing: bool, limit: u32) -> Result<Vec<Lease>, AuditError>;
    /// Role names of active leases on `database`.
    async fn active_usernames(&self, database: &str) -> Result<Vec<String>, AuditError>;
    /// Leases still active, and of those the failing ones: counted by the
    /// store (the leases due index), not listed.
    async fn counts(&self) -> Result<(u64, u64), AuditError>;
}

/// Counts active leases and the failing ones among them.
fn counts_sql() -> String {
    format!(
        "SELECT count(*), coalesce(sum(CASE WHEN attempts >= {} THEN 1 ELSE 0 END), 0) FROM leases WHERE state = 'active'",
        super::FAILING_AFTER
    )
}

/// Opens the lease table in the store named by `url`, creating it or
/// bringing an older broker's table up to date.
pub async fn open_store(url: &str, timeout: Duration) -> Result<Arc<dyn LeaseStore>, AuditError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(SqliteLeases::open(Path::new(path))?));
    }
    if is_postgres(url) {
        let client = connect(url, timeout).await?;
        schema::pg_prepare(&client).await?;
        return Ok(Arc::new(PostgresLeases {
            session: Session::new(url, timeout, client),
            columns: full_select_list().into(),
        }));
    }
    Err(AuditError::Config(format!(
        "leases: unsupported store `{}`",
        crate::redact::connection_string(url)
    )))
}

/// Opens the lease table for reading only: nothing is created or changed,
/// so a read-only SQLite file or a PostgreSQL role with SELECT will do.
/// `None` when the store has no lease table (no broker with a `postgres`
/// grant ever ran on it).
pub async fn open_store_read_only(url: &str, timeout: Duration) -> Result<Option<Arc<dyn LeaseStore>>, AuditError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(SqliteLeases::open_read_only(Path::new(path))?.map(|s| Arc::new(s) as Arc<dyn LeaseStore>));
    }
    if is_postgres(url) {
        let client = connect(url, timeout).await?;
        // Belt and braces: this session cannot write even where the role could.
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await
            .map_err(unavailable)?;
        let present = schema::pg_columns(&client).await?;
        if present.is_empty() {
            return Ok(None);
        }
        return Ok(Some(Arc::new(PostgresLeases {
            session: Session::new(url, timeout, client),
            columns: select_list(&present).into(),
        })));
    }
    Err(AuditError::Config(format!("leases: unsupported store `{url}`")))
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The requester columns as one value: all three are written together.
fn requester(issuer: Option<String>, subject: Option<String>, request_id: Option<String>) -> Option<Requester> {
    Some(Requester {
        issuer: issuer?,
        subject: subject?,
        request_id: request_id?,
    })
}

/// A requester as its three columns.
fn requester_columns(by: Option<Requester>) -> (Option<String>, Option<String>, Option<String>) {
    match by {
        Some(b) => (Some(b.issuer), Some(b.subject), Some(b.request_id)),
        None => (None, None, None),
    }
}

/// `path` for a `file:` URI: the characters a URI gives meaning escaped.
fn uri_path(path: &Path) -> String {
    path.to_string_lossy()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23")
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
    /// The select list (see [`schema::select_list`]).
    columns: Arc<str>,
}

impl SqliteLeases {
    fn open(path: &Path) -> Result<SqliteLeases, AuditError> {
        let mut conn =
            Connection::open(path).map_err(|e| AuditError::Config(format!("leases {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        schema::sqlite_prepare(&mut conn)?;
        Ok(SqliteLeases {
            conn: Arc::new(Mutex::new(conn)),
            columns: full_select_list().into(),
        })
    }

    /// Read-only, and `None` without a lease table. A WAL file in a
    /// directory this user cannot write cannot even be read that way
    /// (SQLite must create its `-shm`): it is then read as immutable, which
    /// is what such a file is to this user. Immutable reads skip the
    /// `-wal` file, so changes a running broker has not checkpointed yet
    /// are not listed.
    fn open_read_only(path: &Path) -> Result<Option<SqliteLeases>, AuditError> {
        let fail = |e: rusqlite::Error| AuditError::Config(format!("leases {} (read-only): {e}", path.display()));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(unavailable)?;
        let (conn, present) = match schema::sqlite_columns(&conn) {
            Ok(present) => (conn, present),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ReadOnly => {
                let uri = format!("file:{}?immutable=1", uri_path(path));
                let conn = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI).map_err(fail)?;
                let present = schema::sqlite_columns(&conn).map_err(fail)?;
                (conn, present)
            }
            Err(e) => return Err(fail(e)),
        };
        if present.is_empty() {
            return Ok(None);
        }
        Ok(Some(SqliteLeases {
            conn: Arc::new(Mutex::new(conn)),
            columns: select_list(&present).into(),
        }))
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
        revoke_requested_by: requester(row.get(14)?, row.get(15)?, row.get(16)?),
        kind: LeaseKind::parse(row.get::<_, Option<String>>(17)?.as_deref()),
        sealed_secret: row.get(18)?,
    })
}

#[async_trait::async_trait]
impl LeaseStore for SqliteLeases {
    async fn create(&self, lease: &Lease) -> Result<(), AuditError> {
        let l = lease.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO leases (id, grant_name, database_name, username, issuer, subject, created_at, expires_at, state,
                                     kind, sealed_secret)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active', ?9, ?10)",
                params![
                    l.id,
                    l.grant,
                    l.database,
                    l.username,
                    l.issuer,
                    l.subject,
                    l.created_at,
                    l.expires_at,
                    l.kind.stored(),
                    l.sealed_secret
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<Lease>, AuditError> {
        let columns = self.columns.clone();
        let id = id.to_string();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {columns} FROM leases WHERE id = ?1"),
                [id],
                sqlite_lease,
            )
            .optional()
        })
        .await
    }

    async fn claim_due(&self, now: i64, owner: &str, claim_until: i64, limit: u32) -> Result<Vec<Lease>, AuditError> {
        let columns = self.columns.clone();
        let owner = owner.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let leases = {
                let mut statement = tx.prepare(&format!(
                    "UPDATE leases SET claimed_by = ?1, claimed_until = ?2
                     WHERE id IN (SELECT id FROM leases WHERE state = 'active' AND expires_at <= ?3
                                  AND next_attempt_at <= ?3 AND claimed_until < ?3
                                  ORDER BY expires_at LIMIT ?4)
                     RETURNING {columns}"
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
        let columns = self.columns.clone();
        let (id, owner) = (id.to_string(), owner.to_string());
        self.with(move |c| {
            c.query_row(
                &format!(
                    "UPDATE leases SET claimed_by = ?1, claimed_until = ?2
                     WHERE id = ?3 AND state = 'active' AND claimed_until < ?4 RETURNING {columns}"
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

    async fn expire_now(&self, id: &str, now: i64, reason: &str, by: Option<&Requester>) -> Result<bool, AuditError> {
        let (id, reason, by) = (id.to_string(), reason.to_string(), by.cloned());
        self.with(move |c| {
            let (issuer, subject, request_id) = requester_columns(by);
            c.execute(
                "UPDATE leases SET expires_at = MIN(expires_at, ?1), next_attempt_at = 0, revoke_reason = ?2,
                    revoke_by_issuer = ?4, revoke_by_subject = ?5, revoke_request_id = ?6
                 WHERE id = ?3 AND state = 'active'",
                params![now, reason, id, issuer, subject, request_id],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn list(&self, failing: bool, limit: u32) -> Result<Vec<Lease>, AuditError> {
        let columns = self.columns.clone();
        self.with(move |c| {
            let filter = if failing {
                format!("WHERE state = 'active' AND attempts >= {}", super::FAILING_AFTER)
            } else {
                String::new()
            };
            let mut statement = c.prepare(&format!(
                "SELECT {columns} FROM leases {filter} ORDER BY created_at DESC, id DESC LIMIT ?1"
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

    async fn counts(&self) -> Result<(u64, u64), AuditError> {
        self.with(|c| {
            c.query_row(&counts_sql(), [], |r| {
                Ok((
                    u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })
        })
        .await
    }
}

struct PostgresLeases {
    session: Session,
    /// The select list (see [`schema::select_list`]).
    columns: Arc<str>,
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
        revoke_requested_by: requester(
            row.try_get(14).map_err(unavailable)?,
            row.try_get(15).map_err(unavailable)?,
            row.try_get(16).map_err(unavailable)?,
        ),
        kind: LeaseKind::parse(row.try_get::<_, Option<&str>>(17).map_err(unavailable)?),
        sealed_secret: row.try_get(18).map_err(unavailable)?,
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
                        "INSERT INTO leases (id, grant_name, database_name, username, issuer, subject, created_at, expires_at, state,
                                             kind, sealed_secret)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10)",
                        &[
                            &l.id,
                            &l.grant,
                            &l.database,
                            &l.username,
                            &l.issuer,
                            &l.subject,
                            &l.created_at,
                            &l.expires_at,
                            &l.kind.stored(),
                            &l.sealed_secret,
                        ],
                    )
                    .await
                    .map(|_| ())
                    .map_err(unavailable)
                })
            })
            .await
    }

    async fn get(&self, id: &str) -> Result<Option<Lease>, AuditError> {
        let columns = self.columns.clone();
        let id = id.to_string();
        self.session
            .run(move |c| {
                Box::pin(async move {
                    let row = c
                        .query_opt(&format!("SELECT {columns} FROM leases WHERE id = $1"), &[&id])
                        .await
                        .map_err(unavailable)?;
                    row.as_ref().map(pg_lease).transpose()
                })
            })
            .await
    }

    async fn claim_due(&self, now: i64, owner: &str, claim_until: i64, limit: u32) -> Result<Vec<Lease>, AuditError> {
        let columns = self.columns.clone();
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
                                 RETURNING {columns}"
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
        let columns = self.columns.clone();
        let (id, owner) = (id.to_string(), owner.to_string());
        self.session
            .run(move |c| {
                Box::pin(async move {
                    let row = c
                        .query_opt(
                            &format!(
                                "UPDATE leases SET claimed_by = $1, claimed_until = $2
                                 WHERE id = $3 AND state = 'active' AND claimed_until < $4 RETURNING {columns}"
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

    async fn expire_now(&self, id: &str, now: i64, reason: &str, by: Option<&Requester>) -> Result<bool, AuditError> {
        let (id, reason, by) = (id.to_string(), reason.to_string(), by.cloned());
        self.session
            .run(move |c| {
                Box::pin(async move {
                    let (issuer, subject, request_id) = requester_columns(by);
                    c.execute(
                        "UPDATE leases SET expires_at = LEAST(expires_at, $1), next_attempt_at = 0, revoke_reason = $2,
                            revoke_by_issuer = $4, revoke_by_subject = $5, revoke_request_id = $6
                         WHERE id = $3 AND state = 'active'",
                        &[&now, &reason, &id, &issuer, &subject, &request_id],
                    )
                    .await
                    .map(|n| n == 1)
                    .map_err(unavailable)
                })
            })
            .await
    }

    async fn list(&self, failing: bool, limit: u32) -> Result<Vec<Lease>, AuditError> {
        let columns = self.columns.clone();
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
                                "SELECT {columns} FROM leases
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

    async fn counts(&self) -> Result<(u64, u64), AuditError> {
        self.session
            .run(|c| {
                Box::pin(async move {
                    let row = c.query_one(&counts_sql(), &[]).await.map_err(unavailable)?;
                    let n = |i: usize| row.try_get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
                    Ok((n(0).map_err(unavailable)?, n(1).map_err(unavailable)?))
                })
            })
            .await
    }
}
