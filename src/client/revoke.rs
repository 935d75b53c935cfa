//! Revoke on exit: what `stint exec` was issued and the broker can end
//! early (a lease: today the role of a `postgres` grant) is ended when
//! COMMAND exits, so a credential lives as long as the work that needed
//! it rather than its whole ttl. Kinds without a lease (an `aws` STS
//! session, a stint-signed token, secret values) cannot be ended early and
//! are bounded by their ttl alone.

use std::time::Duration;

use base64::Engine;
use futures_util::future::join_all;
use serde_json::{Map, Value};

use super::broker::{BrokerClient, ClientError};
use super::discovery::{Discovery, ProcessEnv};
use super::retry::wait_before_retry;
use super::schedule::unit_random;

/// A token this close to its `exp` is not re-used for the revokes: it may
/// expire on the way, or by the broker's clock already have.
const TOKEN_MARGIN_SECS: i64 = 30;

/// Something issued that the broker can end early.
#[derive(Debug, Clone)]
pub struct Lease {
    /// `lease_id` of the issuance.
    pub id: String,
    /// The grant it was issued for.
    pub grant: String,
    /// When the broker's reaper ends it anyway.
    pub expires_at: String,
}

impl Lease {
    /// The lease of an issuance answer, if its kind has one: any answer
    /// with a `lease_id` (so a later revocable kind is ended too).
    pub fn of(grant: &str, body: &Map<String, Value>) -> Option<Lease> {
        let id = body.get("lease_id").and_then(Value::as_str)?;
        Some(Lease {
            id: id.to_string(),
            grant: grant.to_string(),
            expires_at: body
                .get("expires_at")
                .and_then(Value::as_str)
                .unwrap_or("its expiry")
                .to_string(),
        })
    }
}

/// What `stint exec` does with its leases once COMMAND has exited.
#[derive(Debug, Clone, Copy)]
pub struct OnExit {
    /// `--keep`: leave every lease to its expiry.
    pub keep: bool,
    /// `--revoke-timeout`: the bound on all revokes together (token
    /// discovery included), so a broker that does not answer never holds
    /// the job's end up for long.
    pub timeout: Duration,
}

/// Whether `token` can still be shown to the broker at `now` (Unix
/// seconds): its `exp`, read without verifying (the broker verifies), is
/// more than [`TOKEN_MARGIN_SECS`] away. A token whose `exp` cannot be read
/// is not re-used.
pub fn still_valid(token: &str, now: i64) -> bool {
    let Some(payload) = token.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) else {
        return false;
    };
    let exp = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|claims| claims.get("exp").and_then(Value::as_f64));
    // `exp` is seconds; a fraction is cut off (the broker reads it so too).
    #[allow(clippy::cast_possible_truncation)]
    exp.is_some_and(|exp| (exp as i64).saturating_sub(TOKEN_MARGIN_SECS) > now)
}

/// Ends every lease, in parallel, within `timeout` in all, and says on
/// stderr what became of each, one line per lease (never a token or
/// password). Never fails: a lease not ended here is ended by the broker's
/// reaper at its `expires_at`. `token` is the one the leases were issued
/// with: it is re-used while valid, else one is found again the way the
/// first was (GitHub Actions and Buildkite mint a new one on request).
pub async fn revoke_all(
    client: &BrokerClient,
    discovery: &Discovery,
    token: &str,
    leases: &[Lease],
    timeout: Duration,
) {
    if leases.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let token = if still_valid(token, crate::clock::now()) {
        Ok(token.to_string())
    } else {
        match tokio::time::timeout_at(deadline, discovery.token(&ProcessEnv, client.http())).await {
            Ok(Ok((fresh, _))) => Ok(fresh),
            Ok(Err(e)) => Err(format!("no OIDC token to revoke with: {e}")),
            Err(_) => Err(format!(
                "no OIDC token to revoke with within --revoke-timeout {}",
                crate::duration::format(timeout)
            )),
        }
    };
    let token = match token {
        Ok(token) => token,
        Err(why) => {
            for lease in leases {
                eprintln!("{}", not_revoked(lease, &why));
            }
            return;
        }
    };
    let revokes = leases.iter().map(|lease| {
        let token = token.as_str();
        async move {
            let line = match revoke_within(client, &lease.id, token, deadline).await {
                Ok(Ok(body)) if body.get("state").and_then(Value::as_str) == Some("revoked") => {
                    format!("stint: lease {} (grant {}) revoked", lease.id, lease.grant)
                }
                // The broker's 202 says what is left to do (drop a role,
                // revoke a GitHub token), which only it knows.
                Ok(Ok(body)) => format!(
                    "stint: lease {} (grant {}) ended; {}",
                    lease.id,
                    lease.grant,
                    body.get("detail")
                        .and_then(Value::as_str)
                        .and_then(|d| d.strip_prefix("the lease ended now; "))
                        .unwrap_or("the broker's reaper finishes its revocation")
                ),
                Ok(Err(e)) => not_revoked(lease, &refusal(&e)),
                Err(_) => not_revoked(
                    lease,
                    &format!("no answer within --revoke-timeout {}", crate::duration::format(timeout)),
                ),
            };
            eprintln!("{line}");
        }
    });
    join_all(revokes).await;
}

/// Ends one lease, asking again while the broker is busy, rate limiting
/// or unreachable (the rules of [`super::retry`]) and `deadline` allows:
/// revocation is idempotent, so a second ask never ends more than the
/// first. `Err(_)` (elapsed) when `deadline` passed without an answer.
async fn revoke_within(
    client: &BrokerClient,
    lease_id: &str,
    token: &str,
    deadline: tokio::time::Instant,
) -> Result<Result<Map<String, Value>, ClientError>, tokio::time::error::Elapsed> {
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        let error = match tokio::time::timeout_at(deadline, client.revoke(lease_id, token)).await? {
            Ok(body) => return Ok(Ok(body)),
            Err(error) => error,
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match wait_before_retry(&error, attempt, unit_random(), left) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => return Ok(Err(error)),
        }
    }
}

fn not_revoked(lease: &Lease, why: &str) -> String {
    format!(
        "stint: lease {} (grant {}) not revoked: {why}; the broker's reaper ends it at {}",
        lease.id, lease.grant, lease.expires_at
    )
}

/// The broker's refusal in a few words (its own Display speaks of grants).
fn refusal(e: &ClientError) -> String {
    match e {
        ClientError::Refused {
            status,
            code,
            detail,
            request_id,
            ..
        } => format!("{status} {code}: {detail} (request id {request_id})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(claims: &Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b64(br#"{"alg":"RS256"}"#),
            b64(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn a_token_is_reused_only_well_before_its_exp() {
        assert!(still_valid(&jwt(&json!({"exp": 1_000})), 900));
        assert!(!still_valid(&jwt(&json!({"exp": 1_000})), 990), "within the margin");
        assert!(!still_valid(&jwt(&json!({"exp": 1_000})), 2_000), "expired");
        assert!(!still_valid(&jwt(&json!({"sub": "x"})), 0), "no exp");
        assert!(!still_valid("not-a-jwt", 0));
        assert!(!still_valid("a.%%%.c", 0));
    }

    #[test]
    fn only_answers_with_a_lease_id_are_leases() {
        let map = |v: Value| v.as_object().cloned().unwrap_or_default();
        let pg = map(json!({"kind": "postgres", "lease_id": "L1", "expires_at": "2026-12-04T10:00:00Z"}));
        let lease = Lease::of("app-db", &pg);
        assert_eq!(
            lease.map(|l| (l.id, l.expires_at)),
            Some(("L1".into(), "2026-12-04T10:00:00Z".into()))
        );
        let aws = map(json!({"kind": "aws", "issuance_id": "I1"}));
        assert!(Lease::of("deploy", &aws).is_none());
    }
}
