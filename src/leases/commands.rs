//! `stint leases list | revoke`: for operators, straight on the store.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Lease, LeaseKind, LeaseState, open_store, open_store_read_only};
use crate::clock::rfc3339;
use crate::config::Config;

async fn store(config: &Path) -> anyhow::Result<std::sync::Arc<dyn super::LeaseStore>> {
    let config = Config::load(config)?;
    Ok(open_store(&config.audit.store, config.audit.timeout).await?)
}

/// Leases as a table (or JSON lines), newest first. Reads only: an
/// auditor's read-only copy of the store, or a PostgreSQL role with
/// SELECT alone, will do, and a store without a lease table is left so.
pub async fn list(config: &Path, failing: bool, json: bool, limit: u32) -> anyhow::Result<String> {
    let config = Config::load(config)?;
    let Some(store) = open_store_read_only(&config.audit.store, config.audit.timeout).await? else {
        return Ok(if json {
            String::new()
        } else {
            "(no leases: this store has no lease table yet; a broker with `databases:` or `github_apps:` makes it)\n"
                .to_string()
        });
    };
    let leases = store.list(failing, limit).await?;
    if json {
        return Ok(leases
            .iter()
            .map(|l| serde_json::to_string(l).unwrap_or_default() + "\n")
            .collect());
    }
    // TARGET is the database (postgres) or the GitHub App (github); NAME
    // the role, or the token's `token_sha256`.
    let mut out = format!(
        "{:<36}  {:<16}  {:<8}  {:<10}  {:<44}  {:<20}  {:<8}  {:>8}  {}\n",
        "LEASE", "GRANT", "KIND", "TARGET", "NAME", "EXPIRES", "STATE", "ATTEMPTS", "LAST ERROR"
    );
    for l in &leases {
        out.push_str(&format!(
            "{:<36}  {:<16}  {:<8}  {:<10}  {:<44}  {:<20}  {:<8}  {:>8}  {}\n",
            l.id,
            l.grant,
            l.kind.stored(),
            l.database,
            l.username,
            rfc3339(l.expires_at),
            if l.is_failing() { "failing" } else { l.state.as_str() },
            l.attempts,
            l.last_error.as_deref().unwrap_or("-"),
        ));
    }
    if leases.is_empty() {
        out.push_str(if failing {
            "(no failing leases)\n"
        } else {
            "(no leases)\n"
        });
    }
    Ok(out)
}

/// Ends a lease now: it becomes due, and a running broker's reaper drops
/// its role (and audits it). Waits up to `wait` to say so.
pub async fn revoke(config: &Path, id: &str, wait: Duration) -> anyhow::Result<String> {
    let store = store(config).await?;
    let now = crate::clock::now();
    if !store.expire_now(id, now, "revoked_by_admin", None).await? {
        return match store.get(id).await? {
            Some(Lease {
                state: LeaseState::Revoked,
                revoked_at,
                ..
            }) => Ok(format!(
                "lease {id} was already revoked at {}",
                revoked_at.map(rfc3339).unwrap_or_default()
            )),
            _ => anyhow::bail!("no active lease `{id}`"),
        };
    }
    let started = Instant::now();
    loop {
        if let Some(lease) = store.get(id).await?
            && lease.state == LeaseState::Revoked
        {
            return Ok(match lease.kind {
                LeaseKind::Postgres => format!("lease {id} revoked: role {} dropped", lease.username),
                LeaseKind::Github => format!("lease {id} revoked: GitHub token {} revoked", lease.username),
            });
        }
        if started.elapsed() >= wait {
            return Ok(format!(
                "lease {id} ends now; no broker revoked it within {}s: a running broker's reaper will (leases.reap_interval)",
                wait.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
