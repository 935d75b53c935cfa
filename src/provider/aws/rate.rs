//! Token buckets for upstream calls, so one busy grant cannot spend the
//! calling account's STS quota for everyone else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys remembered at once.
const MAX_KEYS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per key (the calling identity).
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_second` refill, `burst` capacity (at least 1).
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: per_second.max(0.001),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `key`, or says how long until one is free.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(()); // a poisoned limiter must not stop issuance
        };
        // Keys are caller-chosen (addresses, subjects): forget idle ones so
        // a flood of distinct keys cannot grow the map without bound.
        if buckets.len() >= MAX_KEYS {
            let idle = Duration::from_secs_f64((self.burst / self.per_second).max(1.0));
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < idle);
            if buckets.len() >= MAX_KEYS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_key() {
        let limiter = RateLimiter::new(2.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at("a", start).is_ok());
        }
        let wait = limiter.take_at("a", start);
        assert!(wait.is_err_and(|d| d <= Duration::from_millis(500)));
        assert!(limiter.take_at("b", start).is_ok(), "keys have their own buckets");
        assert!(limiter.take_at("a", start + Duration::from_millis(500)).is_ok());
    }
}
