//! When `stint exec --watch` asks again: pure arithmetic on lifetimes, so
//! the rules are tested without clocks.

use std::time::Duration;

/// Renewals are spread by up to this share of the lifetime either way, so
/// many workloads started together do not ask the broker together.
const JITTER_SHARE: f64 = 0.05;

/// The first retry waits this long; each further one twice as long.
const BACKOFF_BASE: Duration = Duration::from_millis(500);

/// No retry waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// How long before expiry the renewal must happen at the latest: a tenth
/// of the lifetime, at most 30s, so a slow answer still lands in time.
pub fn margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(30))
}

/// How long after issue to renew a credential living `lifetime`:
/// `renew_at` × lifetime, moved by `jitter` (in −1..=1) times
/// [`JITTER_SHARE`] of the lifetime, and never later than expiry minus
/// [`margin`] (nor before issue).
pub fn renew_after(lifetime: Duration, renew_at: f64, jitter: f64) -> Duration {
    let secs = lifetime.as_secs_f64();
    let wanted = secs * renew_at + secs * JITTER_SHARE * jitter.clamp(-1.0, 1.0);
    let latest = lifetime.saturating_sub(margin(lifetime)).as_secs_f64();
    Duration::from_secs_f64(wanted.clamp(0.0, latest))
}

/// How long to wait before retry number `attempt` (1 for the first):
/// doubling from [`BACKOFF_BASE`] up to [`BACKOFF_CAP`], between half and
/// all of that by `jitter` (in 0..=1), and never past `left` (the time the
/// current credential is still valid), so the last try is made while it is.
pub fn retry_after(attempt: u32, jitter: f64, left: Option<Duration>) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1u32 << exponent).min(BACKOFF_CAP);
    let wait = full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    match left {
        Some(left) => wait.min(left),
        None => wait,
    }
}

/// A try that failed: what to say, and the wait its answer asked for
/// (`Retry-After`), which a retry honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// One line, never a secret.
    pub message: String,
    /// The answer's `Retry-After`, if any.
    pub asked: Option<Duration>,
}

impl From<String> for Failed {
    fn from(message: String) -> Failed {
        Failed { message, asked: None }
    }
}

impl From<super::broker::ClientError> for Failed {
    fn from(error: super::broker::ClientError) -> Failed {
        Failed {
            asked: error.asked_wait(),
            message: error.to_string(),
        }
    }
}

/// A `Retry-After` wait is stretched by up to this share, at random, so the
/// callers a burst turned away together do not all come back together.
const SPREAD: f64 = 0.5;

/// `wait`, made at least `asked` (the answer's `Retry-After`: an earlier
/// try would only be turned away again, and be audited as such) stretched
/// by `jitter` (in 0..=1) times [`SPREAD`], and still never past `left`, so
/// the last try is made while the credential in hand is valid.
pub fn honouring(wait: Duration, asked: Option<Duration>, jitter: f64, left: Option<Duration>) -> Duration {
    let wait = asked.map_or(wait, |asked| {
        wait.max(asked.mul_f64(1.0 + SPREAD * jitter.clamp(0.0, 1.0)))
    });
    match left {
        Some(left) => wait.min(left),
        None => wait,
    }
}

/// A uniform random number in 0..1 (0.5 if the system RNG fails: jitter
/// only spreads load, it guards nothing).
pub fn unit_random() -> f64 {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    if aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn renews_at_the_share_asked_moved_by_the_jitter() {
        assert_eq!(renew_after(HOUR, 0.66, 0.0), Duration::from_secs_f64(3600.0 * 0.66));
        assert_eq!(
            renew_after(HOUR, 0.66, 1.0),
            Duration::from_secs_f64(3600.0 * 0.66 + 180.0)
        );
        assert_eq!(
            renew_after(HOUR, 0.66, -1.0),
            Duration::from_secs_f64(3600.0 * 0.66 - 180.0)
        );
    }

    #[test]
    fn never_later_than_expiry_minus_the_margin_nor_before_issue() {
        assert_eq!(renew_after(HOUR, 1.0, 1.0), HOUR - Duration::from_secs(30));
        assert_eq!(renew_after(HOUR, 5.0, 0.0), HOUR - Duration::from_secs(30));
        let short = Duration::from_secs(3);
        assert_eq!(renew_after(short, 0.99, 1.0), Duration::from_millis(2700));
        assert_eq!(renew_after(short, 0.0, -1.0), Duration::ZERO);
        assert_eq!(renew_after(Duration::ZERO, 0.66, 0.0), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter_and_never_past_expiry() {
        let full: Vec<Duration> = (1..=9).map(|n| retry_after(n, 1.0, None)).collect();
        assert_eq!(
            full,
            [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0].map(Duration::from_secs_f64)
        );
        assert_eq!(retry_after(3, 0.0, None), Duration::from_secs(1), "half at the least");
        assert_eq!(retry_after(u32::MAX, 1.0, None), BACKOFF_CAP, "no overflow");
        assert_eq!(
            retry_after(6, 1.0, Some(Duration::from_secs(3))),
            Duration::from_secs(3),
            "the last try is made while the credential is valid"
        );
        assert_eq!(retry_after(1, 1.0, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_floor_but_expiry_still_comes_first() {
        let half = Duration::from_millis(500);
        assert_eq!(honouring(half, None, 0.0, None), half);
        assert_eq!(
            honouring(half, Some(Duration::from_secs(3)), 0.0, None),
            Duration::from_secs(3)
        );
        assert_eq!(
            honouring(Duration::from_secs(8), Some(Duration::from_secs(3)), 0.0, None),
            Duration::from_secs(8)
        );
        assert_eq!(
            honouring(half, Some(Duration::from_secs(3)), 0.0, Some(Duration::from_secs(2))),
            Duration::from_secs(2),
            "the last try is made while the credential is valid"
        );
    }

    #[test]
    fn random_is_in_range() {
        assert!((0..100).map(|_| unit_random()).all(|r| (0.0..=1.0).contains(&r)));
    }
}
