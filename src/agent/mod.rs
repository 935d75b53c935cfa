//! `stint agent`: a long-running process (a Kubernetes sidecar, or any
//! host) that keeps a set of grants issued and renewed and hands each to
//! where the config says: files in a shared volume, the AWS container
//! credentials endpoint. `/healthz` and `/readyz` say whether it runs and
//! whether every grant has been fetched; `/metrics` how renewals go.

pub mod config;
pub mod endpoint;
pub mod health;
pub mod keeper;

use std::sync::Arc;

use crate::client::{BrokerClient, BrokerTls};
use config::AgentConfig;

/// Exit code for a config the agent cannot run with.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code when the health port cannot be opened.
pub const EXIT_LISTEN: u8 = 1;

/// Runs the agent until SIGTERM or SIGINT (exit 0); returns the exit code.
pub async fn run(path: &std::path::Path) -> u8 {
    let config = match AgentConfig::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("stint agent: {e}");
            return EXIT_CONFIG;
        }
    };
    let tls = BrokerTls {
        ca_file: config.ca_file.clone(),
        ..BrokerTls::default()
    };
    let client = match BrokerClient::new(&config.broker, &tls) {
        Ok(client) => Arc::new(client),
        Err(e) => {
            eprintln!("stint agent: {}: broker: {e}", path.display());
            return EXIT_CONFIG;
        }
    };
    let status = health::Status::new(&config.grants.iter().map(|g| g.name.clone()).collect::<Vec<_>>());
    let listener = match tokio::net::TcpListener::bind(config.health_listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("stint agent: cannot listen on {}: {e}", config.health_listen);
            return EXIT_LISTEN;
        }
    };
    tokio::spawn(health::serve(listener, status.clone()));
    let latest = endpoint::Latest::default();
    if let Some(aws) = &config.aws_endpoint {
        let token = match endpoint::authorization_token(&aws.authorization_token_file) {
            Ok(token) => token,
            Err(e) => {
                eprintln!(
                    "stint agent: aws_endpoint.authorization_token_file {}: {e}",
                    aws.authorization_token_file.display()
                );
                return EXIT_CONFIG;
            }
        };
        match tokio::net::TcpListener::bind(aws.listen).await {
            Ok(listener) => {
                tokio::spawn(endpoint::serve(listener, token, latest.clone()));
            }
            Err(e) => {
                eprintln!("stint agent: cannot listen on {}: {e}", aws.listen);
                return EXIT_LISTEN;
            }
        }
    }
    let mut keepers = Vec::new();
    let mut outputs = Vec::new();
    for (index, grant) in config.grants.iter().cloned().enumerate() {
        let written = keeper::Written::default();
        outputs.push((grant.files.clone(), written.clone()));
        let serves_aws = config.aws_endpoint.as_ref().is_some_and(|a| a.grant == grant.name);
        let keeper = keeper::Keeper {
            latest: serves_aws.then(|| latest.clone()),
            written,
            client: client.clone(),
            token_file: config.token_file.clone(),
            grant,
            status: status.clone(),
            index,
        };
        keepers.push(tokio::spawn(keeper.run()));
    }
    eprintln!("stint agent: keeping {} grant(s)", config.grants.len());
    shutdown().await;
    for keeper in &keepers {
        keeper.abort();
    }
    for (dir, written) in &outputs {
        keeper::remove_files(dir.as_deref(), written);
    }
    0
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
