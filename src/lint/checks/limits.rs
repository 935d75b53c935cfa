//! Thresholds of a grant's criticality (S012, S013, S014) and a missing
//! criticality (S019).

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
