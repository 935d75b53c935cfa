//! The whole flow, and the only place it is written down:
//! identity → request options → policy → provider → audit → answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::audit::{AuditKey, AuditRecord, AuditSink, Outcome};
use crate::clock::rfc3339;
use crate::duration;
use crate::identity::{IdentityError, VerifiedToken, Verifier};
use crate::metrics::Metrics;
use crate::policy::{Decision, Denial, GrantKind, GrantSpec, Policy};
use crate::provider::{CredentialProvider, IssueContext, ProviderError};

/// Used token ids are kept this long past the token's `exp`: longer than
/// any issuer leeway, so an expired-but-in-leeway token cannot come back.
const REPLAY_MARGIN_SECS: i64 = 600;

/// One `POST /v1/issue/{grant}` as the HTTP layer hands it over.
#[derive(Debug, Clone)]
pub struct IssueRequest<'a> {
    /// Grant name from the path.
    pub grant: &'a str,
    /// The bearer token if the header had one; `Err` if it was unusable.
    pub bearer: Result<Option<&'a str>, IdentityError>,
    /// Raw request body (may be empty).
    pub body: &'a [u8],
    /// Request id, also in the response header and audit record.
    pub request_id: &'a str,
    /// Peer address.
    pub client_addr: Option<SocketAddr>,
}

/// Options a caller may send in the body of an issue request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueOptions {
    /// Requested lifetime, at most the grant's `max_ttl`.
    ttl: Option<String>,
    /// `secrets` grants: the subset wanted.
    secrets: Option<Vec<String>>,
    /// `github` grants: the repositories wanted.
    repositories: Option<Vec<String>>,
    /// `github` grants: the permissions wanted.
    permissions: Option<std::collections::BTreeMap<String, String>>,
}

/// A credential that has been issued and audited.
#[derive(Debug)]
pub struct Issuance {
    /// Response body: `issuance_id`, `grant`, `kind`, `expires_at` and the
    /// kind's members. Secret: never log it.
    pub body: Map<String, Value>,
}

/// Why an issue request failed. The HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The token was not accepted (401, or 503 when the issuer is down).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Policy said no, or the grant does not exist (403).
    #[error("{}", .0.detail())]
    Denied(Denial),
    /// The request is malformed or asks for too much (400).
    #[error("{detail}")]
    BadRequest {
        /// Reason code.
        code: &'static str,
        /// What to change.
        detail: String,
    },
    /// The provider failed (400/502/503/500 by variant).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The audit record could not be written; nothing was issued (503).
    #[error("the audit log is unavailable; nothing was issued")]
    AuditUnavailable,
    /// This caller asks too often (429).
    #[error("too many requests from this caller; retry in {retry_after}s")]
    RateLimited {
        /// Seconds until a request is allowed again.
        retry_after: u32,
    },
}

impl BrokerError {
    /// Reason code for audit and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            BrokerError::Identity(e) => e.code(),
            BrokerError::Denied(d) => d.code(),
            BrokerError::BadRequest { code, .. } => code,
            BrokerError::Provider(ProviderError::Refused { .. }) => "upstream_refused",
            BrokerError::Provider(ProviderError::Unavailable { .. }) => "upstream_unavailable",
            BrokerError::Provider(ProviderError::RateLimited { .. }) => "rate_limited",
            BrokerError::Provider(ProviderError::Throttled { .. }) => "upstream_throttled",
            BrokerError::Provider(ProviderError::Denied { code, .. }) => code,
            BrokerError::Provider(ProviderError::BadRequest(_)) => "invalid_request",
            BrokerError::Provider(_) => "internal",
            BrokerError::AuditUnavailable => "audit_unavailable",
            BrokerError::RateLimited { .. } => "rate_limited",
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            BrokerError::Identity(IdentityError::IssuerUnavailable)
            | BrokerError::Provider(
                ProviderError::Refused { .. }
                | ProviderError::Unavailable { .. }
                | ProviderError::RateLimited { .. }
                | ProviderError::Throttled { .. }
                | ProviderError::Internal(_),
            )
            | BrokerError::AuditUnavailable => Outcome::Error,
            _ => Outcome::Denied,
        }
    }
}

/// A grant as `GET /v1/grants` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GrantSummary {
    /// Grant name.
    pub name: String,
    /// Credential kind.
    pub kind: &'static str,
    /// Description from config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Default lifetime.
    pub ttl: String,
    /// Longest lifetime a request may ask for.
    pub max_ttl: String,
}

/// What a config reload replaces: the trusted issuers and the grants. A
/// request takes one snapshot when it starts and finishes on it, so a reload
/// never changes the rules under a request in flight.
pub struct Active {
    /// Verifies caller tokens against the configured issuers.
    pub verifier: Arc<Verifier>,
    /// Grants and auditors.
    pub policy: Arc<Policy>,
}

/// The broker: verifier, policy, providers and audit sink, wired at start-up.
pub struct Broker {
    active: std::sync::RwLock<Arc<Active>>,
    providers: HashMap<&'static str, Arc<dyn CredentialProvider>>,
    audit: Arc<dyn AuditSink>,
    audit_key: AuditKey,
    metrics: Arc<Metrics>,
    per_subject: Option<crate::provider::aws::RateLimiter>,
}

impl Broker {
    /// Wires the parts together.
    pub fn new(
        verifier: Verifier,
        policy: Policy,
        providers: Vec<Arc<dyn CredentialProvider>>,
        audit: Arc<dyn AuditSink>,
        audit_key: AuditKey,
        metrics: Arc<Metrics>,
    ) -> Broker {
        let providers = providers.into_iter().map(|p| (p.kind(), p)).collect();
        Broker {
            active: std::sync::RwLock::new(Arc::new(Active {
                verifier: Arc::new(verifier),
                policy: Arc::new(policy),
            })),
            providers,
            audit,
            audit_key,
            metrics,
            per_subject: None,
        }
    }

    /// Limits each verified caller (issuer + subject) to `rate` requests per
    /// second with `burst`, so one runaway job cannot crowd out the rest.
    pub fn with_subject_limit(mut self, limit: Option<(f64, u32)>) -> Broker {
        self.per_subject = limit.map(|(rate, burst)| crate::provider::aws::RateLimiter::new(rate, burst));
        self
    }

    /// The issuers and grants in force now.
    pub fn active(&self) -> Arc<Active> {
        match self.active.read() {
            Ok(active) => active.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The token verifier in force now (for readiness and metrics).
    pub fn verifier(&self) -> Arc<Verifier> {
        self.active().verifier.clone()
    }

    /// Puts a new policy (and, when given, a new verifier) in force for the
    /// requests that start from now on. Refused when a grant needs a kind of
    /// provider this broker did not start with.
    pub fn replace(&self, policy: Policy, verifier: Option<Verifier>) -> Result<(), String> {
        for grant in policy.grants() {
            let kind = grant.kind.name();
            if !self.providers.contains_key(kind) {
                return Err(format!(
                    "grant `{}` is of kind {kind}, which this broker did not start with: restart to add it",
                    grant.name
                ));
            }
        }
        let current = self.active();
        let next = Arc::new(Active {
            verifier: verifier.map_or_else(|| current.verifier.clone(), Arc::new),
            policy: Arc::new(policy),
        });
        match self.active.write() {
            Ok(mut active) => *active = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    /// The audit sink (for readiness).
    pub fn audit(&self) -> &Arc<dyn AuditSink> {
        &self.audit
    }

    /// Issues a credential, or says why not. Either way an audit record is
    /// written first; if that write fails, the answer is
    /// [`BrokerError::AuditUnavailable`] and any credential is dropped.
    /// An issuance whose caller was gone when it was ready (the request
    /// timed out): it is recorded as issued, so its credential is ended
    /// early where the kind allows (a lease is revoked by the reaper, with
    /// reason `undelivered`); other kinds end at their ttl.
    pub async fn withdraw_undelivered(&self, issuance: &Issuance) {
        let text = |k: &str| issuance.body.get(k).and_then(Value::as_str);
        let (Some(kind), Some(id)) = (text("kind"), text("issuance_id")) else {
            return;
        };
        tracing::warn!(
            issuance_id = id,
            kind,
            "issued, but the caller was gone: ended early where the kind allows"
        );
        if let Some(provider) = self.providers.get(kind) {
            provider.withdraw(id, crate::clock::now(), "undelivered").await;
        }
    }

    pub async fn issue(&self, request: IssueRequest<'_>) -> Result<Issuance, BrokerError> {
        let now = crate::clock::now();
        let mut record = AuditRecord {
            seq: None,
            time: crate::clock::now_rfc3339(),
            request_id: request.request_id.to_string(),
            outcome: Outcome::Denied,
            reason: None,
            grant: Some(request.grant.to_string()),
            kind: None,
            issuer: None,
            subject: None,
            claims: Map::new(),
            token_jti_hmac: None,
            issuance_id: None,
            ttl_seconds: None,
            expires_at: None,
            client_addr: request.client_addr.map(|a| a.to_string()),
            detail: Map::new(),
            prev_hash: None,
            record_hash: None,
            record_mac: None,
        };
        // One snapshot for the whole request, whatever a reload does meanwhile.
        let active = self.active();
        let known_grant = active.policy.grant(request.grant).map(|g| g.name.as_str());
        if known_grant.is_none() {
            // The name is the caller's text: keep what is echoed and stored short and plain.
            record.grant = Some(printable_name(request.grant));
        }

        let result = self.decide_and_issue(&active, &request, now, &mut record).await;
        note_request(&record);
        let answer = self.finish(result, record, known_grant, request.request_id, now).await;
        note_outcome(answer.as_ref().err());
        answer
    }

    /// Writes the record of `result` and returns the answer it allows. The
    /// record is moved to the store, not copied.
    async fn finish(
        &self,
        result: Result<Map<String, Value>, BrokerError>,
        mut record: AuditRecord,
        known_grant: Option<&str>,
        request_id: &str,
        now: i64,
    ) -> Result<Issuance, BrokerError> {
        match result {
            Ok(body) => {
                record.outcome = Outcome::Issued;
                if let Err(e) = self
                    .audit
                    .append(record)
                    .instrument(crate::exported_span!("audit.append"))
                    .await
                {
                    // The credential in `body` is dropped here, unseen. Store
                    // errors name the store, never a record's content.
                    tracing::error!(
                        request_id,
                        error = %e,
                        "audit write failed; credential withheld"
                    );
                    let text = |k: &str| body.get(k).and_then(Value::as_str);
                    if let (Some(kind), Some(id)) = (text("kind"), text("issuance_id"))
                        && let Some(provider) = self.providers.get(kind)
                    {
                        provider.withdraw(id, now, "audit_failed").await;
                    }
                    self.metrics.issuance(known_grant, "error", "audit_unavailable");
                    return Err(BrokerError::AuditUnavailable);
                }
                self.metrics.issuance(known_grant, "issued", "");
                Ok(Issuance { body })
            }
            Err(err) => {
                record.outcome = err.outcome();
                record.reason = Some(err.code().to_string());
                let outcome = record.outcome;
                if let BrokerError::Provider(detail) = &err {
                    tracing::warn!(request_id, error = %detail, "provider failed");
                }
                if let Err(e) = self
                    .audit
                    .append(record)
                    .instrument(crate::exported_span!("audit.append"))
                    .await
                {
                    tracing::error!(request_id, error = %e, "audit write failed for a refusal");
                    self.metrics.issuance(known_grant, "error", "audit_unavailable");
                    return Err(BrokerError::AuditUnavailable);
                }
                self.metrics.issuance(known_grant, outcome.as_str(), err.code());
                Err(err)
            }
        }
    }

    /// Steps 1–4; fills `record` as facts become known.
    async fn decide_and_issue(
        &self,
        active: &Active,
        request: &IssueRequest<'_>,
        now: i64,
        record: &mut AuditRecord,
    ) -> Result<Map<String, Value>, BrokerError> {
        // 1 identity
        let verifying = crate::exported_span!("verify", stint.issuer = tracing::field::Empty);
        let token = Self::verify(active, request.bearer.clone())
            .instrument(verifying.clone())
            .await?;
        verifying.record("stint.issuer", token.issuer());
        record.issuer = Some(token.issuer().to_string());
        record.subject = Some(token.subject().to_string());
        record.token_jti_hmac = token.jti().map(|jti| self.audit_key.hash_jti(jti));
        for name in active.policy.audit_claims(request.grant, &token) {
            if let Some(value) = token.claims().json(&name) {
                record.claims.insert(name, value);
            }
        }

        if let Some(limiter) = &self.per_subject
            && let Err(wait) = limiter.take(&format!("{}\n{}", token.issuer(), token.subject()))
        {
            let retry_after = u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
            return Err(BrokerError::RateLimited { retry_after });
        }

        // 2 request options (after identity, so anonymous junk is cheap)
        let options = parse_options(request.body)?;

        // 3 policy
        let grant = match active.policy.evaluate(request.grant, &token) {
            Decision::Allow(grant) => grant,
            Decision::Deny(mut denial) => {
                denial.grant = printable_name(&denial.grant);
                return Err(BrokerError::Denied(denial));
            }
        };
        let spec = grant.spec();
        record.kind = Some(spec.kind.name().to_string());
        record.detail.insert("rule".into(), Value::from(grant.rule_index()));
        if options.secrets.is_some() && !matches!(spec.kind, GrantKind::Secrets(_)) {
            return Err(BrokerError::BadRequest {
                code: "invalid_request",
                detail: format!(
                    "`secrets` applies to secrets grants; `{}` is of kind {}",
                    spec.name,
                    spec.kind.name()
                ),
            });
        }
        let asks_github = options.repositories.is_some() || options.permissions.is_some();
        if asks_github && !matches!(spec.kind, GrantKind::Github(_)) {
            return Err(BrokerError::BadRequest {
                code: "invalid_request",
                detail: format!(
                    "`repositories` and `permissions` apply to github grants; `{}` is of kind {}",
                    spec.name,
                    spec.kind.name()
                ),
            });
        }
        let ttl = resolve_ttl(spec, options.ttl.as_deref())?;
        record.ttl_seconds = Some(ttl.as_secs());

        // 3b replay: a single-use grant accepts each caller token once, across
        // every broker on the store. Checked after policy, so a denied
        // request does not use the token up.
        if spec.single_use_token {
            let jti = token.jti().ok_or(IdentityError::MissingClaim("jti"))?;
            let key = self
                .audit_key
                .hash(&format!("single-use\n{}\n{}\n{jti}", spec.name, token.issuer()));
            let keep_until = token.expires_at().saturating_add(REPLAY_MARGIN_SECS);
            let checking = crate::exported_span!("audit.first_use");
            match self.audit.first_use(&key, keep_until).instrument(checking).await {
                Ok(true) => {}
                Ok(false) => return Err(IdentityError::Replayed.into()),
                Err(_) => return Err(BrokerError::AuditUnavailable),
            }
        }

        // 4 provider
        let provider = self
            .providers
            .get(spec.kind.name())
            .ok_or_else(|| ProviderError::Internal(format!("no provider for kind {}", spec.kind.name())))?;
        let ctx = IssueContext {
            issuance_id: uuid::Uuid::now_v7().to_string(),
            ttl,
            now,
            secrets: options.secrets,
            github: asks_github.then_some(crate::provider::GithubAsk {
                repositories: options.repositories,
                permissions: options.permissions,
            }),
        };
        let issuing = crate::exported_span!("provider.issue", stint.kind = spec.kind.name());
        let credential = provider.issue(&grant, &ctx).instrument(issuing).await?;
        record.issuance_id = Some(ctx.issuance_id.clone());
        record.expires_at = Some(rfc3339(credential.expires_at));
        record.detail.extend(credential.audit);

        let mut body = Map::new();
        body.insert("issuance_id".into(), Value::String(ctx.issuance_id));
        body.insert("grant".into(), Value::String(spec.name.clone()));
        body.insert("kind".into(), Value::String(spec.kind.name().to_string()));
        body.insert("expires_at".into(), Value::String(rfc3339(credential.expires_at)));
        body.extend(credential.response);
        Ok(body)
    }

    async fn verify(
        active: &Active,
        bearer: Result<Option<&str>, IdentityError>,
    ) -> Result<VerifiedToken, BrokerError> {
        let token = bearer?.ok_or(IdentityError::Missing)?;
        Ok(active.verifier.verify(token).await?)
    }

    /// The verified caller, and whether an `auditors` rule admits it (admins
    /// of leases). Not audited: callers act on what this returns.
    pub async fn caller(
        &self,
        bearer: Result<Option<&str>, IdentityError>,
    ) -> Result<(VerifiedToken, bool), BrokerError> {
        let active = self.active();
        let token = Self::verify(&active, bearer).await?;
        let admin = active.policy.is_auditor(&token);
        Ok((token, admin))
    }

    /// Audits a refused lease operation (`reason`) by `token`; `kind` is
    /// that of the lease the id names (`None` when it names none).
    pub async fn record_refusal(
        &self,
        request_id: &str,
        token: &VerifiedToken,
        reason: &str,
        kind: Option<&str>,
        detail: Map<String, Value>,
    ) -> Result<(), BrokerError> {
        let record = AuditRecord {
            seq: None,
            time: crate::clock::now_rfc3339(),
            request_id: request_id.to_string(),
            outcome: Outcome::Denied,
            reason: Some(reason.to_string()),
            grant: None,
            kind: kind.map(str::to_string),
            issuer: Some(token.issuer().to_string()),
            subject: Some(token.subject().to_string()),
            claims: Map::new(),
            token_jti_hmac: token.jti().map(|j| self.audit_key.hash_jti(j)),
            issuance_id: None,
            ttl_seconds: None,
            expires_at: None,
            client_addr: None,
            detail,
            prev_hash: None,
            record_hash: None,
            record_mac: None,
        };
        self.audit
            .append(record)
            .await
            .map(|_| ())
            .map_err(|_| BrokerError::AuditUnavailable)
    }

    /// The grants the bearer could be issued (not audited: nothing is issued).
    pub async fn grants(&self, bearer: Result<Option<&str>, IdentityError>) -> Result<Vec<GrantSummary>, BrokerError> {
        let active = self.active();
        let token = Self::verify(&active, bearer).await?;
        Ok(active
            .policy
            .grants_for(&token)
            .into_iter()
            .map(|g| GrantSummary {
                name: g.name.clone(),
                kind: g.kind.name(),
                description: g.description.clone(),
                ttl: duration::format(g.ttl),
                max_ttl: duration::format(g.max_ttl),
            })
            .collect())
    }
}

/// One page of `GET /v1/audit`.
#[derive(Debug, serde::Serialize)]
pub struct AuditPage {
    /// Records, newest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl Broker {
    /// Audit records for a token that an `auditors` rule admits. Anyone
    /// else gets the same 403 as an unknown grant.
    pub async fn audit_page(
        &self,
        bearer: Result<Option<&str>, IdentityError>,
        mut query: crate::audit::AuditQuery,
    ) -> Result<AuditPage, BrokerError> {
        let active = self.active();
        let token = Self::verify(&active, bearer).await?;
        if !active.policy.is_auditor(&token) {
            tracing::warn!(issuer = token.issuer(), subject = token.subject(), "audit read refused");
            return Err(BrokerError::Denied(Denial {
                grant: "audit".into(),
                issuer: token.issuer().to_string(),
                reason: crate::policy::DenyReason::IssuerNotBound,
            }));
        }
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        query.limit = Some(limit);
        let records = self
            .audit
            .query(&query)
            .await
            .map_err(|_| BrokerError::AuditUnavailable)?;
        let next_cursor = (records.len() == limit as usize)
            .then(|| records.last().and_then(|r| r.seq).map(|s| s.to_string()))
            .flatten();
        tracing::info!(
            issuer = token.issuer(),
            subject = token.subject(),
            records = records.len(),
            "audit read"
        );
        Ok(AuditPage { records, next_cursor })
    }
}

fn parse_options(body: &[u8]) -> Result<IssueOptions, BrokerError> {
    let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(IssueOptions::default());
    };
    // serde would also read a struct from a JSON array; only an object is meant.
    if *first != b'{' {
        return Err(BrokerError::BadRequest {
            code: "invalid_request",
            detail: "the body must be a JSON object such as {\"ttl\":\"15m\"}".into(),
        });
    }
    serde_json::from_slice(body).map_err(|e| BrokerError::BadRequest {
        code: "invalid_request",
        detail: format!("the body must be a JSON object such as {{\"ttl\":\"15m\"}}: {e}"),
    })
}

/// The grant's ttl, or the requested one. Longer than `max_ttl` is an
/// error, never silently shortened: the caller must know what it got.
fn resolve_ttl(spec: &GrantSpec, requested: Option<&str>) -> Result<Duration, BrokerError> {
    let Some(text) = requested else {
        return Ok(spec.ttl);
    };
    let ttl = duration::parse(text).map_err(|e| BrokerError::BadRequest {
        code: "invalid_ttl",
        detail: e.to_string(),
    })?;
    let min_ttl = crate::provider::min_ttl(&spec.kind);
    if ttl < min_ttl {
        return Err(BrokerError::BadRequest {
            code: "invalid_ttl",
            detail: format!(
                "ttl must be at least {} for {} grants",
                duration::format(min_ttl),
                spec.kind.name()
            ),
        });
    }
    if ttl > spec.max_ttl {
        return Err(BrokerError::BadRequest {
            code: "ttl_exceeds_max",
            detail: format!(
                "ttl {} is longer than grant `{}` allows (max_ttl {})",
                duration::format(ttl),
                spec.name,
                duration::format(spec.max_ttl)
            ),
        });
    }
    Ok(ttl)
}

/// A caller-supplied grant name cut to 64 characters, anything outside the
/// grant-name alphabet replaced by `?`.
pub(crate) fn printable_name(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Puts the grant and kind the audit record names on the request's span
/// (fields declared by the HTTP layer; elsewhere this records nothing).
fn note_request(record: &AuditRecord) {
    let span = tracing::Span::current();
    if let Some(grant) = &record.grant {
        span.record("stint.grant", grant.as_str());
    }
    if let Some(kind) = &record.kind {
        span.record("stint.kind", kind.as_str());
    }
}

/// The answer's outcome (and a refusal's reason) on the request's span.
fn note_outcome(error: Option<&BrokerError>) {
    let span = tracing::Span::current();
    let outcome = match error {
        Some(error) => error.outcome(),
        None => Outcome::Issued,
    };
    span.record("stint.outcome", outcome.as_str());
    if let Some(error) = error {
        span.record("stint.reason", error.code());
    }
}
