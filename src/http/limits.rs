//! Load limits on the public listener: a cap on the size of request
//! headers (431), optional rate limits for the whole listener and per
//! client address (429), a body that must arrive within a short timeout
//! (408), a cap on requests in flight (excess is shed with 503 at once,
//! never queued without bound), and a per-request timeout. Connection
//! limits are in [`super::serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::handlers::MAX_BODY_BYTES;
use super::problem::Problem;
use crate::config::LimitSettings;
use crate::provider::aws::RateLimiter;

/// One of `limits.max_in_flight` slots, held by a request until its work
/// is done. The issue flow carries it into the task it runs in, so a flow
/// that outlives its client's connection still counts against the limit.
#[derive(Clone)]
pub struct InFlightSlot(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// The limits, built once from config.
pub struct Limits {
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    body_timeout: Duration,
    max_header_bytes: usize,
    global: Option<RateLimiter>,
    per_client: Option<RateLimiter>,
}

impl Limits {
    /// From the `limits:` settings (rates as per second, burst).
    pub fn new(settings: &LimitSettings) -> Limits {
        let bucket = |(rate, burst): (f64, u32)| RateLimiter::new(rate, burst);
        Limits {
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            timeout: settings.request_timeout,
            body_timeout: settings.body_timeout,
            max_header_bytes: settings.max_header_bytes,
            global: settings.global.map(bucket),
            per_client: settings.per_client.map(bucket),
        }
    }
}

/// Bytes of the request's header section as sent: names, values and the
/// `: ` and CRLF around each (what a proxy's header limit counts).
fn header_bytes(request: &Request) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The per-client bucket of an address. An IPv6 client is keyed by its
/// /64: one host is usually given a whole /64 and can rotate through it
/// freely, so a per-address bucket would be no limit. An IPv4-mapped IPv6
/// address (a dual-stack listener) is keyed as the IPv4 address it is.
pub fn client_key(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

fn rate_limited(wait: Duration, detail: &str, request_id: &str) -> Response {
    let mut problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail, request_id);
    problem.retry_after = Some(u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX));
    problem.into_response()
}

/// Why a body was not read.
enum BodyRefusal {
    /// Larger than [`MAX_BODY_BYTES`], or the connection failed mid-body.
    TooLarge,
    /// Not complete within the body timeout.
    TooSlow,
}

impl BodyRefusal {
    fn into_response(self, request_id: &str, timeout: Duration) -> Response {
        match self {
            BodyRefusal::TooLarge => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                request_id,
            )
            .into_response(),
            BodyRefusal::TooSlow => {
                let mut response = Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!("the request body did not arrive within {}s", timeout.as_secs_f64()),
                    request_id,
                )
                .into_response();
                // The rest of the body may still come: this connection is done.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
                response
            }
        }
    }
}

/// `request` with its body read into memory, within `timeout`.
async fn read_body(request: Request, timeout: Duration) -> Result<Request, BodyRefusal> {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Ok(Err(_)) => Err(BodyRefusal::TooLarge),
        Err(_) => Err(BodyRefusal::TooSlow),
    }
}

/// Runs `request` through `next` within [`Limits`], or refuses it (part
/// of the one middleware in [`super::front`]).
pub async fn guard(limits: &Limits, request_id: &str, request: Request, next: Next) -> Response {
    if header_bytes(&request) > limits.max_header_bytes {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request headers are larger than {} bytes", limits.max_header_bytes),
            request_id,
        )
        .into_response();
    }
    // The address comes first: one noisy client should spend its own bucket,
    // not the listener's.
    if let Some(limiter) = &limits.per_client {
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| client_key(c.0.ip()));
        if let Err(wait) = limiter.take(client.as_deref().unwrap_or("unknown")) {
            return rate_limited(wait, "too many requests from this address", request_id);
        }
    }
    if let Some(Err(wait)) = limits.global.as_ref().map(|limiter| limiter.take("")) {
        return rate_limited(wait, "the broker is over its request rate; retry later", request_id);
    }
    // The body is read before a slot is taken: a client that announces a
    // body and sends it slowly, or never, then holds its own connection for
    // at most `body_timeout`, never a slot that other callers need.
    let request = match read_body(request, limits.body_timeout).await {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(request_id, limits.body_timeout),
    };
    let Ok(permit) = limits.in_flight.clone().try_acquire_owned() else {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the broker is at its limit of requests in flight; retry shortly",
            request_id,
        );
        problem.retry_after = Some(1);
        return problem.into_response();
    };
    let mut request = request;
    request.extensions_mut().insert(InFlightSlot(Arc::new(permit)));
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        // A dropped request never hands out a credential: any record it
        // wrote stays, and the caller is told to retry.
        Err(_) => {
            let mut problem = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request did not finish within {}s", limits.timeout.as_secs()),
                request_id,
            );
            problem.retry_after = Some(1);
            problem.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::client_key;

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4() {
        let key = |text: &str| client_key(text.parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(key("2001:db8:1:2:abcd::9"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("::1"), "::/64");
    }
}
