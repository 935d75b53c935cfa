//! Retries for the one-shot commands (`exec`, `token`,
//! `credential-process`): a broker that is busy (503 `overloaded`,
//! `timeout`, `audit_unavailable`, an upstream throttled), restarting (no
//! connection), behind a proxy saying so (502, 503, 504), or a caller over
//! its rate (429) is asked again within `--retry-for`, never sooner than
//! its `Retry-After`. Answers a retry cannot change (400, 401, 403, 404,
//! 500, a TLS failure) end the command at once, as before.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::broker::{BrokerClient, ClientError};
use super::commands::ClientOptions;
use super::discovery::ProcessEnv;
use super::schedule::{honouring, retry_after as backoff, unit_random};

/// How long to wait before asking again after try number `attempt` (1 for
/// the first) failed with `error`: the doubling backoff of `exec --watch`,
/// never sooner than the answer's `Retry-After` (spread by `jitter`, in
/// 0..=1; see [`honouring`]). `None` when a retry cannot help, or its
/// wait would end past `left`, the time left of `--retry-for`.
pub fn wait_before_retry(error: &ClientError, attempt: u32, jitter: f64, left: Duration) -> Option<Duration> {
    let retryable = match error {
        ClientError::Unreachable { not_sent, .. } => *not_sent,
        ClientError::Refused { status, .. } => matches!(status, 429 | 502 | 503 | 504),
        _ => false,
    };
    if !retryable {
        return None;
    }
    let wait = honouring(backoff(attempt, jitter, None), error.asked_wait(), jitter, None);
    (wait <= left).then_some(wait)
}

/// When a command's retries end: `--retry-for` from now. One command has
/// one such deadline, however many grants it asks for, so `--retry-for`
/// bounds how long the command waits, not how long each grant may.
pub fn deadline(options: &ClientOptions) -> Instant {
    Instant::now() + options.retry_for
}

/// Asks for `grant`, and again while [`wait_before_retry`] says so and
/// `deadline` allows. Each retry shows a token found afresh (a CI platform
/// asked again, a projected token re-read): a `single_use_token` grant may
/// have recorded the last one before it failed, and would refuse it as
/// replayed. The token last shown is left in `token`, for the revokes at
/// exit.
pub async fn issue(
    options: &ClientOptions,
    client: &BrokerClient,
    grant: &str,
    token: &mut String,
    request: &Map<String, Value>,
    deadline: Instant,
) -> Result<Map<String, Value>, ClientError> {
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        let error = match client.issue(grant, token, request.clone()).await {
            Ok(body) => return Ok(body),
            Err(error) => error,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(wait) = wait_before_retry(&error, attempt, unit_random(), left) else {
            return Err(error);
        };
        eprintln!(
            "stint: {error}; retrying in {:.1}s ({:.0}s left of --retry-for)",
            wait.as_secs_f64(),
            left.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
        match options.discovery.token(&ProcessEnv, client.http()).await {
            Ok((fresh, _)) => *token = fresh,
            // The token in hand may still do: the broker will say if not.
            Err(e) => {
                if options.verbose {
                    eprintln!("stint: a fresh OIDC token could not be found ({e}); retrying with the last one");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, retry_after: Option<u16>) -> ClientError {
        ClientError::Refused {
            grant: "deploy".into(),
            status,
            title: String::new(),
            detail: String::new(),
            code: String::new(),
            request_id: "r".into(),
            retry_after,
        }
    }

    fn unreachable(not_sent: bool) -> ClientError {
        ClientError::Unreachable {
            url: "https://stint.example".into(),
            message: "refused".into(),
            not_sent,
        }
    }

    const PLENTY: Duration = Duration::from_secs(30);

    #[test]
    fn busy_throttled_and_unreachable_brokers_are_asked_again() {
        for status in [429, 502, 503, 504] {
            assert!(
                wait_before_retry(&refused(status, None), 1, 0.0, PLENTY).is_some(),
                "{status}"
            );
        }
        assert_eq!(
            wait_before_retry(&unreachable(true), 1, 1.0, PLENTY),
            Some(Duration::from_millis(500)),
            "no connection: the backoff of --watch"
        );
    }

    #[test]
    fn answers_a_retry_cannot_change_end_at_once() {
        for status in [400, 401, 403, 404, 408, 413, 500, 501] {
            assert_eq!(
                wait_before_retry(&refused(status, Some(1)), 1, 0.0, PLENTY),
                None,
                "{status}"
            );
        }
        assert_eq!(
            wait_before_retry(&unreachable(false), 1, 0.0, PLENTY),
            None,
            "a TLS failure, or a request that may have been answered"
        );
        let other = ClientError::BadAnswer {
            grant: "deploy".into(),
            message: "not a JSON object".into(),
        };
        assert_eq!(wait_before_retry(&other, 1, 0.0, PLENTY), None);
    }

    #[test]
    fn retry_after_is_a_floor_spread_by_up_to_half() {
        let overloaded = refused(503, Some(1));
        assert_eq!(
            wait_before_retry(&overloaded, 1, 0.0, PLENTY),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            wait_before_retry(&overloaded, 1, 1.0, PLENTY),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait_before_retry(&overloaded, 6, 0.0, PLENTY),
            Some(Duration::from_secs(8)),
            "the doubling backoff once it is longer"
        );
        assert_eq!(
            wait_before_retry(&refused(429, Some(0)), 1, 0.0, PLENTY),
            Some(Duration::from_millis(250)),
            "never at once"
        );
    }

    #[test]
    fn no_wait_ends_past_the_budget() {
        let throttled = refused(503, Some(20));
        assert_eq!(wait_before_retry(&throttled, 1, 0.0, Duration::from_secs(19)), None);
        assert_eq!(
            wait_before_retry(&throttled, 1, 0.0, Duration::from_secs(20)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            wait_before_retry(&unreachable(true), 1, 0.0, Duration::ZERO),
            None,
            "--retry-for 0s turns retries off"
        );
    }
}
