//! HTTP: the public API router, the admin router, and the middleware that
//! gives every response a request id and a latency sample.

mod admin;
mod handlers;
pub mod limits;
pub mod problem;
mod serve;
pub use serve::{Listener, serve};
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use serde_json::Value;
use tracing::Instrument;

use crate::broker::Broker;
use crate::metrics::Metrics;

/// Response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id of the current request, set by middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Shared state of the public and admin routers.
#[derive(Clone)]
pub struct AppState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `/.well-known/jwks.json` body: keys of stint-signed tokens only.
    pub jwks: Arc<Value>,
    /// `/.well-known/stint-audit-keys.json` body: audit checkpoint keys.
    pub audit_keys: Arc<Value>,
    /// `iss` of stint-signed tokens.
    pub issuer: Arc<String>,
    /// Load limits of the public listener.
    pub limits: Arc<limits::Limits>,
    /// How appends to the audit log are going, for `/readyz`.
    pub audit_health: Arc<crate::audit::WriteHealth>,
    /// Lease revocation, when a `postgres` grant exists.
    pub leases: Option<Arc<crate::leases::Reaper>>,
}

/// The public API's routes: (method, path, handler). One table builds the
/// router and is checked against openapi.yaml, so neither can drift.
pub fn public_routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    vec![
        ("POST", "/v1/issue/{grant}", post(handlers::issue)),
        ("GET", "/v1/grants", get(handlers::grants)),
        ("GET", "/v1/audit", get(handlers::audit)),
        ("POST", "/v1/leases/{id}/revoke", post(handlers::revoke_lease)),
        ("GET", "/.well-known/jwks.json", get(handlers::jwks)),
        ("GET", "/.well-known/stint-audit-keys.json", get(handlers::audit_keys)),
        ("GET", "/.well-known/openid-configuration", get(handlers::discovery)),
    ]
}

/// The admin API's routes, as [`public_routes`].
pub fn admin_routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    vec![
        ("GET", "/healthz", get(admin::healthz)),
        ("GET", "/readyz", get(admin::readyz)),
        ("GET", "/metrics", get(admin::metrics)),
    ]
}

fn with_routes(routes: Vec<(&'static str, &'static str, MethodRouter<AppState>)>) -> Router<AppState> {
    routes
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| router.route(path, handler))
}

/// The public API.
pub fn router(state: AppState) -> Router {
    with_routes(public_routes())
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.limits.clone(), limits::guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The admin API: health, readiness, metrics.
pub fn admin_router(state: AppState) -> Router {
    with_routes(admin_routes())
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Assigns a request id, echoes it in `x-request-id`, records latency.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = uuid::Uuid::now_v7().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_string(), |p| p.as_str().to_string());
    // Methods are caller text: only the standard ones become label values.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m.to_string(),
        _ => "OTHER".to_string(),
    };
    // The server span, made only when OTLP exports spans (log lines carry
    // `request_id` themselves).
    let span = crate::exported_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        request_id = %id,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        stint.grant = tracing::field::Empty,
        stint.kind = tracing::field::Empty,
        stint.outcome = tracing::field::Empty,
        stint.reason = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, request.headers());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        crate::telemetry::mark_error(&span);
    }
    state
        .metrics
        .request(&route, &method, status, started.elapsed().as_secs_f64());
    tracing::info!(request_id = %id, %method, route = %route, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}
