//! The one middleware in front of every route: it gives the request an id
//! (echoed in `x-request-id`), applies the load limits on the public
//! listener, and records a latency sample and the access line.
//!
//! One layer rather than one per concern: each layer costs a boxed future,
//! a clone of the state and a poll per request. Labels are `&'static str`
//! and the id is shared, so nothing here allocates per request beyond the
//! id itself.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::{REQUEST_ID_HEADER, RequestId, Shared, limits};

/// In front of the public API: the id, the limits, the latency and the line.
pub async fn public(State(state): State<Shared>, request: Request, next: Next) -> Response {
    observe(&state, request, next, true).await
}

/// In front of the admin API: as [`public`], without the load limits (a
/// readiness probe must get through a flood of the public listener).
pub async fn admin(State(state): State<Shared>, request: Request, next: Next) -> Response {
    observe(&state, request, next, false).await
}

async fn observe(state: &super::AppState, mut request: Request, next: Next, limited: bool) -> Response {
    let started = Instant::now();
    let id = request_id();
    let route = route_label(request.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    let method = method_label(request.method());
    // The server span, made only when OTLP exports spans (log lines carry
    // `request_id` themselves).
    let span = crate::exported_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        request_id = %id,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        stint.grant = tracing::field::Empty,
        stint.kind = tracing::field::Empty,
        stint.outcome = tracing::field::Empty,
        stint.reason = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, request.headers());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = if limited {
        limits::guard(&state.limits, &id, request, next)
            .instrument(span.clone())
            .await
    } else {
        next.run(request).instrument(span.clone()).await
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        crate::telemetry::mark_error(&span);
    }
    let elapsed = started.elapsed();
    state.metrics.request(route, method, status, elapsed.as_secs_f64());
    // Display: the text line reads `method=POST route=/v1/...`, as log
    // searches expect (a `&str` field would be written quoted).
    tracing::info!(request_id = %id, %method, %route, status, elapsed_ms = elapsed.as_millis() as u64, "request");
    response
}

/// A new request id: a UUIDv7, so ids sort by time, written once into the
/// one allocation every holder shares.
fn request_id() -> Arc<str> {
    let mut text = uuid::Uuid::encode_buffer();
    Arc::from(&*uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text))
}

/// Every path a route is registered under, from the route tables.
static ROUTE_PATHS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    super::public_routes()
        .into_iter()
        .chain(super::admin_routes())
        .map(|(_, path, _)| path)
        .collect()
});

/// The route's registered path as a label; `(unmatched)` for the fallback.
/// Never the caller's path: that would be a label per distinct URL.
fn route_label(matched: Option<&str>) -> &'static str {
    matched
        .and_then(|matched| ROUTE_PATHS.iter().find(|path| **path == matched))
        .copied()
        .unwrap_or("(unmatched)")
}

/// Methods are caller text: only the standard ones become label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_route_is_its_own_label_and_other_paths_are_unmatched() {
        for (_, path, _) in super::super::public_routes()
            .into_iter()
            .chain(super::super::admin_routes())
        {
            assert_eq!(route_label(Some(path)), path);
        }
        assert_eq!(route_label(Some("/v1/not-a-route")), "(unmatched)");
        assert_eq!(route_label(None), "(unmatched)");
    }

    #[test]
    fn only_standard_methods_are_labels() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap_or_else(|_| unreachable!())),
            "OTHER"
        );
    }
}
