//! Errors as `application/problem+json` (RFC 9457). [`Problem::from_broker`]
//! is the one place where an error becomes an HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broker::BrokerError;
use crate::identity::IdentityError;
use crate::provider::ProviderError;

/// Media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One error response.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code; the `type` is `urn:stint:problem:<code>`.
    pub code: &'static str,
    /// What the caller can act on. Never key material, tokens or secrets.
    pub detail: String,
    /// The request id of the response.
    pub request_id: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u32>,
}

impl Problem {
    /// A problem with no retry hint.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>, request_id: &str) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
            request_id: request_id.to_string(),
            retry_after: None,
        }
    }

    /// Maps a broker error. Internal details stay in the log under the
    /// request id; the client learns what it can fix.
    pub fn from_broker(err: &BrokerError, request_id: &str) -> Problem {
        let (status, code, detail) = match err {
            BrokerError::Identity(IdentityError::IssuerUnavailable) => {
                (StatusCode::SERVICE_UNAVAILABLE, "issuer_unavailable", err.to_string())
            }
            BrokerError::Identity(e) => (StatusCode::UNAUTHORIZED, e.code(), e.to_string()),
            // One public code for every denial, so an unknown grant and a
            // denied one look alike; the audit log keeps the true reason.
            BrokerError::Denied(denial) => (StatusCode::FORBIDDEN, "denied", denial.detail()),
            BrokerError::BadRequest { code, detail } => (StatusCode::BAD_REQUEST, *code, detail.clone()),
            BrokerError::Provider(ProviderError::BadRequest(d)) => {
                (StatusCode::BAD_REQUEST, "invalid_request", d.clone())
            }
            // The upstream's own message stays in the log; the caller gets
            // what an operator needs to find it (grant, role, error code).
            BrokerError::Provider(ProviderError::Refused { detail, .. }) => (
                StatusCode::BAD_GATEWAY,
                "upstream_refused",
                format!("{detail}; the broker log has more under request {request_id}"),
            ),
            BrokerError::Provider(ProviderError::Unavailable { detail, .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                format!("{detail}; retry later"),
            ),
            BrokerError::Provider(ProviderError::RateLimited { retry_after }) => {
                let mut problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many STS calls from this broker; retry in {retry_after}s"),
                    request_id,
                );
                problem.retry_after = Some(*retry_after);
                return problem;
            }
            BrokerError::Provider(ProviderError::Throttled {
                detail, retry_after, ..
            }) => {
                let mut problem = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream_throttled",
                    format!("{detail}; retry in {retry_after}s"),
                    request_id,
                );
                problem.retry_after = Some(*retry_after);
                return problem;
            }
            BrokerError::Provider(ProviderError::Denied { code, detail }) => {
                (StatusCode::FORBIDDEN, *code, detail.clone())
            }
            BrokerError::Provider(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("internal error; see the broker log for request {request_id}"),
            ),
            BrokerError::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", err.to_string()),
            BrokerError::RateLimited { retry_after } => {
                let mut problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    err.to_string(),
                    request_id,
                );
                problem.retry_after = Some(*retry_after);
                return problem;
            }
        };
        let mut problem = Problem::new(status, code, detail, request_id);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            problem.retry_after = Some(5);
        }
        problem
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("urn:stint:problem:{}", self.code),
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
            "request_id": self.request_id,
        });
        let mut response = (self.status, body.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
