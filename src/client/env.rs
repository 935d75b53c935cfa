//! Turning issued credentials into environment variables for `stint exec`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::broker::ClientError;
use crate::percent::encode as urlencode;

/// Variables for the child, and every secret value among them (for masking).
#[derive(Debug, Default)]
pub struct ChildEnv {
    /// Name → value.
    pub vars: BTreeMap<String, String>,
    /// Values that must never be shown.
    pub secrets: Vec<String>,
    /// Hosts `git` should authenticate to with a GitHub token, and the
    /// variable holding it (see [`ChildEnv::git_config`]).
    pub git_hosts: Vec<(String, String)>,
}

/// `prod/api/db#password` → `PROD_API_DB_PASSWORD`; `deploy-token` → `DEPLOY_TOKEN`.
pub fn env_name(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

impl ChildEnv {
    fn set(&mut self, name: &str, value: String, secret: bool, grant: &str) -> Result<(), ClientError> {
        if self.vars.contains_key(name) {
            return Err(ClientError::Setup(format!(
                "two grants would both set {name} (the second is `{grant}`); use --env to rename secrets, or run them apart"
            )));
        }
        if secret {
            self.secrets.push(value.clone());
        }
        self.vars.insert(name.to_string(), value);
        Ok(())
    }

    /// Adds one grant's credential. `renames` maps secret names to variable
    /// names (`--env DB_PASSWORD=prod/api/db#password`).
    pub fn add(
        &mut self,
        grant: &str,
        body: &Map<String, Value>,
        renames: &BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        let bad = |message: &str| ClientError::BadAnswer {
            grant: grant.to_string(),
            message: message.to_string(),
        };
        let text = |v: &Value| v.as_str().map(str::to_string);
        let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
        match kind {
            "aws" => {
                let c = body.get("credentials").ok_or_else(|| bad("no `credentials`"))?;
                let field = |k: &str| {
                    c.get(k)
                        .and_then(text)
                        .ok_or_else(|| bad(&format!("no credentials.{k}")))
                };
                self.set("AWS_ACCESS_KEY_ID", field("AccessKeyId")?, true, grant)?;
                self.set("AWS_SECRET_ACCESS_KEY", field("SecretAccessKey")?, true, grant)?;
                self.set("AWS_SESSION_TOKEN", field("SessionToken")?, true, grant)?;
                self.set("AWS_CREDENTIAL_EXPIRATION", field("Expiration")?, false, grant)?;
            }
            "secrets" => {
                let secrets = body
                    .get("secrets")
                    .and_then(Value::as_object)
                    .ok_or_else(|| bad("no `secrets`"))?;
                for (name, value) in secrets {
                    let value = text(value).ok_or_else(|| bad("a secret value is not a string"))?;
                    let var = renames.get(name).cloned().unwrap_or_else(|| env_name(name));
                    self.set(&var, value, true, grant)?;
                }
            }
            "postgres" => {
                let db = body.get("database").ok_or_else(|| bad("no `database`"))?;
                let field = |k: &str| {
                    db.get(k)
                        .and_then(|v| {
                            v.as_str()
                                .map(str::to_string)
                                .or_else(|| v.as_u64().map(|n| n.to_string()))
                        })
                        .ok_or_else(|| bad(&format!("no database.{k}")))
                };
                let (host, port, user, password, dbname) = (
                    field("host")?,
                    field("port")?,
                    field("username")?,
                    field("password")?,
                    field("dbname")?,
                );
                // An IPv6 address goes in brackets in a URL.
                let url_host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                let url = format!(
                    "postgres://{}:{}@{url_host}:{port}/{}",
                    urlencode(&user),
                    urlencode(&password),
                    urlencode(&dbname)
                );
                self.set("PGHOST", host, false, grant)?;
                self.set("PGPORT", port, false, grant)?;
                self.set("PGUSER", user, false, grant)?;
                self.set("PGPASSWORD", password, true, grant)?;
                self.set("PGDATABASE", dbname, false, grant)?;
                self.set("DATABASE_URL", url, true, grant)?;
            }
            "token" => {
                let token = body.get("token").and_then(text).ok_or_else(|| bad("no `token`"))?;
                self.set(&format!("STINT_TOKEN_{}", env_name(grant)), token, true, grant)?;
            }
            "github" => {
                let token = body.get("token").and_then(text).ok_or_else(|| bad("no `token`"))?;
                // The names gh, octokit and most tools read; `--env
                // VAR=GRANT` puts it in VAR alone (two github grants at once).
                match renames.get(grant) {
                    Some(var) => self.set(var, token, true, grant)?,
                    None => {
                        self.set("GH_TOKEN", token.clone(), true, grant)?;
                        self.set("GITHUB_TOKEN", token, true, grant)?;
                    }
                }
                if let Some(host) = body.get("git_host").and_then(text) {
                    let var = renames.get(grant).map_or("GH_TOKEN", String::as_str).to_string();
                    self.git_hosts.push((host, var));
                }
            }
            other => return Err(bad(&format!("unknown kind `{other}`: upgrade stint"))),
        }
        Ok(())
    }
}

impl ChildEnv {
    /// [`ChildEnv::git_config`] for this process: `git` in the child
    /// authenticates with any GitHub token through this very binary.
    pub fn git_env(&self) -> Vec<(String, String)> {
        if self.git_hosts.is_empty() {
            return Vec::new();
        }
        let stint = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "stint".to_string());
        self.git_config(&stint, std::env::var("GIT_CONFIG_COUNT").ok().as_deref())
    }

    /// Environment that makes `git` in the child use the GitHub tokens:
    /// `GIT_CONFIG_COUNT`/`KEY_n`/`VALUE_n` (git ≥ 2.31), appended to any
    /// the caller set, so `git push` needs no other set-up. Per host: the
    /// credential helper `stint git-credential --env VAR`, and an empty
    /// `http.<url>.extraHeader`, which drops a header an earlier step
    /// configured (actions/checkout persists one with the workflow's token,
    /// which would otherwise win over any helper).
    pub fn git_config(&self, stint: &str, inherited: Option<&str>) -> Vec<(String, String)> {
        if self.git_hosts.is_empty() {
            return Vec::new();
        }
        let mut n: usize = inherited.and_then(|c| c.trim().parse().ok()).unwrap_or(0);
        let mut out = Vec::new();
        let quoted = format!("'{}'", stint.replace('\'', "'\\''"));
        for (host, var) in &self.git_hosts {
            let url = format!("https://{host}/");
            for (key, value) in [
                (format!("credential.{url}.helper"), String::new()),
                (
                    format!("credential.{url}.helper"),
                    format!("!{quoted} git-credential --env {var}"),
                ),
                (format!("credential.{url}.username"), "x-access-token".to_string()),
                (format!("http.{url}.extraHeader"), String::new()),
            ] {
                out.push((format!("GIT_CONFIG_KEY_{n}"), key));
                out.push((format!("GIT_CONFIG_VALUE_{n}"), value));
                n += 1;
            }
        }
        out.push(("GIT_CONFIG_COUNT".to_string(), n.to_string()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn names_and_kinds() {
        assert_eq!(env_name("prod/api/db#password"), "PROD_API_DB_PASSWORD");
        assert_eq!(env_name("1st"), "_1ST");
        let mut env = ChildEnv::default();
        let renames = BTreeMap::from([("prod/api/db#password".to_string(), "DB_PASSWORD".to_string())]);
        let secrets =
            map(json!({"kind": "secrets", "secrets": {"prod/api/db#password": "pw", "prod/api/stripe": "sk"}}));
        assert!(env.add("s", &secrets, &renames).is_ok());
        let token = map(json!({"kind": "token", "token": "eyJ"}));
        assert!(env.add("deploy-token", &token, &BTreeMap::new()).is_ok());
        assert_eq!(env.vars.get("DB_PASSWORD").map(String::as_str), Some("pw"));
        assert_eq!(env.vars.get("PROD_API_STRIPE").map(String::as_str), Some("sk"));
        assert_eq!(
            env.vars.get("STINT_TOKEN_DEPLOY_TOKEN").map(String::as_str),
            Some("eyJ")
        );
        assert_eq!(env.secrets.len(), 3);
        // Two grants may not silently overwrite each other.
        assert!(env.add("deploy-token", &token, &BTreeMap::new()).is_err());
    }

    #[test]
    fn postgres_url_is_escaped() {
        let mut env = ChildEnv::default();
        let pg = map(
            json!({"kind": "postgres", "database": {"host": "db", "port": 5432, "username": "u", "password": "p@ss/w", "dbname": "app"}}),
        );
        assert!(env.add("pg", &pg, &BTreeMap::new()).is_ok());
        assert_eq!(
            env.vars.get("DATABASE_URL").map(String::as_str),
            Some("postgres://u:p%40ss%2Fw@db:5432/app")
        );
    }
}
