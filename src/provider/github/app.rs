//! One GitHub App as stint uses it: an App JWT signed with its private
//! key, the installation on an owner (looked up once, cached), installation
//! tokens created and revoked. GitHub's rate limits are kept here too: a
//! token bucket per App so stint never spends the installation's quota
//! faster than configured, and, once GitHub says to wait (`retry-after`,
//! or `x-ratelimit-remaining: 0` with `x-ratelimit-reset`), no call at all
//! until then: callers get 503 with Retry-After, never a retry storm.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use crate::policy::github::Level;
use crate::provider::SecretSource;
use crate::provider::aws::RateLimiter;

/// GitHub's own default API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// How long an installation id found by lookup is reused. An App removed
/// from an owner shows as a 404 on the token request, which drops it.
const INSTALLATION_CACHE: Duration = Duration::from_secs(3600);

/// How long a private key read from its source is reused (a rotated key
/// in Secrets Manager is picked up within this).
const KEY_CACHE: Duration = Duration::from_secs(300);

/// GitHub rejects an App JWT whose `exp` is more than 10 minutes after
/// its `iat`; `iat` is set 60 s in the past for clock drift, as GitHub
/// recommends, so `exp` is 9 minutes ahead of now.
const JWT_BACKDATE_SECS: i64 = 60;
const JWT_LIFETIME_SECS: i64 = 540;

/// The REST API version stint is written against.
const API_VERSION: &str = "2022-11-28";

/// `github_apps.NAME` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSettings {
    /// The config name.
    pub name: String,
    /// The App's id (the JWT's `iss`).
    pub app_id: u64,
    /// Where the App's private key comes from.
    pub private_key: SecretSource,
    /// The REST API base: `https://api.github.com`, or `https://HOST/api/v3`.
    pub api_url: String,
    /// A fixed installation id; else looked up by owner.
    pub installation_id: Option<u64>,
    /// Most token requests per hour stint makes for this App.
    pub requests_per_hour: u32,
}

/// Why GitHub did not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GithubError {
    /// The App is not installed on the owner (404 on the lookup).
    #[error("the GitHub App `{app}` is not installed on `{owner}`")]
    NotInstalled {
        /// App config name.
        app: String,
        /// The owner.
        owner: String,
    },
    /// GitHub refused the request as asked (422: more than the
    /// installation has; 401/403: the App's key or id is wrong).
    #[error("GitHub answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// GitHub's `message`.
        message: String,
    },
    /// Rate limited, by GitHub or by stint's bucket for the App.
    #[error("rate limited for {retry_after}s ({why})")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u32,
        /// Whose limit.
        why: String,
    },
    /// GitHub could not be reached or failed (5xx).
    #[error("GitHub unreachable: {0}")]
    Unreachable(String),
    /// The App's private key cannot be read or used.
    #[error("private key of GitHub App `{app}`: {message}")]
    Key {
        /// App config name.
        app: String,
        /// Why (never key material).
        message: String,
    },
}

/// A token GitHub issued.
#[derive(Debug, Clone)]
pub struct InstallationToken {
    /// The `ghs_…` token. Secret.
    pub token: String,
    /// GitHub's own expiry (an hour after creation), Unix seconds.
    pub expires_at: i64,
    /// The installation it belongs to.
    pub installation_id: u64,
    /// `owner/name` of each repository it can reach, sorted.
    pub repositories: Vec<String>,
    /// What it may do, as GitHub answered.
    pub permissions: Map<String, Value>,
}

/// One App and its client state.
pub struct GithubApp {
    settings: AppSettings,
    http: reqwest::Client,
    secrets: Option<Arc<aws_sdk_secretsmanager::Client>>,
    key: tokio::sync::Mutex<Option<(Arc<EncodingKey>, Instant)>>,
    installations: Mutex<BTreeMap<String, (u64, Instant)>>,
    limiter: RateLimiter,
    /// GitHub said to wait until then.
    closed_until: Mutex<Option<Instant>>,
}

impl GithubApp {
    /// A client for `settings`; `secrets` reads a key kept in Secrets Manager.
    pub fn new(
        settings: AppSettings,
        secrets: Option<Arc<aws_sdk_secretsmanager::Client>>,
    ) -> Result<GithubApp, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("stint/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            // A token request must never be replayed to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let per_second = f64::from(settings.requests_per_hour.max(1)) / 3600.0;
        // A burst of a tenth of the hourly budget (at least 10) absorbs a
        // fan-out of jobs; sustained use is held to the hourly rate.
        let burst = (settings.requests_per_hour / 10).max(10);
        Ok(GithubApp {
            limiter: RateLimiter::new(per_second, burst),
            settings,
            http,
            secrets,
            key: tokio::sync::Mutex::default(),
            installations: Mutex::default(),
            closed_until: Mutex::default(),
        })
    }

    /// The settings it was made from.
    pub fn settings(&self) -> &AppSettings {
        &self.settings
    }

    /// Creates an installation token for `owner`, limited to
    /// `repositories` (names within `owner`) and `permissions`.
    pub async fn create_token(
        &self,
        owner: &str,
        repositories: &[String],
        permissions: &BTreeMap<String, Level>,
    ) -> Result<InstallationToken, GithubError> {
        self.may_call(true)?;
        let installation_id = self.installation(owner).await?;
        let jwt = self.app_jwt().await?;
        let body = json!({
            "repositories": repositories,
            "permissions": permissions.iter().map(|(k, v)| (k.clone(), json!(v.as_str()))).collect::<Map<_, _>>(),
        });
        let url = format!(
            "{}/app/installations/{installation_id}/access_tokens",
            self.settings.api_url
        );
        let response = self.send(self.http.post(url).bearer_auth(jwt).json(&body)).await?;
        let status = response.status();
        let answer = self.read(response).await?;
        if status == StatusCode::NOT_FOUND && self.settings.installation_id.is_none() {
            // Uninstalled since it was looked up: look again next time.
            self.lock_installations().remove(owner);
        }
        if status != StatusCode::CREATED {
            return Err(refused(status, &answer));
        }
        let token = answer
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| GithubError::Unreachable("the token answer has no `token`".into()))?
            .to_string();
        let expires_at = answer
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .map(time::OffsetDateTime::unix_timestamp)
            .ok_or_else(|| GithubError::Unreachable("the token answer has no valid `expires_at`".into()))?;
        let mut names: Vec<String> = answer
            .get("repositories")
            .and_then(Value::as_array)
            .map(|repos| {
                repos
                    .iter()
                    .filter_map(|r| r.get("full_name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(InstallationToken {
            token,
            expires_at,
            installation_id,
            repositories: names,
            permissions: answer
                .get("permissions")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// Revokes `token` (`DELETE /installation/token`, authenticated as the
    /// token itself). A token GitHub no longer accepts (401: revoked or
    /// expired) is as good as revoked.
    pub async fn revoke_token(&self, token: &str) -> Result<(), GithubError> {
        // A revocation is not held back by stint's own bucket: ending a
        // credential early must not wait behind issuing new ones.
        self.may_call(false)?;
        let url = format!("{}/installation/token", self.settings.api_url);
        let response = self.send(self.http.delete(url).bearer_auth(token)).await?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT || status == StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        let answer = self.read(response).await?;
        Err(refused(status, &answer))
    }

    /// The installation on `owner`: the configured one, or looked up (an
    /// organization first, then a user account) and cached.
    async fn installation(&self, owner: &str) -> Result<u64, GithubError> {
        if let Some(id) = self.settings.installation_id {
            return Ok(id);
        }
        if let Some((id, at)) = self.lock_installations().get(owner).copied()
            && at.elapsed() < INSTALLATION_CACHE
        {
            return Ok(id);
        }
        let jwt = self.app_jwt().await?;
        for path in [
            format!("orgs/{owner}/installation"),
            format!("users/{owner}/installation"),
        ] {
            let url = format!("{}/{path}", self.settings.api_url);
            let response = self.send(self.http.get(url).bearer_auth(&jwt)).await?;
            let status = response.status();
            let answer = self.read(response).await?;
            if status == StatusCode::NOT_FOUND {
                continue;
            }
            if status != StatusCode::OK {
                return Err(refused(status, &answer));
            }
            let id = answer
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| GithubError::Unreachable("the installation answer has no `id`".into()))?;
            self.lock_installations()
                .insert(owner.to_string(), (id, Instant::now()));
            return Ok(id);
        }
        Err(GithubError::NotInstalled {
            app: self.settings.name.clone(),
            owner: owner.to_string(),
        })
    }

    fn lock_installations(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (u64, Instant)>> {
        // The map holds plain ids: a panic elsewhere leaves it usable.
        self.installations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A JWT for the App: RS256, `iss` the App id, `iat` 60 s back, `exp`
    /// 9 minutes ahead (GitHub refuses more than 10 minutes).
    async fn app_jwt(&self) -> Result<String, GithubError> {
        let key = self.private_key().await?;
        let now = crate::clock::now();
        let claims = json!({
            "iat": now - JWT_BACKDATE_SECS,
            "exp": now + JWT_LIFETIME_SECS,
            "iss": self.settings.app_id.to_string(),
        });
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).map_err(|e| GithubError::Key {
            app: self.settings.name.clone(),
            message: e.to_string(),
        })
    }

    async fn private_key(&self) -> Result<Arc<EncodingKey>, GithubError> {
        let mut cached = self.key.lock().await;
        if let Some((key, at)) = cached.as_ref()
            && at.elapsed() < KEY_CACHE
        {
            return Ok(key.clone());
        }
        let key_error = |message: String| GithubError::Key {
            app: self.settings.name.clone(),
            message,
        };
        let pem = self
            .settings
            .private_key
            .read(self.secrets.as_ref())
            .await
            .map_err(key_error)?;
        let key = Arc::new(parse_key(&pem).map_err(key_error)?);
        *cached = Some((key.clone(), Instant::now()));
        Ok(key)
    }

    /// Whether a call may go out now: not while GitHub said to wait, and
    /// (for token requests) not beyond the App's bucket.
    fn may_call(&self, take_token: bool) -> Result<(), GithubError> {
        let closed = *self.closed_until.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = closed {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Err(GithubError::RateLimited {
                    retry_after: whole_seconds(left),
                    why: "GitHub's rate limit for the App".into(),
                });
            }
        }
        if take_token && let Err(wait) = self.limiter.take(&self.settings.name) {
            return Err(GithubError::RateLimited {
                retry_after: whole_seconds(wait),
                why: format!("stint's limit of {} requests an hour", self.settings.requests_per_hour),
            });
        }
        Ok(())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, GithubError> {
        let response = request
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION)
            .send()
            .await
            .map_err(|e| GithubError::Unreachable(transport_message(&e)))?;
        if let Some(wait) = rate_limit_wait(response.status(), response.headers()) {
            let mut closed = self.closed_until.lock().unwrap_or_else(|p| p.into_inner());
            *closed = Some(Instant::now() + wait);
            return Err(GithubError::RateLimited {
                retry_after: whole_seconds(wait),
                why: "GitHub's rate limit for the App".into(),
            });
        }
        if response.status().is_server_error() {
            return Err(GithubError::Unreachable(format!(
                "GitHub answered {}",
                response.status()
            )));
        }
        Ok(response)
    }

    async fn read(&self, response: reqwest::Response) -> Result<Map<String, Value>, GithubError> {
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GithubError::Unreachable(transport_message(&e)))?;
        if bytes.is_empty() {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(GithubError::Unreachable(format!(
                "GitHub answered {status} with a body that is not JSON"
            ))),
        }
    }
}

/// The App's private key: the PKCS#1 PEM GitHub hands out, or PKCS#8.
pub fn parse_key(pem: &str) -> Result<EncodingKey, String> {
    EncodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|_| "not an RSA private key in PEM form (GitHub's .pem file: BEGIN RSA PRIVATE KEY)".to_string())
}

/// How long GitHub says to wait, if this answer is a rate limit: a 403 or
/// 429 with `retry-after` (secondary limits), or with
/// `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (the primary limit).
fn rate_limit_wait(status: StatusCode, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(secs) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs.clamp(1, 3600)));
    }
    if header("x-ratelimit-remaining") == Some("0") {
        let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok())?;
        let secs = reset.saturating_sub(crate::clock::now()).clamp(1, 3600);
        return Some(Duration::from_secs(u64::try_from(secs).unwrap_or(60)));
    }
    // GitHub's documented fallback for a secondary limit without headers:
    // wait at least a minute.
    (status == StatusCode::TOO_MANY_REQUESTS).then_some(Duration::from_secs(60))
}

fn refused(status: StatusCode, answer: &Map<String, Value>) -> GithubError {
    GithubError::Refused {
        status: status.as_u16(),
        message: answer
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .chars()
            .take(300)
            .collect(),
    }
}

fn whole_seconds(d: Duration) -> u32 {
    u32::try_from(d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0)))
        .unwrap_or(u32::MAX)
        .max(1)
}

fn transport_message(e: &reqwest::Error) -> String {
    // The URL is the App's API base and a path: no secret in it.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message = format!("{message}: {inner}");
        source = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> reqwest::header::HeaderMap {
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap_or_else(|_| unreachable!()));
        }
        map
    }

    #[test]
    fn a_rate_limit_answer_says_how_long_to_wait() {
        let forbidden = StatusCode::FORBIDDEN;
        assert_eq!(
            rate_limit_wait(forbidden, &headers(&[("retry-after", "30")])),
            Some(Duration::from_secs(30))
        );
        let reset = (crate::clock::now() + 120).to_string();
        let primary = rate_limit_wait(
            forbidden,
            &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset)]),
        );
        assert!(primary.is_some_and(|d| (Duration::from_secs(118)..=Duration::from_secs(120)).contains(&d)));
        // A 403 for another reason (no permission) is not a rate limit.
        assert_eq!(
            rate_limit_wait(forbidden, &headers(&[("x-ratelimit-remaining", "12")])),
            None
        );
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &headers(&[])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            rate_limit_wait(StatusCode::NOT_FOUND, &headers(&[("retry-after", "5")])),
            None
        );
    }

    #[test]
    fn a_key_that_is_not_rsa_is_refused_without_echoing_it() {
        let err = parse_key("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n").err();
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("not an RSA private key") && !e.contains("c2VjcmV0"))
        );
    }
}
