//! Grants: common settings, then each kind's own. A key that belongs to
//! another kind is an error, so `role_arn` on a token grant cannot pass
//! unnoticed.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::raw::{RawGrant, RawRule};
use super::{FieldError, MAX_GRANT_TTL, check_name, duration_at, field};
use crate::duration;
use crate::policy::{
    AwsGrant, Criticality, GrantKind, GrantSpec, Matcher, PostgresGrant, Rule, SecretRef, SecretsGrant, TokenGrant,
};
use crate::provider::RESERVED_CLAIMS;
use crate::provider::aws::limits;
use crate::template::Template;

pub(super) fn validate_grant(
    name: &str,
    raw: RawGrant,
    issuers: &BTreeSet<&str>,
    databases: &BTreeSet<&str>,
    github_apps: &BTreeSet<&str>,
) -> Result<GrantSpec, FieldError> {
    check_name(name)?;
    // The kind first: a misspelt kind would otherwise be reported as every
    // one of its keys being "for another kind".
    if !matches!(raw.kind.as_str(), "token" | "aws" | "secrets" | "postgres" | "github") {
        return Err(field(
            ".kind",
            format!("`{}` is unknown: use token, aws, secrets, postgres or github", raw.kind),
        ));
    }
    check_kind_keys(&raw)?;
    let ttl = duration_at(".ttl", &raw.ttl)?;
    let max_ttl = match &raw.max_ttl {
        Some(text) => duration_at(".max_ttl", text)?,
        None => ttl,
    };
    if ttl < Duration::from_secs(1) {
        return Err(field(".ttl", "must be at least 1s"));
    }
    if max_ttl < ttl {
        let message = format!(
            "{} is shorter than ttl {}",
            duration::format(max_ttl),
            duration::format(ttl)
        );
        return Err(field(".max_ttl", message));
    }
    if max_ttl > MAX_GRANT_TTL {
        return Err(field(".max_ttl", "at most 24h: stint issues short-lived credentials"));
    }
    let kind = match raw.kind.as_str() {
        "token" => token(&raw)?,
        "aws" => aws(&raw, ttl, max_ttl)?,
        "secrets" => secrets(&raw)?,
        "postgres" => postgres(&raw, databases)?,
        "github" => super::github::github_grant(&raw, max_ttl, github_apps)?,
        other => {
            return Err(field(
                ".kind",
                format!("`{other}` is unknown: use token, aws, secrets, postgres or github"),
            ));
        }
    };
    let description = raw.description.clone();
    let single_use_token = raw.single_use_token.unwrap_or(false);
    let criticality = match raw.criticality.as_deref() {
        None => None,
        Some(text) => Some(Criticality::parse(text).ok_or_else(|| {
            field(
                ".criticality",
                format!("`{text}` is unknown: use low, medium, high or critical"),
            )
        })?),
    };
    let rules = rules(raw, issuers)?;
    Ok(GrantSpec {
        name: name.to_string(),
        description,
        ttl,
        max_ttl,
        kind,
        single_use_token,
        criticality,
        rules,
    })
}

/// Which kind each kind-specific key belongs to.
fn check_kind_keys(raw: &RawGrant) -> Result<(), FieldError> {
    let present: [(&str, bool, &str); 23] = [
        ("database", raw.database.is_some(), "postgres"),
        ("username_template", raw.username_template.is_some(), "postgres"),
        ("creation_statements", raw.creation_statements.is_some(), "postgres"),
        ("revocation_statements", raw.revocation_statements.is_some(), "postgres"),
        ("min_remaining", raw.min_remaining.is_some(), "aws"),
        ("audience", raw.audience.is_some(), "token"),
        ("copy_claims", raw.copy_claims.is_some(), "token"),
        ("role_arn", raw.role_arn.is_some(), "aws"),
        ("role_chaining", raw.role_chaining.is_some(), "aws"),
        ("session_policy", raw.session_policy.is_some(), "aws"),
        ("policy_arns", raw.policy_arns.is_some(), "aws"),
        ("session_tags", raw.session_tags.is_some(), "aws"),
        ("transitive_tag_keys", raw.transitive_tag_keys.is_some(), "aws"),
        ("external_id", raw.external_id.is_some(), "aws"),
        ("session_name", raw.session_name.is_some(), "aws"),
        ("secrets", raw.secrets.is_some(), "secrets"),
        ("version_stage", raw.version_stage.is_some(), "secrets"),
        ("cache_ttl", raw.cache_ttl.is_some(), "secrets"),
        ("app", raw.app.is_some(), "github"),
        ("owner", raw.owner.is_some(), "github"),
        ("repositories", raw.repositories.is_some(), "github"),
        ("permissions", raw.permissions.is_some(), "github"),
        (
            "allow_organization_permissions",
            raw.allow_organization_permissions.is_some(),
            "github",
        ),
    ];
    for (key, is_set, kind) in present {
        if is_set && raw.kind != kind {
            return Err(field(
                &format!(".{key}"),
                format!("only `kind: {kind}` grants take `{key}`"),
            ));
        }
    }
    Ok(())
}

fn token(raw: &RawGrant) -> Result<GrantKind, FieldError> {
    let audience = raw.audience.clone().filter(|a| !a.trim().is_empty()).ok_or_else(|| {
        field(
            ".audience",
            "missing: the `aud` of issued tokens (the service that accepts them)",
        )
    })?;
    let copy_claims = raw.copy_claims.clone().unwrap_or_default();
    if let Some((i, reserved)) = copy_claims
        .iter()
        .enumerate()
        .find(|(_, c)| RESERVED_CLAIMS.contains(&c.as_str()))
    {
        return Err(field(
            &format!(".copy_claims[{i}]"),
            format!("`{reserved}` is set by stint and cannot be copied"),
        ));
    }
    Ok(GrantKind::Token(TokenGrant { audience, copy_claims }))
}

fn template(at: &str, text: &str) -> Result<Template, FieldError> {
    Template::parse(text).map_err(|m| field(at, m))
}

fn aws(raw: &RawGrant, ttl: Duration, max_ttl: Duration) -> Result<GrantKind, FieldError> {
    let role_arn = raw
        .role_arn
        .clone()
        .ok_or_else(|| field(".role_arn", "missing: the IAM role to assume"))?;
    let account = limits::role_account(&role_arn).map_err(|m| field(".role_arn", m))?;
    let role_chaining = raw.role_chaining.unwrap_or(false);
    if ttl < limits::MIN_SESSION {
        return Err(field(".ttl", "AWS sessions last at least 15m"));
    }
    let cap = if role_chaining {
        limits::MAX_CHAINED_SESSION
    } else {
        limits::MAX_SESSION
    };
    if max_ttl > cap {
        let why = if role_chaining {
            "with role_chaining AWS caps sessions at 1h"
        } else {
            "AWS sessions last at most 12h"
        };
        return Err(field(".max_ttl", why));
    }

    let session_policy = match &raw.session_policy {
        None => None,
        // A JSON document written as a string, or the policy as YAML.
        Some(Value::String(text)) => Some(
            serde_json::from_str::<Value>(text)
                .map_err(|e| field(".session_policy", format!("not valid JSON: {e}")))?,
        ),
        Some(value) => Some(value.clone()),
    };
    if let Some(policy) = &session_policy {
        check_policy_templates(policy, ".session_policy")?;
        limits::pack_policy(policy).map_err(|m| field(".session_policy", m))?;
    }

    let policy_arns = raw.policy_arns.clone().unwrap_or_default();
    if policy_arns.len() > limits::MAX_POLICY_ARNS {
        return Err(field(
            ".policy_arns",
            format!("at most {} managed policies", limits::MAX_POLICY_ARNS),
        ));
    }
    for (i, arn) in policy_arns.iter().enumerate() {
        limits::check_policy_arn(arn).map_err(|m| field(&format!(".policy_arns[{i}]"), m))?;
    }

    let mut session_tags = Vec::new();
    for (key, value) in raw.session_tags.as_ref().map(|m| m.0.clone()).unwrap_or_default() {
        let at = format!(".session_tags.{key}");
        limits::check_tag_key(&key).map_err(|m| field(&at, m))?;
        if key.eq_ignore_ascii_case(limits::ISSUANCE_TAG) {
            return Err(field(&at, format!("`{}` is set by stint", limits::ISSUANCE_TAG)));
        }
        if session_tags
            .iter()
            .any(|(k, _): &(String, Template)| k.eq_ignore_ascii_case(&key))
        {
            return Err(field(
                &at,
                "AWS tag keys are case-insensitive; another key differs only in case",
            ));
        }
        let parsed = template(&at, &value)?;
        if parsed.is_literal() {
            limits::check_tag_value(&value).map_err(|m| field(&at, format!("`{value}` {m}")))?;
        }
        session_tags.push((key, parsed));
    }
    // One tag is stint's own issuance id.
    if session_tags.len() + 1 > limits::MAX_SESSION_TAGS {
        return Err(field(
            ".session_tags",
            format!("at most {} tags (stint adds one)", limits::MAX_SESSION_TAGS - 1),
        ));
    }
    let transitive_tag_keys = raw.transitive_tag_keys.clone().unwrap_or_default();
    for (i, key) in transitive_tag_keys.iter().enumerate() {
        if !session_tags.iter().any(|(k, _)| k == key) && key != limits::ISSUANCE_TAG {
            return Err(field(
                &format!(".transitive_tag_keys[{i}]"),
                format!("`{key}` is not a key of session_tags"),
            ));
        }
    }
    if let Some(id) = &raw.external_id {
        limits::check_external_id(id).map_err(|m| field(".external_id", m))?;
    }
    let session_name = match &raw.session_name {
        None => None,
        Some(text) => Some(template(".session_name", text)?),
    };
    let min_remaining = match &raw.min_remaining {
        Some(text) => duration_at(".min_remaining", text)?,
        None => Duration::from_secs(300).min(ttl),
    };
    if min_remaining < Duration::from_secs(60) || min_remaining > ttl {
        return Err(field(".min_remaining", "must be between 1m and the grant's ttl"));
    }
    Ok(GrantKind::Aws(AwsGrant {
        min_remaining,
        role_arn,
        account,
        role_chaining,
        session_policy,
        policy_arns,
        session_tags,
        transitive_tag_keys,
        external_id: raw.external_id.clone(),
        session_name,
    }))
}

/// Every string in a session policy must be a valid template.
fn check_policy_templates(value: &Value, at: &str) -> Result<(), FieldError> {
    match value {
        Value::String(text) => template(at, text).map(|_| ()),
        Value::Array(items) => items.iter().try_for_each(|v| check_policy_templates(v, at)),
        Value::Object(map) => map.values().try_for_each(|v| check_policy_templates(v, at)),
        _ => Ok(()),
    }
}

fn secrets(raw: &RawGrant) -> Result<GrantKind, FieldError> {
    let names = raw.secrets.clone().unwrap_or_default();
    if names.is_empty() {
        return Err(field(
            ".secrets",
            "list at least one secret name or ARN (optionally NAME#json_key)",
        ));
    }
    let mut secrets = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let at = format!(".secrets[{i}]");
        let (secret_id, json_key) = match name.rsplit_once('#') {
            Some((id, key)) if !id.is_empty() && !key.is_empty() => (id.to_string(), Some(key.to_string())),
            Some(_) => return Err(field(&at, format!("`{name}`: write NAME or NAME#json_key"))),
            None => (name.clone(), None),
        };
        let id_ok = secret_id.len() <= 2048
            && secret_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-:".contains(c));
        if !id_ok {
            return Err(field(&at, format!("`{secret_id}` is not a secret name or ARN")));
        }
        if !seen.insert(name.clone()) {
            return Err(field(&at, format!("`{name}` is listed twice")));
        }
        secrets.push(SecretRef {
            name: name.clone(),
            secret_id,
            json_key,
        });
    }
    let version_stage = raw.version_stage.clone().unwrap_or_else(|| "AWSCURRENT".to_string());
    if version_stage.is_empty() || version_stage.len() > 256 {
        return Err(field(".version_stage", "must be 1-256 characters, e.g. AWSCURRENT"));
    }
    let cache_ttl = match &raw.cache_ttl {
        Some(text) => duration_at(".cache_ttl", text)?,
        None => Duration::from_secs(60),
    };
    if cache_ttl > Duration::from_secs(3600) {
        return Err(field(
            ".cache_ttl",
            "at most 1h: a rotated secret must reach callers soon",
        ));
    }
    Ok(GrantKind::Secrets(SecretsGrant {
        secrets,
        version_stage,
        cache_ttl,
    }))
}

fn rules(raw: RawGrant, issuers: &BTreeSet<&str>) -> Result<Vec<Rule>, FieldError> {
    if raw.allow.is_empty() {
        return Err(field(
            ".allow",
            "no rule: add at least one `{issuer, claims}` rule, or nobody can have this grant",
        ));
    }
    compile_rules(raw.allow, ".allow", issuers)
}

/// Compiles `{issuer, claims}` rules; `prefix` is their key path.
pub(super) fn compile_rules(
    raw: Vec<RawRule>,
    prefix: &str,
    issuers: &BTreeSet<&str>,
) -> Result<Vec<Rule>, FieldError> {
    let mut rules = Vec::new();
    for (i, rule) in raw.into_iter().enumerate() {
        let at = format!("{prefix}[{i}]");
        if !issuers.contains(rule.issuer.as_str()) {
            return Err(field(
                &format!("{at}.issuer"),
                format!("`{}` is not an issuer in `issuers`", rule.issuer),
            ));
        }
        if rule.claims.0.is_empty() {
            return Err(field(
                &format!("{at}.claims"),
                "no claim matcher: a rule must bind at least one claim, or every token of the issuer would match",
            ));
        }
        let mut claims = Vec::new();
        for (claim, spec) in rule.claims.0 {
            let matcher = Matcher::compile(&spec).map_err(|m| field(&format!("{at}.claims.{claim}"), m))?;
            claims.push((claim, matcher));
        }
        rules.push(Rule {
            issuer: rule.issuer,
            claims,
        });
    }
    Ok(rules)
}

/// Placeholders of creation and revocation statements.
const SQL_PLACEHOLDERS: &[&str] = &["{{name}}", "{{password}}", "{{expiration}}", "{{database}}"];

/// `{{...}}` placeholders in `sql` that stint does not fill in.
fn unknown_placeholder(sql: &str) -> Option<String> {
    let mut rest = sql;
    while let Some(start) = rest.find("{{") {
        let tail = rest.get(start..).unwrap_or_default();
        let end = tail.find("}}").map_or(tail.len(), |e| e + 2);
        let placeholder = tail.get(..end).unwrap_or(tail);
        if !SQL_PLACEHOLDERS.contains(&placeholder) {
            return Some(placeholder.to_string());
        }
        rest = tail.get(end..).unwrap_or_default();
    }
    None
}

fn postgres(raw: &RawGrant, databases: &BTreeSet<&str>) -> Result<GrantKind, FieldError> {
    let database = raw
        .database
        .clone()
        .ok_or_else(|| field(".database", "missing: the name of a target under `databases:`"))?;
    if !databases.contains(database.as_str()) {
        let known: Vec<&str> = databases.iter().copied().collect();
        return Err(field(
            ".database",
            format!(
                "`{database}` is not under `databases:` (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let creation_statements = raw.creation_statements.clone().ok_or_else(|| {
        field(
            ".creation_statements",
            "missing: SQL that creates the role, e.g. CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        )
    })?;
    for needed in ["{{name}}", "{{password}}"] {
        if !creation_statements.contains(needed) {
            return Err(field(".creation_statements", format!("must use {needed}")));
        }
    }
    for (key, sql) in [
        (".creation_statements", Some(&creation_statements)),
        (".revocation_statements", raw.revocation_statements.as_ref()),
    ] {
        if let Some(bad) = sql.and_then(|s| unknown_placeholder(s)) {
            return Err(field(
                key,
                format!(
                    "{bad} is not a placeholder: use {} (claims never go into SQL; put them in username_template)",
                    SQL_PLACEHOLDERS.join(", ")
                ),
            ));
        }
    }
    if let Some(revoke) = &raw.revocation_statements
        && !revoke.contains("{{name}}")
    {
        return Err(field(".revocation_statements", "must use {{name}}"));
    }
    let username_template = raw
        .username_template
        .clone()
        .unwrap_or_else(|| crate::leases::DEFAULT_USERNAME_TEMPLATE.to_string());
    crate::leases::check_username_template(&username_template).map_err(|m| field(".username_template", m))?;
    Ok(GrantKind::Postgres(PostgresGrant {
        database,
        username_template,
        creation_statements,
        revocation_statements: raw.revocation_statements.clone(),
    }))
}
