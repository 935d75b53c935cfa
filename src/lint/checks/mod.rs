//! The checks, one file per family. Matchers are probed with values a rule
//! should refuse (another repository, a pull request's `sub`, another
//! namespace): what a pattern accepts is what counts, however it is spelled.

mod buildkite;
mod circleci;
mod claim_model;
mod github;
mod gitlab;
mod issuers;
mod kubernetes;
mod limits;
mod patterns;
mod probe;

use super::known_claims::is_known;
use super::{Finding, Severity, find_check};
use crate::config::{Config, Locations};
use crate::identity::{IssuerConfig, Platform};
use crate::policy::{Criticality, GrantKind, GrantSpec, Matcher, Rule};
use claim_model::{ClaimModel, claim_model};
use probe::{accepts, is_finite};

/// Runs every check on `config`; `locations` tells which keys are written.
pub(in crate::lint) fn run(config: &Config, locations: &Locations) -> Vec<Finding> {
    let mut out = Findings::default();
    let models: Vec<(&IssuerConfig, ClaimModel)> = config
        .issuers
        .iter()
        .map(|issuer| {
            let key = format!("issuers.{}", issuer.name);
            // `find` falls back to the nearest written parent key.
            let written = locations.find(&format!("{key}.platform")) != locations.find(&key);
            let rules = config
                .policy
                .grants()
                .flat_map(|g| g.rules.iter())
                .chain(config.policy.auditors())
                .filter(|r| r.issuer == issuer.name);
            (issuer, claim_model(issuer, written, rules))
        })
        .collect();
    for (issuer, model) in &models {
        claim_model::platform_not_set(&mut out, issuer, model);
    }
    for grant in config.policy.grants() {
        let level = grant.criticality.unwrap_or(Criticality::Medium);
        let limits = config.lint.thresholds(level);
        limits::grant_checks(&mut out, grant, level, &limits);
        let mut reachable = 0;
        for (index, rule) in grant.rules.iter().enumerate() {
            let Some((issuer, model)) = models.iter().find(|(i, _)| i.name == rule.issuer) else {
                continue;
            };
            let at = RuleAt {
                grant,
                index,
                rule,
                issuer,
                platform: model.platform(),
                level,
            };
            if rule_checks(&mut out, &at) {
                reachable += 1;
            }
        }
        patterns::duplicate_rules(&mut out, grant);
        if reachable == 0 && !grant.rules.is_empty() {
            out.push(
                "S017",
                Severity::Error,
                Some(grant),
                None,
                format!("grants.{}.allow", grant.name),
                format!(
                    "no rule of grant `{}` can ever match: each names a claim its issuer never sends",
                    grant.name
                ),
                "fix the claim names (see the S016 findings) or remove the grant",
            );
        }
    }
    issuers::issuer_checks(&mut out, config);
    out.0
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        id: &str,
        severity: Severity,
        grant: Option<&GrantSpec>,
        rule: Option<usize>,
        path: String,
        message: String,
        fix: &str,
    ) {
        let Some(check) = find_check(id) else {
            return; // ids are constants of this file
        };
        self.0.push(Finding {
            check,
            severity,
            grant: grant.map(|g| g.name.clone()),
            rule,
            path,
            location: None,
            message,
            fix: fix.to_string(),
        });
    }
}

/// Where a check is run: one rule of one grant.
struct RuleAt<'a> {
    grant: &'a GrantSpec,
    index: usize,
    rule: &'a Rule,
    issuer: &'a IssuerConfig,
    /// The claim model the rule is checked against: the issuer's, or the
    /// one its rules show when the config does not say (S021).
    platform: Platform,
    level: Criticality,
}

impl RuleAt<'_> {
    /// The severity of a finding that someone outside the intended
    /// workload (another repository, tenant or namespace; a pull request)
    /// can meet the rule. An error where that someone walks away with cloud
    /// or database credentials, or the grant is production; a warning for
    /// a low-stakes token, where the pattern may be the intent.
    fn outsider_severity(&self) -> Severity {
        let credentials = matches!(
            self.grant.kind,
            GrantKind::Aws(_) | GrantKind::Secrets(_) | GrantKind::Postgres(_) | GrantKind::Github(_)
        );
        if credentials || self.level.is_production() {
            Severity::Error
        } else {
            Severity::Warning
        }
    }
    /// What the stakes are, for messages: why an outsider finding is an error.
    fn stakes(&self) -> String {
        if self.level.is_production() {
            format!("criticality `{}`", self.level.name())
        } else {
            format!("kind `{}`", self.grant.kind.name())
        }
    }
    fn path(&self) -> String {
        format!("grants.{}.allow[{}]", self.grant.name, self.index)
    }
    fn claim_path(&self, claim: &str) -> String {
        format!("{}.claims.{claim}", self.path())
    }
    fn matcher(&self, claim: &str) -> Option<&Matcher> {
        self.rule.claims.iter().find(|(c, _)| c == claim).map(|(_, m)| m)
    }
    fn accepts(&self, claim: &str, value: &str) -> bool {
        self.matcher(claim).is_none_or(|m| accepts(m, value))
    }
    fn pins(&self, claim: &str) -> bool {
        self.matcher(claim).is_some_and(is_finite)
    }
    fn name(&self) -> String {
        format!("rule {} of grant `{}`", self.index, self.grant.name)
    }
}

/// Runs the rule's checks; false when the rule can never match.
fn rule_checks(out: &mut Findings, at: &RuleAt<'_>) -> bool {
    let platform = at.issuer.platform;
    let mut reachable = true;
    for (claim, _) in &at.rule.claims {
        if !is_known(platform, claim) {
            reachable = false;
            out.push(
                "S016",
                Severity::Error,
                Some(at.grant),
                Some(at.index),
                at.claim_path(claim),
                format!(
                    "{} names claim `{claim}`, which {} tokens never carry: the rule can never match",
                    at.name(),
                    platform.name()
                ),
                "check the spelling against the platform's token (docs/configuration.md lists the claims)",
            );
        }
    }
    if !reachable {
        return false; // the rule never allows anything: nothing else to say
    }
    let bound: Vec<&String> = at
        .rule
        .claims
        .iter()
        .map(|(c, _)| c)
        .filter(|c| !matches!(c.as_str(), "iss" | "aud" | "exp" | "iat" | "nbf" | "jti"))
        .collect();
    if bound.is_empty() {
        out.push(
            "S001",
            Severity::Error,
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!(
                "{} binds no claim: every token issuer `{}` signs for stint's audience gets it",
                at.name(),
                at.issuer.name
            ),
            "bind the claims that name the one workload, e.g. repository_id and ref for GitHub",
        );
        return true;
    }
    for (claim, matcher) in &at.rule.claims {
        patterns::broad_regex(out, at, claim, matcher);
    }
    let before = out.0.len();
    match at.platform {
        Platform::GitHubActions => github::github(out, at),
        Platform::GitLabCi => gitlab::gitlab(out, at),
        Platform::Buildkite => buildkite::buildkite(out, at),
        Platform::CircleCi => circleci::circleci(out, at),
        Platform::Kubernetes => kubernetes::kubernetes(out, at),
        Platform::Generic => {}
    }
    // Whatever the platform: unless its checks already named the hole.
    if !out
        .0
        .get(before..)
        .unwrap_or_default()
        .iter()
        .any(|f| f.severity == Severity::Error)
    {
        patterns::wildcard_patterns(out, at);
    }
    true
}
