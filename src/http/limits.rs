//! Load limits on the public listener: a cap on requests in flight (excess
//! is shed with 503 at once, never queued without bound), a per-request
//! timeout, and an optional rate limit per client address (429).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::RequestId;
use super::problem::Problem;
use crate::provider::aws::RateLimiter;

/// The limits, built once from config.
pub struct Limits {
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    per_client: Option<RateLimiter>,
}

impl Limits {
    /// `max_in_flight` concurrent requests, each at most `timeout`;
    /// `per_client` as (per second, burst).
    pub fn new(max_in_flight: usize, timeout: Duration, per_client: Option<(f64, u32)>) -> Limits {
        Limits {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            timeout,
            per_client: per_client.map(|(rate, burst)| RateLimiter::new(rate, burst)),
        }
    }
}

/// Middleware enforcing [`Limits`].
pub async fn guard(State(limits): State<Arc<Limits>>, request: Request, next: Next) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    if let Some(limiter) = &limits.per_client {
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        if let Err(wait) = limiter.take(client.as_deref().unwrap_or("unknown")) {
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this address",
                &request_id,
            );
            problem.retry_after = Some(u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX));
            return problem.into_response();
        }
    }
    let Ok(_permit) = limits.in_flight.clone().try_acquire_owned() else {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the broker is at its limit of requests in flight; retry shortly",
            &request_id,
        );
        problem.retry_after = Some(1);
        return problem.into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        // A dropped request never hands out a credential: any record it
        // wrote stays, and the caller is told to retry.
        Err(_) => {
            let mut problem = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request did not finish within {}s", limits.timeout.as_secs()),
                &request_id,
            );
            problem.retry_after = Some(1);
            problem.into_response()
        }
    }
}
