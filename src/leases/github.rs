//! `kind: github`: a GitHub App installation token per issuance, scoped to
//! the grant's repositories and permissions (or the subset the caller
//! asks for), and kept as a lease so stint revokes it at the grant's ttl,
//! well before GitHub's hour.
//!
//! Order: the ask is checked against the grant's ceiling before any call
//! to GitHub (a refusal makes no upstream call); then the token; then its
//! lease, with the token sealed. If the lease cannot be written the token
//! is revoked at once and the caller gets 503: no token without a record
//! of when it ends. A broker that dies between GitHub's answer and the
//! lease leaves a token GitHub itself ends within the hour.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value, json};

use super::{Lease, LeaseKind, LeaseStore, Sealer};
use crate::policy::github::{self, Level, repository_in};
use crate::policy::{GithubGrant, Grant, GrantKind};
use crate::provider::github::{GithubApp, GithubError};
use crate::provider::{Credential, CredentialProvider, GithubAsk, IssueContext, ProviderError};
use crate::template::Context;

/// The apps of `github_apps:`, by config name.
pub type GithubApps = BTreeMap<String, Arc<GithubApp>>;

/// Issues GitHub App installation tokens.
pub struct GithubProvider {
    apps: Arc<GithubApps>,
    store: Arc<dyn LeaseStore>,
    sealer: Arc<Sealer>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl GithubProvider {
    /// A provider for `apps`, keeping leases in `store`.
    pub fn new(
        apps: Arc<GithubApps>,
        store: Arc<dyn LeaseStore>,
        sealer: Arc<Sealer>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> GithubProvider {
        GithubProvider {
            apps,
            store,
            sealer,
            metrics,
        }
    }
}

/// What one token will be: repositories (names within the owner) and
/// permissions, within the grant.
#[derive(Debug, PartialEq, Eq)]
pub struct Scope {
    /// Repository names, as the caller (or the grant) gave them.
    pub repositories: Vec<String>,
    /// Permission → level.
    pub permissions: BTreeMap<String, Level>,
}

/// The grant's ceiling rendered for the caller, narrowed to `ask`. A
/// rendered repository outside the grant's owner is refused (403); an ask
/// beyond the ceiling is a 400 naming what was too much.
pub fn scope(grant: &Grant<'_>, settings: &GithubGrant, ask: Option<&GithubAsk>) -> Result<Scope, ProviderError> {
    let spec = grant.spec();
    let ctx = Context {
        token: grant.token(),
        grant: &spec.name,
    };
    let mut ceiling = Vec::new();
    let mut seen = BTreeSet::new();
    for template in &settings.repositories {
        let rendered = template
            .render(&ctx, &|_, _| Ok(()))
            .map_err(|e| ProviderError::Denied {
                code: "claim_not_usable",
                detail: format!("repositories of grant `{}`: {e}", spec.name),
            })?;
        let name = repository_in(&settings.owner, &rendered).map_err(|e| ProviderError::Denied {
            code: "claim_not_usable",
            detail: format!("repositories of grant `{}`: {e}", spec.name),
        })?;
        if seen.insert(name.to_ascii_lowercase()) {
            ceiling.push(name);
        }
    }
    let Some(ask) = ask else {
        return Ok(Scope {
            repositories: ceiling,
            permissions: settings.permissions.clone(),
        });
    };
    let repositories = match &ask.repositories {
        None => ceiling,
        Some(asked) => {
            if asked.is_empty() {
                return Err(ProviderError::BadRequest(
                    "`repositories` is empty: name at least one, or leave it out for all of the grant's".into(),
                ));
            }
            let mut chosen = Vec::new();
            let mut beyond = Vec::new();
            for entry in asked {
                match repository_in(&settings.owner, entry) {
                    Ok(name) if ceiling.iter().any(|c| c.eq_ignore_ascii_case(&name)) => {
                        if !chosen.iter().any(|c: &String| c.eq_ignore_ascii_case(&name)) {
                            chosen.push(name);
                        }
                    }
                    _ => beyond.push(entry.clone()),
                }
            }
            if !beyond.is_empty() {
                return Err(ProviderError::BadRequest(format!(
                    "more than grant `{}` allows: repositories {} (it allows {})",
                    spec.name,
                    beyond.join(", "),
                    ceiling.join(", ")
                )));
            }
            chosen
        }
    };
    let permissions = match &ask.permissions {
        None => settings.permissions.clone(),
        Some(asked) => {
            if asked.is_empty() {
                return Err(ProviderError::BadRequest(
                    "`permissions` is empty: name at least one, or leave it out for all of the grant's".into(),
                ));
            }
            let mut parsed = BTreeMap::new();
            for (name, level) in asked {
                let level = github::check(name, level)
                    .map_err(|e| ProviderError::BadRequest(format!("permissions.{name}: {e}")))?;
                parsed.insert(name.clone(), level);
            }
            let beyond = github::beyond(&parsed, &settings.permissions);
            if !beyond.is_empty() {
                return Err(ProviderError::BadRequest(format!(
                    "more than grant `{}` allows: permissions {}",
                    spec.name,
                    beyond.join("; ")
                )));
            }
            parsed
        }
    };
    Ok(Scope {
        repositories,
        permissions,
    })
}

/// `token_sha256`: base64 of the token's SHA-256, the form GitHub's audit
/// log uses for `hashed_token`, so a stint record finds every action the
/// token took.
pub fn token_sha256(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn github_error(e: GithubError, grant: &str, settings: &GithubGrant) -> ProviderError {
    let log = e.to_string();
    match e {
        GithubError::NotInstalled { app, owner } => ProviderError::Refused {
            detail: format!(
                "grant `{grant}`: the GitHub App `{app}` is not installed on `{owner}`; ask an owner of `{owner}` to install it"
            ),
            log,
        },
        GithubError::Refused { status: 422, .. } => ProviderError::Refused {
            detail: format!(
                "grant `{grant}`: GitHub refused the repositories or permissions asked for: the App's installation on `{}` lacks some of them; ask an owner to add them to the installation",
                settings.owner
            ),
            log,
        },
        GithubError::Refused { status, .. } => ProviderError::Refused {
            detail: format!(
                "grant `{grant}`: GitHub answered {status} to the App `{}` (its id or private key may be wrong)",
                settings.app
            ),
            log,
        },
        GithubError::RateLimited { retry_after, .. } => ProviderError::Throttled {
            detail: format!("grant `{grant}`: the GitHub App `{}` is rate limited", settings.app),
            log,
            retry_after,
        },
        GithubError::Unreachable(_) | GithubError::Key { .. } => ProviderError::Unavailable {
            detail: format!("grant `{grant}`: GitHub cannot be used right now"),
            log,
        },
    }
}

#[async_trait::async_trait]
impl CredentialProvider for GithubProvider {
    fn kind(&self) -> &'static str {
        "github"
    }

    async fn issue(&self, grant: &Grant<'_>, ctx: &IssueContext) -> Result<Credential, ProviderError> {
        let spec = grant.spec();
        let GrantKind::Github(settings) = &spec.kind else {
            return Err(ProviderError::Internal(format!(
                "grant `{}` is not a github grant",
                spec.name
            )));
        };
        let scope = scope(grant, settings, ctx.github.as_ref())?;
        let app = self
            .apps
            .get(&settings.app)
            .ok_or_else(|| ProviderError::Internal(format!("no GitHub App `{}`", settings.app)))?;
        let issued = crate::telemetry::upstream(&self.metrics, "github", "create_token", async {
            app.create_token(&settings.owner, &scope.repositories, &scope.permissions)
                .await
        })
        .await
        .map_err(|e| github_error(e, &spec.name, settings))?;

        let token_sha256 = token_sha256(&issued.token);
        // stint's ttl, never past GitHub's own hour.
        let expires_at = ctx.expires_at().min(issued.expires_at);
        let sealed = self.sealer.seal(&ctx.issuance_id, &issued.token);
        let lease = sealed.map(|sealed| {
            Lease::active(
                LeaseKind::Github,
                grant,
                ctx,
                &settings.app,
                &token_sha256,
                expires_at,
                Some(sealed),
            )
        });
        let written = match lease {
            Ok(lease) => self.store.create(&lease).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // No record of when it ends: it must not live at all.
            if let Err(revoke) = app.revoke_token(&issued.token).await {
                tracing::error!(app = %settings.app, token_sha256 = %token_sha256, error = %revoke, "a GitHub token without a lease could not be revoked; GitHub ends it within the hour");
            }
            return Err(ProviderError::Unavailable {
                detail: "the lease store is unavailable".into(),
                log: e,
            });
        }

        let mut response = Map::new();
        response.insert("lease_id".into(), json!(ctx.issuance_id));
        response.insert("token".into(), json!(issued.token));
        response.insert("installation_id".into(), json!(issued.installation_id));
        response.insert("repositories".into(), json!(issued.repositories));
        response.insert("permissions".into(), Value::Object(issued.permissions.clone()));
        response.insert("git_host".into(), json!(git_host(&app.settings().api_url)));
        let mut audit = Map::new();
        audit.insert("lease_id".into(), json!(ctx.issuance_id));
        audit.insert("app".into(), json!(settings.app));
        audit.insert("app_id".into(), json!(app.settings().app_id));
        audit.insert("owner".into(), json!(settings.owner));
        audit.insert("installation_id".into(), json!(issued.installation_id));
        audit.insert("repositories".into(), json!(issued.repositories));
        audit.insert("permissions".into(), Value::Object(issued.permissions));
        audit.insert("token_sha256".into(), json!(token_sha256));
        Ok(Credential {
            expires_at,
            response,
            audit,
        })
    }

    async fn withdraw(&self, issuance_id: &str, now: i64, reason: &str) {
        super::withdraw(self.store.as_ref(), issuance_id, now, reason).await;
    }
}

/// The host `git` talks to for an API URL: `github.com` for the public
/// API, the Enterprise Server's host otherwise.
pub fn git_host(api_url: &str) -> String {
    let host = api_url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    // github.com and data-residency Enterprise Cloud (api.X.ghe.com →
    // X.ghe.com) serve git on the host without the `api.` prefix; an
    // Enterprise Server serves both on its one host.
    match host.strip_prefix("api.") {
        Some(rest) if rest == "github.com" || rest.ends_with(".ghe.com") => rest.to_string(),
        _ => host.to_string(),
    }
}

/// Ends a GitHub token lease: the sealed token is opened and revoked at
/// GitHub (a token GitHub no longer accepts counts as revoked).
pub async fn revoke(apps: &GithubApps, sealer: &Sealer, lease: &Lease) -> Result<(), String> {
    let Some(sealed) = &lease.sealed_secret else {
        // Nothing was kept, so nothing can be presented to GitHub.
        return Ok(());
    };
    let app = apps.get(&lease.database).ok_or_else(|| {
        format!(
            "GitHub App `{}` is no longer under `github_apps:`; restore it so its token can be revoked",
            lease.database
        )
    })?;
    let token = sealer.open(&lease.id, sealed)?;
    app.revoke_token(&token).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sha256_is_githubs_hashed_token_form() {
        // echo -n 'ghs_example' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            token_sha256("ghs_example"),
            "UMaRjVoedd29MJgtcZ6b6jIFPLlG7OzD84ZhFi+79Cc="
        );
    }

    #[test]
    fn the_git_host_follows_the_api() {
        assert_eq!(git_host("https://api.github.com"), "github.com");
        assert_eq!(git_host("https://ghe.example.com/api/v3"), "ghe.example.com");
        assert_eq!(git_host("https://api.octocorp.ghe.com"), "octocorp.ghe.com");
    }
}
