//! Admin endpoints: liveness, readiness, metrics. Bind them to a private
//! address; they reveal issuer names and grant names in metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use crate::audit::{AuditError, WriteState};

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Longest `/readyz` waits for the audit store to answer a read.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /readyz`: the audit log answers, takes writes and its chain head
/// verifies (without these nothing can be issued). Issuers whose keys were
/// never fetched are listed but do not make the broker unready: other
/// issuers still work.
pub async fn readyz(State(state): State<Shared>) -> Response {
    // The check verifies the chain head as an append would: `tampered`
    // says only that; the log has the detail.
    let audit = match tokio::time::timeout(CHECK_TIMEOUT, state.broker.audit().check()).await {
        Ok(Ok(())) => state.audit_health.state().as_str(),
        Ok(Err(AuditError::Tampered(_))) => "tampered",
        _ => "unavailable",
    };
    let missing = state.broker.verifier().issuers_without_keys().await;
    let ready = audit == WriteState::Ok.as_str();
    let body = json!({
        "ready": ready,
        "audit": audit,
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
pub async fn metrics(State(state): State<Shared>) -> Response {
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
