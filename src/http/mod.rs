//! HTTP: the public API router, the admin router, and the middleware that
//! gives every response a request id and a latency sample.

mod admin;
mod front;
mod handlers;
pub mod limits;
pub mod problem;
mod serve;
pub use serve::{Listener, listen, serve};
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{MethodRouter, get, post};
use serde_json::Value;

use crate::broker::Broker;
use crate::metrics::Metrics;

/// Response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id of the current request, set by middleware; one
/// allocation shared by everything that carries it.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// What the public and admin routers share.
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

/// The routers' state: extractors clone it per request, so it is one `Arc`.
pub type Shared = Arc<AppState>;

/// The public API's routes: (method, path, handler). One table builds the
/// router and is checked against openapi.yaml, so neither can drift.
pub fn public_routes() -> Vec<(&'static str, &'static str, MethodRouter<Shared>)> {
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
pub fn admin_routes() -> Vec<(&'static str, &'static str, MethodRouter<Shared>)> {
    vec![
        ("GET", "/healthz", get(admin::healthz)),
        ("GET", "/readyz", get(admin::readyz)),
        ("GET", "/metrics", get(admin::metrics)),
    ]
}

fn with_routes(routes: Vec<(&'static str, &'static str, MethodRouter<Shared>)>) -> Router<Shared> {
    routes
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| router.route(path, handler))
}

/// The public API.
pub fn router(state: Shared) -> Router {
    with_routes(public_routes())
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), front::public))
        .with_state(state)
}

/// The admin API: health, readiness, metrics.
pub fn admin_router(state: Shared) -> Router {
    with_routes(admin_routes())
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), front::admin))
        .with_state(state)
}
