//! Where a CI job or workload finds its OIDC token. One function, used by
//! every client command, tries each platform in a fixed order and says
//! which source it used, or everything it tried.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default path of a Kubernetes projected token for stint.
pub const DEFAULT_K8S_TOKEN_FILE: &str = "/var/run/secrets/stint/token";
/// Default GitLab `id_tokens` variable name.
pub const DEFAULT_TOKEN_ENV: &str = "STINT_ID_TOKEN";

/// How to look for a token.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// `--token-file`: use this file and nothing else.
    pub token_file: Option<PathBuf>,
    /// Audience to ask for where the platform mints on request (GitHub, Buildkite).
    pub audience: String,
    /// GitLab: the variable `id_tokens:` fills.
    pub token_env: String,
    /// Kubernetes projected token file.
    pub k8s_token_file: PathBuf,
}

/// Where the token came from (printed with `-v`; never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--token-file`.
    File(PathBuf),
    /// The `STINT_TOKEN` variable.
    StintTokenEnv,
    /// GitHub Actions' token endpoint.
    GitHubActions,
    /// A GitLab `id_tokens` variable.
    GitLab(String),
    /// `buildkite-agent oidc request-token`.
    Buildkite,
    /// `CIRCLE_OIDC_TOKEN_V2`.
    CircleCi,
    /// A Kubernetes projected token file.
    Kubernetes(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "token file {}", p.display()),
            Source::StintTokenEnv => write!(f, "STINT_TOKEN"),
            Source::GitHubActions => write!(f, "GitHub Actions (ACTIONS_ID_TOKEN_REQUEST_URL)"),
            Source::GitLab(var) => write!(f, "GitLab CI id_tokens variable {var}"),
            Source::Buildkite => write!(f, "Buildkite (buildkite-agent oidc request-token)"),
            Source::CircleCi => write!(f, "CircleCI (CIRCLE_OIDC_TOKEN_V2)"),
            Source::Kubernetes(p) => write!(f, "Kubernetes projected token {}", p.display()),
        }
    }
}

/// No token: what was tried and how to fix it; or a source that failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Nothing found anywhere.
    #[error(
        "no OIDC token found. Tried, in order:\n{tried}\nFix: on GitHub Actions add `permissions: id-token: write`; on GitLab CI add `id_tokens: {token_env}: aud: ...`; on Kubernetes mount a projected service-account token at {k8s}; or pass --token-file / set STINT_TOKEN"
    )]
    NotFound {
        /// One line per source tried.
        tried: String,
        /// The GitLab variable name looked for.
        token_env: String,
        /// The Kubernetes file looked for.
        k8s: String,
    },
    /// A source was present but failed.
    #[error("{source_name}: {message}")]
    Failed {
        /// Which source.
        source_name: String,
        /// What went wrong (never the token).
        message: String,
    },
}

/// Environment lookups, injectable for tests of the order.
pub trait Env {
    /// A variable's value, if set and non-empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

/// A token file's trimmed contents (a projected Kubernetes token is
/// rotated in place: read it for each request, never once).
pub fn read_token_file(path: &Path) -> Result<String, DiscoveryError> {
    let text = std::fs::read_to_string(path).map_err(|e| DiscoveryError::Failed {
        source_name: format!("token file {}", path.display()),
        message: e.to_string(),
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(DiscoveryError::Failed {
            source_name: format!("token file {}", path.display()),
            message: "is empty".into(),
        });
    }
    Ok(token)
}

impl Discovery {
    /// Finds a token: `--token-file`, then `STINT_TOKEN`, then GitHub
    /// Actions, GitLab CI, Buildkite, CircleCI, Kubernetes.
    pub async fn token(&self, env: &dyn Env, http: &reqwest::Client) -> Result<(String, Source), DiscoveryError> {
        if let Some(path) = &self.token_file {
            return Ok((read_token_file(path)?, Source::File(path.clone())));
        }
        let mut tried = Vec::new();
        if let Some(token) = env.var("STINT_TOKEN") {
            return Ok((token.trim().to_string(), Source::StintTokenEnv));
        }
        tried.push("  - STINT_TOKEN: not set".to_string());

        match (
            env.var("ACTIONS_ID_TOKEN_REQUEST_URL"),
            env.var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
        ) {
            (Some(url), Some(request_token)) => {
                return Ok((self.github(&url, &request_token, http).await?, Source::GitHubActions));
            }
            (Some(_), None) | (None, Some(_)) => {
                tried.push("  - GitHub Actions: only one of ACTIONS_ID_TOKEN_REQUEST_URL / _TOKEN is set".into());
            }
            (None, None) if env.var("GITHUB_ACTIONS").is_some() => tried.push(
                "  - GitHub Actions: running on Actions, but the job lacks `permissions: id-token: write`".into(),
            ),
            (None, None) => tried.push("  - GitHub Actions: ACTIONS_ID_TOKEN_REQUEST_URL not set".into()),
        }

        if let Some(token) = env.var(&self.token_env) {
            return Ok((token.trim().to_string(), Source::GitLab(self.token_env.clone())));
        }
        tried.push(format!("  - GitLab CI: {} not set (id_tokens)", self.token_env));

        if env.var("BUILDKITE").is_some() {
            return Ok((self.buildkite().await?, Source::Buildkite));
        }
        tried.push("  - Buildkite: BUILDKITE not set".into());

        if let Some(token) = env.var("CIRCLE_OIDC_TOKEN_V2") {
            return Ok((token.trim().to_string(), Source::CircleCi));
        }
        tried.push("  - CircleCI: CIRCLE_OIDC_TOKEN_V2 not set".into());

        if self.k8s_token_file.exists() {
            return Ok((
                read_token_file(&self.k8s_token_file)?,
                Source::Kubernetes(self.k8s_token_file.clone()),
            ));
        }
        tried.push(format!(
            "  - Kubernetes: {} does not exist",
            self.k8s_token_file.display()
        ));

        Err(DiscoveryError::NotFound {
            tried: tried.join("\n"),
            token_env: self.token_env.clone(),
            k8s: self.k8s_token_file.display().to_string(),
        })
    }

    /// GitHub mints an ID token on request for the job's audience.
    async fn github(&self, url: &str, request_token: &str, http: &reqwest::Client) -> Result<String, DiscoveryError> {
        let failed = |message: String| DiscoveryError::Failed {
            source_name: "GitHub Actions".into(),
            message,
        };
        let mut url =
            reqwest::Url::parse(url).map_err(|_| failed("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL".into()))?;
        url.query_pairs_mut().append_pair("audience", &self.audience);
        let response = http
            .get(url)
            .bearer_auth(request_token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| failed(format!("token request failed: {e}")))?;
        if !response.status().is_success() {
            return Err(failed(format!("token request answered HTTP {}", response.status())));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            value: String,
        }
        let answer: Answer = response
            .json()
            .await
            .map_err(|_| failed("token response is not {\"value\": ...}".into()))?;
        Ok(answer.value)
    }

    /// Buildkite mints through its agent.
    async fn buildkite(&self) -> Result<String, DiscoveryError> {
        let failed = |message: String| DiscoveryError::Failed {
            source_name: "Buildkite".into(),
            message,
        };
        let output = tokio::process::Command::new("buildkite-agent")
            .args(["oidc", "request-token", "--audience", &self.audience])
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .map_err(|e| failed(format!("cannot run buildkite-agent: {e}")))?;
        if !output.status.success() {
            return Err(failed(format!(
                "buildkite-agent oidc request-token exited with {}",
                output.status
            )));
        }
        let token = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if token.is_empty() {
            return Err(failed("buildkite-agent printed no token".into()));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, &'static str>);
    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }

    fn discovery() -> Discovery {
        Discovery {
            token_file: None,
            audience: "stint".into(),
            token_env: DEFAULT_TOKEN_ENV.into(),
            k8s_token_file: PathBuf::from("/nonexistent/stint/token"),
        }
    }

    #[tokio::test]
    async fn order_and_sources() {
        let http = reqwest::Client::new();
        let env = FakeEnv(HashMap::from([
            ("STINT_ID_TOKEN", "gl"),
            ("CIRCLE_OIDC_TOKEN_V2", "cc"),
        ]));
        let found = discovery().token(&env, &http).await.map_err(|e| e.to_string());
        assert_eq!(found, Ok(("gl".into(), Source::GitLab("STINT_ID_TOKEN".into()))));
        let env = FakeEnv(HashMap::from([("STINT_TOKEN", "explicit"), ("STINT_ID_TOKEN", "gl")]));
        assert_eq!(
            discovery().token(&env, &http).await.ok().map(|t| t.1),
            Some(Source::StintTokenEnv)
        );
        let env = FakeEnv(HashMap::from([("CIRCLE_OIDC_TOKEN_V2", "cc")]));
        assert_eq!(
            discovery().token(&env, &http).await.ok().map(|t| t.1),
            Some(Source::CircleCi)
        );
    }

    #[tokio::test]
    async fn nothing_found_lists_every_source_and_the_fixes() {
        let env = FakeEnv(HashMap::from([("GITHUB_ACTIONS", "true")]));
        let Err(err) = discovery().token(&env, &reqwest::Client::new()).await else {
            unreachable!("no token")
        };
        let text = err.to_string();
        for needle in [
            "STINT_TOKEN",
            "id-token: write",
            "STINT_ID_TOKEN",
            "BUILDKITE",
            "CIRCLE_OIDC_TOKEN_V2",
            "/nonexistent/stint/token",
            "--token-file",
        ] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }
}
