//! `stint audit query | export | verify | pubkey`: reading the log as an
//! auditor does, offline from the broker.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::chain::{self, Checkpoint};
use super::{AuditError, AuditKey, AuditQuery, AuditRecord, AuditSink, CheckpointSigner};
use crate::config::Config;
use crate::dev;

/// Where the log and its key are.
#[derive(Debug, Clone, Default)]
pub struct StoreChoice {
    /// A config naming `audit.store` and `audit.key_file`.
    pub config: Option<PathBuf>,
    /// A store URL.
    pub store: Option<String>,
    /// The audit key, when not from the config.
    pub audit_key_file: Option<PathBuf>,
}

impl StoreChoice {
    /// Store URL and key file: from the config, the flags, or the `stint dev` folder.
    pub fn resolve(&self) -> anyhow::Result<(String, Option<PathBuf>)> {
        let (store, key) = match (&self.config, &self.store) {
            (Some(path), _) => {
                let config = Config::load(path)?;
                (config.audit.store, Some(config.audit.key_file))
            }
            (None, Some(store)) => (store.clone(), None),
            (None, None) => {
                let dir = PathBuf::from(dev::DEFAULT_DIR);
                if !dir.join("audit.db").exists() {
                    anyhow::bail!("no audit store given: pass --config stint.yaml or --store sqlite://PATH");
                }
                (
                    format!("sqlite://{}", dir.join("audit.db").display()),
                    Some(dir.join("audit.key")),
                )
            }
        };
        Ok((store, self.audit_key_file.clone().or(key)))
    }

    /// The audit key, required.
    pub fn key(&self) -> anyhow::Result<AuditKey> {
        if let Some(path) = &self.audit_key_file {
            return AuditKey::load(path).map_err(|e| anyhow::anyhow!(e));
        }
        let (_, key) = self.resolve()?;
        let path = key.ok_or_else(|| anyhow::anyhow!("this needs the audit key: pass --config or --audit-key-file"))?;
        AuditKey::load(&path).map_err(|e| anyhow::anyhow!(e))
    }

    /// The store, read-only.
    pub async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn AuditSink>> {
        let (store, _) = self.resolve()?;
        Ok(super::open_existing(&store).await?)
    }
}

/// `--since 1h` or `--since 2026-11-01T00:00:00Z` → RFC 3339.
pub fn parse_time(text: &str) -> anyhow::Result<String> {
    if OffsetDateTime::parse(text, &Rfc3339).is_ok() {
        return Ok(text.to_string());
    }
    let ago = crate::duration::parse(text)
        .map_err(|_| anyhow::anyhow!("`{text}` is neither a duration (1h, 7d) nor an RFC 3339 time"))?;
    let at = OffsetDateTime::now_utc() - ago;
    Ok(at.format(&Rfc3339)?)
}

const PAGE: u32 = 1000;

/// Every record in chain order, page by page.
async fn all_records(sink: &dyn AuditSink) -> Result<Vec<AuditRecord>, AuditError> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = sink.chain(after, PAGE).await?;
        let Some(last) = page.last().and_then(|r| r.seq) else {
            break;
        };
        after = last;
        out.extend(page);
    }
    Ok(out)
}

/// `stint audit export`: JSON lines, records in chain order (filtered by
/// time), then the checkpoints as `{"checkpoint": {...}}` lines so the file
/// can be verified offline.
pub async fn export(
    choice: &StoreChoice,
    since: Option<&str>,
    until: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let sink = choice.open().await?;
    let checkpoints = sink.checkpoints().await?;
    let records = seq_range(all_records(sink.as_ref()).await?, since, until);
    let (first, last) = (records.first().and_then(|r| r.seq), records.last().and_then(|r| r.seq));
    for record in &records {
        writeln!(out, "{}", super::record_line(record))?;
    }
    // Only the checkpoints inside the exported slice, so it verifies offline.
    for checkpoint in checkpoints {
        if first.is_some_and(|f| checkpoint.seq >= f) && last.is_some_and(|l| checkpoint.seq <= l) {
            writeln!(out, "{}", super::checkpoint_line(&checkpoint))?;
        }
    }
    Ok(records.len() as u64)
}

/// The contiguous run of records from the first at or after `since` to the
/// last before `until`. A time range becomes a seq range, so records of
/// replicas whose clocks differ a little are not mistaken for gaps.
fn seq_range(records: Vec<AuditRecord>, since: Option<&str>, until: Option<&str>) -> Vec<AuditRecord> {
    let start = records.iter().position(|r| since.is_none_or(|s| r.time.as_str() >= s));
    let end = records.iter().rposition(|r| until.is_none_or(|u| r.time.as_str() < u));
    match (start, end) {
        (Some(start), Some(end)) if start <= end => records.into_iter().skip(start).take(end - start + 1).collect(),
        _ => Vec::new(),
    }
}

/// An export as the chain reads it: records in `seq` order, and a record
/// or checkpoint that occurs more than once (a SIEM's copy, shipped
/// at-least-once) counted once. Two different records with one `seq` are
/// refused: that is an edit, not a repeat. Returns how many lines repeated.
fn in_chain_order(
    mut records: Vec<AuditRecord>,
    mut checkpoints: Vec<Checkpoint>,
) -> Result<(Vec<AuditRecord>, Vec<Checkpoint>, usize), chain::ChainError> {
    let before = records.len() + checkpoints.len();
    // Stable: a file already in order keeps its order.
    records.sort_by_key(|r| r.seq);
    let mut kept: Vec<AuditRecord> = Vec::with_capacity(records.len());
    for record in records {
        match kept.last() {
            Some(last) if last.seq == record.seq && *last == record => continue,
            Some(last) if last.seq == record.seq => {
                return Err(chain::ChainError {
                    seq: record.seq.unwrap_or(0),
                    what: "the export holds two different records with this seq (one was changed)".into(),
                });
            }
            _ => kept.push(record),
        }
    }
    checkpoints.sort_by(|a, b| (a.seq, &a.time, &a.signature).cmp(&(b.seq, &b.time, &b.signature)));
    checkpoints.dedup();
    let repeats = before - kept.len() - checkpoints.len();
    Ok((kept, checkpoints, repeats))
}

/// Reads an export back.
fn read_export(path: &Path) -> anyhow::Result<(Vec<AuditRecord>, Vec<Checkpoint>)> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let (mut records, mut checkpoints) = (Vec::new(), Vec::new());
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), n + 1))?;
        if let Some(checkpoint) = value.get("checkpoint") {
            checkpoints.push(serde_json::from_value(checkpoint.clone())?);
        } else {
            records.push(
                serde_json::from_value(value)
                    .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), n + 1))?,
            );
        }
    }
    Ok((records, checkpoints))
}

/// `stint audit verify`: the whole chain against the store with the key,
/// or an export against the public key alone.
pub async fn verify(choice: &StoreChoice, export: Option<&Path>, pubkey: Option<&str>) -> anyhow::Result<String> {
    verify_range(choice, export, pubkey, None, None, false).await
}

/// `stint audit verify --since/--until`: the slice of the chain between
/// those times (anchored at its first record; a cut tail is only found by
/// a whole-chain check).
pub async fn verify_range(
    choice: &StoreChoice,
    export: Option<&Path>,
    pubkey: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    slice: bool,
) -> anyhow::Result<String> {
    if export.is_none() && since.is_none() && until.is_none() && !slice {
        return verify_store(choice, &|_| {}).await;
    }
    let mut repeats = 0;
    let (records, checkpoints, key, public) = match export {
        Some(path) => {
            let pubkey =
                pubkey.ok_or_else(|| anyhow::anyhow!("--export needs --pubkey (from `stint audit pubkey`)"))?;
            let text = if Path::new(pubkey).exists() {
                std::fs::read_to_string(pubkey)?
            } else {
                pubkey.to_string()
            };
            let public = chain::parse_public_key(&text)
                .ok_or_else(|| anyhow::anyhow!("--pubkey is neither an Ed25519 JWK nor a base64url key"))?;
            let (records, checkpoints) = read_export(path)?;
            let (records, checkpoints, repeated) = in_chain_order(records, checkpoints)?;
            repeats = repeated;
            (records, checkpoints, None, public)
        }
        None => {
            let key = choice.key()?;
            let signer = CheckpointSigner::from_audit_key(&key).map_err(|e| anyhow::anyhow!(e))?;
            let public = chain::parse_public_key(&signer.public_jwk().to_string()).unwrap_or_default();
            let sink = choice.open().await?;
            // Checkpoints first: one signed while we read is then never
            // ahead of the records we read, which would look like truncation.
            let checkpoints = sink.checkpoints().await?;
            (all_records(sink.as_ref()).await?, checkpoints, Some(key), public)
        }
    };
    let records = seq_range(records, since, until);
    // Only an explicit slice may start past seq 1: otherwise deleting the
    // first records would pass as "a slice".
    let partial = since.is_some() || until.is_some() || slice;
    let verified = chain::verify_range(&records, &checkpoints, key.as_ref(), &public, partial)?;
    Ok(describe(&verified, repeats, partial))
}

/// The whole chain of the store, read and checked a page at a time, so a
/// long log never sits in memory; `progress` hears the records checked so
/// far after each page (the console shows it).
pub async fn verify_store(choice: &StoreChoice, progress: &(dyn Fn(u64) + Send + Sync)) -> anyhow::Result<String> {
    let key = choice.key()?;
    let signer = CheckpointSigner::from_audit_key(&key).map_err(|e| anyhow::anyhow!(e))?;
    let public = chain::parse_public_key(&signer.public_jwk().to_string()).unwrap_or_default();
    let sink = choice.open().await?;
    // Checkpoints first: one signed while we read is then never ahead of
    // the records we read, which would look like truncation.
    let checkpoints = sink.checkpoints().await?;
    let mut walk = chain::ChainWalk::new(&checkpoints, Some(&key), false);
    let mut after = 0;
    loop {
        let page = sink.chain(after, PAGE).await?;
        let Some(last) = page.last().and_then(|r| r.seq) else {
            break;
        };
        walk.feed(&page)?;
        progress(walk.records());
        after = last;
    }
    let verified = walk.finish(&checkpoints, &public)?;
    Ok(describe(&verified, 0, false))
}

/// The one-line report of a verification that passed.
fn describe(verified: &chain::Verified, repeats: usize, partial: bool) -> String {
    let tail = match (verified.last_checkpoint, verified.macs_checked) {
        (Some(c), true) if c < verified.last_seq => {
            format!("; records after seq {c} are covered by MACs (no checkpoint yet)")
        }
        (Some(c), false) if c < verified.last_seq => {
            format!("; records after seq {c} are NOT covered: no checkpoint yet and no audit key offline")
        }
        (None, false) => "; no checkpoint: nothing could be verified against the public key".to_string(),
        _ => String::new(),
    };
    let repeated = match repeats {
        0 => String::new(),
        n => format!("; {n} repeated lines (same seq and content) counted once"),
    };
    format!(
        "ok: {} records (seq {}..{}), {} checkpoints{}, {}{}{}{}",
        verified.records,
        verified.first_seq,
        verified.last_seq,
        verified.checkpoints,
        verified
            .last_checkpoint
            .map(|c| format!(" (last at seq {c})"))
            .unwrap_or_default(),
        if verified.macs_checked {
            "MACs checked"
        } else {
            "hash chain and signatures checked offline"
        },
        tail,
        repeated,
        if partial {
            "; a slice of the chain: run without --since/--until to also check the tail"
        } else {
            ""
        }
    )
}

/// `stint audit pubkey`: the checkpoint public key as a JWK.
pub fn pubkey(choice: &StoreChoice) -> anyhow::Result<String> {
    let key = choice.key()?;
    let signer = CheckpointSigner::from_audit_key(&key).map_err(|e| anyhow::anyhow!(e))?;
    Ok(signer.public_jwk().to_string())
}

/// `stint audit query` with time filters resolved.
pub async fn query(choice: &StoreChoice, mut query: AuditQuery, jti: Option<&str>) -> anyhow::Result<Vec<AuditRecord>> {
    if let Some(jti) = jti {
        // The log keeps only HMACs of token ids; hash the given jti the same way.
        query.token_jti_hmac = Some(choice.key()?.hash_jti(jti));
    }
    Ok(choice.open().await?.query(&query).await?)
}
