//! Step 4 of the flow: turn an allowed [`Grant`] into a credential.
//! Each kind of credential is one [`CredentialProvider`].

pub mod aws;
pub mod github;
mod source;
mod token;

use std::time::Duration;

use serde_json::{Map, Value};

use crate::policy::{Grant, GrantKind};

pub use source::SecretSource;
pub use token::{RESERVED_CLAIMS, TokenProvider};

/// What a provider needs besides the grant.
#[derive(Debug, Clone)]
pub struct IssueContext {
    /// Unique id of this issuance; appears in the response, the audit
    /// record and (for AWS) the session tags.
    pub issuance_id: String,
    /// Lifetime already checked against the grant's `max_ttl`.
    pub ttl: Duration,
    /// Seconds since the epoch at which the request was accepted.
    pub now: i64,
    /// `secrets` grants: the subset the caller asked for (all when `None`).
    pub secrets: Option<Vec<String>>,
    /// `github` grants: the repositories and permissions the caller asked
    /// for (all of the grant's when `None`).
    pub github: Option<GithubAsk>,
}

impl IssueContext {
    /// When a credential issued now for `ttl` ends (Unix seconds).
    pub fn expires_at(&self) -> i64 {
        self.now
            .saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX))
    }
}

/// What a caller of a `github` grant asks for in the request body.
#[derive(Debug, Clone, Default)]
pub struct GithubAsk {
    /// Repository names (or `owner/name`), a subset of the grant's.
    pub repositories: Option<Vec<String>>,
    /// Permission → level, within the grant's.
    pub permissions: Option<std::collections::BTreeMap<String, String>>,
}

/// An issued credential.
#[derive(Debug)]
pub struct Credential {
    /// When the credential stops working, seconds since the epoch.
    pub expires_at: i64,
    /// Kind-specific response members (`token`, `credentials`, ...). Secret.
    pub response: Map<String, Value>,
    /// Non-secret facts for the audit record (ids, never values).
    pub audit: Map<String, Value>,
}

/// Why a provider could not issue. `detail` goes to the caller and helps
/// an operator (grant, role, AWS error code); `log` holds the upstream's own
/// message and goes to the log only, under the request id.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The upstream refused (502).
    #[error("{detail}: {log}")]
    Refused {
        /// For the caller.
        detail: String,
        /// For the log.
        log: String,
    },
    /// The upstream could not be reached or keeps throttling (503).
    #[error("{detail}: {log}")]
    Unavailable {
        /// For the caller.
        detail: String,
        /// For the log.
        log: String,
    },
    /// stint's own upstream rate limit is exhausted (429).
    #[error("rate limited; retry in {retry_after}s")]
    RateLimited {
        /// Seconds until a call is allowed again.
        retry_after: u32,
    },
    /// The upstream (or stint's budget for it) says to wait (503 with
    /// Retry-After); no call is made until then.
    #[error("{detail}: {log}")]
    Throttled {
        /// For the caller.
        detail: String,
        /// For the log.
        log: String,
        /// Seconds to wait.
        retry_after: u32,
    },
    /// The caller's identity cannot be used as this grant needs (403),
    /// e.g. a claim that cannot be an AWS tag value.
    #[error("{detail}")]
    Denied {
        /// Reason code.
        code: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The request cannot be served as asked (400).
    #[error("{0}")]
    BadRequest(String),
    /// A fault inside stint (500); details go to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Issues one kind of credential.
#[async_trait::async_trait]
pub trait CredentialProvider: Send + Sync {
    /// The grant kind this provider serves (`token`, `aws`, ...).
    fn kind(&self) -> &'static str;

    /// Issues a credential for `grant`. Called only after policy allowed.
    async fn issue(&self, grant: &Grant<'_>, ctx: &IssueContext) -> Result<Credential, ProviderError>;

    /// The credential of `issuance_id` was never handed out (`reason`:
    /// `audit_failed`, its audit record could not be written; `undelivered`,
    /// the caller was gone when it was ready): end it early where that is
    /// possible.
    async fn withdraw(&self, _issuance_id: &str, _now: i64, _reason: &str) {}
}

/// Shortest lifetime a request may ask for: what the upstream grants at
/// least (an STS session lasts 15 minutes or more), else one second.
pub fn min_ttl(kind: &GrantKind) -> Duration {
    match kind {
        GrantKind::Aws(_) => aws::MIN_SESSION,
        _ => Duration::from_secs(1),
    }
}
