//! The SQLite log's single writer thread: every append and every
//! single-use token goes through it, in groups that share one transaction
//! and one sync.

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::chain;
use super::columns::{JsonColumns, unavailable};
use super::job::Job;
use super::sqlite::{FORGET_EXPIRED, insert_checkpoint, verified_head, write_transaction};
use super::sqlite_insert as insert;
use super::sqlite_lookup as lookup;
use super::{AuditError, AuditRecord, ChainKeys};
use crate::clock::now_rfc3339;

/// A record of the group being written.
struct Pending {
    record: AuditRecord,
    json: JsonColumns,
    done: oneshot::Sender<Result<AuditRecord, AuditError>>,
}

/// A single-use token of the group being written.
struct Use {
    key: String,
    expires_at: i64,
    done: oneshot::Sender<Result<bool, AuditError>>,
}

/// Most jobs one commit may carry.
const MAX_GROUP: usize = 256;

/// The chain head this writer committed last, with the file's
/// `data_version` inside that transaction. SQLite changes a connection's
/// `data_version` only when another connection commits, so while it is
/// unchanged the store's head is still this one: the next batch links to
/// it without reading the head back and verifying it again. Any other
/// writer (a second broker, someone editing the file) changes the version,
/// and the next batch reads and verifies the head as before.
struct OwnHead {
    data_version: i64,
    head: (i64, String),
}

/// The single writer. With group commit, every job that queued while the
/// previous commit was being synced goes into the next transaction, so
/// concurrent requests share one fsync instead of waiting in line for their
/// own; each caller still hears back only after its job is durable.
pub(super) fn writer_loop(
    conn: Arc<Mutex<Connection>>,
    keys: Arc<ChainKeys>,
    group: bool,
    mut queue: tokio::sync::mpsc::Receiver<Job>,
) {
    let mut own: Option<OwnHead> = None;
    while let Some(first) = queue.blocking_recv() {
        let mut jobs = vec![first];
        while group && jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => jobs.push(next),
                Err(_) => break,
            }
        }
        let (mut batch, uses) = split(jobs);
        let known = own.take();
        let result = match conn.lock() {
            Ok(conn) => write_transaction(&conn, || {
                let data_version = data_version(&conn)?;
                let new = record_uses(&conn, &uses)?;
                let mut head = match known {
                    Some(own) if own.data_version == data_version => Some(own.head),
                    // A group of tokens alone needs no head; the next
                    // append reads it.
                    _ if batch.is_empty() => None,
                    _ => verified_head(&conn, &keys)?,
                };
                append_group(&conn, &keys, &mut batch, &mut head)?;
                Ok((head.map(|head| OwnHead { data_version, head }), new))
            }),
            Err(_) => Err(unavailable("audit connection poisoned")),
        };
        let new = match result {
            Ok((head, new)) => {
                own = head;
                Ok(new)
            }
            Err(e) => Err(e),
        };
        for (i, used) in uses.into_iter().enumerate() {
            let answer = new.as_ref().map(|new| new.get(i).copied().unwrap_or(false));
            let _ = used.done.send(answer.map_err(Clone::clone));
        }
        for pending in batch {
            let answer = new.as_ref().map(|_| pending.record).map_err(Clone::clone);
            let _ = pending.done.send(answer);
        }
    }
}

fn split(jobs: Vec<Job>) -> (Vec<Pending>, Vec<Use>) {
    let (mut batch, mut uses) = (Vec::new(), Vec::new());
    for job in jobs {
        match job {
            Job::Append { record, json, done } => batch.push(Pending { record, json, done }),
            Job::FirstUse { key, expires_at, done } => uses.push(Use { key, expires_at, done }),
        }
    }
    (batch, uses)
}

/// `PRAGMA data_version` of the writer's connection (see [`OwnHead`]).
fn data_version(conn: &Connection) -> Result<i64, AuditError> {
    conn.prepare_cached("PRAGMA data_version")
        .and_then(|mut statement| statement.query_row([], |r| r.get(0)))
        .map_err(unavailable)
}

/// Records the group's single-use tokens (inside a transaction), after
/// forgetting the expired ones: for each, whether it was new. The same key
/// twice in one group is new the first time only.
fn record_uses(conn: &Connection, uses: &[Use]) -> Result<Vec<bool>, AuditError> {
    if uses.is_empty() {
        return Ok(Vec::new());
    }
    conn.prepare_cached(FORGET_EXPIRED)
        .and_then(|mut forget| forget.execute([crate::clock::now()]))
        .map_err(unavailable)?;
    let mut insert = conn
        .prepare_cached("INSERT OR IGNORE INTO used_tokens (key, expires_at) VALUES (?1, ?2)")
        .map_err(unavailable)?;
    uses.iter()
        .map(|used| {
            insert
                .execute(params![used.key, used.expires_at])
                .map(|inserted| inserted == 1)
                .map_err(unavailable)
        })
        .collect()
}

/// Links a group's records to `head` and to each other, inserts them, and
/// adds the checkpoints and lookup blocks they complete (inside a
/// transaction); `head` becomes the last record.
fn append_group(
    conn: &Connection,
    keys: &ChainKeys,
    batch: &mut [Pending],
    head: &mut Option<(i64, String)>,
) -> Result<(), AuditError> {
    for pending in batch.iter_mut() {
        let r = &mut pending.record;
        chain::link_serialized(r, &pending.json, head.take(), &keys.key);
        *head = Some((r.seq.unwrap_or(0), r.record_hash.clone().unwrap_or_default()));
    }
    let rows: Vec<_> = batch.iter().map(|p| (&p.record, &p.json)).collect();
    insert::insert_records(conn, &rows)?;
    // After the inserts: a block's lookup rows are read from its records.
    let every = i64::try_from(keys.checkpoint_every.max(1)).unwrap_or(i64::MAX);
    for pending in batch.iter() {
        let r = &pending.record;
        let seq = r.seq.unwrap_or(0);
        if seq % every == 0 {
            let hash = r.record_hash.as_deref().unwrap_or_default();
            insert_checkpoint(conn, &keys.signer.sign(seq, hash, &now_rfc3339()))?;
        }
        if lookup::completes_block(seq) {
            lookup::build(conn, seq.div_euclid(lookup::BLOCK)).map_err(unavailable)?;
        }
    }
    Ok(())
}
