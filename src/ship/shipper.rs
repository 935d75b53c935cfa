//! The loop of one sink: claim it, read what follows its position, check
//! that it continues the chain, send it, and move the position only once
//! the sink acknowledged. It reads through connections of its own, never
//! the broker's writer, so a sink that is down or hangs costs issuance
//! nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::event::{assemble, continuing};
use super::position::{self, Claim, Position, Positions};
use super::settings::SinkSettings;
use super::transport::{SendError, Transport};
use crate::audit::{AuditQuery, AuditSink};
use crate::metrics::Metrics;

/// How often a caught-up shipper looks for new records.
const POLL: Duration = Duration::from_secs(1);
/// The first pause after a failure; each next one doubles, up to `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// What one round did.
#[derive(Debug)]
enum Step {
    /// A batch was acknowledged (and the position moved, unless the claim
    /// was lost meanwhile: then the next holder sends it again).
    Delivered,
    /// Nothing new to send.
    CaughtUp,
    /// Another shipper holds the sink.
    Elsewhere(String),
    /// Nothing was acknowledged; try again after `wait`. `smaller`: the
    /// batch was too large and the next one is smaller, so a run of
    /// `--once` goes on.
    Failed { why: String, wait: Duration, smaller: bool },
}

/// What `stint audit ship --once` did for one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records acknowledged in this run.
    pub records: u64,
    /// Checkpoints acknowledged in this run.
    pub checkpoints: u64,
    /// Where the sink stands now.
    pub position: i64,
    /// The last record in the store when the run ended.
    pub head: i64,
    /// Another shipper held the sink: its owner id.
    pub held_by: Option<String>,
}

/// One sink's shipper.
pub struct Shipper {
    settings: SinkSettings,
    store: String,
    store_timeout: Duration,
    metrics: Arc<Metrics>,
    transport: Box<dyn Transport>,
    owner: String,
    claim_ttl: Duration,
    reader: Option<Arc<dyn AuditSink>>,
    positions: Option<Arc<dyn Positions>>,
    /// The position while this shipper holds the claim, and when the claim
    /// was last renewed.
    held: Option<(Position, Instant)>,
    failures: u32,
    limit: u32,
    summary: Summary,
}

impl Shipper {
    /// A shipper of `settings` over the store at `store` (its URL).
    pub fn new(
        settings: SinkSettings,
        transport: Box<dyn Transport>,
        store: &str,
        store_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Shipper {
        // A claim outlives one delivery (bounded by `timeout`) with room to
        // spare, and its holder renews it well before it runs out.
        let claim_ttl = (settings.timeout * 3).max(Duration::from_secs(5));
        Shipper {
            limit: settings.batch_size,
            settings,
            store: store.to_string(),
            store_timeout,
            metrics,
            transport,
            owner: owner_id(),
            claim_ttl,
            reader: None,
            positions: None,
            held: None,
            failures: 0,
            summary: Summary::default(),
        }
    }

    /// Ships until `stop` says so, then gives the claim up.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tracing::info!(sink = %self.settings.name, kind = self.settings.kind.as_str(), "audit shipping started");
        loop {
            let wait = match self.step().await {
                Step::Delivered => Duration::ZERO,
                Step::CaughtUp => POLL,
                Step::Elsewhere(_) => self.claim_ttl / 3,
                Step::Failed { wait, .. } => wait,
            };
            if self.pause(wait, &mut stop).await {
                break;
            }
        }
        if let (Some(positions), Some(_)) = (&self.positions, &self.held) {
            let _ = positions.release(&self.settings.name, &self.owner).await;
        }
    }

    /// Ships what is there now and returns (`stint audit ship --once`).
    /// A failure ends the run with its cause; what was acknowledged before
    /// it stays acknowledged.
    pub async fn once(mut self) -> Result<Summary, String> {
        let outcome = loop {
            match self.step().await {
                Step::Delivered => continue,
                Step::CaughtUp => break Ok(()),
                Step::Elsewhere(owner) => {
                    self.summary.held_by = Some(owner);
                    break Ok(());
                }
                // A smaller batch may fit: that is not the end of the run.
                Step::Failed { smaller: true, .. } => continue,
                Step::Failed { why, .. } => break Err(why),
            }
        };
        if let (Some(positions), Some(_)) = (&self.positions, &self.held) {
            let _ = positions.release(&self.settings.name, &self.owner).await;
        }
        outcome.map(|()| self.summary)
    }

    /// Waits `wait`, renewing a held claim on the way; `true` when stopped.
    async fn pause(&mut self, wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return *stop.borrow();
            }
            tokio::select! {
                _ = tokio::time::sleep(left.min(self.claim_ttl / 3)) => {}
                _ = stop.changed() => return true,
            }
            if self.held.is_some() {
                self.renew().await;
            }
        }
    }

    async fn renew(&mut self) {
        let Some(positions) = self.positions.clone() else {
            return;
        };
        match positions.claim(&self.settings.name, &self.owner, self.claim_ttl).await {
            Ok(Claim::Held(position)) => self.held = Some((position, Instant::now())),
            Ok(Claim::Elsewhere { .. }) | Err(_) => self.held = None,
        }
    }

    fn fail(&mut self, reason: &'static str, why: String, wait: Duration) -> Step {
        self.metrics.ship_failure(&self.settings.name, reason);
        self.failures = self.failures.saturating_add(1);
        Step::Failed {
            why,
            wait,
            smaller: false,
        }
    }

    /// The next pause after a failure that may pass: doubling from
    /// `FIRST_BACKOFF` up to `max_backoff`, with jitter so brokers that
    /// failed together do not retry together.
    fn backoff(&self) -> Duration {
        let doubled = FIRST_BACKOFF.saturating_mul(1u32 << self.failures.min(16));
        let capped = doubled.min(self.settings.max_backoff);
        // Between half and all of it.
        let random = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        capped / 2 + capped / 2 * random / 1000
    }

    async fn parts(&mut self) -> Result<(Arc<dyn AuditSink>, Arc<dyn Positions>), String> {
        if self.reader.is_none() {
            self.reader = Some(
                crate::audit::open_existing(&self.store)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        if self.positions.is_none() {
            self.positions = Some(
                position::open(&self.store, self.store_timeout)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        match (&self.reader, &self.positions) {
            (Some(reader), Some(positions)) => Ok((reader.clone(), positions.clone())),
            _ => Err("the audit store is not open".into()),
        }
    }

    /// The position, claiming (or renewing) the sink when the claim is
    /// older than a third of its life.
    async fn position(&mut self, positions: &dyn Positions) -> Result<Result<Position, (String, Position)>, String> {
        if let Some((position, renewed)) = &self.held
            && renewed.elapsed() < self.claim_ttl / 3
        {
            return Ok(Ok(position.clone()));
        }
        match positions
            .claim(&self.settings.name, &self.owner, self.claim_ttl)
            .await
            .map_err(|e| e.to_string())?
        {
            Claim::Held(position) => {
                if self.held.is_none() {
                    tracing::info!(sink = %self.settings.name, seq = position.seq, owner = %self.owner, "audit shipping holds the sink");
                }
                self.held = Some((position.clone(), Instant::now()));
                Ok(Ok(position))
            }
            Claim::Elsewhere { owner, position } => {
                self.held = None;
                Ok(Err((owner, position)))
            }
        }
    }

    async fn step(&mut self) -> Step {
        let name = self.settings.name.clone();
        let (reader, positions) = match self.parts().await {
            Ok(parts) => parts,
            Err(why) => {
                tracing::warn!(sink = %name, error = %why, "audit shipping cannot open the store");
                let wait = self.backoff();
                return self.fail("store", why, wait);
            }
        };
        let head = match reader
            .query(&AuditQuery {
                limit: Some(1),
                ..AuditQuery::default()
            })
            .await
        {
            Ok(newest) => newest.first().and_then(|r| r.seq).unwrap_or(0),
            Err(e) => {
                let wait = self.backoff();
                return self.fail("store", e.to_string(), wait);
            }
        };
        self.summary.head = head;
        let from = match self.position(positions.as_ref()).await {
            Ok(Ok(position)) => position,
            Ok(Err((owner, position))) => {
                self.metrics.ship_lag(&name, head - position.seq);
                self.summary.position = position.seq;
                return Step::Elsewhere(owner);
            }
            Err(why) => {
                tracing::warn!(sink = %name, error = %why, "audit shipping cannot read its position");
                let wait = self.backoff();
                return self.fail("store", why, wait);
            }
        };
        self.metrics.ship_lag(&name, head - from.seq);
        self.summary.position = from.seq;
        let records = match reader.chain(from.seq, self.limit).await {
            Ok(records) => records,
            Err(e) => {
                let wait = self.backoff();
                return self.fail("store", e.to_string(), wait);
            }
        };
        let (records, refused) = continuing(&from, records);
        let upto = records.last().and_then(|r| r.seq).unwrap_or(from.seq);
        let checkpoints = match reader.checkpoints_between(from.checkpoint_seq, upto).await {
            Ok(checkpoints) => checkpoints,
            Err(e) => {
                let wait = self.backoff();
                return self.fail("store", e.to_string(), wait);
            }
        };
        if records.is_empty() && checkpoints.is_empty() {
            return match refused {
                Some(why) => {
                    // Never past a record that is not what was written:
                    // an operator must look (stint audit verify).
                    tracing::error!(sink = %name, position = from.seq, error = %why,
                        "audit shipping stopped: the next record does not continue the chain; nothing is skipped, run `stint audit verify`");
                    let wait = self.settings.max_backoff;
                    self.fail("chain", why, wait)
                }
                None => Step::CaughtUp,
            };
        }
        let events = assemble(&records, &checkpoints);
        // The transport bounds each delivery by `timeout`; this is a backstop.
        let bound = self.settings.timeout * 2 + Duration::from_secs(1);
        let sent = match tokio::time::timeout(bound, self.transport.send(&events)).await {
            Ok(sent) => sent,
            Err(_) => Err(SendError::Unavailable(format!("no answer within {}s", bound.as_secs()))),
        };
        if let Err(e) = sent {
            let (wait, why) = match &e {
                SendError::Unavailable(_) => {
                    tracing::warn!(sink = %name, position = from.seq, failures = self.failures + 1, error = %e,
                        "audit shipping: the sink did not take the batch; retrying");
                    (self.backoff(), e.to_string())
                }
                SendError::Rejected(_) => {
                    tracing::error!(sink = %name, position = from.seq, error = %e, retry_every = ?self.settings.max_backoff,
                        "audit shipping: the sink refused the batch; nothing is skipped, it is retried until the sink takes it (check its token and URL)");
                    (self.settings.max_backoff, e.to_string())
                }
                SendError::TooLarge(_) if records.len() > 1 => {
                    self.limit = (self.limit / 2).max(1);
                    tracing::warn!(sink = %name, batch = self.limit, error = %e,
                        "audit shipping: the batch was too large; sending smaller ones");
                    self.metrics.ship_failure(&name, e.reason());
                    return Step::Failed {
                        why: e.to_string(),
                        wait: Duration::ZERO,
                        smaller: true,
                    };
                }
                SendError::TooLarge(_) => {
                    tracing::error!(sink = %name, position = from.seq, error = %e,
                        "audit shipping: the sink refuses even one record as too large; nothing is skipped (raise the sink's limit)");
                    (self.settings.max_backoff, e.to_string())
                }
            };
            return self.fail(e.reason(), why, wait);
        }
        let to = Position {
            seq: upto,
            record_hash: records
                .last()
                .map_or(from.record_hash.clone(), |r| r.record_hash.clone().unwrap_or_default()),
            checkpoint_seq: checkpoints
                .last()
                .map_or(from.checkpoint_seq, |c| c.seq.max(from.checkpoint_seq)),
        };
        if self.failures > 0 {
            tracing::info!(sink = %name, failures = self.failures, "audit shipping: the sink takes batches again");
        }
        self.failures = 0;
        self.limit = self.limit.saturating_mul(2).min(self.settings.batch_size);
        self.metrics
            .ship_delivered(&name, records.len() as u64, checkpoints.len() as u64);
        self.summary.records += records.len() as u64;
        self.summary.checkpoints += checkpoints.len() as u64;
        match positions.advance(&name, &self.owner, &from, &to, self.claim_ttl).await {
            Ok(true) => {
                self.metrics.ship_lag(&name, head.max(to.seq) - to.seq);
                self.summary.position = to.seq;
                self.held = Some((to, Instant::now()));
            }
            Ok(false) => {
                tracing::warn!(sink = %name, "audit shipping lost its claim while sending; the next holder sends that batch again");
                self.held = None;
            }
            Err(e) => {
                tracing::warn!(sink = %name, error = %e, "audit shipping could not save its position; the batch will be sent again");
                self.held = None;
            }
        }
        Step::Delivered
    }
}

/// Who holds a claim: host, process and a random part (a restarted
/// process on the same host is someone else).
fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}/{}/{}",
        host.trim(),
        std::process::id(),
        random.get(..8).unwrap_or(&random)
    )
}
