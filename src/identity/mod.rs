//! Step 1 of the flow: who is calling. A bearer OIDC token is checked against
//! an allowlist of issuers and becomes a [`VerifiedToken`], which only this
//! module can build.

mod claims;
mod jwks;
mod jwt;
mod strict_json;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

pub use claims::{ClaimValue, Claims, Platform};
pub use jwks::{KeyCachePolicy, MAX_DOCUMENT_BYTES};

use crate::clock::now;
use jwks::IssuerKeys;
use jwt::Jws;

/// Tokens longer than this are refused before any decoding: real CI tokens
/// are 1–3 KiB, and parsing attacker-sized input buys nothing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// One issuer stint trusts, as validated from config.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The config name (`github`), used by policy rules and audit records.
    pub name: String,
    /// The exact `iss` value; discovery must report the same string.
    pub url: String,
    /// The audience tokens must be minted for.
    pub audience: String,
    /// When true (the default), `aud` must name only [`Self::audience`].
    pub exclusive_audience: bool,
    /// Signature algorithms accepted from this issuer (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// Longest accepted `exp - iat`.
    pub max_token_lifetime: Duration,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Claim model of this issuer's tokens.
    pub platform: Platform,
}

/// Why a token was not accepted. Each variant is a 401 except
/// [`IdentityError::IssuerUnavailable`]; none carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token: send `Authorization: Bearer <OIDC ID token>`")]
    Missing,
    /// The token is larger than [`MAX_TOKEN_BYTES`].
    #[error("the token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Not a decodable compact JWS.
    #[error("the token is malformed: {0}")]
    Malformed(String),
    /// A JSON object in the token repeats a key.
    #[error("the token repeats a claim or header name")]
    DuplicateClaim,
    /// `iss` is not an issuer in the allowlist.
    #[error("the token's issuer is not trusted by this broker")]
    UntrustedIssuer,
    /// The header `alg` is not pinned for this issuer.
    #[error("algorithm `{0}` is not accepted for this issuer")]
    AlgorithmNotAllowed(String),
    /// The header has a `crit` member.
    #[error("the token has critical header extensions, which stint does not support")]
    CriticalHeader,
    /// The header `typ` is something other than `JWT`.
    #[error("the token type (`typ`) is not JWT")]
    TokenType,
    /// No key in the issuer's JWKS matches `kid` and the pinned algorithm.
    #[error("no key of the issuer matches the token's key id")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `exp` is in the past (beyond leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond leeway).
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// `iat` is in the future (beyond leeway).
    #[error("the token was issued in the future (iat)")]
    IssuedInFuture,
    /// `exp - iat` exceeds the issuer's `max_token_lifetime`.
    #[error("the token lives longer than this issuer's max_token_lifetime allows")]
    LifetimeTooLong,
    /// `aud` does not contain the configured audience.
    #[error("the token's audience does not include this broker's audience")]
    Audience,
    /// `aud` names other audiences as well.
    #[error("the token's audience names other services too; mint a token for this broker alone")]
    AudienceNotExclusive,
    /// A required claim is absent.
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or value shape.
    #[error("the token's claims are not shaped as this issuer's tokens are: {0}")]
    InvalidClaim(String),
    /// The grant is single-use per token and this token was used for it already.
    #[error("this token was already used for this grant, which accepts each token once")]
    Replayed,
    /// The issuer's keys could not be fetched and none are cached.
    #[error("the token's issuer is unreachable and no keys are cached")]
    IssuerUnavailable,
}

impl IdentityError {
    /// Stable machine-readable reason, used in audit records and problem types.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::Missing => "token_missing",
            IdentityError::TooLarge => "token_too_large",
            IdentityError::Malformed(_) => "token_malformed",
            IdentityError::DuplicateClaim => "token_duplicate_claim",
            IdentityError::UntrustedIssuer => "issuer_not_trusted",
            IdentityError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            IdentityError::CriticalHeader => "header_crit_unsupported",
            IdentityError::TokenType => "token_type_invalid",
            IdentityError::UnknownKey => "key_not_found",
            IdentityError::BadSignature => "signature_invalid",
            IdentityError::Expired => "token_expired",
            IdentityError::NotYetValid => "token_not_yet_valid",
            IdentityError::IssuedInFuture => "token_issued_in_future",
            IdentityError::LifetimeTooLong => "token_lifetime_too_long",
            IdentityError::Audience => "audience_mismatch",
            IdentityError::AudienceNotExclusive => "audience_not_exclusive",
            IdentityError::MissingClaim(_) => "claim_missing",
            IdentityError::InvalidClaim(_) => "claim_invalid",
            IdentityError::Replayed => "token_replayed",
            IdentityError::IssuerUnavailable => "issuer_unavailable",
        }
    }
}

/// A token whose signature, issuer, audience and times were checked.
/// Its fields are private and it has no public constructor: holding one is
/// proof that [`Verifier::verify`] ran.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    issuer: String,
    issuer_url: String,
    platform: Platform,
    subject: String,
    jti: Option<String>,
    issued_at: i64,
    expires_at: i64,
    /// Every claim, and the payload as signed (for copying claims with
    /// their JSON types).
    claims: Claims,
}

impl VerifiedToken {
    /// Config name of the issuer that signed the token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// The `iss` URL.
    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }
    /// Claim model of the issuer.
    pub fn platform(&self) -> Platform {
        self.platform
    }
    /// The `sub` claim.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// The `jti` claim, when the issuer sets one.
    pub fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }
    /// `iat`, seconds since the epoch.
    pub fn issued_at(&self) -> i64 {
        self.issued_at
    }
    /// `exp`, seconds since the epoch.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
    /// Every claim, flattened for matching.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
    /// A claim as signed (top-level name, JSON type kept), else its
    /// flattened form (`kubernetes.io.namespace`).
    pub fn claim_json(&self, name: &str) -> Option<Value> {
        match self.claims.payload().get(name) {
            Some(Value::Null) => None,
            Some(value) => Some(value.clone()),
            None => self.claims.json(name),
        }
    }
}

struct TrustedIssuer {
    config: IssuerConfig,
    keys: IssuerKeys,
}

/// Verifies bearer tokens against the configured issuers.
pub struct Verifier {
    by_url: HashMap<String, Arc<TrustedIssuer>>,
}

impl Verifier {
    /// Builds a verifier; no network traffic happens until the first token
    /// (or [`Verifier::prefetch`]).
    pub fn new(issuers: Vec<IssuerConfig>, cache: KeyCachePolicy) -> Result<Verifier, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cache.http_timeout)
            .user_agent(concat!("stint/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let by_url = issuers
            .into_iter()
            .map(|config| {
                let keys = IssuerKeys::new(config.url.clone(), http.clone(), cache.clone());
                (config.url.clone(), Arc::new(TrustedIssuer { config, keys }))
            })
            .collect();
        Ok(Verifier { by_url })
    }

    /// A verifier for `issuers` that keeps the key caches of the issuers
    /// whose settings did not change, when the cache policy did not either:
    /// a reload must not forget keys (an issuer down at that moment would
    /// lock out callers whose keys were known).
    pub fn renewed(
        &self,
        issuers: Vec<IssuerConfig>,
        cache: KeyCachePolicy,
        cache_changed: bool,
    ) -> Result<Verifier, String> {
        let mut fresh = Verifier::new(issuers, cache)?;
        if !cache_changed {
            for (url, issuer) in &mut fresh.by_url {
                if let Some(old) = self.by_url.get(url)
                    && format!("{:?}", old.config) == format!("{:?}", issuer.config)
                {
                    *issuer = old.clone();
                }
            }
        }
        Ok(fresh)
    }

    /// Fetches every issuer's keys once, so the first request is fast.
    /// Failures are logged, not fatal: an issuer may come up later.
    pub async fn prefetch(&self) {
        // In parallel: one slow issuer must not delay the others.
        let tasks: Vec<_> = self
            .by_url
            .values()
            .map(|issuer| {
                let issuer = issuer.clone();
                tokio::spawn(async move { issuer.keys.warm().await })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Issuer names whose keys have never been fetched.
    pub async fn issuers_without_keys(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for issuer in self.by_url.values() {
            if !issuer.keys.has_keys().await {
                missing.push(issuer.config.name.clone());
            }
        }
        missing.sort();
        missing
    }

    /// JWKS fetch attempts per issuer name (exported as a metric).
    pub fn jwks_fetches(&self) -> Vec<(String, u64)> {
        self.by_url
            .values()
            .map(|i| (i.config.name.clone(), i.keys.fetch_count()))
            .collect()
    }

    /// Checks `token` and returns what it proves.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, IdentityError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(IdentityError::TooLarge);
        }
        let jws = Jws::parse(token)?;
        let iss = match jws.payload.get("iss") {
            Some(Value::String(iss)) => iss,
            Some(_) => return Err(IdentityError::InvalidClaim("`iss` must be a string".to_string())),
            None => return Err(IdentityError::MissingClaim("iss")),
        };
        let issuer = self.by_url.get(iss).ok_or(IdentityError::UntrustedIssuer)?;
        let config = &issuer.config;

        // The algorithm comes from config; the header may only name one of them.
        let alg = config
            .algorithms
            .iter()
            .copied()
            .find(|a| alg_name(*a) == jws.header.alg)
            .ok_or_else(|| IdentityError::AlgorithmNotAllowed(printable(&jws.header.alg)))?;
        let key = issuer.keys.key_for(jws.header.kid.as_deref(), alg).await?;
        if !key.verify(alg, jws.signing_input.as_bytes(), jws.signature) {
            return Err(IdentityError::BadSignature);
        }
        check_registered_claims(config, jws.payload, now())
    }
}

/// Time and audience checks, then the platform's claim shape. The payload
/// moves into the verified token: a copy of a ~30-claim map per request
/// was a tenth of the broker's own work.
fn check_registered_claims(
    config: &IssuerConfig,
    payload: Map<String, Value>,
    now: i64,
) -> Result<VerifiedToken, IdentityError> {
    let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX);
    let exp = numeric_date(&payload, "exp")?.ok_or(IdentityError::MissingClaim("exp"))?;
    let iat = numeric_date(&payload, "iat")?.ok_or(IdentityError::MissingClaim("iat"))?;
    if exp.saturating_add(leeway) <= now {
        return Err(IdentityError::Expired);
    }
    if let Some(nbf) = numeric_date(&payload, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(IdentityError::NotYetValid);
    }
    if iat > now.saturating_add(leeway) {
        return Err(IdentityError::IssuedInFuture);
    }
    let max_lifetime = i64::try_from(config.max_token_lifetime.as_secs()).unwrap_or(i64::MAX);
    if exp.saturating_sub(iat) > max_lifetime {
        return Err(IdentityError::LifetimeTooLong);
    }

    let audiences: Vec<&str> = match payload.get("aud") {
        None => return Err(IdentityError::MissingClaim("aud")),
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| IdentityError::InvalidClaim("`aud` must hold strings".to_string()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(IdentityError::InvalidClaim(
                "`aud` must be a string or an array".to_string(),
            ));
        }
    };
    if !audiences.contains(&config.audience.as_str()) {
        return Err(IdentityError::Audience);
    }
    if config.exclusive_audience && audiences.iter().any(|a| *a != config.audience) {
        return Err(IdentityError::AudienceNotExclusive);
    }

    let subject = match payload.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        Some(_) => {
            return Err(IdentityError::InvalidClaim(
                "`sub` must be a non-empty string".to_string(),
            ));
        }
        None => return Err(IdentityError::MissingClaim("sub")),
    };
    let jti = match payload.get("jti") {
        None => None,
        Some(Value::String(jti)) => Some(jti.clone()),
        Some(_) => return Err(IdentityError::InvalidClaim("`jti` must be a string".to_string())),
    };
    config
        .platform
        .check_shape(&payload)
        .map_err(IdentityError::InvalidClaim)?;
    let claims = Claims::from_payload(payload).map_err(IdentityError::InvalidClaim)?;

    Ok(VerifiedToken {
        issuer: config.name.clone(),
        issuer_url: config.url.clone(),
        platform: config.platform,
        subject,
        jti,
        issued_at: iat,
        expires_at: exp,
        claims,
    })
}

/// A NumericDate claim (RFC 7519 §2), which may carry a fraction.
fn numeric_date(payload: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, IdentityError> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(secs), _) => Ok(Some(secs)),
            #[allow(clippy::cast_possible_truncation)] // finite f64 seconds, saturating cast
            (None, Some(f)) if f.is_finite() => Ok(Some(f.floor() as i64)),
            _ => Err(IdentityError::InvalidClaim(format!(
                "`{name}` is not a number of seconds"
            ))),
        },
        Some(_) => Err(IdentityError::InvalidClaim(format!("`{name}` must be a number"))),
    }
}

/// The payload of `token`, parsed strictly but **not verified**: no
/// signature, issuer, audience or time check. Only for offline review tools
/// (`stint policy test/explain`) that look at a token someone already has.
pub fn unverified_payload(token: &str) -> Result<Map<String, Value>, IdentityError> {
    jwt::Jws::parse(token.trim()).map(|jws| jws.payload)
}

/// Claims of `payload` as policy would see them, for review tools, and what
/// the platform's shape check says of it (a real token failing it would be
/// refused; partial claims written for a test case often do).
pub fn review_claims(platform: Platform, payload: &Map<String, Value>) -> Result<(Claims, Option<String>), String> {
    let shape = platform.check_shape(payload).err();
    Ok((Claims::from_payload(payload.clone())?, shape))
}

/// The JOSE name of an algorithm.
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// Parses an asymmetric algorithm name; HMAC and `none` are never accepted.
pub fn asymmetric_alg(name: &str) -> Option<Algorithm> {
    let alg: Algorithm = name.parse().ok()?;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
        other => Some(other),
    }
}

/// Attacker-chosen text in an error detail is cut short and kept printable.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(32).collect()
}

/// Entry point of the fuzz target (`fuzz/`): every offline step a token
/// goes through (size, structure, strict JSON, header, registered claims,
/// platform shapes, flattening) with no network and no keys. It must never
/// panic, whatever the input.
#[doc(hidden)]
pub fn fuzz_offline_checks(token: &str) {
    if token.len() > MAX_TOKEN_BYTES {
        return;
    }
    let Ok(jws) = Jws::parse(token) else { return };
    let config = IssuerConfig {
        name: "fuzz".into(),
        url: "https://issuer.example".into(),
        audience: "stint".into(),
        exclusive_audience: true,
        algorithms: vec![Algorithm::RS256],
        max_token_lifetime: Duration::from_secs(3600),
        leeway: Duration::from_secs(60),
        platform: Platform::Generic,
    };
    for platform in [
        Platform::GitHubActions,
        Platform::GitLabCi,
        Platform::Kubernetes,
        Platform::Buildkite,
    ] {
        let _ = platform.check_shape(&jws.payload);
    }
    let _ = check_registered_claims(&config, jws.payload.clone(), now());
    // Flattening is reached by real tokens only after the time and audience
    // checks; call it directly so the fuzzer exercises it on every input.
    if let Ok(claims) = Claims::from_payload(jws.payload) {
        // And looking a claim up, down the paths a name can split into.
        for name in ["sub", "kubernetes.io.namespace", "a.b.c.d.e", "."] {
            let _ = claims.get(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> IssuerConfig {
        IssuerConfig {
            name: "test".into(),
            url: "https://issuer.example".into(),
            audience: "stint".into(),
            exclusive_audience: true,
            algorithms: vec![Algorithm::RS256],
            max_token_lifetime: Duration::from_secs(3600),
            leeway: Duration::from_secs(60),
            platform: Platform::Generic,
        }
    }

    fn payload(json: serde_json::Value) -> Map<String, Value> {
        match json {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn leeway_applies_to_exp_nbf_and_iat() {
        let now = 1_000_000;
        let ok = |p| check_registered_claims(&config(), payload(p), now).map(|_| ());
        let base = |exp: i64, iat: i64| serde_json::json!({"sub":"s","aud":"stint","exp":exp,"iat":iat});
        assert_eq!(ok(base(now - 30, now - 300)), Ok(()));
        assert_eq!(ok(base(now - 61, now - 300)), Err(IdentityError::Expired));
        assert_eq!(ok(base(now + 300, now + 59)), Ok(()));
        assert_eq!(ok(base(now + 300, now + 61)), Err(IdentityError::IssuedInFuture));
        assert_eq!(ok(base(now + 3600, now - 1)), Err(IdentityError::LifetimeTooLong));
        let nbf = serde_json::json!({"sub":"s","aud":"stint","exp":now+300,"iat":now,"nbf":now+120});
        assert_eq!(ok(nbf), Err(IdentityError::NotYetValid));
    }

    #[test]
    fn refuses_hmac_and_none_algorithms() {
        assert!(asymmetric_alg("HS256").is_none());
        assert!(asymmetric_alg("none").is_none());
        assert_eq!(asymmetric_alg("ES256"), Some(Algorithm::ES256));
    }
}
