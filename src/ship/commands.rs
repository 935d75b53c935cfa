//! `stint audit ship`: the broker's shipping loop in a process of its own,
//! for a sink that should not be shipped from the broker's hosts, or from
//! cron with `--once`.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;

use super::{SinkSettings, Summary};

/// The sinks of `config` to ship: all, or the one named.
fn chosen<'a>(config: &'a Config, sink: Option<&str>) -> anyhow::Result<Vec<&'a SinkSettings>> {
    let all = &config.audit.ship;
    if all.is_empty() {
        anyhow::bail!("{}: audit.ship: no sink is configured", config.source_name);
    }
    match sink {
        None => Ok(all.iter().collect()),
        Some(name) => {
            let found: Vec<_> = all.iter().filter(|s| s.name == name).collect();
            if found.is_empty() {
                let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
                anyhow::bail!(
                    "{}: audit.ship has no sink `{name}` (it has {})",
                    config.source_name,
                    names.join(", ")
                );
            }
            Ok(found)
        }
    }
}

fn line(name: &str, summary: &Summary) -> String {
    match &summary.held_by {
        Some(owner) => format!(
            "{name}: shipped by {owner} (claim held); it stands at seq {} of {}",
            summary.position, summary.head
        ),
        None => format!(
            "{name}: shipped {} records and {} checkpoints; it stands at seq {} of {}",
            summary.records, summary.checkpoints, summary.position, summary.head
        ),
    }
}

/// `--status`: where each chosen sink stands, read from the store.
pub async fn status(config_path: &Path, sink: Option<&str>) -> anyhow::Result<Vec<String>> {
    let config = Config::load(config_path)?;
    let sinks = chosen(&config, sink)?;
    let reader = crate::audit::open_existing(&config.audit.store).await?;
    let head = reader
        .query(&crate::audit::AuditQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await?
        .first()
        .and_then(|r| r.seq)
        .unwrap_or(0);
    let positions = super::position::open(&config.audit.store, config.audit.timeout).await?;
    let mut lines = Vec::new();
    for settings in sinks {
        let line = match positions.standing(&settings.name).await? {
            None => format!("{}: never shipped; the log ends at seq {head}", settings.name),
            Some(standing) => format!(
                "{}: at seq {} of {head} ({} behind), last checkpoint {}, moved {}; {} {}",
                settings.name,
                standing.position.seq,
                (head - standing.position.seq).max(0),
                standing.position.checkpoint_seq,
                standing.updated_at,
                if standing.claimed { "held by" } else { "last held by" },
                standing.owner
            ),
        };
        lines.push(line);
    }
    Ok(lines)
}

/// Runs the shipping loop for the chosen sinks: until SIGTERM or SIGINT,
/// or with `once` until each has sent what is there. Returns the lines to
/// print; an error when a sink could not be shipped.
pub async fn ship(
    config_path: &Path,
    sink: Option<&str>,
    once: bool,
    metrics_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<Vec<String>> {
    let config = Config::load(config_path)?;
    let metrics = Arc::new(Metrics::new());
    // Outside the broker, lag and failures are served here, so the same
    // alerts watch a shipper that runs on its own.
    if let Some(listen) = metrics_listen {
        let socket = crate::http::listen(listen).map_err(|e| anyhow::anyhow!("--metrics-listen {listen}: {e}"))?;
        let served = metrics.clone();
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let served = served.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        served.render(),
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(socket, router).await });
    }
    let mut shippers = Vec::new();
    for settings in chosen(&config, sink)? {
        let shipper = super::shipper(settings, &config.audit.store, config.audit.timeout, metrics.clone())
            .map_err(|(key, m)| anyhow::anyhow!("{}: audit.ship.{}{key}: {m}", config.source_name, settings.name))?;
        shippers.push((settings.name.clone(), shipper));
    }
    if once {
        let mut lines = Vec::new();
        let mut failed = Vec::new();
        for (name, shipper) in shippers {
            match shipper.once().await {
                Ok(summary) => lines.push(line(&name, &summary)),
                Err(why) => failed.push(format!("{name}: {why}")),
            }
        }
        if !failed.is_empty() {
            for done in &lines {
                eprintln!("{done}");
            }
            anyhow::bail!(
                "audit shipping failed (what was acknowledged stays shipped; run again to go on):\n{}",
                failed.join("\n")
            );
        }
        return Ok(lines);
    }
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (_, shipper) in shippers {
        tasks.push(tokio::spawn(shipper.run(stop.subscribe())));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(Vec::new())
}
