//! Step 4 of the flow: turn an allowed [`Grant`] into a credential.
//! Each kind of credential is one [`CredentialProvider`].

mod token;

use std::time::Duration;

use serde_json::{Map, Value};

use crate::policy::Grant;

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

/// Why a provider could not issue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The upstream refused (maps to 502).
    #[error("upstream refused: {0}")]
    Refused(String),
    /// The upstream could not be reached (maps to 503).
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The request cannot be served as asked (maps to 400).
    #[error("{0}")]
    BadRequest(String),
    /// A fault inside stint (maps to 500); details go to the log only.
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
}
