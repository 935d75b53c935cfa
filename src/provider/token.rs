//! `kind: token`: a JWT signed by stint, verifiable with
//! `/.well-known/jwks.json`.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Credential, CredentialProvider, IssueContext, ProviderError};
use crate::keys::SigningKey;
use crate::policy::{Grant, GrantKind};

/// Claims stint sets itself; `copy_claims` may not name them (config checks).
pub const RESERVED_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "grant"];

/// Signs tokens for `kind: token` grants.
pub struct TokenProvider {
    key: Arc<SigningKey>,
    issuer: String,
}

impl TokenProvider {
    /// `issuer` becomes the `iss` of every token.
    pub fn new(key: Arc<SigningKey>, issuer: String) -> TokenProvider {
        TokenProvider { key, issuer }
    }
}

#[async_trait::async_trait]
impl CredentialProvider for TokenProvider {
    fn kind(&self) -> &'static str {
        "token"
    }

    async fn issue(&self, grant: &Grant<'_>, ctx: &IssueContext) -> Result<Credential, ProviderError> {
        #[allow(unreachable_patterns)] // more kinds follow
        let settings = match &grant.spec().kind {
            GrantKind::Token(settings) => settings,
            _ => return Err(ProviderError::Internal("token provider called for another kind".into())),
        };
        let caller = grant.token();
        let ttl = i64::try_from(ctx.ttl.as_secs()).map_err(|_| ProviderError::BadRequest("ttl too large".into()))?;
        let expires_at = ctx.now.saturating_add(ttl);
        let mut claims = Map::new();
        for name in &settings.copy_claims {
            if let Some(value) = caller.claim_json(name) {
                claims.insert(name.clone(), value);
            }
        }
        claims.insert("iss".into(), Value::String(self.issuer.clone()));
        claims.insert("sub".into(), Value::String(caller.subject().to_string()));
        claims.insert("aud".into(), Value::String(settings.audience.clone()));
        claims.insert("iat".into(), json!(ctx.now));
        claims.insert("nbf".into(), json!(ctx.now));
        claims.insert("exp".into(), json!(expires_at));
        claims.insert("jti".into(), Value::String(ctx.issuance_id.clone()));
        claims.insert("grant".into(), Value::String(grant.spec().name.clone()));
        let token = self
            .key
            .sign_jwt(&Value::Object(claims))
            .map_err(|e| ProviderError::Internal(e.to_string()))?;

        let mut response = Map::new();
        response.insert("token".into(), Value::String(token));
        response.insert("token_type".into(), Value::String("Bearer".into()));
        let mut audit = Map::new();
        audit.insert("audience".into(), Value::String(settings.audience.clone()));
        audit.insert("kid".into(), Value::String(self.key.kid().to_string()));
        Ok(Credential {
            expires_at,
            response,
            audit,
        })
    }
}
