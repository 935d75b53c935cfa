//! `/healthz` (the process answers) and `/readyz` (every grant has been
//! fetched once, so what the app reads is there).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use axum::routing::get;

/// Which grants have been fetched at least once.
#[derive(Clone)]
pub struct Status {
    fetched: Arc<Vec<AtomicBool>>,
}

impl Status {
    /// `grants` not yet fetched.
    pub fn new(grants: usize) -> Status {
        Status {
            fetched: Arc::new((0..grants).map(|_| AtomicBool::new(false)).collect()),
        }
    }

    /// Grant number `index` has been fetched.
    pub fn mark_fetched(&self, index: usize) {
        if let Some(flag) = self.fetched.get(index) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Every grant has been fetched once.
    pub fn ready(&self) -> bool {
        self.fetched.iter().all(|f| f.load(Ordering::Relaxed))
    }
}

/// Serves the two endpoints until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, status: Status) {
    let router = axum::Router::new().route("/healthz", get(|| async { "ok\n" })).route(
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
