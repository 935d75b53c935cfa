//! Patterns on their own, whatever the platform: regexes that match any
//! text (S011), rules that repeat another (S018), and patterns that are
//! wildcards wherever a workload is named (S020).

use super::probe::{PROBE, accepts, binds_nothing};
use super::{Findings, RuleAt};
use crate::lint::Severity;
use crate::policy::{GrantSpec, Matcher, Rule};

pub(super) fn broad_regex(out: &mut Findings, at: &RuleAt<'_>, claim: &str, matcher: &Matcher) {
    let Matcher::Regex(pattern, _) = matcher else { return };
    let everything = matches_everything(matcher);
    if everything || pattern.contains(".*") || pattern.contains(".+") {
        let severity = if everything { Severity::Error } else { Severity::Warning };
        out.push(
            "S011",
            severity,
            Some(at.grant),
            Some(at.index),
            at.claim_path(claim),
            format!(
                "regex `{}` on `{claim}` matches any text{} (including `/` and `:`)",
                pattern,
                if everything { "" } else { " at its wildcard" }
            ),
            "use an exact value, one_of, or a glob (a glob's * never crosses / or :)",
        );
    }
}

pub(super) fn duplicate_rules(out: &mut Findings, grant: &GrantSpec) {
    let shape = |rule: &Rule| -> Vec<String> { rule.claims.iter().map(|(c, m)| format!("{c}={m}")).collect() };
    for (j, later) in grant.rules.iter().enumerate() {
        let later_shape = shape(later);
        for (i, earlier) in grant.rules.iter().enumerate().take(j) {
            if earlier.issuer != later.issuer {
                continue;
            }
            let earlier_shape = shape(earlier);
            if earlier_shape.iter().all(|c| later_shape.contains(c)) {
                let how = if earlier_shape.len() == later_shape.len() {
                    "repeats"
                } else {
                    "is covered by"
                };
                out.push(
                    "S018",
                    Severity::Warning,
                    Some(grant),
                    Some(j),
                    format!("grants.{}.allow[{j}]", grant.name),
                    format!(
                        "rule {j} of grant `{}` {how} rule {i}: it never changes a decision",
                        grant.name
                    ),
                    "remove it, or make the earlier rule narrower",
                );
                break;
            }
        }
    }
}

/// S020: patterns whose every variable part is a wildcard
/// (`sub: { glob: "system:serviceaccount:*:*" }`). They look like a binding
/// and bind nothing, whatever the platform, so they are checked on every
/// issuer, `generic` ones included. A rule that binds nothing else admits
/// every workload of the issuer, as S001 does: an error.
pub(super) fn wildcard_patterns(out: &mut Findings, at: &RuleAt<'_>) {
    let identity = |claim: &str| !matches!(claim, "iss" | "aud" | "exp" | "iat" | "nbf" | "jti");
    let wild: Vec<&(String, Matcher)> = at
        .rule
        .claims
        .iter()
        .filter(|(c, m)| identity(c) && binds_nothing(m) && !matches_everything(m))
        .collect();
    if wild.is_empty() {
        return;
    }
    // `not:` refuses values, it never names one; an everything-regex is S011's.
    let bound_elsewhere = at
        .rule
        .claims
        .iter()
        .any(|(c, m)| identity(c) && !binds_nothing(m) && !matches!(m, Matcher::Not(_)) && !matches_everything(m));
    for (claim, matcher) in wild {
        let (severity, consequence) = if bound_elsewhere {
            (Severity::Warning, "it binds nothing".to_string())
        } else {
            (
                Severity::Error,
                format!(
                    "the rule binds nothing else, so every workload issuer `{}` signs tokens for gets grant `{}`",
                    at.issuer.name, at.grant.name
                ),
            )
        };
        out.push(
            "S020",
            severity,
            Some(at.grant),
            Some(at.index),
            at.claim_path(claim),
            format!(
                "{}: `{claim}` pattern `{}` is a wildcard in every part that names a workload: {consequence}",
                at.name(),
                super::probe::pattern_text(matcher)
            ),
            "write the parts that name the workload (namespace and service account, owner and repository, project)",
        );
    }
}

fn matches_everything(matcher: &Matcher) -> bool {
    matches!(matcher, Matcher::Regex(..))
        && accepts(matcher, "")
        && accepts(matcher, PROBE)
        && accepts(matcher, "a/b:c")
}
