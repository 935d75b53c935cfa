//! `stint agent --config FILE`: the YAML file, parsed once at start-up.
//! Unknown keys are errors (a typo must not silently drop a grant's
//! destination), and every error names the file and the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A config the agent cannot run with: the file, the key, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct AgentConfigError {
    /// The config file.
    pub file: String,
    /// The key at fault (`grants.api.ttl`), or `.` for the file as a whole.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    broker: String,
    token_file: PathBuf,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    health_listen: SocketAddr,
    #[serde(default)]
    aws_endpoint: Option<RawAwsEndpoint>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    overlap: Option<String>,
    grants: BTreeMap<String, RawGrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAwsEndpoint {
    listen: SocketAddr,
    grant: String,
    authorization_token_file: PathBuf,
}

/// The AWS container credentials endpoint.
#[derive(Debug, Clone)]
pub struct AwsEndpoint {
    /// A loopback address (anything else would hand the credentials to
    /// the network).
    pub listen: SocketAddr,
    /// The `aws` grant it serves (one of `grants`).
    pub grant: String,
    /// The file holding the token the SDK must send (created 0600 if
    /// missing or empty): the app's `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
    pub authorization_token_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    renew_at: Option<f64>,
    #[serde(default)]
    files: Option<PathBuf>,
}

/// The agent's validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The broker's base URL.
    pub broker: String,
    /// The OIDC token file (a Kubernetes projected token), read afresh
    /// for every request, since the kubelet rotates it.
    pub token_file: PathBuf,
    /// An extra CA (PEM) to trust for the broker.
    pub ca_file: Option<PathBuf>,
    /// Where `/healthz` and `/readyz` are served.
    pub health_listen: SocketAddr,
    /// The AWS container credentials endpoint, if any.
    pub aws_endpoint: Option<AwsEndpoint>,
    /// Where the agent keeps what it holds (one 0600 file per grant), so
    /// that an agent started after `--once` (the init container) or after
    /// a restart takes the credentials over rather than issuing again.
    pub state_dir: Option<PathBuf>,
    /// How long a lease (a `postgres` role) replaced by a renewal stays
    /// usable, so the app can reconnect with the new one, before it is
    /// revoked.
    pub overlap: std::time::Duration,
    /// The grants to keep, by name.
    pub grants: Vec<GrantTarget>,
}

/// One grant and where it goes.
#[derive(Debug, Clone)]
pub struct GrantTarget {
    /// The grant's name at the broker.
    pub name: String,
    /// The `ttl` to ask for, if not the grant's default.
    pub ttl: Option<String>,
    /// The share of a lifetime after which to renew (default 0.66).
    pub renew_at: f64,
    /// A directory (a shared volume) to write the credential into as files.
    pub files: Option<PathBuf>,
}

impl AgentConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| AgentConfigError {
            file: file.clone(),
            key: ".".into(),
            message: format!("cannot read: {e}"),
        })?;
        AgentConfig::parse(&text, &file, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses `text` (named `file` in errors); relative paths are taken
    /// from `base`, the config file's directory.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<AgentConfig, AgentConfigError> {
        let err = |key: &str, message: String| AgentConfigError {
            file: file.to_string(),
            key: key.to_string(),
            message,
        };
        let raw: RawAgent =
            serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)).map_err(|e| {
                let (key, message) = crate::config::yaml_error(e);
                err(&key, message)
            })?;
        if raw.grants.is_empty() {
            return Err(err("grants", "name at least one grant".into()));
        }
        let mut grants = Vec::new();
        for (name, grant) in raw.grants {
            if !crate::config::is_valid_name(&name) {
                return Err(err(
                    &format!("grants.{name}"),
                    "not a grant name the broker can have: use 1-64 of A-Z a-z 0-9 - _ .".into(),
                ));
            }
            let renew_at = grant.renew_at.unwrap_or(0.66);
            if !(renew_at > 0.0 && renew_at < 1.0) {
                return Err(err(
                    &format!("grants.{name}.renew_at"),
                    format!("{renew_at} is not a share of the lifetime: write a number between 0 and 1, e.g. 0.66"),
                ));
            }
            if let Some(ttl) = &grant.ttl
                && let Err(e) = crate::duration::parse(ttl)
            {
                return Err(err(&format!("grants.{name}.ttl"), e.to_string()));
            }
            grants.push(GrantTarget {
                files: grant.files.map(|p| base.join(p)),
                name,
                ttl: grant.ttl,
                renew_at,
            });
        }
        let aws_endpoint = match raw.aws_endpoint {
            None => None,
            Some(raw_endpoint) => {
                if !raw_endpoint.listen.ip().is_loopback() {
                    return Err(err(
                        "aws_endpoint.listen",
                        format!(
                            "{} is not a loopback address: the endpoint hands out credentials, write e.g. 127.0.0.1:{}",
                            raw_endpoint.listen,
                            raw_endpoint.listen.port()
                        ),
                    ));
                }
                if !grants.iter().any(|g| g.name == raw_endpoint.grant) {
                    return Err(err(
                        "aws_endpoint.grant",
                        format!("`{}` is not one of `grants`: add it there", raw_endpoint.grant),
                    ));
                }
                Some(AwsEndpoint {
                    listen: raw_endpoint.listen,
                    grant: raw_endpoint.grant,
                    authorization_token_file: base.join(raw_endpoint.authorization_token_file),
                })
            }
        };
        let overlap = match &raw.overlap {
            None => std::time::Duration::from_secs(30),
            Some(text) => crate::duration::parse(text).map_err(|e| err("overlap", e.to_string()))?,
        };
        if let Some(dir) = &raw.state_dir
            && grants
                .iter()
                .any(|g| g.files.as_deref() == Some(base.join(dir).as_path()))
        {
            return Err(err(
                "state_dir",
                format!(
                    "{} is also a grant's `files` directory: the state must not be where the app reads, give it a directory of its own",
                    dir.display()
                ),
            ));
        }
        Ok(AgentConfig {
            aws_endpoint,
            state_dir: raw.state_dir.map(|p| base.join(p)),
            overlap,
            broker: raw.broker,
            token_file: base.join(raw.token_file),
            ca_file: raw.ca_file.map(|p| base.join(p)),
            health_listen: raw.health_listen,
            grants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "broker: http://127.0.0.1:1\ntoken_file: token\nhealth_listen: 127.0.0.1:9\ngrants:\n  api:\n    files: out\n";

    fn parse(text: &str) -> Result<AgentConfig, AgentConfigError> {
        AgentConfig::parse(text, "agent.yaml", Path::new("/etc/stint"))
    }

    #[test]
    fn a_good_config_takes_paths_from_the_config_directory() {
        let config = parse(GOOD).map_err(|e| e.to_string());
        assert_eq!(
            config.as_ref().map(|c| c.token_file.clone()),
            Ok("/etc/stint/token".into())
        );
        assert_eq!(
            config.map(|c| c.grants.first().and_then(|g| g.files.clone())),
            Ok(Some("/etc/stint/out".into()))
        );
    }

    #[test]
    fn the_aws_endpoint_listens_on_loopback_only() {
        let with = |listen: &str| {
            format!("{GOOD}aws_endpoint:\n  listen: {listen}\n  grant: api\n  authorization_token_file: t\n")
        };
        assert!(parse(&with("127.0.0.1:9911")).is_ok());
        assert!(parse(&with("\"[::1]:9911\"")).is_ok());
        let wide = parse(&with("0.0.0.0:9911")).map(|_| ()).map_err(|e| e.key);
        assert_eq!(wide, Err("aws_endpoint.listen".to_string()));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_file_and_key() {
        let e = parse(&GOOD.replace("files: out", "file: out"))
            .map(|_| ())
            .map_err(|e| e.to_string());
        let text = e.err().unwrap_or_default();
        assert!(
            text.starts_with("agent.yaml: grants.api.file: unknown field `file`"),
            "{text}"
        );
        let bad = parse(&GOOD.replace("files: out", "renew_at: 1.5"))
            .map(|_| ())
            .map_err(|e| e.key);
        assert_eq!(bad, Err("grants.api.renew_at".to_string()));
    }
}
