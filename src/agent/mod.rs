//! `stint agent`: a long-running process (a Kubernetes sidecar, or any
//! host) that keeps a set of grants issued and renewed and hands each to
//! where the config says: files in a shared volume, the AWS container
//! credentials endpoint. `/healthz` and `/readyz` say whether it runs and
//! whether every grant has been fetched; `/metrics` how renewals go.

pub mod config;
pub mod endpoint;
pub mod health;
pub mod keeper;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use crate::client::{BrokerClient, BrokerTls};
use config::AgentConfig;

/// Exit code for a config the agent cannot run with.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code when the health port cannot be opened.
pub const EXIT_LISTEN: u8 = 1;
/// Exit code of `--once` when a grant could not be fetched in time.
pub const EXIT_NOT_FETCHED: u8 = 3;

/// What `stint agent` is asked to do.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Keep every grant until SIGTERM or SIGINT (the sidecar).
    Keep,
    /// `--once`: fetch every grant, write it out, keep it in `state_dir`
    /// and exit (the init container), giving up after the duration.
    Once(Duration),
    /// `--check`: validate the config and exit.
    Check,
}

/// Runs the agent in `mode`; returns the exit code.
pub async fn run(path: &std::path::Path, mode: Mode) -> u8 {
    let config = match AgentConfig::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("stint agent: {e}");
            return EXIT_CONFIG;
        }
    };
    // `--check` opens no file the config names (it may run where they do
    // not exist, e.g. on a rendered Helm chart): the URL alone is checked.
    let tls = BrokerTls {
        ca_file: config.ca_file.clone().filter(|_| !matches!(mode, Mode::Check)),
        ..BrokerTls::default()
    };
    let client = match BrokerClient::new(&config.broker, &tls) {
        Ok(client) => Arc::new(client),
        Err(e) => {
            eprintln!("stint agent: {}: broker: {e}", path.display());
            return EXIT_CONFIG;
        }
    };
    if let Mode::Check = mode {
        println!("{}: ok ({} grant(s))", path.display(), config.grants.len());
        return 0;
    }
    let status = health::Status::new(&config.grants.iter().map(|g| g.name.clone()).collect::<Vec<_>>());
    let latest = endpoint::Latest::default();
    let renew_now = Arc::new(tokio::sync::Notify::new());
    let keepers: Vec<keeper::Keeper> = config
        .grants
        .iter()
        .cloned()
        .enumerate()
        .map(|(index, grant)| keeper::Keeper {
            latest: config
                .aws_endpoint
                .as_ref()
                .is_some_and(|a| a.grant == grant.name)
                .then(|| latest.clone()),
            written: keeper::Written::default(),
            client: client.clone(),
            token_file: config.token_file.clone(),
            status: status.clone(),
            state_dir: config.state_dir.clone(),
            overlap: config.overlap,
            renew_now: renew_now.clone(),
            grant,
            index,
        })
        .collect();
    // The token the SDK sends exists before the app starts: the init
    // container (`--once`) makes it, the sidecar reads it.
    let aws_token = match &config.aws_endpoint {
        None => None,
        Some(aws) => match endpoint::authorization_token(&aws.authorization_token_file) {
            Ok(token) => Some((aws.listen, token)),
            Err(e) => {
                eprintln!(
                    "stint agent: aws_endpoint.authorization_token_file {}: {e}",
                    aws.authorization_token_file.display()
                );
                return EXIT_CONFIG;
            }
        },
    };
    if let Mode::Once(timeout) = mode {
        return once(&keepers, timeout).await;
    }
    let listener = match crate::http::listen(config.health_listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("stint agent: cannot listen on {}: {e}", config.health_listen);
            return EXIT_LISTEN;
        }
    };
    tokio::spawn(health::serve(listener, status.clone()));
    if let Some((listen, token)) = aws_token {
        match crate::http::listen(listen) {
            Ok(listener) => {
                tokio::spawn(endpoint::serve(listener, token, latest.clone()));
            }
            Err(e) => {
                eprintln!("stint agent: cannot listen on {listen}: {e}");
                return EXIT_LISTEN;
            }
        }
    }
    let outputs: Vec<_> = keepers
        .iter()
        .map(|k| (k.grant.files.clone(), k.written.clone(), k.grant.name.clone()))
        .collect();
    eprintln!("stint agent: keeping {} grant(s)", keepers.len());
    let tasks: Vec<_> = keepers.into_iter().map(|k| tokio::spawn(k.run())).collect();
    tokio::spawn(renew_on_hangup(renew_now));
    shutdown().await;
    for task in &tasks {
        task.abort();
    }
    // Nothing is left behind: the files on the shared volume and the kept
    // state go (the leases end at their ttl, or by the reaper).
    for (dir, written, grant) in &outputs {
        keeper::remove_files(dir.as_deref(), written);
        if let Some(state_dir) = &config.state_dir {
            state::remove(state_dir, grant);
        }
    }
    0
}

/// `--once`: every grant fetched in parallel, each within `timeout`.
async fn once(keepers: &[keeper::Keeper], timeout: Duration) -> u8 {
    let deadline = tokio::time::Instant::now() + timeout;
    let results = futures_util::future::join_all(keepers.iter().map(|k| k.first(deadline))).await;
    let mut code = 0;
    for (k, result) in keepers.iter().zip(results) {
        if let Err(e) = result {
            eprintln!(
                "stint agent: grant {}: not fetched within --timeout {}: {e}",
                k.grant.name,
                crate::duration::format(timeout)
            );
            code = EXIT_NOT_FETCHED;
        }
    }
    code
}

/// SIGHUP renews every grant now (a forced renewal, e.g. after a role's
/// policy changed).
async fn renew_on_hangup(renew_now: Arc<tokio::sync::Notify>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        renew_now.notify_waiters();
    }
}

async fn shutdown() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
