//! Public API handlers: extract, call the broker, map the result.

use std::net::SocketAddr;

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::Instrument;

use super::problem::Problem;
use super::{RequestId, Shared};
use crate::broker::IssueRequest;
use crate::identity::{IdentityError, MAX_TOKEN_BYTES};

/// Largest accepted request body; issue options are a few dozen bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The bearer token, `Err` when the header is present but unusable.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, IdentityError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    if value.len() > MAX_TOKEN_BYTES + 16 {
        return Err(IdentityError::TooLarge);
    }
    let text = value
        .to_str()
        .map_err(|_| IdentityError::Malformed("the Authorization header is not ASCII".into()))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or_else(|| IdentityError::Malformed("use `Authorization: Bearer <token>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(IdentityError::Malformed("use `Authorization: Bearer <token>`".into()));
    }
    Ok(Some(token.trim()))
}

/// `POST /v1/issue/{grant}`
pub async fn issue(
    State(state): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    grant: Result<Path<String>, PathRejection>,
    slot: Option<Extension<super::limits::InFlightSlot>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A name that is not UTF-8 names no grant; it is refused and audited like one.
    let grant = grant.map_or_else(|_| "\u{FFFD}".to_string(), |Path(name)| name);
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            &request_id,
        )
        .into_response();
    };
    // The flow runs to its end in a task of its own: a request timeout must
    // not cancel it half-way, or a denial or an issuance could go
    // unrecorded. Its in-flight slot goes with it, so work that outlives
    // its caller still counts against `limits.max_in_flight`.
    // A credential ready after its caller left is withdrawn.
    let broker = state.broker.clone();
    let flow_request_id = request_id.clone();
    let (answer, flow) = tokio::sync::oneshot::channel();
    tokio::spawn(
        async move {
            let _slot = slot;
            // An unusable header still goes through the broker so the refusal is audited.
            let request = IssueRequest {
                grant: &grant,
                bearer: bearer(&headers),
                body: &body,
                request_id: &flow_request_id,
                client_addr: Some(peer),
            };
            let result = broker.issue(request).await;
            if let Err(Ok(issuance)) = answer.send(result) {
                broker.withdraw_undelivered(&issuance).await;
            }
        }
        .instrument(tracing::Span::current()),
    );
    match flow.await {
        Ok(Ok(issuance)) => (StatusCode::OK, Json(Value::Object(issuance.body))).into_response(),
        Ok(Err(err)) => Problem::from_broker(&err, &request_id).into_response(),
        Err(e) => {
            tracing::error!(request_id = %request_id, error = %e, "the issue flow failed");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("internal error; see the broker log for request {request_id}"),
                &request_id,
            )
            .into_response()
        }
    }
}

/// `GET /v1/grants`
pub async fn grants(
    State(state): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    match state.broker.grants(bearer(&headers)).await {
        Ok(grants) => Json(json!({ "grants": grants })).into_response(),
        Err(err) => Problem::from_broker(&err, &request_id).into_response(),
    }
}

/// Query parameters of `GET /v1/audit`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    since: Option<String>,
    until: Option<String>,
    grant: Option<String>,
    subject: Option<String>,
    outcome: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/audit`: records for tokens an `auditors` rule admits.
pub async fn audit(
    State(state): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    params: Result<axum::extract::Query<AuditParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let bad =
        |detail: String| Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail, &request_id).into_response();
    let Ok(axum::extract::Query(params)) = params else {
        return bad("query parameters: since, until, grant, subject, outcome, limit, cursor".into());
    };
    let time = |name: &str, value: Option<String>| -> Result<Option<String>, String> {
        match value {
            None => Ok(None),
            Some(v) => time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                .map(|_| Some(v.clone()))
                .map_err(|_| format!("`{name}` must be an RFC 3339 time, e.g. 2026-11-01T00:00:00Z")),
        }
    };
    let (since, until) = match (time("since", params.since), time("until", params.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let outcome = match params.outcome.as_deref().map(crate::audit::Outcome::parse) {
        None => None,
        Some(Some(o)) => Some(o),
        Some(None) => return bad("`outcome` is issued, denied, error or revoked".into()),
    };
    let before_seq = match params.cursor.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(seq)) => Some(seq),
        Some(Err(_)) => return bad("`cursor` is the next_cursor of a previous page".into()),
    };
    let query = crate::audit::AuditQuery {
        grant: params.grant,
        subject: params.subject,
        outcome,
        since,
        until,
        before_seq,
        limit: params.limit,
        ..crate::audit::AuditQuery::default()
    };
    match state.broker.audit_page(bearer(&headers), query).await {
        Ok(page) => Json(page).into_response(),
        Err(err) => Problem::from_broker(&err, &request_id).into_response(),
    }
}

/// `GET /.well-known/jwks.json`: keys that verify stint-signed tokens.
pub async fn jwks(State(state): State<Shared>) -> Response {
    let mut response = Json(state.jwks.as_ref().clone()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// `GET /.well-known/stint-audit-keys.json`: the public key that verifies
/// audit checkpoints (never a token-signing key).
pub async fn audit_keys(State(state): State<Shared>) -> Response {
    Json(state.audit_keys.as_ref().clone()).into_response()
}

/// `GET /.well-known/openid-configuration`: lets OIDC libraries discover
/// the JWKS of stint-signed tokens.
pub async fn discovery(State(state): State<Shared>) -> Response {
    Json(json!({
        "issuer": state.issuer.as_str(),
        "jwks_uri": format!("{}/.well-known/jwks.json", state.issuer),
        "id_token_signing_alg_values_supported": state.jwks.get("keys").and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(|k| k.get("alg").cloned()).collect::<Vec<_>>())
            .unwrap_or_default(),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
    }))
    .into_response()
}

/// Unknown paths.
pub async fn not_found(Extension(RequestId(request_id)): Extension<RequestId>) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see openapi.yaml",
        &request_id,
    )
    .into_response()
}

/// Known paths, wrong method.
pub async fn method_not_allowed(Extension(RequestId(request_id)): Extension<RequestId>) -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
        &request_id,
    )
    .into_response()
}

/// 503 for a lease store that did not answer; the cause goes to the log only.
fn lease_store_unavailable(request_id: &str, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(request_id, error = %error, "lease store unavailable");
    let mut problem = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "lease_store_unavailable",
        "the lease store is unavailable; retry later",
        request_id,
    );
    problem.retry_after = Some(5);
    problem.into_response()
}

/// `POST /v1/leases/{id}/revoke`: ends a lease early, for the caller that
/// obtained it (same issuer and `sub`) or an `auditors` rule. Anyone else,
/// and an unknown id, get the same 404.
pub async fn revoke_lease(
    State(state): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let id = id.map_or_else(|_| String::new(), |Path(id)| id);
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "lease_not_found",
            "no active lease with this id for this caller",
            &request_id,
        )
        .into_response()
    };
    let (token, admin) = match state.broker.caller(bearer(&headers)).await {
        Ok(caller) => caller,
        Err(err) => return Problem::from_broker(&err, &request_id).into_response(),
    };
    let Some(reaper) = &state.leases else {
        return not_found();
    };
    let lease = match reaper.store().get(&id).await {
        Ok(lease) => lease,
        Err(e) => {
            return lease_store_unavailable(&request_id, &e);
        }
    };
    let owner = lease
        .as_ref()
        .is_some_and(|l| l.issuer == token.issuer() && l.subject == token.subject());
    if lease.is_none() || !(owner || admin) {
        let mut detail = serde_json::Map::new();
        detail.insert("lease_id".into(), Value::String(crate::broker::printable_name(&id)));
        if let Err(err) = state
            .broker
            .record_refusal(
                &request_id,
                &token,
                "lease_not_found",
                lease.as_ref().map(|l| l.kind.stored()),
                detail,
            )
            .await
        {
            return Problem::from_broker(&err, &request_id).into_response();
        }
        return not_found();
    }
    let reason = if owner { "revoked_by_caller" } else { "revoked_by_admin" };
    match reaper
        .revoke_now(&id, reason, &request_id, (token.issuer(), token.subject()))
        .await
    {
        Ok(crate::leases::reaper::Revocation::Revoked(lease)) => (
            StatusCode::OK,
            Json(json!({
                "lease_id": lease.id,
                "state": "revoked",
                "revoked_at": lease.revoked_at.map(crate::clock::rfc3339),
            })),
        )
            .into_response(),
        Ok(crate::leases::reaper::Revocation::Scheduled(lease)) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "lease_id": lease.id,
                "state": "revoking",
                "detail": match lease.kind {
                    crate::leases::LeaseKind::Postgres => "the lease ended now; its role is dropped as soon as the database answers",
                    crate::leases::LeaseKind::Github => "the lease ended now; its GitHub token is revoked as soon as GitHub answers",
                },
            })),
        )
            .into_response(),
        Err(crate::leases::reaper::RevokeError::NotFound) => not_found(),
        Err(crate::leases::reaper::RevokeError::Store(e)) => lease_store_unavailable(&request_id, &e),
    }
}
