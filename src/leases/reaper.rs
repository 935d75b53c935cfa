//! The reaper: every broker looks for due leases on a timer, claims some,
//! drops their roles and records it. Failures are retried with backoff; a
//! lease that keeps failing shows in metrics and `stint leases list
//! --failing`. Early revocation (`POST /v1/leases/{id}/revoke`) goes
//! through the same path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::github::{self, GithubApps};
use super::target::{self, TargetError};
use super::{DatabaseTarget, Lease, LeaseKind, LeaseState, LeaseStore, Requester, Sealer, literal_prefix};
use crate::audit::{AuditRecord, Outcome};
use crate::broker::Broker;
use crate::clock::now;
use crate::clock::rfc3339;
use crate::metrics::Metrics;
use crate::policy::GrantKind;

/// How long a claim keeps other brokers off a lease.
const CLAIM_SECS: i64 = 120;
/// Leases claimed per tick.
const BATCH: u32 = 20;
/// Longest wait between two attempts on one lease.
const MAX_BACKOFF_SECS: i64 = 300;

/// Why an early revocation could not be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeError {
    /// No such lease.
    NotFound,
    /// The lease store failed.
    Store(String),
}

/// What an early revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The role is gone.
    Revoked(Lease),
    /// The lease is due now; the reaper will finish it (the database is
    /// unreachable, or another broker is at it).
    Scheduled(Lease),
}

/// Revokes leases.
pub struct Reaper {
    store: Arc<dyn LeaseStore>,
    targets: BTreeMap<String, DatabaseTarget>,
    secrets: Option<Arc<aws_sdk_secretsmanager::Client>>,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    /// The GitHub Apps whose tokens are leases, and the sealer that opens
    /// the kept tokens.
    github: Option<(Arc<GithubApps>, Arc<Sealer>)>,
    /// This broker's claim name.
    owner: String,
}

impl Reaper {
    /// A reaper for `targets`, recording through `broker`'s audit sink.
    pub fn new(
        store: Arc<dyn LeaseStore>,
        targets: BTreeMap<String, DatabaseTarget>,
        secrets: Option<Arc<aws_sdk_secretsmanager::Client>>,
        broker: Arc<Broker>,
        metrics: Arc<Metrics>,
    ) -> Reaper {
        Reaper {
            store,
            targets,
            secrets,
            broker,
            metrics,
            github: None,
            owner: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Also ends GitHub token leases, with `apps` and `sealer`.
    pub fn with_github(mut self, apps: Arc<GithubApps>, sealer: Arc<Sealer>) -> Reaper {
        self.github = Some((apps, sealer));
        self
    }

    /// The lease store.
    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.store
    }

    /// Runs [`Reaper::tick`] every `every` until `stop`, starting now (so
    /// leases that expired while no broker ran are revoked at start-up),
    /// after reporting roles that have no lease.
    pub fn spawn(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        tokio::spawn(async move {
            self.reconcile().await;
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = ticker.tick() => { self.tick().await; }
                    _ = stop.changed() => return,
                }
            }
        });
    }

    /// Claims due leases and revokes them; returns how many were revoked.
    pub async fn tick(&self) -> usize {
        let mut revoked = 0;
        loop {
            let time = now();
            let due = match self.store.claim_due(time, &self.owner, time + CLAIM_SECS, BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "lease reaper cannot read the lease store");
                    break;
                }
            };
            let full = u32::try_from(due.len()).unwrap_or(u32::MAX) >= BATCH;
            for lease in due {
                let reason = lease.revoke_reason.clone().unwrap_or_else(|| "expired".into());
                if self.revoke(&lease, &reason).await.is_ok() {
                    revoked += 1;
                }
            }
            if !full {
                break;
            }
        }
        if let Ok((_, failing)) = self.store.counts().await {
            self.metrics
                .leases_failing(usize::try_from(failing).unwrap_or(usize::MAX));
        }
        revoked
    }

    /// Drops the role of a lease this broker has claimed, then records it
    /// (naming who asked for an early end, if anyone did).
    async fn revoke(&self, lease: &Lease, reason: &str) -> Result<(), String> {
        let result = match lease.kind {
            LeaseKind::Postgres => self.drop_role(lease).await.map_err(|e| e.to_string()),
            LeaseKind::Github => self.revoke_github_token(lease).await,
        };
        let time = now();
        match &result {
            Ok(()) => match self.store.finish(&lease.id, &self.owner, time, reason).await {
                Ok(true) => {
                    self.metrics.lease_revocation(true);
                    self.record(lease, reason).await;
                }
                Ok(false) => tracing::warn!(lease_id = %lease.id, "lease was taken over while being revoked"),
                Err(e) => {
                    tracing::error!(lease_id = %lease.id, error = %e, "role dropped but the lease could not be marked revoked; the next attempt finds it gone")
                }
            },
            Err(e) => {
                self.metrics.lease_revocation(false);
                let wait = 2_i64.saturating_pow(lease.attempts.min(16)).min(MAX_BACKOFF_SECS);
                tracing::warn!(lease_id = %lease.id, attempts = lease.attempts + 1, retry_in_s = wait, error = %e, "lease revocation failed");
                if let Err(store) = self.store.failed(&lease.id, &self.owner, e, time + wait).await {
                    tracing::error!(lease_id = %lease.id, error = %store, "could not record a failed revocation");
                }
            }
        }
        result
    }

    async fn revoke_github_token(&self, lease: &Lease) -> Result<(), String> {
        let Some((apps, sealer)) = &self.github else {
            return Err(format!(
                "GitHub App `{}` is no longer under `github_apps:`; restore it so its token can be revoked",
                lease.database
            ));
        };
        crate::telemetry::upstream(&self.metrics, "github", "revoke_token", async {
            github::revoke(apps, sealer, lease).await
        })
        .await
    }

    async fn drop_role(&self, lease: &Lease) -> Result<(), TargetError> {
        let target = self.targets.get(&lease.database).ok_or_else(|| TargetError::Refused {
            database: lease.database.clone(),
            message: "no longer under `databases:`; restore it so the role can be dropped".into(),
        })?;
        // The grant's own revocation statements if it still exists.
        let active = self.broker.active();
        let custom = active.policy.grant(&lease.grant).and_then(|g| match &g.kind {
            GrantKind::Postgres(p) => p.revocation_statements.clone(),
            _ => None,
        });
        crate::telemetry::upstream(&self.metrics, "postgres", "drop_role", async {
            let admin = target::admin_password(target, self.secrets.as_ref()).await?;
            target::revoke_role(target, &admin, &lease.username, custom.as_deref()).await
        })
        .await
    }

    async fn record(&self, lease: &Lease, reason: &str) {
        let mut detail = Map::new();
        let by = lease.revoke_requested_by.as_ref();
        if let Some(by) = by {
            // Who ended it early; the record's issuer and subject stay the holder's.
            detail.insert(
                "revoked_by".into(),
                serde_json::json!({"issuer": by.issuer, "subject": by.subject}),
            );
        }
        detail.insert("lease_id".into(), Value::String(lease.id.clone()));
        match lease.kind {
            LeaseKind::Postgres => {
                detail.insert("username".into(), Value::String(lease.username.clone()));
                detail.insert("database".into(), Value::String(lease.database.clone()));
            }
            LeaseKind::Github => {
                detail.insert("app".into(), Value::String(lease.database.clone()));
                detail.insert("token_sha256".into(), Value::String(lease.username.clone()));
            }
        }
        let record = AuditRecord {
            seq: None,
            time: crate::clock::now_rfc3339(),
            // The request that asked for the end, even when the reaper ends
            // it later: its answer's x-request-id finds this record.
            request_id: by.map_or_else(
                || format!("reaper-{}", uuid::Uuid::now_v7()),
                |by| by.request_id.clone(),
            ),
            outcome: Outcome::Revoked,
            reason: Some(reason.to_string()),
            grant: Some(lease.grant.clone()),
            kind: Some(lease.kind.stored().into()),
            issuer: Some(lease.issuer.clone()),
            subject: Some(lease.subject.clone()),
            claims: Map::new(),
            token_jti_hmac: None,
            issuance_id: Some(lease.id.clone()),
            ttl_seconds: None,
            expires_at: Some(rfc3339(lease.expires_at)),
            client_addr: None,
            detail,
            prev_hash: None,
            record_hash: None,
            record_mac: None,
        };
        if let Err(e) = self.broker.audit().append(record).await {
            tracing::error!(lease_id = %lease.id, error = %e, "the role is dropped but its revocation could not be audited");
        }
    }

    /// Ends a lease now, for its caller or an admin (`by`: their issuer and
    /// `sub`). `Scheduled` when the role could not be dropped at once: the
    /// reaper retries, and its record names them all the same, because the
    /// request is kept on the lease first.
    pub async fn revoke_now(
        &self,
        id: &str,
        reason: &str,
        request_id: &str,
        by: (&str, &str),
    ) -> Result<Revocation, RevokeError> {
        let store = |e: crate::audit::AuditError| RevokeError::Store(e.to_string());
        let time = now();
        let requester = Requester {
            issuer: by.0.to_string(),
            subject: by.1.to_string(),
            request_id: request_id.to_string(),
        };
        if !self
            .store
            .expire_now(id, time, reason, Some(&requester))
            .await
            .map_err(store)?
        {
            return match self.store.get(id).await.map_err(store)? {
                Some(lease) if lease.state == LeaseState::Revoked => Ok(Revocation::Revoked(lease)),
                _ => Err(RevokeError::NotFound),
            };
        }
        let Some(lease) = self
            .store
            .claim(id, time, &self.owner, time + CLAIM_SECS)
            .await
            .map_err(store)?
        else {
            // Another broker holds it: it finishes the job.
            let lease = self.store.get(id).await.map_err(store)?;
            return lease.map(Revocation::Scheduled).ok_or(RevokeError::NotFound);
        };
        let _ = self.revoke(&lease, reason).await;
        let latest = self.store.get(id).await.map_err(store)?.ok_or(RevokeError::NotFound)?;
        // Only what the store says: revoked once marked so, else still due.
        Ok(if latest.state == LeaseState::Revoked {
            Revocation::Revoked(latest)
        } else {
            Revocation::Scheduled(latest)
        })
    }

    /// Reports (or, with `drop_orphans`, drops) roles that carry a prefix
    /// of this broker's username templates but have no active lease.
    pub async fn reconcile(&self) {
        let active = self.broker.active();
        for target in self.targets.values() {
            let prefixes: Vec<String> = active
                .policy
                .grants()
                .filter_map(|g| match &g.kind {
                    GrantKind::Postgres(p) if p.database == target.name => {
                        Some(literal_prefix(&p.username_template).to_string())
                    }
                    _ => None,
                })
                .collect();
            if prefixes.is_empty() {
                continue;
            }
            let found = async {
                let admin = target::admin_password(target, self.secrets.as_ref()).await?;
                let roles = target::roles_with_prefix(target, &admin, &prefixes).await?;
                Ok::<_, TargetError>((admin, roles))
            }
            .await;
            let (admin, roles) = match found {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(database = %target.name, error = %e, "orphan check skipped");
                    continue;
                }
            };
            let Ok(leased) = self.store.active_usernames(&target.name).await else {
                continue;
            };
            for role in roles.iter().filter(|r| !leased.contains(r)) {
                if target.drop_orphans {
                    match target::revoke_role(target, &admin, role, None).await {
                        Ok(()) => {
                            tracing::warn!(database = %target.name, role = %role, "dropped a role that had no lease")
                        }
                        Err(e) => {
                            tracing::error!(database = %target.name, role = %role, error = %e, "could not drop a role that has no lease")
                        }
                    }
                } else {
                    tracing::warn!(database = %target.name, role = %role, "role looks like stint's but has no active lease (set drop_orphans: true to drop such roles)");
                }
            }
        }
    }
}
