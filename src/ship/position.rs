//! Where each sink stands, kept in the audit store itself
//! (`audit_ship_position`), so a restart, a crash or another broker picks
//! up where the last acknowledged batch ended, and never earlier than that.
//!
//! The row is also the claim: one shipper per sink at a time, across every
//! broker and `stint audit ship` on the store. A claim expires unless its
//! holder renews it, so a holder that dies hands the sink over; and the
//! position only moves by compare-and-set from the value the mover read,
//! so even two shippers that both believe they hold the claim can resend a
//! batch (at-least-once), never skip or rewind one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::audit::postgres::{Session, connect};
use crate::audit::{AuditError, unavailable};

const SQLITE_TABLE: &str = "
CREATE TABLE IF NOT EXISTS audit_ship_position (
    sink           TEXT PRIMARY KEY,
    seq            INTEGER NOT NULL,
    record_hash    TEXT NOT NULL,
    checkpoint_seq INTEGER NOT NULL,
    updated_at     TEXT NOT NULL,
    owner          TEXT NOT NULL,
    claimed_until  INTEGER NOT NULL
);
";

const POSTGRES_TABLE: &str = "
CREATE TABLE IF NOT EXISTS audit_ship_position (
    sink           TEXT PRIMARY KEY,
    seq            BIGINT NOT NULL,
    record_hash    TEXT NOT NULL,
    checkpoint_seq BIGINT NOT NULL,
    updated_at     TEXT NOT NULL,
    owner          TEXT NOT NULL,
    claimed_until  BIGINT NOT NULL
);
";

/// How far a sink got: everything up to here was acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// The last record acknowledged (0: none yet).
    pub seq: i64,
    /// Its `record_hash` ("" before the first, or for a record from before
    /// the chain): the next record must name it as `prev_hash`.
    pub record_hash: String,
    /// The last checkpoint acknowledged (its `seq`; 0: none yet).
    pub checkpoint_seq: i64,
}

/// The row as a status line reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// Where the sink stands.
    pub position: Position,
    /// When the position last moved (RFC 3339).
    pub updated_at: String,
    /// Who holds (or last held) the claim.
    pub owner: String,
    /// Whether that claim is still live.
    pub claimed: bool,
}

/// What a claim attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This shipper holds the sink until the claim expires.
    Held(Position),
    /// Another shipper holds it.
    Elsewhere {
        /// Its owner id (host, process, start).
        owner: String,
        /// Where the sink stands.
        position: Position,
    },
}

/// The position table of one store.
#[async_trait::async_trait]
pub trait Positions: Send + Sync {
    /// Takes (or renews) the claim on `sink` for `ttl`, unless another
    /// owner holds a live one; creates the row at 0 the first time.
    async fn claim(&self, sink: &str, owner: &str, ttl: Duration) -> Result<Claim, AuditError>;
    /// Moves `sink` from `from` to `to` and renews the claim, only if
    /// `owner` still holds it and the row still says `from`. `false`:
    /// someone else moved it or took the claim; nothing was written.
    async fn advance(
        &self,
        sink: &str,
        owner: &str,
        from: &Position,
        to: &Position,
        ttl: Duration,
    ) -> Result<bool, AuditError>;
    /// Gives the claim up now (a clean stop), so another shipper need not
    /// wait for it to expire.
    async fn release(&self, sink: &str, owner: &str) -> Result<(), AuditError>;
    /// The row of `sink`, if it was ever shipped.
    async fn standing(&self, sink: &str) -> Result<Option<Standing>, AuditError>;
}

/// Opens the position table of `store` (creating it if missing).
pub async fn open(store: &str, timeout: Duration) -> Result<Arc<dyn Positions>, AuditError> {
    if let Some(path) = store.strip_prefix("sqlite://") {
        return Ok(Arc::new(SqlitePositions::open(PathBuf::from(path))?));
    }
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresPositions::open(store, timeout).await?));
    }
    Err(AuditError::Config(format!(
        "unsupported audit store `{}`: use sqlite://PATH or postgres://...",
        store.split("://").next().unwrap_or(store)
    )))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds since the epoch, by this host's clock (SQLite: every
/// shipper of one file runs on this host).
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// Positions in a SQLite file: one connection of its own (the shipper
/// writes only this table, a row per batch, beside the broker's writer).
struct SqlitePositions {
    conn: Arc<Mutex<Connection>>,
}

impl SqlitePositions {
    fn open(path: PathBuf) -> Result<SqlitePositions, AuditError> {
        let config = |e: &dyn std::fmt::Display| AuditError::Config(format!("audit store {}: {e}", path.display()));
        if !path.exists() {
            return Err(config(&"no such file (start the broker once, or check audit.store)"));
        }
        let conn = Connection::open(&path).map_err(|e| config(&e))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(unavailable)?;
        conn.execute_batch(SQLITE_TABLE).map_err(|e| config(&e))?;
        Ok(SqlitePositions {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, AuditError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| unavailable("ship position connection poisoned"))?;
            work(&guard).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>, now: i64) -> rusqlite::Result<Standing> {
    Ok(Standing {
        position: Position {
            seq: r.get(0)?,
            record_hash: r.get(1)?,
            checkpoint_seq: r.get(2)?,
        },
        updated_at: r.get(3)?,
        owner: r.get(4)?,
        claimed: r.get::<_, i64>(5)? > now,
    })
}

const SELECT_ROW: &str =
    "SELECT seq, record_hash, checkpoint_seq, updated_at, owner, claimed_until FROM audit_ship_position WHERE sink = ";

#[async_trait::async_trait]
impl Positions for SqlitePositions {
    async fn claim(&self, sink: &str, owner: &str, ttl: Duration) -> Result<Claim, AuditError> {
        let (sink, owner) = (sink.to_string(), owner.to_string());
        self.run(move |conn| {
            let now = now_millis();
            let until = now.saturating_add(millis(ttl));
            conn.execute(
                "INSERT INTO audit_ship_position (sink, seq, record_hash, checkpoint_seq, updated_at, owner, claimed_until)
                 VALUES (?1, 0, '', 0, ?2, ?3, ?4)
                 ON CONFLICT (sink) DO UPDATE SET owner = excluded.owner, claimed_until = excluded.claimed_until
                 WHERE audit_ship_position.owner = excluded.owner OR audit_ship_position.claimed_until <= ?5",
                params![sink, crate::clock::now_rfc3339(), owner, until, now],
            )?;
            let row = conn.query_row(&format!("{SELECT_ROW}?1"), [&sink], |r| sqlite_row(r, now))?;
            Ok(claim_of(row, &owner))
        })
        .await
    }

    async fn advance(
        &self,
        sink: &str,
        owner: &str,
        from: &Position,
        to: &Position,
        ttl: Duration,
    ) -> Result<bool, AuditError> {
        let (sink, owner, from, to) = (sink.to_string(), owner.to_string(), from.clone(), to.clone());
        self.run(move |conn| {
            let until = now_millis().saturating_add(millis(ttl));
            let moved = conn.execute(
                "UPDATE audit_ship_position SET seq = ?1, record_hash = ?2, checkpoint_seq = ?3, updated_at = ?4,
                     claimed_until = ?5
                 WHERE sink = ?6 AND owner = ?7 AND seq = ?8 AND checkpoint_seq = ?9",
                params![
                    to.seq,
                    to.record_hash,
                    to.checkpoint_seq,
                    crate::clock::now_rfc3339(),
                    until,
                    sink,
                    owner,
                    from.seq,
                    from.checkpoint_seq
                ],
            )?;
            Ok(moved == 1)
        })
        .await
    }

    async fn release(&self, sink: &str, owner: &str) -> Result<(), AuditError> {
        let (sink, owner) = (sink.to_string(), owner.to_string());
        self.run(move |conn| {
            conn.execute(
                "UPDATE audit_ship_position SET claimed_until = 0 WHERE sink = ?1 AND owner = ?2",
                params![sink, owner],
            )
            .map(|_| ())
        })
        .await
    }

    async fn standing(&self, sink: &str) -> Result<Option<Standing>, AuditError> {
        let sink = sink.to_string();
        self.run(move |conn| {
            let now = now_millis();
            conn.query_row(&format!("{SELECT_ROW}?1"), [&sink], |r| sqlite_row(r, now))
                .optional()
        })
        .await
    }
}

fn claim_of(row: Standing, owner: &str) -> Claim {
    if row.owner == owner && row.claimed {
        Claim::Held(row.position)
    } else {
        Claim::Elsewhere {
            owner: row.owner,
            position: row.position,
        }
    }
}

/// Positions in PostgreSQL. Claims are timed by the server's clock, so
/// brokers whose clocks differ still agree when a claim has expired.
struct PostgresPositions {
    session: Session,
}

/// The server's now, in milliseconds since the epoch.
const PG_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

impl PostgresPositions {
    async fn open(url: &str, timeout: Duration) -> Result<PostgresPositions, AuditError> {
        let client = connect(url, timeout).await?;
        // A role that may not create tables still works once a broker
        // created this one: look before creating.
        let exists: Option<String> = client
            .query_one("SELECT to_regclass('audit_ship_position')::text", &[])
            .await
            .map_err(|e| AuditError::Config(format!("audit_ship_position: {e}")))?
            .get(0);
        if exists.is_none() {
            client
                .batch_execute(POSTGRES_TABLE)
                .await
                .map_err(|e| AuditError::Config(format!("cannot create audit_ship_position: {e}")))?;
        }
        Ok(PostgresPositions {
            session: Session::new(url, timeout, client),
        })
    }
}

fn pg_row(row: &tokio_postgres::Row) -> Result<Standing, AuditError> {
    Ok(Standing {
        position: Position {
            seq: row.try_get(0).map_err(unavailable)?,
            record_hash: row.try_get(1).map_err(unavailable)?,
            checkpoint_seq: row.try_get(2).map_err(unavailable)?,
        },
        updated_at: row.try_get(3).map_err(unavailable)?,
        owner: row.try_get(4).map_err(unavailable)?,
        claimed: row.try_get(5).map_err(unavailable)?,
    })
}

const PG_SELECT_ROW: &str = "SELECT seq, record_hash, checkpoint_seq, updated_at, owner,
        claimed_until > (extract(epoch from clock_timestamp()) * 1000)::bigint
    FROM audit_ship_position WHERE sink = $1";

#[async_trait::async_trait]
impl Positions for PostgresPositions {
    async fn claim(&self, sink: &str, owner: &str, ttl: Duration) -> Result<Claim, AuditError> {
        let (sink, owner, ttl) = (sink.to_string(), owner.to_string(), millis(ttl));
        self.session
            .run(move |client| {
                Box::pin(async move {
                    client
                        .execute(
                            &format!(
                                "INSERT INTO audit_ship_position
                                     (sink, seq, record_hash, checkpoint_seq, updated_at, owner, claimed_until)
                                 VALUES ($1, 0, '', 0, $2, $3, {PG_NOW} + $4)
                                 ON CONFLICT (sink) DO UPDATE
                                     SET owner = excluded.owner, claimed_until = excluded.claimed_until
                                 WHERE audit_ship_position.owner = excluded.owner
                                    OR audit_ship_position.claimed_until <= {PG_NOW}"
                            ),
                            &[&sink, &crate::clock::now_rfc3339(), &owner, &ttl],
                        )
                        .await
                        .map_err(unavailable)?;
                    let row = client.query_one(PG_SELECT_ROW, &[&sink]).await.map_err(unavailable)?;
                    Ok(claim_of(pg_row(&row)?, &owner))
                })
            })
            .await
    }

    async fn advance(
        &self,
        sink: &str,
        owner: &str,
        from: &Position,
        to: &Position,
        ttl: Duration,
    ) -> Result<bool, AuditError> {
        let (sink, owner, from, to, ttl) = (
            sink.to_string(),
            owner.to_string(),
            from.clone(),
            to.clone(),
            millis(ttl),
        );
        self.session
            .run(move |client| {
                Box::pin(async move {
                    let moved = client
                        .execute(
                            &format!(
                                "UPDATE audit_ship_position SET seq = $1, record_hash = $2, checkpoint_seq = $3,
                                     updated_at = $4, claimed_until = {PG_NOW} + $5
                                 WHERE sink = $6 AND owner = $7 AND seq = $8 AND checkpoint_seq = $9"
                            ),
                            &[
                                &to.seq,
                                &to.record_hash,
                                &to.checkpoint_seq,
                                &crate::clock::now_rfc3339(),
                                &ttl,
                                &sink,
                                &owner,
                                &from.seq,
                                &from.checkpoint_seq,
                            ],
                        )
                        .await
                        .map_err(unavailable)?;
                    Ok(moved == 1)
                })
            })
            .await
    }

    async fn release(&self, sink: &str, owner: &str) -> Result<(), AuditError> {
        let (sink, owner) = (sink.to_string(), owner.to_string());
        self.session
            .run(move |client| {
                Box::pin(async move {
                    client
                        .execute(
                            "UPDATE audit_ship_position SET claimed_until = 0 WHERE sink = $1 AND owner = $2",
                            &[&sink, &owner],
                        )
                        .await
                        .map_err(unavailable)?;
                    Ok(())
                })
            })
            .await
    }

    async fn standing(&self, sink: &str) -> Result<Option<Standing>, AuditError> {
        let sink = sink.to_string();
        self.session
            .run(move |client| {
                Box::pin(async move {
                    let row = client.query_opt(PG_SELECT_ROW, &[&sink]).await.map_err(unavailable)?;
                    row.as_ref().map(pg_row).transpose()
                })
            })
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is the test's report
mod tests {
    use super::*;

    fn at(seq: i64) -> Position {
        Position {
            seq,
            record_hash: format!("h{seq}"),
            checkpoint_seq: 0,
        }
    }

    /// One holder at a time; the position moves only from what the mover
    /// read; a released claim is free at once, an expired one too.
    #[tokio::test]
    async fn one_holder_at_a_time_and_the_position_moves_by_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        Connection::open(&path).unwrap();
        let positions = SqlitePositions::open(path).unwrap();
        let long = Duration::from_secs(60);
        assert_eq!(
            positions.claim("siem", "a", long).await.unwrap(),
            Claim::Held(Position::default())
        );
        assert!(matches!(
            positions.claim("siem", "b", long).await.unwrap(),
            Claim::Elsewhere { owner, .. } if owner == "a"
        ));
        assert!(
            positions
                .advance("siem", "a", &Position::default(), &at(3), long)
                .await
                .unwrap()
        );
        assert!(
            !positions
                .advance("siem", "a", &Position::default(), &at(5), long)
                .await
                .unwrap(),
            "a stale `from` moves nothing"
        );
        assert!(
            !positions.advance("siem", "b", &at(3), &at(5), long).await.unwrap(),
            "nor does a shipper without the claim"
        );
        positions.release("siem", "a").await.unwrap();
        assert_eq!(positions.claim("siem", "b", long).await.unwrap(), Claim::Held(at(3)));
        assert!(positions.claim("other", "a", Duration::ZERO).await.is_ok());
        assert_eq!(
            positions.claim("other", "b", long).await.unwrap(),
            Claim::Held(Position::default()),
            "an expired claim is free"
        );
        let standing = positions.standing("siem").await.unwrap().unwrap();
        assert_eq!(
            (standing.position.seq, standing.owner.as_str(), standing.claimed),
            (3, "b", true)
        );
    }
}
