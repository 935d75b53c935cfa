//! Where a secret stint itself needs comes from (a database admin's
//! password, a GitHub App's private key): a file, an environment variable
//! of the broker, or an AWS Secrets Manager secret. Never the config file.

use std::path::PathBuf;
use std::sync::Arc;

/// One secret's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file (trailing newline removed).
    File(PathBuf),
    /// An environment variable of the broker.
    Env(String),
    /// An AWS Secrets Manager secret (`NAME` or `NAME#json_key`).
    Secret(String),
}

impl SecretSource {
    /// Reads the secret. The error names the source, never a value.
    pub async fn read(&self, secrets: Option<&Arc<aws_sdk_secretsmanager::Client>>) -> Result<String, String> {
        match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("{}: {e}", path.display())),
            SecretSource::Env(var) => std::env::var(var).map_err(|_| format!("${var} is not set")),
            SecretSource::Secret(id) => {
                let client = secrets.ok_or_else(|| "no AWS client".to_string())?;
                let (secret_id, json_key) = match id.rsplit_once('#') {
                    Some((id, key)) => (id, Some(key)),
                    None => (id.as_str(), None),
                };
                let out = client
                    .get_secret_value()
                    .secret_id(secret_id)
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "GetSecretValue of `{secret_id}`: {}",
                            crate::provider::aws::classify("GetSecretValue", &e)
                        )
                    })?;
                let text = out
                    .secret_string()
                    .ok_or_else(|| format!("`{secret_id}` has no string value"))?;
                match json_key {
                    None => Ok(text.to_string()),
                    Some(key) => serde_json::from_str::<serde_json::Value>(text)
                        .ok()
                        .and_then(|v| v.get(key).and_then(|k| k.as_str()).map(str::to_string))
                        .ok_or_else(|| format!("`{secret_id}` has no string `{key}`")),
                }
            }
        }
    }
}
