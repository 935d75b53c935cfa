//! `github_apps:` and `kind: github` grants. What GitHub would refuse
//! only at the first issuance (a permission name or level it does not
//! have, a repository name it cannot have) is refused here, naming the
//! key; a key that is not RSA is refused when `stint serve` starts
//! ([`check_private_key`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawGithubApp, RawGrant};
use super::{FieldError, check_name, field};
use crate::policy::github::{self, is_login, is_organization_level, repository_in};
use crate::policy::{GithubGrant, GrantKind};
use crate::provider::SecretSource;
use crate::provider::github::{AppSettings, DEFAULT_API_URL, parse_key};
use crate::template::Template;

/// GitHub's own limit on an installation token's life.
pub const MAX_GITHUB_TTL: Duration = Duration::from_secs(3600);

/// GitHub's limit on repositories per token request.
const MAX_REPOSITORIES: usize = 500;

/// Default `requests_per_hour`: GitHub's quota of an installation on
/// github.com (Enterprise Cloud has more).
const DEFAULT_REQUESTS_PER_HOUR: u32 = 5000;

/// One `github_apps.NAME` entry.
pub(super) fn github_app(
    name: &str,
    raw: RawGithubApp,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<AppSettings, FieldError> {
    check_name(name)?;
    if raw.app_id == 0 {
        return Err(field(".app_id", "must be the App's id (App settings → About → App ID)"));
    }
    let sources = [
        raw.private_key_file.as_ref().map(|f| SecretSource::File(resolve(f))),
        raw.private_key_env.as_ref().map(|v| SecretSource::Env(v.clone())),
        raw.private_key_secret.as_ref().map(|s| SecretSource::Secret(s.clone())),
    ];
    let mut given = sources.into_iter().flatten();
    let private_key = given.next().ok_or_else(|| {
        field(
            "",
            "set one of private_key_file, private_key_env or private_key_secret (the App's .pem, never the key itself)",
        )
    })?;
    if given.next().is_some() {
        return Err(field(
            "",
            "set only one of private_key_file, private_key_env and private_key_secret",
        ));
    }
    let api_url = raw
        .api_url
        .unwrap_or_else(|| DEFAULT_API_URL.to_string())
        .trim_end_matches('/')
        .to_string();
    // github.com, GitHub Enterprise Cloud with data residency
    // (https://api.SUBDOMAIN.ghe.com) or an Enterprise Server
    // (https://HOST/api/v3): any https URL; plain http to loopback only.
    super::check_url(&api_url).map_err(|m| field(".api_url", m))?;
    let requests_per_hour = raw.requests_per_hour.unwrap_or(DEFAULT_REQUESTS_PER_HOUR);
    if requests_per_hour == 0 {
        return Err(field(".requests_per_hour", "must be at least 1"));
    }
    Ok(AppSettings {
        name: name.to_string(),
        app_id: raw.app_id,
        private_key,
        api_url,
        installation_id: raw.installation_id,
        requests_per_hour,
    })
}

/// Reads and parses the App's private key when it is in a file or the
/// broker's environment, so `stint serve` refuses to start with a key
/// GitHub would refuse; the error names the key, never its content. Not
/// part of parsing the config: `stint config check`, `policy lint` and
/// `leases list` run where the key is not (a CI runner, an auditor's
/// machine). A key in Secrets Manager is read at its first use.
pub fn check_private_key(app: &AppSettings) -> Result<(), String> {
    let at = |key: &str| format!("github_apps.{}.{key}", app.name);
    let (key, pem) = match &app.private_key {
        SecretSource::File(path) => (
            at("private_key_file"),
            std::fs::read_to_string(path)
                .map_err(|e| format!("{}: {}: {e}", at("private_key_file"), path.display()))?,
        ),
        SecretSource::Env(var) => (
            at("private_key_env"),
            std::env::var(var).map_err(|_| format!("{}: ${var} is not set", at("private_key_env")))?,
        ),
        SecretSource::Secret(_) => return Ok(()),
    };
    parse_key(&pem).map(|_| ()).map_err(|m| format!("{key}: {m}"))
}

pub(super) fn github_grant(raw: &RawGrant, max_ttl: Duration, apps: &BTreeSet<&str>) -> Result<GrantKind, FieldError> {
    let app = raw
        .app
        .clone()
        .ok_or_else(|| field(".app", "missing: the name of an App under `github_apps:`"))?;
    if !apps.contains(app.as_str()) {
        let known: Vec<&str> = apps.iter().copied().collect();
        return Err(field(
            ".app",
            format!(
                "`{app}` is not under `github_apps:` (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    if max_ttl > MAX_GITHUB_TTL {
        return Err(field(
            ".max_ttl",
            "at most 1h: GitHub ends an installation token after an hour whatever stint asks",
        ));
    }
    let owner = raw.owner.clone().ok_or_else(|| {
        field(
            ".owner",
            "missing: the organization or user whose repositories the token reaches",
        )
    })?;
    if !is_login(&owner) {
        return Err(field(
            ".owner",
            format!("`{owner}` is not a GitHub organization or user name"),
        ));
    }
    let entries = raw.repositories.clone().unwrap_or_default();
    if entries.is_empty() {
        return Err(field(
            ".repositories",
            "missing: name the repositories the token may reach (without them GitHub gives every repository of the installation)",
        ));
    }
    if entries.len() > MAX_REPOSITORIES {
        return Err(field(
            ".repositories",
            format!("at most {MAX_REPOSITORIES} (GitHub's limit)"),
        ));
    }
    let mut repositories = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!(".repositories[{i}]");
        let template = Template::parse(entry).map_err(|m| field(&at, m))?;
        if template.is_literal() {
            let name = repository_in(&owner, entry).map_err(|m| field(&at, m))?;
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(field(&at, format!("`{entry}` is listed twice")));
            }
        }
        repositories.push(template);
    }
    let raw_permissions = raw.permissions.as_ref().map(|m| m.0.clone()).unwrap_or_default();
    if raw_permissions.is_empty() {
        return Err(field(
            ".permissions",
            "missing: what the token may do, e.g. {contents: write} (without them GitHub gives all the App's permissions)",
        ));
    }
    let allow_organization_permissions = raw.allow_organization_permissions.unwrap_or(false);
    let mut permissions = BTreeMap::new();
    for (name, level) in raw_permissions {
        let at = format!(".permissions.{name}");
        let level = github::check(&name, &level).map_err(|m| field(&at, m))?;
        if is_organization_level(&name) && !allow_organization_permissions {
            return Err(field(
                &at,
                format!(
                    "`{name}` reaches beyond the repositories (organization, account or repository administration): \
                     set allow_organization_permissions: true if this grant must have it"
                ),
            ));
        }
        permissions.insert(name, level);
    }
    Ok(GrantKind::Github(GithubGrant {
        app,
        owner,
        repositories,
        permissions,
        allow_organization_permissions,
    }))
}
