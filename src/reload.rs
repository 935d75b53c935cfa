//! Config reload without a restart (SIGHUP, or a watch on the file): the
//! new file is read and validated in full first; only then do its issuers
//! and grants replace the old ones, in one swap. An invalid file is logged,
//! counted, and changes nothing. Requests in flight finish on the snapshot
//! they started with.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::broker::Broker;
use crate::config::Config;
use crate::metrics::Metrics;

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Grants in force now.
    pub grants: usize,
    /// Whether the issuers changed (their keys are fetched again).
    pub issuers_changed: bool,
    /// Keys that changed in the file but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Reloads one config file into one broker.
pub struct Reloader {
    path: PathBuf,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    /// The config the process started with: restart-only keys are compared
    /// with it, as they never change while the process runs.
    started: Config,
    /// The last config put in force (issuers and grants).
    current: Mutex<Config>,
}

fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

impl Reloader {
    /// A reloader for `path`, whose contents are `current` now.
    pub fn new(path: PathBuf, broker: Arc<Broker>, metrics: Arc<Metrics>, current: Config) -> Reloader {
        Reloader {
            path,
            broker,
            metrics,
            started: current.clone(),
            current: Mutex::new(current),
        }
    }

    /// Reads the file again and puts its issuers and grants in force.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let result = self.try_reload();
        self.metrics.config_reload(result.is_ok());
        match &result {
            Ok(done) => tracing::info!(
                grants = done.grants,
                issuers_changed = done.issuers_changed,
                needs_restart = ?done.needs_restart,
                "config reloaded"
            ),
            Err(e) => tracing::error!(error = %e, "config reload refused; the previous config keeps serving"),
        }
        result
    }

    fn try_reload(&self) -> Result<Reloaded, String> {
        let next = Config::load(&self.path).map_err(|e| e.to_string())?;
        // Database targets are fixed at start; a grant may not point elsewhere.
        for grant in next.policy.grants() {
            if let crate::policy::GrantKind::Postgres(p) = &grant.kind
                && self.started.databases.get(&p.database) != next.databases.get(&p.database)
            {
                return Err(format!(
                    "grant `{}` uses database `{}`, which is new or changed: restart to use it",
                    grant.name, p.database
                ));
            }
            // So are GitHub Apps.
            if let crate::policy::GrantKind::Github(g) = &grant.kind
                && self.started.github_apps.get(&g.app) != next.github_apps.get(&g.app)
            {
                return Err(format!(
                    "grant `{}` uses GitHub App `{}`, which is new or changed: restart to use it",
                    grant.name, g.app
                ));
            }
        }
        let mut current = self.current.lock().map_err(|_| "reload state poisoned".to_string())?;
        let cache_changed = differs(&current.key_cache, &next.key_cache);
        let issuers_changed = differs(&current.issuers, &next.issuers) || cache_changed;
        // Unchanged issuers keep their key caches.
        let verifier = if issuers_changed {
            Some(
                self.broker
                    .verifier()
                    .renewed(next.issuers.clone(), next.key_cache.clone(), cache_changed)?,
            )
        } else {
            None
        };
        self.broker.replace(next.policy.clone(), verifier)?;
        if issuers_changed {
            let broker = self.broker.clone();
            tokio::spawn(async move { broker.verifier().prefetch().await });
        }
        let started = &self.started;
        let mut needs_restart = Vec::new();
        let checks: [(&'static str, bool); 12] = [
            ("databases", differs(&started.databases, &next.databases)),
            ("github_apps", differs(&started.github_apps, &next.github_apps)),
            ("leases", started.reap_interval != next.reap_interval),
            ("listen", started.listen != next.listen),
            ("admin_listen", started.admin_listen != next.admin_listen),
            ("audit", differs(&started.audit, &next.audit)),
            ("signing", differs(&started.signing, &next.signing)),
            ("aws", differs(&started.aws, &next.aws)),
            ("limits", differs(&started.limits, &next.limits)),
            ("tls", differs(&started.tls, &next.tls)),
            ("reload", started.reload_watch != next.reload_watch),
            ("telemetry", started.otlp != next.otlp),
        ];
        for (key, changed) in checks {
            if changed {
                needs_restart.push(key);
            }
        }
        let grants = next.policy.grants().count();
        *current = next;
        Ok(Reloaded {
            grants,
            issuers_changed,
            needs_restart,
        })
    }

    /// Polls the file every `interval` and reloads when its bytes change
    /// (a Kubernetes ConfigMap update swaps a symlink: content is what counts).
    pub fn watch(self: Arc<Self>, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        tokio::spawn(async move {
            let mut seen = std::fs::read(&self.path).ok();
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop.changed() => return,
                }
                let now = std::fs::read(&self.path).ok();
                if now.is_some() && now != seen {
                    seen = now;
                    let _ = self.reload();
                }
            }
        });
    }
}
