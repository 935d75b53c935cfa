//! Database credentials nobody sees: a PostgreSQL role created for one
//! issuance and dropped when it expires. Every role is a lease in the store
//! (next to the audit log), written before the role exists, so a role can
//! never outlive the record that says when to drop it. A reaper in every
//! broker revokes due leases; a claim on each lease makes sure one broker
//! does it, once.

pub mod commands;
pub mod github;
mod provider;
pub mod reaper;
mod schema;
mod seal;
mod store;
mod target;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use github::{GithubApps, GithubProvider};
pub use provider::PostgresProvider;
pub use reaper::Reaper;
pub use seal::Sealer;
pub use store::{LeaseStore, open_store, open_store_read_only};
pub use target::{TargetError, quote_ident};

/// `username_template` when a grant sets none.
pub const DEFAULT_USERNAME_TEMPLATE: &str = "stint_{grant}_{id}";
/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;

/// Where a database admin password comes from. Never the config file.
pub use crate::provider::SecretSource as PasswordSource;

/// TLS to a target database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTls {
    /// Plain TCP (only sensible on loopback or a trusted network).
    Disable,
    /// TLS, the server's certificate checked against the system's roots
    /// (or `ca_file`) and its name against `host`.
    VerifyFull {
        /// PEM roots to trust instead of the system's.
        ca_file: Option<PathBuf>,
    },
}

/// A `databases.NAME` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseTarget {
    /// Config name.
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database to connect to.
    pub dbname: String,
    /// The role stint creates and drops roles as.
    pub admin_user: String,
    /// Where its password comes from.
    pub password: PasswordSource,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Drop roles that look like stint's but have no lease (default: report).
    pub drop_orphans: bool,
    /// TLS to the database.
    pub tls: DbTls,
}

/// Lease states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// The role exists (or is being created).
    Active,
    /// The role was dropped.
    Revoked,
}

impl LeaseState {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Revoked => "revoked",
        }
    }
}

/// What a lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    /// A PostgreSQL role, dropped.
    Postgres,
    /// A GitHub App installation token, revoked at GitHub.
    Github,
}

impl LeaseKind {
    /// From the stored column (NULL: a lease written before there were
    /// other kinds, so a role).
    pub fn parse(stored: Option<&str>) -> LeaseKind {
        match stored {
            Some("github") => LeaseKind::Github,
            _ => LeaseKind::Postgres,
        }
    }

    /// The stored spelling (also the grant kind).
    pub fn stored(self) -> &'static str {
        match self {
            LeaseKind::Postgres => "postgres",
            LeaseKind::Github => "github",
        }
    }
}

/// One issued credential that stint ends itself: a role, a GitHub token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// Same as the issuance id.
    pub id: String,
    /// Grant it was issued for.
    pub grant: String,
    /// What it ends.
    pub kind: LeaseKind,
    /// `databases.NAME` of a role; `github_apps.NAME` of a GitHub token.
    pub database: String,
    /// The role name; for a GitHub token, its `token_sha256` (the form of
    /// GitHub's audit log `hashed_token`), never the token.
    pub username: String,
    /// Issuer config name of the caller.
    pub issuer: String,
    /// The caller's `sub`.
    pub subject: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// When the role is to be dropped.
    pub expires_at: i64,
    /// Active or revoked.
    pub state: LeaseState,
    /// Why it was revoked: `expired`, `revoked_by_caller`, `revoked_by_admin`,
    /// `issuance_failed`, `audit_failed`, `undelivered`.
    pub revoke_reason: Option<String>,
    /// Failed revocation attempts so far.
    pub attempts: u32,
    /// The last failure, for operators (never a password).
    pub last_error: Option<String>,
    /// Not retried before this.
    pub next_attempt_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// Who asked for the early end (`None`: it expired, an issuance
    /// failed, or an operator ran `stint leases revoke`). Kept on the lease
    /// because the role may be dropped later, by the reaper, whose record
    /// must still name them.
    pub revoke_requested_by: Option<Requester>,
    /// A GitHub token, sealed (AES-256-GCM under a key derived from the
    /// audit key): the reaper needs the token to revoke it. Never shown.
    #[serde(skip)]
    pub sealed_secret: Option<String>,
}

/// A caller or admin who asked `POST /v1/leases/{id}/revoke` to end a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requester {
    /// Issuer config name of their token.
    pub issuer: String,
    /// Their `sub`.
    pub subject: String,
    /// The request that asked; the revocation's audit record carries it.
    pub request_id: String,
}

impl Lease {
    /// A new active lease of `kind` for `grant`'s caller: issuance `ctx`,
    /// the credential `name` on `target`, ending at `expires_at`.
    pub fn active(
        kind: LeaseKind,
        grant: &crate::policy::Grant<'_>,
        ctx: &crate::provider::IssueContext,
        target: &str,
        name: &str,
        expires_at: i64,
        sealed_secret: Option<String>,
    ) -> Lease {
        Lease {
            id: ctx.issuance_id.clone(),
            grant: grant.spec().name.clone(),
            kind,
            database: target.to_string(),
            username: name.to_string(),
            issuer: grant.token().issuer().to_string(),
            subject: grant.token().subject().to_string(),
            created_at: ctx.now,
            expires_at,
            state: LeaseState::Active,
            revoke_reason: None,
            attempts: 0,
            last_error: None,
            next_attempt_at: 0,
            revoked_at: None,
            revoke_requested_by: None,
            sealed_secret,
        }
    }

    /// Revocation keeps failing: shown by `stint leases list --failing`.
    pub fn is_failing(&self) -> bool {
        self.state == LeaseState::Active && self.attempts >= FAILING_AFTER
    }
}

/// Makes the lease of an issuance nobody received due at once (`reason`:
/// `audit_failed`, `undelivered`), so the reaper ends its credential.
async fn withdraw(store: &dyn LeaseStore, issuance_id: &str, now: i64, reason: &str) {
    if let Err(e) = store.expire_now(issuance_id, now, reason, None).await {
        tracing::error!(lease_id = issuance_id, error = %e, "could not mark a lease nobody received for revocation; it ends at its expiry");
    }
}

/// Failed attempts after which a lease counts as failing.
pub const FAILING_AFTER: u32 = 3;

/// Checks a username template: its placeholders, and a literal prefix (the
/// part before the first placeholder) that marks roles as stint's.
pub fn check_username_template(template: &str) -> Result<(), String> {
    if !template.contains("{id}") {
        return Err("must contain {id}, so that every issuance gets its own role".into());
    }
    for part in template.split("{id}") {
        crate::template::Template::parse(part)?;
    }
    let prefix = literal_prefix(template);
    // The prefix must survive role_name unchanged (no "__", short enough
    // never to be cut), or orphans under it could not be recognised.
    if prefix.len() < 3
        || prefix.len() > 40
        || prefix.contains("__")
        || !prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "must start with a literal prefix of at least 3 characters from [a-z0-9_] (like `stint_`), \
             at most 40, no `__`, by which stint recognises its roles; `{prefix}` is not one"
        ));
    }
    Ok(())
}

/// The part of a username template before its first placeholder.
pub fn literal_prefix(template: &str) -> &str {
    let end = template.find('{').unwrap_or(template.len());
    template.get(..end).unwrap_or_default()
}

/// A role name from a rendered template: lower case, `[a-z0-9_]` only (so
/// it can never close a quoted identifier), at most 63 bytes with the
/// issuance's own suffix kept.
pub fn role_name(rendered: &str, suffix: &str) -> String {
    let mut name = String::new();
    for c in rendered.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '_'
        };
        if !(c == '_' && name.ends_with('_')) {
            name.push(c);
        }
    }
    if name.len() > MAX_NAME {
        // Keep the unique end: cut the middle.
        let keep = MAX_NAME.saturating_sub(suffix.len() + 1);
        name = format!("{}_{suffix}", name.get(..keep).unwrap_or_default());
    }
    name
}

/// 32 random bytes as base64url: 43 characters from `[A-Za-z0-9_-]`, safe
/// inside a quoted SQL literal.
pub fn new_password() -> Result<String, String> {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_cannot_carry_sql() {
        let name = role_name("stint_deploy_acme/x\"; DROP ROLE postgres; --_0a1b2c3d", "0a1b2c3d");
        assert_eq!(name, "stint_deploy_acme_x_drop_role_postgres_0a1b2c3d");
        let long = role_name(&format!("stint_{}_0a1b2c3d", "x".repeat(100)), "0a1b2c3d");
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("_0a1b2c3d"), "{long}");
    }

    #[test]
    fn username_templates_need_id_and_a_prefix() {
        assert!(check_username_template(DEFAULT_USERNAME_TEMPLATE).is_ok());
        assert!(check_username_template("stint_{grant}").is_err_and(|e| e.contains("{id}")));
        assert!(check_username_template("{grant}_{id}").is_err_and(|e| e.contains("prefix")));
        assert!(check_username_template("app_{claims.repository}_{id}").is_ok());
        assert!(check_username_template("app_{bogus}_{id}").is_err());
    }

    #[test]
    fn passwords_are_long_and_quote_safe() {
        let Ok(password) = new_password() else { unreachable!() };
        assert_eq!(password.len(), 43);
        assert!(
            password
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
