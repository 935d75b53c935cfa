//! Why policy decided what it did, rule by rule and claim by claim. For
//! operators and for policy tests: a caller's 403 never carries this (it
//! would show the expected values).

use std::fmt::Write as _;

use crate::identity::{ClaimValue, Claims};

use super::{DenyReason, Policy};

/// One claim of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCheck {
    /// Claim name.
    pub claim: String,
    /// The matcher, as written (`glob "acme/*"`).
    pub expected: String,
    /// The caller's value, as JSON text; `None` when the claim is absent.
    pub actual: Option<String>,
    /// Whether it matched.
    pub matched: bool,
}

/// One rule of the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCheck {
    /// Index in `allow`.
    pub index: usize,
    /// The rule's issuer.
    pub issuer: String,
    /// Whether the caller's issuer is the rule's.
    pub issuer_matched: bool,
    /// Each claim (empty when the issuer differs: claims are not looked at).
    pub claims: Vec<ClaimCheck>,
}

impl RuleCheck {
    /// Whether this rule allows.
    pub fn allows(&self) -> bool {
        self.issuer_matched && self.claims.iter().all(|c| c.matched)
    }
}

/// The whole explanation of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The grant asked for.
    pub grant: String,
    /// The caller's issuer (config name).
    pub issuer: String,
    /// Whether such a grant exists.
    pub grant_exists: bool,
    /// Every rule, in order.
    pub rules: Vec<RuleCheck>,
    /// The first rule that allows: the one the broker uses.
    pub allowed_by: Option<usize>,
    /// `allowed`, or the denial's reason code.
    pub outcome: &'static str,
}

impl Explanation {
    /// Readable, one line per claim.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "grant `{}` for a token of issuer `{}`", self.grant, self.issuer);
        if !self.grant_exists {
            let _ = writeln!(out, "  no grant is called `{}`", self.grant);
        }
        for rule in &self.rules {
            let verdict = if rule.allows() { "allows" } else { "does not match" };
            let _ = writeln!(out, "  rule {} (issuer {}): {verdict}", rule.index, rule.issuer);
            if !rule.issuer_matched {
                let _ = writeln!(out, "    ✗ issuer: the token is from `{}`", self.issuer);
                continue;
            }
            for c in &rule.claims {
                let mark = if c.matched { '✓' } else { '✗' };
                let actual = c.actual.as_deref().unwrap_or("(absent)");
                let _ = writeln!(out, "    {mark} {}: expected {}, got {actual}", c.claim, c.expected);
            }
        }
        let _ = match self.allowed_by {
            Some(index) => writeln!(out, "decision: allowed by rule {index}"),
            None => writeln!(out, "decision: denied ({})", self.outcome),
        };
        out
    }
}

fn shown(value: &ClaimValue) -> String {
    match value {
        ClaimValue::Text(t) => serde_json::to_string(t).unwrap_or_default(),
        ClaimValue::List(items) => serde_json::to_string(items).unwrap_or_default(),
    }
}

impl Policy {
    /// Explains the decision on grant `name` for a caller of `issuer` with
    /// `claims`; the same decision [`Policy::evaluate`] makes.
    pub fn explain(&self, name: &str, issuer: &str, claims: &Claims) -> Explanation {
        let Some(spec) = self.grants.get(name) else {
            return Explanation {
                grant: name.to_string(),
                issuer: issuer.to_string(),
                grant_exists: false,
                rules: Vec::new(),
                allowed_by: None,
                outcome: "unknown_grant",
            };
        };
        let rules: Vec<RuleCheck> = spec
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let issuer_matched = rule.issuer == issuer;
                let claims = if issuer_matched {
                    rule.claims
                        .iter()
                        .map(|(claim, matcher)| {
                            let value = claims.get(claim);
                            ClaimCheck {
                                claim: claim.clone(),
                                expected: matcher.to_string(),
                                actual: value.as_ref().map(shown),
                                matched: matcher.matches(value.as_ref()),
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                RuleCheck {
                    index,
                    issuer: rule.issuer.clone(),
                    issuer_matched,
                    claims,
                }
            })
            .collect();
        let allowed_by = rules.iter().find(|r| r.allows()).map(|r| r.index);
        let outcome = match (allowed_by, rules.iter().any(|r| r.issuer_matched)) {
            (Some(_), _) => "allowed",
            (None, true) => denial_code(&DenyReason::ClaimsMismatch(Vec::new())),
            (None, false) => denial_code(&DenyReason::IssuerNotBound),
        };
        Explanation {
            grant: name.to_string(),
            issuer: issuer.to_string(),
            grant_exists: true,
            rules,
            allowed_by,
            outcome,
        }
    }
}

fn denial_code(reason: &DenyReason) -> &'static str {
    match reason {
        DenyReason::UnknownGrant => "unknown_grant",
        DenyReason::IssuerNotBound => "issuer_not_bound",
        DenyReason::ClaimsMismatch(_) => "claims_mismatch",
    }
}
