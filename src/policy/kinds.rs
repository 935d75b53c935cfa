//! What each kind of grant issues, as validated from config. Plain data:
//! providers read it, policy only carries it.

use std::time::Duration;

use serde_json::Value;

use crate::template::Template;

/// What a grant issues, with the kind's own settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum GrantKind {
    /// A JWT signed by stint.
    Token(TokenGrant),
    /// AWS STS session credentials (AssumeRole).
    Aws(AwsGrant),
    /// Values from AWS Secrets Manager.
    Secrets(SecretsGrant),
    /// A PostgreSQL role created for the caller and dropped at expiry.
    Postgres(PostgresGrant),
    /// A GitHub App installation token, revoked at the grant's ttl.
    Github(GithubGrant),
}

impl GrantKind {
    /// The kind's name in config and responses.
    pub fn name(&self) -> &'static str {
        match self {
            GrantKind::Token(_) => "token",
            GrantKind::Aws(_) => "aws",
            GrantKind::Secrets(_) => "secrets",
            GrantKind::Postgres(_) => "postgres",
            GrantKind::Github(_) => "github",
        }
    }
}

/// Settings of a `kind: token` grant.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// `aud` of the issued token: the service that will accept it.
    pub audience: String,
    /// Caller claims copied into the issued token, by name.
    pub copy_claims: Vec<String>,
}

/// Settings of a `kind: aws` grant.
#[derive(Debug, Clone)]
pub struct AwsGrant {
    /// The role to assume.
    pub role_arn: String,
    /// The role's account (from the ARN), recorded in audit.
    pub account: String,
    /// stint's own identity is an assumed role: AWS caps sessions at 1h.
    pub role_chaining: bool,
    /// Inline session policy; string leaves are templates.
    pub session_policy: Option<Value>,
    /// Managed session policy ARNs.
    pub policy_arns: Vec<String>,
    /// Session tags, values templated from claims.
    pub session_tags: Vec<(String, Template)>,
    /// Tag keys that pass on to chained sessions.
    pub transitive_tag_keys: Vec<String>,
    /// `ExternalId` the role's trust policy may require.
    pub external_id: Option<String>,
    /// RoleSessionName template; default from the caller's claims.
    pub session_name: Option<Template>,
    /// A cached session is reused while at least this much of it is left.
    pub min_remaining: Duration,
}

/// One secret of a `kind: secrets` grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The name as written in config (`prod/api/db#password`): the key in
    /// requests and responses.
    pub name: String,
    /// Secret name or ARN.
    pub secret_id: String,
    /// Key inside a JSON secret, after `#`.
    pub json_key: Option<String>,
}

/// Settings of a `kind: secrets` grant.
#[derive(Debug, Clone)]
pub struct SecretsGrant {
    /// The secrets the grant may read.
    pub secrets: Vec<SecretRef>,
    /// Version stage to read (default `AWSCURRENT`).
    pub version_stage: String,
    /// How long a fetched value is reused.
    pub cache_ttl: Duration,
}

/// Settings of a `kind: postgres` grant.
#[derive(Debug, Clone)]
pub struct PostgresGrant {
    /// Name of the target under `databases:`.
    pub database: String,
    /// The role name: `{grant}`, `{id}`, `{sub}`, `{issuer}`, `{claims.NAME}`
    /// placeholders; the result is reduced to `[a-z0-9_]`, at most 63 bytes.
    pub username_template: String,
    /// SQL run (in one transaction) to create the role; `{{name}}`,
    /// `{{password}}`, `{{expiration}}` and `{{database}}` are filled in.
    pub creation_statements: String,
    /// SQL run to revoke; `None`: stint's default (no login, end the
    /// role's sessions, reassign and drop what it owns, drop it).
    pub revocation_statements: Option<String>,
}

/// Settings of a `kind: github` grant.
#[derive(Debug, Clone)]
pub struct GithubGrant {
    /// Name of the App under `github_apps:`.
    pub app: String,
    /// The organization or user the repositories belong to.
    pub owner: String,
    /// The repositories (names within `owner`, or `owner/name`), each a
    /// template that may use the caller's claims.
    pub repositories: Vec<Template>,
    /// The ceiling: what a token may do at most.
    pub permissions: std::collections::BTreeMap<String, crate::policy::github::Level>,
    /// Whether organization-level permissions were allowed on purpose.
    pub allow_organization_permissions: bool,
}
