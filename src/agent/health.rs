//! `/healthz` (the process answers), `/readyz` (every grant has been
//! fetched once, so what the app reads is there) and `/metrics`
//! (Prometheus text: renewals, failures, seconds to expiry per grant).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use axum::http::StatusCode;
use axum::routing::get;

/// One grant's state as the endpoints show it.
struct GrantStatus {
    name: String,
    fetched: AtomicBool,
    renewals: AtomicU64,
    failures: AtomicU64,
    /// Unix seconds of the current credential's expiry (0: none).
    expires_at: AtomicI64,
}

/// What `/readyz` and `/metrics` report, shared with every grant's loop.
#[derive(Clone)]
pub struct Status {
    grants: Arc<Vec<GrantStatus>>,
}

impl Status {
    /// The grants named, none fetched yet.
    pub fn new(names: &[String]) -> Status {
        Status {
            grants: Arc::new(
                names
                    .iter()
                    .map(|name| GrantStatus {
                        name: name.clone(),
                        fetched: AtomicBool::new(false),
                        renewals: AtomicU64::new(0),
                        failures: AtomicU64::new(0),
                        expires_at: AtomicI64::new(0),
                    })
                    .collect(),
            ),
        }
    }

    /// Grant number `index` was issued, valid until `expires_at` (unix
    /// seconds, if the answer said).
    pub fn mark_fetched(&self, index: usize, expires_at: Option<i64>) {
        if let Some(grant) = self.grants.get(index) {
            grant.fetched.store(true, Ordering::Relaxed);
            grant.renewals.fetch_add(1, Ordering::Relaxed);
            grant.expires_at.store(expires_at.unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// Grant number `index` was taken over from the state directory
    /// (issued before, so not counted as issued again).
    pub fn mark_taken_over(&self, index: usize, expires_at: Option<i64>) {
        if let Some(grant) = self.grants.get(index) {
            grant.fetched.store(true, Ordering::Relaxed);
            grant.expires_at.store(expires_at.unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// A request for grant number `index` failed.
    pub fn mark_failed(&self, index: usize) {
        if let Some(grant) = self.grants.get(index) {
            grant.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Grant number `index` has no valid credential any more.
    pub fn mark_expired(&self, index: usize) {
        if let Some(grant) = self.grants.get(index) {
            grant.expires_at.store(0, Ordering::Relaxed);
        }
    }

    /// Every grant has been fetched once.
    pub fn ready(&self) -> bool {
        self.grants.iter().all(|g| g.fetched.load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition. Grant names are config keys the
    /// operator chose; quotes and backslashes are escaped all the same.
    pub fn metrics(&self) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut out = String::new();
        let label = |name: &str| name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = writeln!(
            out,
            "# HELP stint_agent_issued_total Credentials issued (first fetch and renewals)."
        );
        let _ = writeln!(out, "# TYPE stint_agent_issued_total counter");
        for g in self.grants.iter() {
            let _ = writeln!(
                out,
                "stint_agent_issued_total{{grant=\"{}\"}} {}",
                label(&g.name),
                g.renewals.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP stint_agent_failures_total Requests for a credential that failed."
        );
        let _ = writeln!(out, "# TYPE stint_agent_failures_total counter");
        for g in self.grants.iter() {
            let _ = writeln!(
                out,
                "stint_agent_failures_total{{grant=\"{}\"}} {}",
                label(&g.name),
                g.failures.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP stint_agent_seconds_to_expiry Seconds until the current credential expires (0: none held)."
        );
        let _ = writeln!(out, "# TYPE stint_agent_seconds_to_expiry gauge");
        for g in self.grants.iter() {
            let at = g.expires_at.load(Ordering::Relaxed);
            let left = if at == 0 { 0 } else { (at - now).max(0) };
            let _ = writeln!(
                out,
                "stint_agent_seconds_to_expiry{{grant=\"{}\"}} {left}",
                label(&g.name)
            );
        }
        out
    }
}

/// Serves the three endpoints until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, status: Status) {
    let metrics = status.clone();
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.metrics(),
                )
            }),
        )
        .route(
            "/readyz",
            get(move || async move {
                if status.ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not every grant fetched yet\n")
                }
            }),
        );
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("stint agent: health endpoint stopped: {e}");
    }
}
