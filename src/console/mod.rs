//! `stint audit console`: a read-only web console over the audit store,
//! for auditors. Server-rendered HTML, charts drawn as SVG on the server,
//! one stylesheet served by stint: no script, no CDN, so it works on an
//! air-gapped host under a strict Content-Security-Policy.
//!
//! It only reads: the store is opened read-only (a SQLite file read-only,
//! a PostgreSQL role with SELECT is enough), and no GET changes anything.
//! On loopback (the default) it serves whoever can reach the port on the
//! host; anywhere else it needs `console.tls` and `console.sign_in`, and
//! each person signs in ([`signin`]). The Host header must be the
//! console's own, so a web page cannot reach it by DNS rebinding.

mod chart;
mod pages;
pub mod params;
pub mod rollup;
pub mod signin;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::audit::commands::StoreChoice;
use crate::audit::{AuditKey, AuditSink};

pub use crate::config::console::DEFAULT_LISTEN;

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
    /// Sign-in, when the console serves beyond loopback.
    pub sign_in: Option<Arc<signin::SignIn>>,
    /// The config's policy (with `--config`): each record's decision is
    /// explained under it.
    pub policy: Option<Arc<crate::policy::Policy>>,
    /// The `Host` values it answers to.
    pub hosts: Arc<Vec<String>>,
    /// The overview's counts per closed hour.
    pub rollup: Arc<rollup::Rollup>,
}

/// Runs the console until SIGINT or SIGTERM: on `listen` (else the
/// config's `console.listen`, else loopback port 8430).
pub async fn run(choice: StoreChoice, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let config = choice.config.as_deref().map(crate::config::Config::load).transpose()?;
    let settings = config.as_ref().and_then(|c| c.console.clone());
    let listen = match (listen, &settings) {
        (Some(listen), _) => listen,
        (None, Some(s)) => s.listen,
        (None, None) => DEFAULT_LISTEN.parse()?,
    };
    let sign_in = match &config {
        Some(config) => signin::SignIn::new(config)
            .map_err(|e| anyhow::anyhow!(e))?
            .map(Arc::new),
        None => None,
    };
    let tls = settings.as_ref().and_then(|s| s.tls.clone());
    if !listen.ip().is_loopback() && (sign_in.is_none() || tls.is_none()) {
        anyhow::bail!(
            "--listen {listen}: beyond loopback the console needs `console.tls` and `console.sign_in` in the config \
             (docs/audit.md#stint-audit-console); or reach it through `ssh -L {port}:127.0.0.1:{port} HOST`",
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
    let socket = crate::http::listen(listen).map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
    let addr = socket.local_addr()?;
    let mut hosts = vec![
        format!("127.0.0.1:{}", addr.port()),
        format!("localhost:{}", addr.port()),
        format!("[::1]:{}", addr.port()),
    ];
    let public = settings.as_ref().map(|s| s.public_url.clone());
    if let Some(host) = public
        .as_deref()
        .and_then(|u| u.split("://").nth(1))
        .map(|h| h.split('/').next().unwrap_or(h))
    {
        hosts.push(host.to_string());
    }
    let console = Console {
        store,
        store_name: crate::redact::connection_string(&url),
        choice,
        key,
        leases,
        verification: Arc::default(),
        sign_in,
        policy: config.as_ref().map(|c| Arc::new(c.policy.clone())),
        hosts: Arc::new(hosts),
        rollup: Arc::default(),
    };
    // The overview's counts of the last 30 days, read once in the
    // background, so its first long-range view does not wait for them.
    let (rollup, store) = (console.rollup.clone(), console.store.clone());
    tokio::spawn(async move { rollup.warm(store.as_ref()).await });
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "stint audit console: {} (read-only{}; Ctrl-C stops it)",
        public.unwrap_or_else(|| format!("{scheme}://{addr}/")),
        if console.sign_in.is_some() {
            ", sign-in required"
        } else {
            ""
        }
    );
    let listener = crate::http::Listener {
        name: "console",
        router: router(console),
        tls: tls
            .map(|t| crate::http::tls::server_config(&t).map(crate::http::tls::LiveTlsConfig::new))
            .transpose()
            .map_err(|e| anyhow::anyhow!("console.tls: {e}"))?,
        max_connections: 1024,
        header_timeout: std::time::Duration::from_secs(10),
        metrics: Arc::new(crate::metrics::Metrics::new()),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    crate::http::serve(socket, listener, stopped).await?;
    Ok(())
}

/// The console's routes, answering only requests whose Host it knows and,
/// with sign-in, only signed-in auditors.
pub fn router(console: Console) -> axum::Router {
    axum::Router::new()
        .route("/", get(pages::overview))
        .route("/records", get(pages::records))
        .route("/records/{seq}", get(pages::record))
        .route("/integrity", get(pages::integrity))
        .route("/integrity/verify", post(pages::verify))
        .route("/export", get(pages::export))
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/static/console.css", get(stylesheet))
        // Browsers ask for it unprompted; no icon, and no error either.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console)
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

/// `?next=` of the sign-in.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Next_ {
    next: String,
}

async fn login(State(console): State<Console>, Query(q): Query<Next_>) -> Response {
    let Some(sign_in) = &console.sign_in else {
        return Redirect::to("/").into_response();
    };
    match sign_in.start(&q.next).await {
        Ok((url, state)) => {
            let mut response = Redirect::to(&url).into_response();
            if let Ok(cookie) = HeaderValue::from_str(&signin::SignIn::state_cookie(&state)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(e) => refused(&console, e),
    }
}

/// What the IdP sends back.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Callback {
    code: String,
    state: String,
    error: String,
    error_description: String,
}

async fn callback(State(console): State<Console>, headers: HeaderMap, Query(q): Query<Callback>) -> Response {
    let Some(sign_in) = &console.sign_in else {
        return Redirect::to("/").into_response();
    };
    if !q.error.is_empty() {
        return refused(
            &console,
            signin::Refusal::BadRequest(format!(
                "the sign-in was not completed: {} {}",
                q.error, q.error_description
            )),
        );
    }
    match sign_in.finish(&q.code, &q.state, &headers).await {
        Ok((id, next)) => {
            let mut response = Redirect::to(&next).into_response();
            if let Ok(cookie) = HeaderValue::from_str(&sign_in.cookie(&id)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(e) => refused(&console, e),
    }
}

async fn logout(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some(sign_in) = &console.sign_in {
        sign_in.sign_out(&headers);
    }
    let mut response = pages::message(&console, "Signed out", "You are signed out of the console.");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("stint_console_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

fn refused(console: &Console, refusal: signin::Refusal) -> Response {
    let (status, what) = match refusal {
        signin::Refusal::BadRequest(w) => (StatusCode::BAD_REQUEST, w),
        signin::Refusal::Upstream(w) => {
            tracing::warn!(error = %w, "console sign-in failed");
            (StatusCode::BAD_GATEWAY, w)
        }
        signin::Refusal::NotAnAuditor(w) => (StatusCode::FORBIDDEN, w),
    };
    pages::problem(console, status, &what)
}

/// The Host check (DNS rebinding), sign-in, and the security headers of
/// every answer.
async fn guard(State(console): State<Console>, mut request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !console.hosts.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this console answers only to its own address\n",
        )
            .into_response();
    }
    let path = request.uri().path().to_string();
    let open = path.starts_with("/auth/") || path == "/static/console.css" || path == "/favicon.ico";
    if let Some(sign_in) = &console.sign_in
        && !open
    {
        match sign_in.person(request.headers()) {
            Some(person) => {
                request.extensions_mut().insert(person);
            }
            None => {
                let wanted = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
                return secure(Redirect::to(&format!("/auth/login?next={}", params::encode(&wanted))).into_response());
            }
        }
    }
    secure(next.run(request).await)
}

fn secure(mut response: Response) -> Response {
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
