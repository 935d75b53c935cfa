//! `stint audit console`: a read-only web console over the audit store,
//! for auditors. Server-rendered HTML, charts drawn as SVG on the server,
//! one stylesheet served by stint: no script, no CDN, so it works on an
//! air-gapped host under a strict Content-Security-Policy.
//!
//! It only reads: the store is opened read-only (a SQLite file read-only,
//! a PostgreSQL role with SELECT is enough), and no GET changes anything.
//! It serves loopback only: whoever can reach the port on the host (an
//! auditor's own machine, or through `ssh -L`). The Host header must name
//! loopback too, so a web page cannot reach it by DNS rebinding.

mod chart;
mod pages;
pub mod params;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::audit::commands::StoreChoice;
use crate::audit::{AuditKey, AuditSink};

/// Default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8430";

/// The console's Content-Security-Policy: nothing but its own stylesheet;
/// forms post only to itself; it cannot be framed.
const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What every page reads.
#[derive(Clone)]
pub struct Console {
    /// The log, read-only.
    pub store: Arc<dyn AuditSink>,
    /// Where it is (shown in the header, never a password).
    pub store_name: String,
    /// How to open it again (verification reads it whole).
    pub choice: StoreChoice,
    /// The audit key, if given: MACs are checked and `jti` lookups work.
    pub key: Option<Arc<AuditKey>>,
    /// The lease store, if there is one.
    pub leases: Option<Arc<dyn crate::leases::LeaseStore>>,
    /// The verification running or last run.
    pub verification: Arc<Mutex<pages::Verification>>,
}

/// Runs the console on `listen` until SIGINT or SIGTERM.
pub async fn run(choice: StoreChoice, listen: SocketAddr) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen {listen}: the console serves loopback only (127.0.0.1 or [::1]); reach it from elsewhere through `ssh -L {port}:127.0.0.1:{port} HOST`",
            port = listen.port()
        );
    }
    let (url, _) = choice.resolve()?;
    let store = choice.open().await?;
    let key = choice.key().ok().map(Arc::new);
    let leases = crate::leases::open_store_read_only(&url, std::time::Duration::from_secs(10))
        .await
        .ok()
        .flatten();
    let console = Console {
        store,
        store_name: crate::redact::connection_string(&url),
        choice,
        key,
        leases,
        verification: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    eprintln!("stint audit console: http://{addr}/ (read-only; Ctrl-C stops it)");
    axum::serve(listener, router(console, addr.port()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// The console's routes, answering only requests whose Host is loopback
/// on `port`.
pub fn router(console: Console, port: u16) -> axum::Router {
    axum::Router::new()
        .route("/", get(pages::overview))
        .route("/records", get(pages::records))
        .route("/records/{seq}", get(pages::record))
        .route("/integrity", get(pages::integrity))
        .route("/integrity/verify", post(pages::verify))
        .route("/export", get(pages::export))
        .route("/static/console.css", get(stylesheet))
        // Browsers ask for it unprompted; no icon, and no error either.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .fallback(pages::not_found)
        .with_state(console)
        .layer(middleware::from_fn_with_state(port, guard))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

/// The Host check (DNS rebinding) and the security headers of every answer.
async fn guard(State(port): State<u16>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let allowed = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this console answers only to http://127.0.0.1 or http://localhost on its own port\n",
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
