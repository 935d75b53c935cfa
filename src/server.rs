//! Start-up: config → parts → listeners. Shared by `stint serve`,
//! `stint dev` and the integration tests.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::{self, AuditKey, ChainKeys, CheckpointSigner};
use crate::broker::Broker;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::identity::Verifier;
use crate::keys::SigningKey;
use crate::leases;
use crate::metrics::Metrics;
use crate::policy::GrantKind;
use crate::provider::aws;
use crate::provider::{CredentialProvider, TokenProvider};
use crate::reload::{Reloaded, Reloader};
use aws_credential_types::provider::SharedCredentialsProvider;

/// A broker that is listening.
pub struct RunningServer {
    /// Public API address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// `iss` of stint-signed tokens.
    pub issuer: String,
    /// The broker, for in-process inspection.
    pub broker: Arc<Broker>,
    /// The lease reaper, when a `postgres` grant exists.
    pub leases: Option<Arc<leases::Reaper>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    tls: Option<(http::tls::LiveTlsConfig, http::tls::TlsSettings)>,
    reloader: Option<Arc<Reloader>>,
}

impl RunningServer {
    /// Re-reads the TLS certificate and key (what SIGHUP does).
    pub fn reload_tls(&self) -> Result<(), String> {
        let Some((rustls, settings)) = &self.tls else {
            return Err("TLS is not configured".into());
        };
        rustls.replace(http::tls::server_config(settings)?);
        Ok(())
    }

    /// Reads the config file again (what SIGHUP does); `Err` when the broker
    /// was not started from a file, or the new file is refused.
    pub fn reload_config(&self) -> Result<Reloaded, String> {
        match &self.reloader {
            Some(reloader) => reloader.reload(),
            None => Err("this broker was not started from a config file".into()),
        }
    }

    /// Stops accepting, lets in-flight requests finish, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    http::listen(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))
}

/// Parts that start-up would otherwise find on its own.
#[derive(Default)]
pub struct StartOptions {
    /// stint's own AWS identity; default: the standard AWS credential chain.
    pub aws_credentials: Option<SharedCredentialsProvider>,
    /// The file `config` was read from, for reloads (SIGHUP, `reload.watch`).
    pub config_path: Option<std::path::PathBuf>,
}

/// Builds every part from `config` and starts both listeners.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    start_with(config, StartOptions::default()).await
}

/// [`start`] with explicit parts (tests give stint an AWS identity).
pub async fn start_with(config: Config, options: StartOptions) -> anyhow::Result<RunningServer> {
    // A GitHub App key GitHub would refuse stops the start before anything
    // is created on disk (audit and signing keys, the store).
    for settings in config.github_apps.values() {
        crate::config::github::check_private_key(settings)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.source_name))?;
    }
    let listener = bind(config.listen, "listen").await?;
    let admin_listener = bind(config.admin_listen, "admin_listen").await?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let load_key = || {
        AuditKey::load_or_create(&config.audit.key_file)
            .map_err(|e| anyhow::anyhow!("{}: audit.key_file: {e}", config.source_name))
    };
    let metrics = Arc::new(Metrics::new());
    // A sink whose token or CA file cannot be used stops the start here,
    // before the store or any key is created.
    let shippers = crate::ship::in_broker(&config.audit.ship, &config.audit.store, config.audit.timeout, &metrics)
        .map_err(|(key, m)| anyhow::anyhow!("{}: {key}: {m}", config.source_name))?;
    let audit_key = load_key()?;
    let signer = CheckpointSigner::from_audit_key(&audit_key).map_err(|e| anyhow::anyhow!(e))?;
    let checkpoint_jwk = signer.public_jwk();
    let chain = ChainKeys {
        key: load_key()?,
        signer,
        checkpoint_every: config.audit.checkpoint_every,
        group_commit: config.audit.group_commit,
        store_timeout: config.audit.timeout,
    };
    let mut audit_sink = audit::open(&config.audit.store, chain)
        .await
        .map_err(|e| anyhow::anyhow!("{}: audit.store: {e}", config.source_name))?;
    if let Some(target) = &config.audit.mirror {
        audit_sink = Arc::new(
            audit::MirroredSink::new(audit_sink, target).map_err(|e| anyhow::anyhow!("{}: {e}", config.source_name))?,
        );
    }
    // Outermost, so what /readyz sees is what the broker waited for.
    let audit_health = Arc::new(audit::WriteHealth::default());
    audit_sink = Arc::new(audit::WatchedSink::new(
        audit_sink,
        audit_health.clone(),
        metrics.clone(),
    ));
    let signing_key = Arc::new(
        SigningKey::load_or_create(&config.signing.key_file, config.signing.algorithm)
            .map_err(|e| anyhow::anyhow!("{}: signing.key_file: {e}", config.source_name))?,
    );
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let issuer = config
        .signing
        .issuer
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));

    let verifier = Verifier::new(config.issuers.clone(), config.key_cache.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let mut providers: Vec<Arc<dyn CredentialProvider>> =
        vec![Arc::new(TokenProvider::new(signing_key.clone(), issuer.clone()))];
    let needs_aws = config
        .policy
        .grants()
        .any(|g| matches!(g.kind, GrantKind::Aws(_) | GrantKind::Secrets(_)));
    let needs_postgres = config.policy.grants().any(|g| matches!(g.kind, GrantKind::Postgres(_)));
    let needs_github = config.policy.grants().any(|g| matches!(g.kind, GrantKind::Github(_)));
    let db_password_in_aws = config
        .databases
        .values()
        .any(|d| matches!(d.password, leases::PasswordSource::Secret(_)))
        || config
            .github_apps
            .values()
            .any(|a| matches!(a.private_key, leases::PasswordSource::Secret(_)));
    let sdk = if needs_aws || db_password_in_aws {
        Some(
            aws::sdk_config(&config.aws, options.aws_credentials.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.source_name))?,
        )
    } else {
        None
    };
    if let (true, Some(sdk)) = (needs_aws, &sdk) {
        let limiter = aws::RateLimiter::new(config.aws.sts_per_second, config.aws.sts_burst);
        providers.push(Arc::new(aws::StsProvider::new(sdk, limiter, metrics.clone())));
        providers.push(Arc::new(aws::SecretsProvider::new(sdk, metrics.clone())));
    }
    // Leases live next to the audit log, so every broker on the store shares them.
    // With databases configured the reaper runs even when no grant issues
    // roles any more: leases issued before must still end.
    // GitHub tokens are leases too (the sealed token revokes them), and
    // their apps are kept while leases issued before may still be due.
    let uses_databases = needs_postgres || !config.databases.is_empty();
    let uses_github = needs_github || !config.github_apps.is_empty();
    let sealer = Arc::new(leases::Sealer::from_audit_key(&audit_key).map_err(|e| anyhow::anyhow!(e))?);
    let lease_parts = if uses_databases || uses_github {
        let store = leases::open_store(&config.audit.store, config.audit.timeout)
            .await
            .map_err(|e| anyhow::anyhow!("{}: audit.store: {e}", config.source_name))?;
        let secrets = sdk
            .as_ref()
            .filter(|_| db_password_in_aws)
            .map(|sdk| Arc::new(aws_sdk_secretsmanager::Client::new(sdk)));
        if uses_databases {
            providers.push(Arc::new(leases::PostgresProvider::new(
                store.clone(),
                config.databases.clone(),
                secrets.clone(),
                metrics.clone(),
            )));
        }
        let mut apps = leases::GithubApps::new();
        for (name, settings) in &config.github_apps {
            let app = crate::provider::github::GithubApp::new(settings.clone(), secrets.clone())
                .map_err(|e| anyhow::anyhow!("{}: github_apps.{name}: {e}", config.source_name))?;
            apps.insert(name.clone(), Arc::new(app));
        }
        let apps = Arc::new(apps);
        if uses_github {
            providers.push(Arc::new(leases::GithubProvider::new(
                apps.clone(),
                store.clone(),
                sealer.clone(),
                metrics.clone(),
            )));
        }
        Some((store, secrets, apps))
    } else {
        None
    };
    let broker = Arc::new(
        Broker::new(
            verifier,
            config.policy.clone(),
            providers,
            audit_sink,
            audit_key,
            metrics.clone(),
        )
        .with_subject_limit(config.limits.per_subject),
    );

    let reaper = lease_parts.map(|(store, secrets, apps)| {
        Arc::new(
            leases::Reaper::new(
                store,
                config.databases.clone(),
                secrets,
                broker.clone(),
                metrics.clone(),
            )
            .with_github(apps, sealer.clone()),
        )
    });
    let reloader = options
        .config_path
        .clone()
        .map(|path| Arc::new(Reloader::new(path, broker.clone(), metrics.clone(), config.clone())));
    let state = Arc::new(AppState {
        broker: broker.clone(),
        metrics,
        // Checkpoint keys are published apart from the token JWKS: a service
        // trusting jwks.json must never accept a token signed with a key
        // derived from the audit key.
        jwks: Arc::new(json!({ "keys": [signing_key.public_jwk()] })),
        audit_keys: Arc::new(json!({ "keys": [checkpoint_jwk] })),
        issuer: Arc::new(issuer.clone()),
        limits: Arc::new(http::limits::Limits::new(&config.limits)),
        audit_health,
        leases: reaper.clone(),
    });
    let (stop, stopped) = watch::channel(false);
    // Each sink ships from a task of its own with its own store
    // connections: a sink that is down or hangs never touches a request.
    for shipper in shippers {
        tokio::spawn(shipper.run(stop.subscribe()));
    }
    if let Some(reaper) = &reaper {
        reaper.clone().spawn(config.reap_interval, stop.subscribe());
    }
    let tls = match &config.tls {
        None => None,
        Some(settings) => {
            let live = http::tls::LiveTlsConfig::new(
                http::tls::server_config(settings).map_err(|e| anyhow::anyhow!("{}: {e}", config.source_name))?,
            );
            Some((live, settings.clone()))
        }
    };
    let tls_reload = tls.clone();
    // Both listeners get the connection limits: a flood of idle connections
    // on the admin port would otherwise starve the readiness probe.
    let listener_of = |name, router, tls| http::Listener {
        name,
        router,
        tls,
        max_connections: config.limits.max_connections,
        header_timeout: config.limits.header_timeout,
        metrics: state.metrics.clone(),
    };
    let public = listener_of("public", http::router(state.clone()), tls.map(|(live, _)| live));
    let admin = listener_of("admin", http::admin_router(state.clone()), None);
    let tasks = vec![
        tokio::spawn(http::serve(listener, public, stopped.clone())),
        tokio::spawn(http::serve(admin_listener, admin, stopped)),
    ];

    // Sign the chain head on a timer too, so a quiet log still gets
    // checkpoints and truncation of its tail is caught.
    let sink = broker.audit().clone();
    let interval = config.audit.checkpoint_interval;
    let mut stop_checkpoints = stop.subscribe();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = sink.checkpoint().await {
                        tracing::warn!(error = %e, "audit checkpoint failed");
                    }
                }
                _ = stop_checkpoints.changed() => return,
            }
        }
    });

    // Warm the key caches in the background; failures are logged and retried
    // on the first request.
    let warm = broker.clone();
    tokio::spawn(async move { warm.verifier().prefetch().await });

    tracing::info!(%addr, %admin_addr, %issuer, issuers = config.issuers.len(), grants = config.policy.grants().count(), "stint is listening");
    #[cfg(unix)]
    {
        // SIGHUP re-reads the config file (issuers and grants) and the TLS
        // certificate and key (e.g. after renewal); with neither it is logged
        // and ignored rather than ending the process.
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reload = tls_reload.clone();
        let config_reload = reloader.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                if let Some(reloader) = &config_reload {
                    let _ = reloader.reload();
                }
                let Some((rustls, settings)) = &reload else {
                    if config_reload.is_none() {
                        tracing::info!("SIGHUP: no config file or TLS to reload");
                    }
                    continue;
                };
                match http::tls::server_config(settings) {
                    Ok(fresh) => {
                        rustls.replace(fresh);
                        tracing::info!("reloaded the TLS certificate");
                    }
                    Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the old certificate"),
                }
            }
        });
    }
    if let (Some(reloader), Some(every)) = (&reloader, config.reload_watch) {
        reloader.clone().watch(every, stop.subscribe());
    }
    Ok(RunningServer {
        addr,
        admin_addr,
        issuer,
        broker,
        stop,
        tasks,
        tls: tls_reload,
        reloader,
        leases: reaper,
    })
}
