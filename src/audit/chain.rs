//! The tamper-evident chain. Every record carries the hash of its
//! predecessor, so changing, removing or reordering one breaks every link
//! after it; signed checkpoints pin the chain head so a truncated tail is
//! seen too.
//!
//! Encoding version 1 (never change what these bytes mean; add a version):
//!
//! ```text
//! record_hash = hex(SHA-256("stint-audit-v1\n" || canonical_json(record)))
//! record_mac  = hex(HMAC-SHA256(audit_key, "stint-audit-mac-v1\n" || record_hash))
//! checkpoint  = Ed25519("stint-checkpoint-v1\n" || seq || "\n" || record_hash || "\n" || time)
//! ```
//!
//! `canonical_json(record)` is the JSON object of every record field except
//! `record_hash` and `record_mac` (so `seq` and `prev_hash` are covered),
//! keys sorted by byte order at every depth, no whitespace, integers only,
//! strings as serde_json escapes them; absent values are `null`. The first
//! record's `prev_hash` is 64 zeros.
//!
//! The SHA-256 chain and the checkpoint signatures can be checked by anyone
//! with the public key (offline, up to the last checkpoint). The MAC needs
//! the audit key and also covers records after the last checkpoint: someone
//! who can write to the store but lacks the key cannot forge a chain that
//! verifies.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::columns::JsonColumns;
use super::{AuditKey, AuditRecord};

/// The encoding this build writes.
pub const CHAIN_VERSION: u32 = 1;
/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A signed statement: "the chain up to `seq` ends in `record_hash`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Last record covered.
    pub seq: i64,
    /// That record's hash.
    pub record_hash: String,
    /// RFC 3339 time of signing.
    pub time: String,
    /// Ed25519 signature, base64url.
    pub signature: String,
    /// Key id of the signing key.
    pub kid: String,
}

/// Version 1's canonical JSON object: the fields in byte order of their
/// names, borrowed from the record. serde writes a struct's fields in
/// declaration order, so this order IS the format; `canonical_value` is the
/// same object built as a `Value`, which the tests hold it to. The first
/// three fields (`claims`, `client_addr`, `detail`) are written before this
/// struct, from the text the store also writes in its columns.
#[derive(Serialize)]
struct CanonicalV1Tail<'a> {
    expires_at: &'a Option<String>,
    grant: &'a Option<String>,
    issuance_id: &'a Option<String>,
    issuer: &'a Option<String>,
    kind: &'a Option<String>,
    outcome: &'a str,
    prev_hash: &'a Option<String>,
    reason: &'a Option<String>,
    request_id: &'a str,
    seq: &'a Option<i64>,
    subject: &'a Option<String>,
    time: &'a str,
    token_jti_hmac: &'a Option<String>,
    ttl_seconds: &'a Option<u64>,
}

/// The hashed bytes of `record` (version 1).
pub fn canonical_bytes(record: &AuditRecord) -> Vec<u8> {
    canonical_bytes_of(record, &JsonColumns::of(record))
}

/// The hashed bytes of `record`, whose claims and detail serialize to
/// `json` (serde_json's compact form of a map is the same text alone or
/// nested, so this is byte for byte what serializing the whole record
/// writes).
fn canonical_bytes_of(record: &AuditRecord, json: &JsonColumns) -> Vec<u8> {
    let tail = CanonicalV1Tail {
        expires_at: &record.expires_at,
        grant: &record.grant,
        issuance_id: &record.issuance_id,
        issuer: &record.issuer,
        kind: &record.kind,
        outcome: record.outcome.as_str(),
        prev_hash: &record.prev_hash,
        reason: &record.reason,
        request_id: &record.request_id,
        seq: &record.seq,
        subject: &record.subject,
        time: &record.time,
        token_jti_hmac: &record.token_jti_hmac,
        ttl_seconds: &record.ttl_seconds,
    };
    let mut bytes = Vec::with_capacity(640 + json.claims.len() + json.detail.len());
    bytes.extend_from_slice(b"stint-audit-v1\n{\"claims\":");
    bytes.extend_from_slice(json.claims.as_bytes());
    bytes.extend_from_slice(b",\"client_addr\":");
    // Serializing borrowed strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut bytes, &record.client_addr);
    bytes.extend_from_slice(b",\"detail\":");
    bytes.extend_from_slice(json.detail.as_bytes());
    let brace = bytes.len();
    let _ = serde_json::to_writer(&mut bytes, &tail);
    // The tail's opening brace becomes the comma after `detail`.
    if let Some(byte) = bytes.get_mut(brace) {
        *byte = b',';
    }
    bytes
}

/// Version 1's object as a `Value` (keys sorted by serde_json's map): the
/// definition `canonical_bytes` must match byte for byte.
#[cfg(test)]
fn canonical_value(record: &AuditRecord) -> Vec<u8> {
    let value = json!({
        "seq": record.seq,
        "time": record.time,
        "request_id": record.request_id,
        "outcome": record.outcome.as_str(),
        "reason": record.reason,
        "grant": record.grant,
        "kind": record.kind,
        "issuer": record.issuer,
        "subject": record.subject,
        "claims": Value::Object(record.claims.clone()),
        "token_jti_hmac": record.token_jti_hmac,
        "issuance_id": record.issuance_id,
        "ttl_seconds": record.ttl_seconds,
        "expires_at": record.expires_at,
        "client_addr": record.client_addr,
        "detail": Value::Object(record.detail.clone()),
        "prev_hash": record.prev_hash,
    });
    // serde_json's map keeps keys sorted (no `preserve_order`), at every depth.
    let mut bytes = b"stint-audit-v1\n".to_vec();
    bytes.extend_from_slice(value.to_string().as_bytes());
    bytes
}

/// SHA-256 of the canonical bytes, hex.
pub fn record_hash(record: &AuditRecord) -> String {
    record_hash_of(record, &JsonColumns::of(record))
}

fn record_hash_of(record: &AuditRecord, json: &JsonColumns) -> String {
    super::key::hex_encode(digest::digest(&digest::SHA256, &canonical_bytes_of(record, json)).as_ref())
}

/// The keyed MAC over a record hash.
pub fn record_mac(key: &AuditKey, record_hash: &str) -> String {
    key.hash(&format!("stint-audit-mac-v1\n{record_hash}"))
}

/// Whether `stored` is the MAC of `record_hash`, compared in constant time:
/// a comparison that stops at the first differing byte would tell someone
/// who can submit forged records and time the check how much of a MAC
/// they have guessed.
pub fn mac_matches(key: &AuditKey, record_hash: &str, stored: Option<&str>) -> bool {
    let expected = record_mac(key, record_hash);
    stored.is_some_and(|stored| {
        aws_lc_rs::constant_time::verify_slices_are_equal(stored.as_bytes(), expected.as_bytes()).is_ok()
    })
}

/// Fills `seq`, `prev_hash`, `record_hash` and `record_mac` of `record`,
/// which follows `previous` (seq and hash), or starts the chain.
pub fn link(record: &mut AuditRecord, previous: Option<(i64, String)>, key: &AuditKey) {
    let json = JsonColumns::of(record);
    link_serialized(record, &json, previous, key);
}

/// [`link`] for a record whose claims and detail are already serialized
/// as `json` (what a store writes in its columns).
pub(crate) fn link_serialized(
    record: &mut AuditRecord,
    json: &JsonColumns,
    previous: Option<(i64, String)>,
    key: &AuditKey,
) {
    let (seq, prev) = match previous {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_string()),
    };
    record.seq = Some(seq);
    record.prev_hash = Some(prev);
    let hash = record_hash_of(record, json);
    record.record_mac = Some(record_mac(key, &hash));
    record.record_hash = Some(hash);
}

/// Checks that a stored chain head is what the key holder wrote: its hash
/// matches its content and its MAC matches the hash. A store edited
/// without the key must not be extended (and signed) by the broker.
pub fn check_head(head: &AuditRecord, key: &AuditKey) -> Result<(), String> {
    let seq = head.seq.unwrap_or(0);
    let Some(stored) = head.record_hash.as_deref() else {
        return Ok(()); // a record from before the chain: nothing to check
    };
    let hash = record_hash(head);
    if stored != hash || !mac_matches(key, &hash, head.record_mac.as_deref()) {
        return Err(format!(
            "the audit chain head (seq {seq}) does not verify: the store was changed without the audit key; \
             nothing is appended until `stint audit verify` is clean"
        ));
    }
    Ok(())
}

fn checkpoint_message(seq: i64, record_hash: &str, time: &str) -> Vec<u8> {
    format!("stint-checkpoint-v1\n{seq}\n{record_hash}\n{time}").into_bytes()
}

/// Signs checkpoints. The Ed25519 key is derived from the audit key, so the
/// one secret file is all an operator keeps; the public half is published.
pub struct CheckpointSigner {
    pair: Ed25519KeyPair,
    kid: String,
}

impl CheckpointSigner {
    /// Derives the signing key from the audit key.
    pub fn from_audit_key(key: &AuditKey) -> Result<CheckpointSigner, String> {
        let seed = key.derive("stint checkpoint signing key v1");
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| "cannot derive the checkpoint key".to_string())?;
        let public = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let kid = format!("audit-{}", public.get(..16).unwrap_or(&public));
        Ok(CheckpointSigner { pair, kid })
    }

    /// Signs the head `(seq, record_hash)` at `time`.
    pub fn sign(&self, seq: i64, record_hash: &str, time: &str) -> Checkpoint {
        let signature = self.pair.sign(&checkpoint_message(seq, record_hash, time));
        Checkpoint {
            seq,
            record_hash: record_hash.to_string(),
            time: time.to_string(),
            signature: URL_SAFE_NO_PAD.encode(signature.as_ref()),
            kid: self.kid.clone(),
        }
    }

    /// The public key as a JWK (for `/.well-known/jwks.json` and `stint audit pubkey`).
    pub fn public_jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {what}")]
pub struct ChainError {
    /// First record (or checkpoint) that does not verify.
    pub seq: i64,
    /// What is wrong, in words an auditor can act on.
    pub what: String,
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// First record checked (1 for the whole chain).
    pub first_seq: i64,
    /// Records checked.
    pub records: u64,
    /// Last record.
    pub last_seq: i64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Last checkpointed seq (records after it are covered by MACs only).
    pub last_checkpoint: Option<i64>,
    /// Whether MACs were checked (the audit key was available).
    pub macs_checked: bool,
}

/// Checks records (ascending seq, from the first) and checkpoints.
/// `key`: check MACs too. `public_key`: the checkpoint key (raw Ed25519).
pub fn verify(
    records: &[AuditRecord],
    checkpoints: &[Checkpoint],
    key: Option<&AuditKey>,
    public_key: &[u8],
) -> Result<Verified, ChainError> {
    verify_range(records, checkpoints, key, public_key, false)
}

/// [`verify`] for a slice of the chain (a time range, a filtered export)
/// when `partial`: the first record is taken as the anchor (its own seq and
/// prev_hash), and checkpoints outside the slice are not judged, so a tail
/// cut is only found by a whole-chain check.
pub fn verify_range(
    records: &[AuditRecord],
    checkpoints: &[Checkpoint],
    key: Option<&AuditKey>,
    public_key: &[u8],
    partial: bool,
) -> Result<Verified, ChainError> {
    let mut walk = ChainWalk::new(checkpoints, key, partial);
    walk.feed(records)?;
    walk.finish(checkpoints, public_key)
}

/// A verification fed page by page, so a long log is checked without
/// holding it in memory: it keeps the last link, and the hashes of only
/// the records a checkpoint signs.
pub struct ChainWalk<'k> {
    key: Option<&'k AuditKey>,
    partial: bool,
    first_seq: Option<i64>,
    previous: Option<(i64, String)>,
    signed: std::collections::BTreeSet<i64>,
    hashes: std::collections::BTreeMap<i64, String>,
    records: u64,
}

impl<'k> ChainWalk<'k> {
    /// A walk that will be judged against `checkpoints` (read before the
    /// records, so none is ahead of them); `key` checks MACs too.
    pub fn new(checkpoints: &[Checkpoint], key: Option<&'k AuditKey>, partial: bool) -> ChainWalk<'k> {
        ChainWalk {
            key,
            partial,
            first_seq: None,
            previous: None,
            signed: checkpoints.iter().map(|c| c.seq).collect(),
            hashes: std::collections::BTreeMap::new(),
            records: 0,
        }
    }

    /// Records checked so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next records, ascending, continuing the ones fed before.
    pub fn feed(&mut self, records: &[AuditRecord]) -> Result<(), ChainError> {
        for record in records {
            let seq = record.seq.unwrap_or(0);
            if self.first_seq.is_none() {
                self.first_seq = Some(seq);
                if self.partial && seq > 1 {
                    self.previous = Some((seq - 1, record.prev_hash.clone().unwrap_or_default()));
                }
            }
            let expected_seq = self.previous.as_ref().map_or(1, |(s, _)| s + 1);
            if seq != expected_seq {
                let what = if seq > expected_seq {
                    format!("records {expected_seq}..{} are missing (deleted?)", seq - 1)
                } else {
                    format!("out of order: expected seq {expected_seq}")
                };
                return Err(ChainError { seq, what });
            }
            let expected_prev = self.previous.as_ref().map_or(GENESIS.to_string(), |(_, h)| h.clone());
            if record.prev_hash.as_deref() != Some(expected_prev.as_str()) {
                return Err(ChainError {
                    seq,
                    what: "prev_hash does not match the previous record (a record was removed, inserted or reordered)"
                        .into(),
                });
            }
            let hash = record_hash(record);
            if record.record_hash.as_deref() != Some(hash.as_str()) {
                return Err(ChainError {
                    seq,
                    what: "its content does not match its record_hash (the record was changed)".into(),
                });
            }
            if let Some(key) = self.key
                && !mac_matches(key, &hash, record.record_mac.as_deref())
            {
                return Err(ChainError {
                    seq,
                    what: "its MAC is wrong (forged without the audit key)".into(),
                });
            }
            if self.signed.contains(&seq) {
                self.hashes.insert(seq, hash.clone());
            }
            self.previous = Some((seq, hash));
            self.records += 1;
        }
        Ok(())
    }

    /// Judges the checkpoints against what was fed.
    pub fn finish(self, checkpoints: &[Checkpoint], public_key: &[u8]) -> Result<Verified, ChainError> {
        let last_seq = self.previous.as_ref().map_or(0, |(s, _)| *s);
        let verifier = UnparsedPublicKey::new(&signature::ED25519, public_key);
        let mut last_checkpoint = None;
        for checkpoint in checkpoints {
            let signature = URL_SAFE_NO_PAD.decode(&checkpoint.signature).unwrap_or_default();
            let message = checkpoint_message(checkpoint.seq, &checkpoint.record_hash, &checkpoint.time);
            if verifier.verify(&message, &signature).is_err() {
                return Err(ChainError {
                    seq: checkpoint.seq,
                    what: "checkpoint signature does not verify with the audit public key".into(),
                });
            }
            match self.hashes.get(&checkpoint.seq) {
                Some(hash) if *hash == checkpoint.record_hash => {}
                Some(_) => {
                    return Err(ChainError {
                        seq: checkpoint.seq,
                        what: "the signed checkpoint names a different record_hash (records up to here were changed)"
                            .into(),
                    });
                }
                None if self.partial => continue, // outside the slice
                None if checkpoint.seq > last_seq => {
                    return Err(ChainError {
                        seq: checkpoint.seq,
                        what: format!(
                            "a signed checkpoint covers seq {} but the log ends at {last_seq} (the tail was truncated)",
                            checkpoint.seq
                        ),
                    });
                }
                None => {} // before the verified range
            }
            last_checkpoint = Some(last_checkpoint.map_or(checkpoint.seq, |c: i64| c.max(checkpoint.seq)));
        }
        Ok(Verified {
            first_seq: self.first_seq.unwrap_or(1),
            records: self.records,
            last_seq,
            checkpoints: checkpoints.len() as u64,
            last_checkpoint,
            macs_checked: self.key.is_some(),
        })
    }
}

/// Decodes a JWK or bare base64url Ed25519 public key.
pub fn parse_public_key(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let x = match serde_json::from_str::<Value>(text) {
        Ok(jwk) => jwk.get("x")?.as_str()?.to_string(),
        Err(_) => text.to_string(),
    };
    URL_SAFE_NO_PAD.decode(x).ok().filter(|k| k.len() == 32)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // test data, indices bounded by the strategy
mod tests {
    use super::*;
    use crate::audit::Outcome;
    use proptest::prelude::*;
    use serde_json::Map;

    #[test]
    fn only_the_exact_mac_matches() {
        let key = AuditKey::from_bytes(&[7; 32]);
        let good = record_mac(&key, "h1");
        assert!(mac_matches(&key, "h1", Some(&good)));
        let mut flipped = good.clone().into_bytes();
        flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        for wrong in [flipped.as_str(), &good[..63], "", &format!("{good}0")] {
            assert!(!mac_matches(&key, "h1", Some(wrong)), "{wrong}");
        }
        assert!(!mac_matches(&key, "h1", None));
        assert!(!mac_matches(&key, "h2", Some(&good)));
    }

    fn record(n: u8, subject: &str) -> AuditRecord {
        AuditRecord {
            seq: None,
            time: format!("2026-11-28T10:00:{:02}Z", n % 60),
            request_id: format!("r{n}"),
            outcome: if n.is_multiple_of(2) {
                Outcome::Issued
            } else {
                Outcome::Denied
            },
            reason: None,
            grant: Some("g".into()),
            kind: None,
            issuer: None,
            subject: Some(subject.to_string()),
            claims: Map::new(),
            token_jti_hmac: None,
            issuance_id: None,
            ttl_seconds: Some(u64::from(n)),
            expires_at: None,
            client_addr: None,
            detail: Map::new(),
            prev_hash: None,
            record_hash: None,
            record_mac: None,
        }
    }

    fn chain(subjects: &[String], key: &AuditKey) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for (n, subject) in subjects.iter().enumerate() {
            let mut r = record(u8::try_from(n % 256).unwrap_or(0), subject);
            let previous = out.last().and_then(|p| Some((p.seq?, p.record_hash.clone()?)));
            link(&mut r, previous, key);
            out.push(r);
        }
        out
    }

    proptest! {
        #[test]
        fn canonical_bytes_are_the_sorted_value_of_version_1(
            texts in proptest::collection::vec(proptest::option::of("[ -~\u{80}-\u{10FFFF}\n\t\"\\\\]{0,10}"), 10),
            numbers in proptest::collection::vec(any::<i64>(), 3),
            claim_keys in proptest::collection::vec("[a-z_]{1,6}|[\u{80}-\u{2FF}]{1,3}", 0..5),
            nested in any::<bool>(),
        ) {
            let text = |i: usize| texts[i].clone();
            let mut claims = Map::new();
            for (n, k) in claim_keys.iter().enumerate() {
                let value = if nested && n == 0 {
                    json!({"z": [1, "two", null, true], "a": {"deep": text(0)}})
                } else {
                    json!(numbers[n % 3])
                };
                claims.insert(k.clone(), value);
            }
            let mut detail = Map::new();
            detail.insert("rule".into(), json!(numbers[1]));
            detail.insert("access_key_id".into(), json!(text(1)));
            let record = AuditRecord {
                seq: Some(numbers[0]),
                time: text(2).unwrap_or_default(),
                request_id: text(3).unwrap_or_default(),
                outcome: if nested { Outcome::Issued } else { Outcome::Revoked },
                reason: text(4),
                grant: text(5),
                kind: text(6),
                issuer: text(7),
                subject: text(8),
                claims,
                token_jti_hmac: text(9),
                issuance_id: text(0),
                ttl_seconds: u64::try_from(numbers[2]).ok(),
                expires_at: text(1),
                client_addr: text(2),
                detail,
                prev_hash: text(3),
                record_hash: Some("not covered".into()),
                record_mac: None,
            };
            let (fast, defined) = (canonical_bytes(&record), canonical_value(&record));
            prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&defined));
        }

        #[test]
        fn any_chain_verifies_and_any_single_edit_is_found(
            subjects in proptest::collection::vec("[ -~]{0,12}", 1..20),
            victim in any::<prop::sample::Index>(),
            edit in 0u8..4,
        ) {
            let key = AuditKey::from_bytes(&[9; 32]);
            let signer = CheckpointSigner::from_audit_key(&key).map_err(TestCaseError::fail)?;
            let public = parse_public_key(&signer.public_jwk().to_string()).unwrap_or_default();
            let mut records = chain(&subjects, &key);
            let head = records.last().cloned().ok_or_else(|| TestCaseError::fail("empty"))?;
            let checkpoint = signer.sign(head.seq.unwrap_or(0), head.record_hash.as_deref().unwrap_or(""), "t");
            prop_assert!(verify(&records, std::slice::from_ref(&checkpoint), Some(&key), &public).is_ok());

            let i = victim.index(records.len());
            match edit {
                0 => records[i].subject = Some(format!("{}x", records[i].subject.clone().unwrap_or_default())),
                1 => { records.remove(i); }
                2 if records.len() > 1 => { let j = (i + 1) % records.len(); records.swap(i, j); }
                2 => { records.clear(); }
                _ => records[i].ttl_seconds = Some(records[i].ttl_seconds.unwrap_or(0) + 1),
            }
            prop_assert!(verify(&records, &[checkpoint], Some(&key), &public).is_err(), "edit {edit} at {i} went unnoticed");
        }
    }
}
