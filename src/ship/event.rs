//! What a batch holds: records in `seq` order, each checkpoint right after
//! the record it signs; and the check that a batch continues the chain from
//! where the sink stands, so the position never moves past a record the
//! store no longer holds as it was.

use crate::audit::chain::{self, Checkpoint};
use crate::audit::{AuditRecord, checkpoint_line, record_line};

use super::position::Position;

/// One event of a batch.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// An audit record.
    Record(&'a AuditRecord),
    /// A signed checkpoint of the chain.
    Checkpoint(&'a Checkpoint),
}

impl Event<'_> {
    /// The record's `seq`, or the seq a checkpoint signs.
    pub fn seq(&self) -> i64 {
        match self {
            Event::Record(r) => r.seq.unwrap_or(0),
            Event::Checkpoint(c) => c.seq,
        }
    }

    /// When it happened (RFC 3339): the record's `time`, the checkpoint's signing time.
    pub fn time(&self) -> &str {
        match self {
            Event::Record(r) => &r.time,
            Event::Checkpoint(c) => &c.time,
        }
    }

    /// Its line in `stint audit export`, byte for byte.
    pub fn export_line(&self) -> String {
        match self {
            Event::Record(r) => record_line(r),
            Event::Checkpoint(c) => checkpoint_line(c),
        }
    }
}

/// Records and checkpoints in one order: by `seq`, a checkpoint after the
/// record it signs. A checkpoint signed after its record was shipped (the
/// broker's timer) comes first, since its `seq` is below the records'.
pub fn assemble<'a>(records: &'a [AuditRecord], checkpoints: &'a [Checkpoint]) -> Vec<Event<'a>> {
    let mut events: Vec<Event<'a>> = records
        .iter()
        .map(Event::Record)
        .chain(checkpoints.iter().map(Event::Checkpoint))
        .collect();
    events.sort_by_key(|e| (e.seq(), matches!(e, Event::Checkpoint(_))));
    events
}

/// The longest run of `records` that continues the chain from `from`, and
/// why the next one cannot follow, if one cannot. A record follows when its
/// `seq` is the next one, its content matches its `record_hash`, and its
/// `prev_hash` names the record before it. Records from before the chain
/// (no hash; only at the start of an old SQLite log) follow while nothing
/// chained has been shipped.
pub fn continuing(from: &Position, records: Vec<AuditRecord>) -> (Vec<AuditRecord>, Option<String>) {
    let mut seq = from.seq;
    let mut hash = from.record_hash.clone();
    let mut accepted = Vec::with_capacity(records.len());
    for record in records {
        let at = record.seq.unwrap_or(0);
        let refusal = if at != seq + 1 {
            Some(format!(
                "the store has record {at} after record {seq}: records {}..{} are missing (deleted?)",
                seq + 1,
                at - 1
            ))
        } else {
            match record.record_hash.as_deref() {
                None if hash.is_empty() => None,
                None => Some(format!(
                    "record {at} has no record_hash in a chained log: the store was changed"
                )),
                Some(stored) if stored != chain::record_hash(&record) => Some(format!(
                    "record {at}'s content does not match its record_hash: the store was changed after it was written"
                )),
                Some(_) => {
                    let expected = if seq == 0 { chain::GENESIS } else { hash.as_str() };
                    // The first chained record after ones from before the chain links to "".
                    let prev = record.prev_hash.as_deref().unwrap_or_default();
                    (prev != expected).then(|| {
                        format!(
                            "record {at}'s prev_hash does not name record {seq} as it was shipped \
                             (record_hash {}): the log was rewritten below the shipped position",
                            if hash.is_empty() { "none" } else { hash.as_str() }
                        )
                    })
                }
            }
        };
        if let Some(why) = refusal {
            return (accepted, Some(why));
        }
        seq = at;
        hash = record.record_hash.clone().unwrap_or_default();
        accepted.push(record);
    }
    (accepted, None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // a failed step is the test's report
mod tests {
    use super::*;
    use crate::audit::{AuditKey, Outcome};

    fn chain_of(n: usize) -> Vec<AuditRecord> {
        let key = AuditKey::from_bytes(&[7; 32]);
        let mut previous = None;
        (0..n)
            .map(|i| {
                let mut record = AuditRecord {
                    seq: None,
                    time: "2026-12-01T10:00:00Z".into(),
                    request_id: format!("r{i}"),
                    outcome: Outcome::Issued,
                    reason: None,
                    grant: Some("deploy".into()),
                    kind: None,
                    issuer: None,
                    subject: None,
                    claims: Default::default(),
                    token_jti_hmac: None,
                    issuance_id: None,
                    ttl_seconds: None,
                    expires_at: None,
                    client_addr: None,
                    detail: Default::default(),
                    prev_hash: None,
                    record_hash: None,
                    record_mac: None,
                };
                chain::link(&mut record, previous.take(), &key);
                previous = Some((record.seq.unwrap(), record.record_hash.clone().unwrap()));
                record
            })
            .collect()
    }

    #[test]
    fn a_batch_continues_from_the_position_and_stops_at_the_first_changed_record() {
        let records = chain_of(5);
        let (all, why) = continuing(&Position::default(), records.clone());
        assert_eq!((all.len(), why), (5, None));

        let from = Position {
            seq: 2,
            record_hash: records[1].record_hash.clone().unwrap(),
            checkpoint_seq: 0,
        };
        let (rest, why) = continuing(&from, records[2..].to_vec());
        assert_eq!((rest.len(), why), (3, None));

        let mut changed = records.clone();
        changed[3].subject = Some("repo:evil/x".into());
        let (prefix, why) = continuing(&Position::default(), changed);
        assert_eq!(prefix.len(), 3, "records 1..3 still go");
        assert!(why.unwrap().contains("record 4's content does not match"));

        let rewritten = Position {
            seq: 2,
            record_hash: "0".repeat(64),
            checkpoint_seq: 0,
        };
        let (none, why) = continuing(&rewritten, records[2..].to_vec());
        assert!(none.is_empty());
        assert!(why.unwrap().contains("rewritten below the shipped position"));

        let (none, why) = continuing(&from, records[3..].to_vec());
        assert!(none.is_empty());
        assert!(why.unwrap().contains("records 3..3 are missing"));
    }

    #[test]
    fn checkpoints_follow_the_record_they_sign() {
        let records = chain_of(4);
        let key = AuditKey::from_bytes(&[7; 32]);
        let signer = chain::CheckpointSigner::from_audit_key(&key).unwrap();
        let checkpoints = vec![
            signer.sign(1, "a", "2026-12-01T10:00:00Z"),
            signer.sign(3, "b", "2026-12-01T10:00:00Z"),
        ];
        let order: Vec<(i64, bool)> = assemble(&records[1..], &checkpoints)
            .iter()
            .map(|e| (e.seq(), matches!(e, Event::Checkpoint(_))))
            .collect();
        assert_eq!(order, [(1, true), (2, false), (3, false), (3, true), (4, false)]);
    }
}
