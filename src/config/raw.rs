//! The config file as written: serde structs with `deny_unknown_fields`
//! everywhere, so a typo is an error and never a silently ignored key.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::policy::MatcherSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub audit: Option<RawAudit>,
    pub signing: Option<RawSigning>,
    pub issuers: Option<UniqueMap<RawIssuer>>,
    pub grants: Option<UniqueMap<RawGrant>>,
    pub auditors: Option<Vec<RawRule>>,
    pub jwks: Option<RawJwks>,
    pub aws: Option<RawAws>,
    pub limits: Option<RawLimits>,
    pub tls: Option<RawTls>,
    pub lint: Option<RawLint>,
    pub reload: Option<RawReload>,
    pub databases: Option<UniqueMap<RawDatabase>>,
    pub github_apps: Option<UniqueMap<RawGithubApp>>,
    pub leases: Option<RawLeases>,
    pub telemetry: Option<RawTelemetry>,
    pub console: Option<RawConsole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub tls: Option<RawTls>,
    pub sign_in: Option<RawSignIn>,
    pub session: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignIn {
    pub issuer: String,
    pub client_secret_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp: Option<RawOtlp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    pub endpoint: Option<String>,
    pub sample_ratio: Option<f64>,
    pub timeout: Option<String>,
    pub service_name: Option<String>,
    pub resource: Option<UniqueMap<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub host: String,
    pub port: Option<u16>,
    pub dbname: String,
    pub admin_user: String,
    pub admin_password_file: Option<String>,
    pub admin_password_env: Option<String>,
    pub admin_password_secret: Option<String>,
    pub connect_timeout: Option<String>,
    pub drop_orphans: Option<bool>,
    pub tls: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGithubApp {
    pub app_id: u64,
    pub private_key_file: Option<String>,
    pub private_key_env: Option<String>,
    pub private_key_secret: Option<String>,
    pub api_url: Option<String>,
    pub installation_id: Option<u64>,
    pub requests_per_hour: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLeases {
    pub reap_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub watch: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLint {
    pub thresholds: Option<UniqueMap<RawThresholds>>,
    pub ignore: Option<Vec<RawSuppression>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThresholds {
    pub max_ttl: Option<String>,
    pub cache_ttl: Option<String>,
    pub single_use_token: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuppression {
    pub id: String,
    pub grant: Option<String>,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_in_flight: Option<usize>,
    pub request_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub body_timeout: Option<String>,
    pub header_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub global: Option<RawRateLimit>,
    pub per_client: Option<RawRateLimit>,
    pub per_subject: Option<RawRateLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub connect_timeout: Option<String>,
    pub operation_timeout: Option<String>,
    pub max_attempts: Option<u32>,
    pub sts_rate_limit: Option<RawRateLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub per_second: f64,
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    pub refetch_cooldown: Option<String>,
    pub max_age: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub store: Option<String>,
    pub key_file: Option<String>,
    pub checkpoint_every: Option<u64>,
    pub checkpoint_interval: Option<String>,
    pub group_commit: Option<bool>,
    pub timeout: Option<String>,
    pub mirror: Option<String>,
    pub ship: Option<UniqueMap<RawShipSink>>,
}

/// One `audit.ship.NAME` sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShipSink {
    pub sink: String,
    pub url: String,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    pub header: Option<String>,
    pub scheme: Option<String>,
    pub ca_file: Option<String>,
    pub format: Option<String>,
    pub batch_size: Option<u32>,
    pub timeout: Option<String>,
    pub max_backoff: Option<String>,
    pub index: Option<String>,
    pub sourcetype: Option<String>,
    pub facility: Option<String>,
    pub in_broker: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    pub issuer: Option<String>,
    pub key_file: Option<String>,
    pub algorithm: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<String>,
    pub max_token_lifetime: Option<String>,
    pub leeway: Option<String>,
    pub exclusive_audience: Option<bool>,
    pub platform: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    pub kind: String,
    pub description: Option<String>,
    pub ttl: String,
    pub max_ttl: Option<String>,
    pub single_use_token: Option<bool>,
    pub criticality: Option<String>,
    /// kind: token
    pub audience: Option<String>,
    /// kind: token
    pub copy_claims: Option<Vec<String>>,
    /// kind: aws
    pub role_arn: Option<String>,
    pub role_chaining: Option<bool>,
    pub session_policy: Option<serde_json::Value>,
    pub policy_arns: Option<Vec<String>>,
    pub session_tags: Option<UniqueMap<String>>,
    pub transitive_tag_keys: Option<Vec<String>>,
    pub external_id: Option<String>,
    pub session_name: Option<String>,
    pub min_remaining: Option<String>,
    /// kind: postgres
    pub database: Option<String>,
    pub username_template: Option<String>,
    pub creation_statements: Option<String>,
    pub revocation_statements: Option<String>,
    /// kind: github
    pub app: Option<String>,
    pub owner: Option<String>,
    pub repositories: Option<Vec<String>>,
    pub permissions: Option<UniqueMap<String>>,
    pub allow_organization_permissions: Option<bool>,
    /// kind: secrets
    pub secrets: Option<Vec<String>>,
    pub version_stage: Option<String>,
    pub cache_ttl: Option<String>,
    pub allow: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub issuer: String,
    pub claims: UniqueMap<MatcherSpec>,
}

/// A map that refuses a key written twice. YAML parsers keep the last of two
/// equal keys; in a policy that would let a later line quietly replace an
/// earlier, narrower one.
#[derive(Debug)]
pub struct UniqueMap<V>(pub BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueVisitor<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format!("`{key}` is written twice")));
                    }
                    let value = map.next_value()?;
                    out.insert(key, value);
                }
                Ok(UniqueMap(out))
            }
        }
        deserializer.deserialize_map(UniqueVisitor(PhantomData))
    }
}
