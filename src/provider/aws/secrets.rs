//! `kind: secrets`: values from AWS Secrets Manager, cached per secret and
//! version stage, concurrent misses coalesced. The cache never decides
//! access: policy runs on every request before the cache is read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use moka::Expiry;
use moka::future::Cache;
use serde_json::{Map, Value, json};

use super::classify;
use crate::policy::{Grant, GrantKind, SecretRef, SecretsGrant};
use crate::provider::{Credential, CredentialProvider, IssueContext, ProviderError};

/// The version stage BatchGetSecretValue reads.
const CURRENT: &str = "AWSCURRENT";

/// One secret version as fetched.
#[derive(Debug)]
struct SecretValue {
    text: Option<String>,
    binary: Option<Vec<u8>>,
    version_id: String,
    cache_for: Duration,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct SecretKey {
    secret_id: String,
    version_stage: String,
    /// Part of the key so a grant never gets a value older than its own
    /// `cache_ttl` allows, whatever another grant cached.
    cache_for: Duration,
}

struct SecretExpiry;

impl Expiry<SecretKey, Arc<SecretValue>> for SecretExpiry {
    fn expire_after_create(&self, _: &SecretKey, value: &Arc<SecretValue>, _: std::time::Instant) -> Option<Duration> {
        Some(value.cache_for)
    }
}

/// Reads secrets for `kind: secrets` grants.
pub struct SecretsProvider {
    client: aws_sdk_secretsmanager::Client,
    cache: Cache<SecretKey, Arc<SecretValue>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl SecretsProvider {
    /// A provider on `config`.
    pub fn new(config: &aws_config::SdkConfig, metrics: Arc<crate::metrics::Metrics>) -> SecretsProvider {
        SecretsProvider {
            client: aws_sdk_secretsmanager::Client::new(config),
            cache: Cache::builder().max_capacity(10_000).expire_after(SecretExpiry).build(),
            metrics,
        }
    }

    async fn fetch(&self, key: &SecretKey, cache_for: Duration) -> Result<SecretValue, ProviderError> {
        let what = format!("GetSecretValue of `{}`", key.secret_id);
        let call = self
            .client
            .get_secret_value()
            .secret_id(&key.secret_id)
            .version_stage(&key.version_stage)
            .send();
        let sent = crate::telemetry::upstream(&self.metrics, "aws-secretsmanager", "GetSecretValue", call).await;
        let output = sent.map_err(|e| classify(&what, &e))?;
        Ok(SecretValue {
            text: output.secret_string().map(str::to_string),
            binary: output.secret_binary().map(|b| b.as_ref().to_vec()),
            version_id: output.version_id().unwrap_or_default().to_string(),
            cache_for,
        })
    }

    /// Fetches several uncached AWSCURRENT secrets in one
    /// BatchGetSecretValue and caches them. Ids it cannot map back are left
    /// to the single-secret path; errors name the secret.
    async fn prefetch_batch(&self, ids: &[&str], cache_for: Duration) -> Result<(), ProviderError> {
        // BatchGetSecretValue takes at most 20 ids and reads AWSCURRENT only.
        for chunk in ids.chunks(20) {
            let what = format!("BatchGetSecretValue of {} secrets", chunk.len());
            let call = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(chunk.iter().map(|id| (*id).to_string()).collect()))
                .send();
            let sent =
                crate::telemetry::upstream(&self.metrics, "aws-secretsmanager", "BatchGetSecretValue", call).await;
            let output = sent.map_err(|e| classify(&what, &e))?;
            if let Some(error) = output.errors().first() {
                let id = error.secret_id().unwrap_or("?");
                let code = error.error_code().unwrap_or("Unknown");
                let log = error.message().unwrap_or_default().to_string();
                if super::THROTTLING.contains(&code) || code.starts_with("Internal") || code == "ServiceUnavailable" {
                    return Err(ProviderError::Unavailable {
                        detail: format!("AWS could not serve GetSecretValue of `{id}` ({code})"),
                        log,
                    });
                }
                return Err(ProviderError::Refused {
                    detail: format!("AWS refused GetSecretValue of `{id}` ({code})"),
                    log,
                });
            }
            for entry in output.secret_values() {
                let Some(id) = chunk
                    .iter()
                    .find(|id| Some(**id) == entry.name() || Some(**id) == entry.arn())
                else {
                    continue;
                };
                let value = SecretValue {
                    text: entry.secret_string().map(str::to_string),
                    binary: entry.secret_binary().map(|b| b.as_ref().to_vec()),
                    version_id: entry.version_id().unwrap_or_default().to_string(),
                    cache_for,
                };
                let key = SecretKey {
                    secret_id: (*id).to_string(),
                    version_stage: CURRENT.to_string(),
                    cache_for,
                };
                self.cache.insert(key, Arc::new(value)).await;
            }
        }
        Ok(())
    }

    async fn value(&self, key: SecretKey, cache_for: Duration) -> Result<Arc<SecretValue>, ProviderError> {
        if let Some(value) = self.cache.get(&key).await {
            self.metrics.cache("secrets", "hit");
            return Ok(value);
        }
        let fetched_here = std::sync::atomic::AtomicBool::new(false);
        let value = self
            .cache
            .try_get_with(key.clone(), async {
                fetched_here.store(true, std::sync::atomic::Ordering::Relaxed);
                self.fetch(&key, cache_for).await.map(Arc::new)
            })
            .await
            .map_err(|e| e.as_ref().clone())?;
        let ran = fetched_here.load(std::sync::atomic::Ordering::Relaxed);
        self.metrics.cache("secrets", if ran { "miss" } else { "coalesced" });
        Ok(value)
    }
}

/// The grant's secrets the caller asked for; all of them when it named none.
fn select<'a>(
    settings: &'a SecretsGrant,
    asked: Option<&[String]>,
    grant: &str,
) -> Result<Vec<&'a SecretRef>, ProviderError> {
    let Some(asked) = asked else {
        return Ok(settings.secrets.iter().collect());
    };
    if asked.is_empty() {
        return Err(ProviderError::BadRequest(
            "`secrets` names no secret; leave it out to get them all".into(),
        ));
    }
    asked
        .iter()
        .map(|name| {
            settings
                .secrets
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| ProviderError::Denied {
                    code: "secret_not_in_grant",
                    detail: format!("grant `{grant}` does not include the secret `{}`", printable(name)),
                })
        })
        .collect()
}

fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(128).collect()
}

/// The value handed out for `secret`: the whole secret, or one key of a
/// JSON secret. Binary secrets are base64 (and marked so in `encodings`).
fn extract(secret: &SecretRef, value: &SecretValue) -> Result<(String, bool), ProviderError> {
    let refused = |why: String| ProviderError::Refused {
        detail: format!("secret `{}` {why}", secret.name),
        log: String::new(),
    };
    match (&secret.json_key, &value.text, &value.binary) {
        (None, Some(text), _) => Ok((text.clone(), false)),
        (None, None, Some(bytes)) => Ok((STANDARD.encode(bytes), true)),
        (Some(key), Some(text), _) => {
            let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
                return Err(refused("is not a JSON object, so `#key` cannot select from it".into()));
            };
            match map.get(key) {
                Some(Value::String(s)) => Ok((s.clone(), false)),
                Some(Value::Null) | None => Err(refused(format!("has no key `{key}`"))),
                Some(other) => Ok((other.to_string(), false)),
            }
        }
        (Some(_), None, Some(_)) => Err(refused("is binary, so `#key` cannot select from it".into())),
        (_, None, None) => Err(refused("has no value".into())),
    }
}

#[async_trait::async_trait]
impl CredentialProvider for SecretsProvider {
    fn kind(&self) -> &'static str {
        "secrets"
    }

    async fn issue(&self, grant: &Grant<'_>, ctx: &IssueContext) -> Result<Credential, ProviderError> {
        let GrantKind::Secrets(settings) = &grant.spec().kind else {
            return Err(ProviderError::Internal(
                "secrets provider called for another kind".into(),
            ));
        };
        let selected = select(settings, ctx.secrets.as_deref(), &grant.spec().name)?;

        let mut ids: Vec<&str> = selected.iter().map(|s| s.secret_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        // Several misses of the current version: one batch call instead of many.
        if settings.version_stage == CURRENT {
            let mut misses = Vec::new();
            for id in &ids {
                let key = SecretKey {
                    secret_id: (*id).to_string(),
                    version_stage: CURRENT.to_string(),
                    cache_for: settings.cache_ttl,
                };
                if !self.cache.contains_key(&key) {
                    misses.push(*id);
                }
            }
            if misses.len() >= 2 {
                self.prefetch_batch(&misses, settings.cache_ttl).await?;
            }
        }
        // Then one (coalesced) fetch per secret the batch did not cover.
        let fetches = ids.iter().map(|id| {
            let key = SecretKey {
                secret_id: (*id).to_string(),
                version_stage: settings.version_stage.clone(),
                cache_for: settings.cache_ttl,
            };
            self.value(key, settings.cache_ttl)
        });
        let values: BTreeMap<&str, Arc<SecretValue>> = ids
            .iter()
            .copied()
            .zip(futures_util::future::try_join_all(fetches).await?)
            .collect();

        let mut secrets = Map::new();
        let mut versions = Map::new();
        let mut encodings = Map::new();
        for secret in &selected {
            let value = values
                .get(secret.secret_id.as_str())
                .ok_or_else(|| ProviderError::Internal("fetched secret missing".into()))?;
            let (text, binary) = extract(secret, value)?;
            secrets.insert(secret.name.clone(), Value::String(text));
            versions.insert(secret.name.clone(), json!(value.version_id));
            if binary {
                encodings.insert(secret.name.clone(), json!("base64"));
            }
        }
        let mut response = Map::new();
        response.insert("secrets".into(), Value::Object(secrets));
        response.insert("versions".into(), Value::Object(versions.clone()));
        if !encodings.is_empty() {
            response.insert("encodings".into(), Value::Object(encodings));
        }
        let mut audit = Map::new();
        audit.insert("versions".into(), Value::Object(versions));
        audit.insert("version_stage".into(), json!(settings.version_stage));
        Ok(Credential {
            expires_at: ctx.expires_at(),
            response,
            audit,
        })
    }
}
