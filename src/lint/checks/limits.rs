//! Thresholds of a grant's criticality (S012, S013, S014), a missing
//! criticality (S019), and a GitHub token's reach beyond its repositories
//! (S022).

use super::Findings;
use crate::duration;
use crate::lint::{Severity, Thresholds};
use crate::policy::{Criticality, GrantKind, GrantSpec};

pub(super) fn grant_checks(out: &mut Findings, grant: &GrantSpec, level: Criticality, limits: &Thresholds) {
    let name = &grant.name;
    let Some(declared) = grant.criticality else {
        out.push(
            "S019",
            Severity::Info,
            Some(grant),
            None,
            format!("grants.{name}"),
            format!("grant `{name}` declares no criticality; the `medium` thresholds were applied"),
            "add `criticality: low | medium | high | critical`",
        );
        return grant_limits(out, grant, Criticality::Medium, limits);
    };
    debug_assert_eq!(declared, level);
    grant_limits(out, grant, level, limits);
}

fn grant_limits(out: &mut Findings, grant: &GrantSpec, level: Criticality, limits: &Thresholds) {
    let name = &grant.name;
    // Without max_ttl written, max_ttl is ttl: name the key that is written.
    let longest = if grant.max_ttl == grant.ttl { "ttl" } else { "max_ttl" };
    if grant.max_ttl > limits.max_ttl {
        out.push(
            "S012",
            Severity::Error,
            Some(grant),
            None,
            format!("grants.{name}.{longest}"),
            format!(
                "{longest} {} is above {} allowed for criticality `{}`",
                duration::format(grant.max_ttl),
                duration::format(limits.max_ttl),
                level.name()
            ),
            "shorten it, or raise lint.thresholds for this criticality if that is policy",
        );
    }
    if let GrantKind::Secrets(secrets) = &grant.kind
        && secrets.cache_ttl > limits.cache_ttl
    {
        out.push(
            "S013",
            Severity::Warning,
            Some(grant),
            None,
            format!("grants.{name}.cache_ttl"),
            format!(
                "cache_ttl {} is above {} for criticality `{}`: a rotated secret is served that long",
                duration::format(secrets.cache_ttl),
                duration::format(limits.cache_ttl),
                level.name()
            ),
            "shorten cache_ttl",
        );
    }
    if let GrantKind::Github(github) = &grant.kind {
        for permission in github
            .permissions
            .keys()
            .filter(|p| crate::policy::github::is_organization_level(p))
        {
            // Allowed on purpose (config refuses it otherwise), but a token
            // that can change members, teams or settings of a production
            // organization is a finding that must be accepted in writing.
            let severity = if level.is_production() {
                Severity::Error
            } else {
                Severity::Warning
            };
            out.push(
                "S022",
                severity,
                Some(grant),
                None,
                format!("grants.{name}.permissions.{permission}"),
                format!(
                    "`{permission}` reaches beyond the grant's repositories (criticality `{}`): a leaked token could change the organization or account itself",
                    level.name()
                ),
                "drop it, or move it to a grant of its own with the narrowest rule; accept it with lint.ignore and a reason if it is needed",
            );
        }
    }
    if limits.single_use_token && !grant.single_use_token {
        out.push(
            "S014",
            Severity::Warning,
            Some(grant),
            None,
            format!("grants.{name}"),
            format!(
                "criticality `{}` requires single_use_token: a stolen caller token can be replayed until it expires",
                level.name()
            ),
            "add `single_use_token: true`",
        );
    }
}
