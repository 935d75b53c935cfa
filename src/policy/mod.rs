//! Step 3 of the flow: may this token have this grant? Pure data in, a
//! [`Decision`] out: no I/O, no async, no clock.

mod explain;
pub mod github;
mod kinds;
mod matcher;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use explain::{ClaimCheck, Explanation, RuleCheck};
pub use kinds::{AwsGrant, GithubGrant, GrantKind, PostgresGrant, SecretRef, SecretsGrant, TokenGrant};
pub use matcher::{Matcher, MatcherSpec, glob_to_regex};

use crate::identity::VerifiedToken;

/// How much harm a leaked credential of a grant could do, as declared in
/// config. `stint policy lint` holds each level to its own thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Criticality {
    /// Read-only or sandbox access.
    Low,
    /// Ordinary non-production access.
    Medium,
    /// Production access.
    High,
    /// Production access whose misuse is hard to undo (data, keys, money).
    Critical,
}

impl Criticality {
    /// Every level, lowest first.
    pub const ALL: [Criticality; 4] = [
        Criticality::Low,
        Criticality::Medium,
        Criticality::High,
        Criticality::Critical,
    ];

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }

    /// Parses the config spelling.
    pub fn parse(text: &str) -> Option<Criticality> {
        Criticality::ALL.into_iter().find(|c| c.name() == text)
    }

    /// High or critical: what lint treats as production.
    pub fn is_production(self) -> bool {
        self >= Criticality::High
    }
}

/// A grant as configured: what it issues and who may have it.
#[derive(Debug, Clone)]
pub struct GrantSpec {
    /// The name callers use in `/v1/issue/{grant}`.
    pub name: String,
    /// Free text shown by `GET /v1/grants`.
    pub description: Option<String>,
    /// Lifetime when the request names none.
    pub ttl: Duration,
    /// Longest lifetime a request may ask for.
    pub max_ttl: Duration,
    /// What is issued.
    pub kind: GrantKind,
    /// Each caller token may be used for this grant once (its `jti` is kept until it expires).
    pub single_use_token: bool,
    /// Declared criticality; `None` when the config does not say.
    pub criticality: Option<Criticality>,
    /// Alternatives: the first rule whose matchers all hold allows.
    pub rules: Vec<Rule>,
}

/// One alternative of a grant: an issuer and claim matchers that must all hold.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Config name of the issuer.
    pub issuer: String,
    /// Claim name → matcher; every one must match.
    pub claims: Vec<(String, Matcher)>,
}

/// All grants, validated at start-up.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    grants: BTreeMap<String, GrantSpec>,
    auditors: Vec<Rule>,
}

/// Proof that policy allowed `token` this grant. Only [`Policy::evaluate`]
/// builds one, and providers take `&Grant`, so nothing is issued unchecked.
#[derive(Debug)]
pub struct Grant<'a> {
    spec: &'a GrantSpec,
    token: &'a VerifiedToken,
    rule: usize,
}

impl<'a> Grant<'a> {
    /// The grant's configuration.
    pub fn spec(&self) -> &'a GrantSpec {
        self.spec
    }
    /// The verified caller.
    pub fn token(&self) -> &'a VerifiedToken {
        self.token
    }
    /// Index of the rule that allowed, for audit.
    pub fn rule_index(&self) -> usize {
        self.rule
    }
}

/// The outcome of a policy check.
#[derive(Debug)]
pub enum Decision<'a> {
    /// A rule matched.
    Allow(Grant<'a>),
    /// No rule matched, or there is no such grant.
    Deny(Denial),
}

/// Why policy said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The grant name as requested.
    pub grant: String,
    /// The issuer name of the caller.
    pub issuer: String,
    /// What went wrong, for audit; the client sees [`Denial::detail`].
    pub reason: DenyReason,
}

/// The true reason of a denial (kept in the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// No grant has this name.
    UnknownGrant,
    /// The grant has no rule for the caller's issuer.
    IssuerNotBound,
    /// Rules for the issuer exist; these claims did not match.
    ClaimsMismatch(Vec<String>),
}

impl Denial {
    /// Stable reason code for audit records and metrics.
    pub fn code(&self) -> &'static str {
        match self.reason {
            DenyReason::UnknownGrant => "unknown_grant",
            DenyReason::IssuerNotBound => "issuer_not_bound",
            DenyReason::ClaimsMismatch(_) => "claims_mismatch",
        }
    }

    /// What the caller is told. An unknown grant reads exactly like a grant
    /// with no rule for the caller's issuer, so grant names cannot be probed;
    /// claim names are given, expected values never are.
    pub fn detail(&self) -> String {
        match &self.reason {
            DenyReason::UnknownGrant | DenyReason::IssuerNotBound => format!(
                "grant `{}` is not available to tokens from issuer `{}`",
                self.grant, self.issuer
            ),
            DenyReason::ClaimsMismatch(names) => format!(
                "grant `{}` denied: these claims did not match: {}",
                self.grant,
                names.join(", ")
            ),
        }
    }
}

impl Policy {
    /// Builds a policy from validated grants (config does the validation).
    pub fn new(grants: Vec<GrantSpec>) -> Policy {
        Policy {
            grants: grants.into_iter().map(|g| (g.name.clone(), g)).collect(),
            auditors: Vec::new(),
        }
    }

    /// Adds the rules that admit readers of the audit log.
    pub fn with_auditors(mut self, auditors: Vec<Rule>) -> Policy {
        self.auditors = auditors;
        self
    }

    /// Whether `token` may read the audit log (`GET /v1/audit`).
    pub fn is_auditor(&self, token: &VerifiedToken) -> bool {
        self.auditors.iter().any(|rule| {
            rule.issuer == token.issuer()
                && rule
                    .claims
                    .iter()
                    .all(|(claim, matcher)| matcher.matches(token.claims().get(claim).as_ref()))
        })
    }

    /// The rules that admit readers of the audit log.
    pub fn auditors(&self) -> &[Rule] {
        &self.auditors
    }

    /// A grant's configuration by name.
    pub fn grant(&self, name: &str) -> Option<&GrantSpec> {
        self.grants.get(name)
    }

    /// Every grant, by name.
    pub fn grants(&self) -> impl Iterator<Item = &GrantSpec> {
        self.grants.values()
    }

    /// Decides whether `token` may have grant `name`.
    pub fn evaluate<'a>(&'a self, name: &str, token: &'a VerifiedToken) -> Decision<'a> {
        let deny = |reason| {
            Decision::Deny(Denial {
                grant: name.to_string(),
                issuer: token.issuer().to_string(),
                reason,
            })
        };
        let Some(spec) = self.grants.get(name) else {
            return deny(DenyReason::UnknownGrant);
        };
        let mut unmatched = BTreeSet::new();
        let mut any_rule_for_issuer = false;
        for (index, rule) in spec.rules.iter().enumerate() {
            if rule.issuer != token.issuer() {
                continue;
            }
            any_rule_for_issuer = true;
            let failed: Vec<&String> = rule
                .claims
                .iter()
                .filter(|(claim, matcher)| !matcher.matches(token.claims().get(claim).as_ref()))
                .map(|(claim, _)| claim)
                .collect();
            if failed.is_empty() {
                return Decision::Allow(Grant {
                    spec,
                    token,
                    rule: index,
                });
            }
            unmatched.extend(failed.into_iter().cloned());
        }
        if any_rule_for_issuer {
            deny(DenyReason::ClaimsMismatch(unmatched.into_iter().collect()))
        } else {
            deny(DenyReason::IssuerNotBound)
        }
    }

    /// The grants `token` could be issued now.
    pub fn grants_for<'a>(&'a self, token: &'a VerifiedToken) -> Vec<&'a GrantSpec> {
        self.grants
            .values()
            .filter(|g| matches!(self.evaluate(&g.name, token), Decision::Allow(_)))
            .collect()
    }

    /// Claim names an audit record of grant `name` should keep: the
    /// platform's usual ones plus every claim the grant's rules look at.
    pub fn audit_claims(&self, name: &str, token: &VerifiedToken) -> Vec<String> {
        let mut names: BTreeSet<String> = token.platform().audit_claims().iter().map(|s| s.to_string()).collect();
        if let Some(spec) = self.grants.get(name) {
            for rule in spec.rules.iter().filter(|r| r.issuer == token.issuer()) {
                names.extend(rule.claims.iter().map(|(claim, _)| claim.clone()));
            }
        }
        names.into_iter().collect()
    }
}
