//! Patterns on their own, whatever the platform: regexes that match any
//! text (S011), and rules that repeat another (S018).

use super::probe::{PROBE, accepts};
use super::{Findings, RuleAt};
use crate::lint::Severity;
use crate::policy::{GrantSpec, Matcher, Rule};

pub(super) fn broad_regex(out: &mut Findings, at: &RuleAt<'_>, claim: &str, matcher: &Matcher) {
    let Matcher::Regex(pattern, _) = matcher else { return };
    let everything = accepts(matcher, "") && accepts(matcher, PROBE) && accepts(matcher, "a/b:c");
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
