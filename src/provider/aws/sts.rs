//! `kind: aws`: STS AssumeRole with caller-derived session name, source
//! identity and tags; sessions cached per caller binding and coalesced.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sts::types::{PolicyDescriptorType, Tag};
use moka::Expiry;
use moka::future::Cache;
use serde_json::{Map, Value, json};

use super::limits::{self, ISSUANCE_TAG};
use super::{RateLimiter, classify};
use crate::clock::rfc3339;
use crate::identity::VerifiedToken;
use crate::policy::{AwsGrant, Grant, GrantKind};
use crate::provider::{Credential, CredentialProvider, IssueContext, ProviderError};
use crate::template::{Context, RenderError, Template};

/// The STS rate-limit bucket of stint's own (calling) identity.
const CALLER_BUCKET: &str = "stint";

/// Margin for clock skew between stint, AWS and the caller.
pub const SESSION_SKEW: Duration = Duration::from_secs(60);

/// How long a fresh session of `lifetime` may stay in the cache, when it is
/// reused while at least `min_remaining` of it is left.
///
/// Invariant: the entry expires before the session has less than
/// `min_remaining + SESSION_SKEW` left, so a session served from the cache
/// always has that much life in it; in particular the entry TTL is always
/// shorter than the credential lifetime minus the skew. `None`: do not cache.
/// Caching longer would hand a caller a key that dies under it.
pub fn cache_ttl(lifetime: Duration, min_remaining: Duration) -> Option<Duration> {
    lifetime
        .checked_sub(min_remaining + SESSION_SKEW)
        .filter(|d| !d.is_zero())
}

/// Everything that makes two sessions interchangeable: one caller binding
/// (issuer + subject) for one grant with identical rendered inputs. One
/// caller never receives another caller's session.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct SessionKey {
    grant: String,
    issuer: String,
    subject: String,
    session_name: String,
    policy: Option<String>,
    tags: Vec<(String, String)>,
    /// Everything else the AssumeRole call is made of, so that a reloaded
    /// grant (another role, other managed policies) never serves a session
    /// made under the old settings.
    role_arn: String,
    policy_arns: Vec<String>,
    transitive_tag_keys: Vec<String>,
    external_id: Option<String>,
}

/// An assumed-role session.
#[derive(Debug)]
struct Session {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    /// Seconds since the epoch.
    expiration: i64,
    /// The issuance that created it (its CloudTrail tag).
    issuance_id: String,
    duration: u64,
    cache_for: Option<Duration>,
}

/// What a cached session must satisfy to serve one request: the grant's
/// current ttl settings and the request's own ttl.
#[derive(Debug, Clone, Copy)]
struct Need {
    ttl: Duration,
    max_ttl: Duration,
    min_remaining: Duration,
    now: i64,
}

impl Need {
    fn of(settings: &AwsGrant, spec_max_ttl: Duration, ctx: &IssueContext) -> Need {
        Need {
            ttl: ctx.ttl,
            max_ttl: spec_max_ttl,
            min_remaining: settings.min_remaining,
            now: ctx.now,
        }
    }
}

impl Session {
    /// Whether it may serve `need`: it was made for at least the requested
    /// ttl and at most the grant's current `max_ttl`, and at least
    /// `min_remaining` (plus skew) is left.
    ///
    /// The ttl settings are not part of [`SessionKey`], so this upper bound
    /// is what keeps a session assumed before a reload lowered `max_ttl`
    /// from being served after it. AWS ends a session `DurationSeconds`
    /// after it was assumed, so a session assumed for at most `max_ttl`
    /// never expires later than now + `max_ttl`. (Bounding `expiration`
    /// itself would also refuse a session just assumed whenever AWS's clock
    /// runs a second ahead of ours.)
    fn covers(&self, need: Need) -> bool {
        let needed = i64::try_from((need.min_remaining + SESSION_SKEW).as_secs()).unwrap_or(i64::MAX);
        (need.ttl.as_secs()..=need.max_ttl.as_secs()).contains(&self.duration)
            && self.expiration.saturating_sub(need.now) >= needed
    }
}

struct SessionExpiry;

impl Expiry<SessionKey, Arc<Session>> for SessionExpiry {
    fn expire_after_create(&self, _: &SessionKey, session: &Arc<Session>, _: std::time::Instant) -> Option<Duration> {
        Some(session.cache_for.unwrap_or(Duration::ZERO))
    }
}

/// The inputs of one AssumeRole, rendered for one caller.
struct Call {
    key: SessionKey,
    role_arn: String,
    source_identity: String,
}

/// Issues STS session credentials.
pub struct StsProvider {
    client: aws_sdk_sts::Client,
    sessions: Cache<SessionKey, Arc<Session>>,
    limiter: RateLimiter,
    metrics: Arc<crate::metrics::Metrics>,
}

impl StsProvider {
    /// A provider on `config` with a rate limit on stint's own STS calls.
    pub fn new(
        config: &aws_config::SdkConfig,
        limiter: RateLimiter,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> StsProvider {
        StsProvider {
            client: aws_sdk_sts::Client::new(config),
            sessions: Cache::builder()
                .max_capacity(10_000)
                .expire_after(SessionExpiry)
                .build(),
            limiter,
            metrics,
        }
    }

    async fn assume(
        &self,
        settings: &AwsGrant,
        call: &Call,
        ttl: Duration,
        issuance_id: &str,
    ) -> Result<Session, ProviderError> {
        let what = format!("AssumeRole of {} for grant `{}`", call.role_arn, call.key.grant);
        // AssumeRole calls count against the calling account's STS quota, and
        // every call stint makes comes from its own identity: one bucket.
        if let Err(wait) = self.limiter.take(CALLER_BUCKET) {
            let retry_after = u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
            return Err(ProviderError::RateLimited { retry_after });
        }
        let duration = i32::try_from(ttl.as_secs()).map_err(|_| ProviderError::BadRequest("ttl too long".into()))?;
        let mut request = self
            .client
            .assume_role()
            .role_arn(&call.role_arn)
            .role_session_name(&call.key.session_name)
            .duration_seconds(duration)
            .source_identity(&call.source_identity);
        let issuance_tag = (ISSUANCE_TAG.to_string(), issuance_id.to_string());
        for (key, value) in call.key.tags.iter().chain(std::iter::once(&issuance_tag)) {
            let tag = Tag::builder()
                .key(key)
                .value(value)
                .build()
                .map_err(|e| ProviderError::Internal(e.to_string()))?;
            request = request.tags(tag);
        }
        for key in &settings.transitive_tag_keys {
            request = request.transitive_tag_keys(key);
        }
        if let Some(policy) = &call.key.policy {
            request = request.policy(policy);
        }
        for arn in &settings.policy_arns {
            request = request.policy_arns(PolicyDescriptorType::builder().arn(arn).build());
        }
        if let Some(id) = &settings.external_id {
            request = request.external_id(id);
        }
        let sent = crate::telemetry::upstream(&self.metrics, "aws-sts", "AssumeRole", request.send()).await;
        let output = sent.map_err(|e| classify(&what, &e))?;
        let credentials = output.credentials().ok_or_else(|| ProviderError::Refused {
            detail: format!("AWS returned no credentials for {what}"),
            log: format!("{output:?}"),
        })?;
        let expiration = credentials.expiration().secs();
        let lifetime = Duration::from_secs(u64::try_from(expiration - crate::clock::now()).unwrap_or(0));
        Ok(Session {
            access_key_id: credentials.access_key_id().to_string(),
            secret_access_key: credentials.secret_access_key().to_string(),
            session_token: credentials.session_token().to_string(),
            expiration,
            issuance_id: issuance_id.to_string(),
            duration: ttl.as_secs(),
            cache_for: cache_ttl(lifetime, settings.min_remaining),
        })
    }
}

/// A render failure as the caller sees it: its identity cannot be used here.
fn unusable(what: &str, err: RenderError) -> ProviderError {
    ProviderError::Denied {
        code: "claim_not_usable",
        detail: format!("{what}: {err}"),
    }
}

fn render_call(grant: &Grant<'_>, settings: &AwsGrant) -> Result<Call, ProviderError> {
    let token: &VerifiedToken = grant.token();
    let name = grant.spec().name.as_str();
    let ctx = Context { token, grant: name };

    let mut tags = Vec::new();
    for (key, template) in &settings.session_tags {
        let value = template
            .render(&ctx, &|_, _| Ok(()))
            .map_err(|e| unusable(&format!("session tag `{key}`"), e))?;
        limits::check_tag_value(&value).map_err(|m| ProviderError::Denied {
            code: "claim_not_usable",
            detail: format!("session tag `{key}`: the rendered value {m}"),
        })?;
        tags.push((key.clone(), value));
    }

    let policy = match &settings.session_policy {
        None => None,
        Some(policy) => {
            let rendered = render_policy(policy, &ctx)?;
            Some(limits::pack_policy(&rendered).map_err(|m| ProviderError::Denied {
                code: "claim_not_usable",
                detail: format!("session policy: {m}"),
            })?)
        }
    };

    let session_name = match &settings.session_name {
        Some(template) => template
            .render(&ctx, &|_, _| Ok(()))
            .map_err(|e| unusable("session name", e))?,
        None => default_session_name(token),
    };
    Ok(Call {
        key: SessionKey {
            grant: name.to_string(),
            issuer: token.issuer().to_string(),
            subject: token.subject().to_string(),
            session_name: limits::session_safe(&session_name),
            policy,
            tags,
            role_arn: settings.role_arn.clone(),
            policy_arns: settings.policy_arns.clone(),
            transitive_tag_keys: settings.transitive_tag_keys.clone(),
            external_id: settings.external_id.clone(),
        },
        role_arn: settings.role_arn.clone(),
        source_identity: limits::source_identity(token.subject()),
    })
}

/// Renders every string of the policy; claim values may not carry IAM
/// wildcards or variables into it.
fn render_policy(value: &Value, ctx: &Context<'_>) -> Result<Value, ProviderError> {
    Ok(match value {
        Value::String(text) => {
            let template = Template::parse(text).map_err(|e| ProviderError::Internal(e.to_string()))?;
            Value::String(
                template
                    .render(ctx, &limits::check_policy_value)
                    .map_err(|e| unusable("session policy", e))?,
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| render_policy(v, ctx)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_policy(v, ctx)?)))
                .collect::<Result<Map<_, _>, ProviderError>>()?,
        ),
        other => other.clone(),
    })
}

/// `stint-<what ran>-<which run>` from the platform's claims, so a
/// CloudTrail reader sees the caller in the session name itself.
fn default_session_name(token: &VerifiedToken) -> String {
    let claims = token.claims();
    let pick = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| claims.text(n))
            .map(std::borrow::Cow::into_owned)
    };
    let what = pick(&[
        "repository",
        "project_path",
        "pipeline_slug",
        "kubernetes.io.serviceaccount.name",
    ]);
    let run = pick(&["run_id", "job_id", "build_number", "kubernetes.io.pod.name"]);
    match (what, run) {
        (Some(what), Some(run)) => format!("stint-{what}-{run}"),
        (Some(what), None) => format!("stint-{what}"),
        _ => format!("stint-{}", token.subject()),
    }
}

#[async_trait::async_trait]
impl CredentialProvider for StsProvider {
    fn kind(&self) -> &'static str {
        "aws"
    }

    async fn issue(&self, grant: &Grant<'_>, ctx: &IssueContext) -> Result<Credential, ProviderError> {
        let GrantKind::Aws(settings) = &grant.spec().kind else {
            return Err(ProviderError::Internal("aws provider called for another kind".into()));
        };
        let call = render_call(grant, settings)?;
        let need = Need::of(settings, grant.spec().max_ttl, ctx);

        // Fast path: a cached session of this exact binding that still
        // covers the request. Misses for one key are coalesced by moka into
        // a single AssumeRole.
        let mut session = match self.sessions.get(&call.key).await {
            Some(session) if session.covers(need) => Some(session),
            Some(_) => {
                self.sessions.invalidate(&call.key).await;
                None
            }
            None => None,
        };
        if session.is_none() {
            let fetched_here = std::sync::atomic::AtomicBool::new(false);
            let fetched = self
                .sessions
                .try_get_with(call.key.clone(), async {
                    fetched_here.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.assume(settings, &call, ctx.ttl, &ctx.issuance_id)
                        .await
                        .map(Arc::new)
                })
                .await
                .map_err(|e| e.as_ref().clone())?;
            let ran = fetched_here.load(std::sync::atomic::Ordering::Relaxed);
            self.metrics.cache("sts", if ran { "miss" } else { "coalesced" });
            session = Some(fetched);
        } else {
            self.metrics.cache("sts", "hit");
        }
        let mut session = session.ok_or_else(|| ProviderError::Internal("no session".into()))?;
        if !session.covers(need) {
            // Coalesced with a caller that asked for a shorter session, or
            // one under the grant's settings before a reload.
            session = Arc::new(self.assume(settings, &call, ctx.ttl, &ctx.issuance_id).await?);
        }
        let cached = session.issuance_id != ctx.issuance_id;

        let mut response = Map::new();
        response.insert(
            "credentials".into(),
            json!({
                "Version": 1,
                "AccessKeyId": session.access_key_id,
                "SecretAccessKey": session.secret_access_key,
                "SessionToken": session.session_token,
                "Expiration": rfc3339(session.expiration),
            }),
        );
        let mut audit = Map::new();
        audit.insert("access_key_id".into(), json!(session.access_key_id));
        audit.insert("role_arn".into(), json!(settings.role_arn));
        audit.insert("account".into(), json!(settings.account));
        audit.insert("session_name".into(), json!(call.key.session_name));
        audit.insert("source_identity".into(), json!(call.source_identity));
        audit.insert("duration_seconds".into(), json!(session.duration));
        audit.insert("cache".into(), json!(if cached { "hit" } else { "miss" }));
        audit.insert("session_issuance_id".into(), json!(session.issuance_id));
        Ok(Credential {
            expires_at: session.expiration,
            response,
            audit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_session_longer_than_the_current_max_ttl_is_not_served() {
        let hour = Duration::from_secs(3600);
        let session = Session {
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
            expiration: 12 * 3600,
            issuance_id: String::new(),
            duration: 12 * 3600,
            cache_for: None,
        };
        let need = |max_ttl: Duration| Need {
            ttl: Duration::from_secs(900),
            max_ttl,
            min_remaining: Duration::from_secs(300),
            now: 0,
        };
        assert!(session.covers(need(12 * hour)));
        assert!(!session.covers(need(hour)), "max_ttl lowered by a reload");
    }

    proptest! {
        #[test]
        fn cache_entries_die_before_the_session_runs_short(
            lifetime in 0u64..100_000, min_remaining in 60u64..43_200, age in 0u64..100_000,
        ) {
            let (lifetime, min_remaining) = (Duration::from_secs(lifetime), Duration::from_secs(min_remaining));
            match cache_ttl(lifetime, min_remaining) {
                Some(ttl) => {
                    prop_assert!(ttl < lifetime.saturating_sub(SESSION_SKEW), "entry outlives lifetime - skew");
                    let age = Duration::from_secs(age);
                    if age < ttl {
                        prop_assert!(lifetime - age > min_remaining + SESSION_SKEW, "served with too little left");
                    }
                }
                None => prop_assert!(lifetime <= min_remaining + SESSION_SKEW),
            }
        }
    }
}
