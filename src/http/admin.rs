//! Admin endpoints: liveness, readiness, metrics. Bind them to a private
//! address; they reveal issuer names and grant names in metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the audit log answers (without it nothing can be issued).
/// Issuers whose keys were never fetched are listed but do not make the
/// broker unready: other issuers still work.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let audit = state.broker.audit().check().await;
    let missing = state.broker.verifier().issuers_without_keys().await;
    let ready = audit.is_ok();
    let body = json!({
        "ready": ready,
        "audit": if ready { "ok" } else { "unavailable" },
        "issuers_without_keys": missing,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    for (issuer, count) in state.broker.verifier().jwks_fetches() {
        state.metrics.jwks_fetches(&issuer, count);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
