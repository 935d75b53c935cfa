//! The checks. Matchers are probed with values a rule should refuse (another
//! repository, a pull request's `sub`, another namespace): what a pattern
//! accepts is what counts, however it is spelled.

use std::time::Duration;

use super::known_claims::is_known;
use super::{Finding, Severity, Thresholds, find_check};
use crate::config::Config;
use crate::duration;
use crate::identity::{ClaimValue, IssuerConfig, Platform};
use crate::policy::{Criticality, GrantKind, GrantSpec, Matcher, Rule};

/// A value no real repository, namespace or branch is called.
const PROBE: &str = "stint-lint-probe";
/// Callers' tokens living longer than this are flagged.
const LONG_TOKEN: Duration = Duration::from_secs(6 * 3600);

pub(super) fn run(config: &Config) -> Vec<Finding> {
    let mut out = Findings::default();
    for grant in config.policy.grants() {
        let level = grant.criticality.unwrap_or(Criticality::Medium);
        let limits = config.lint.thresholds(level);
        grant_checks(&mut out, grant, level, &limits);
        let mut reachable = 0;
        for (index, rule) in grant.rules.iter().enumerate() {
            let Some(issuer) = config.issuers.iter().find(|i| i.name == rule.issuer) else {
                continue;
            };
            let at = RuleAt {
                grant,
                index,
                rule,
                issuer,
                level,
            };
            if rule_checks(&mut out, &at) {
                reachable += 1;
            }
        }
        duplicate_rules(&mut out, grant);
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
    issuer_checks(&mut out, config);
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

/// Production grants get errors where others get warnings.
fn by_level(level: Criticality) -> Severity {
    if level.is_production() {
        Severity::Error
    } else {
        Severity::Warning
    }
}

fn grant_checks(out: &mut Findings, grant: &GrantSpec, level: Criticality, limits: &Thresholds) {
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

struct RuleAt<'a> {
    grant: &'a GrantSpec,
    index: usize,
    rule: &'a Rule,
    issuer: &'a IssuerConfig,
    level: Criticality,
}

impl RuleAt<'_> {
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

fn accepts(matcher: &Matcher, value: &str) -> bool {
    matcher.matches(Some(&ClaimValue::Text(value.to_string())))
}

/// Accepts a known, finite set of values.
fn is_finite(matcher: &Matcher) -> bool {
    matches!(matcher, Matcher::Exact(_) | Matcher::Bool(_) | Matcher::OneOf(_))
}

/// The literal text of a pattern before its first wildcard.
fn literal_prefix(matcher: &Matcher) -> String {
    match matcher {
        Matcher::Glob(g, _) => g.chars().take_while(|c| *c != '*' && *c != '?').collect(),
        Matcher::Regex(r, _) => r
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '/' | ':' | '_' | '@'))
            .collect(),
        Matcher::Exact(s) => s.clone(),
        _ => String::new(),
    }
}

/// The pattern as written (glob, regex or exact text).
fn pattern_text(matcher: &Matcher) -> String {
    match matcher {
        Matcher::Glob(text, _) | Matcher::Regex(text, _) | Matcher::Exact(text) => text.clone(),
        _ => String::new(),
    }
}

fn is_wild(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | '(' | '.' | '+' | '|' | '\\' | '^' | '$' | '{')
}

/// A GitHub `sub` shaped like `pattern` but for `repository`: the
/// `repo:OWNER/NAME` part replaced, wildcards after it filled in.
fn sub_probe(pattern: &str, repository: &str) -> String {
    match pattern.strip_prefix("repo:").and_then(|r| r.split_once(':')) {
        Some((_, rest)) => format!("repo:{repository}:{}", rest.replace(['*', '?'], "x")),
        None => format!("repo:{repository}:ref:refs/heads/main"),
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
        broad_regex(out, at, claim, matcher);
    }
    match platform {
        Platform::GitHubActions => github(out, at),
        Platform::GitLabCi => gitlab(out, at),
        Platform::Buildkite => buildkite(out, at),
        Platform::CircleCi => circleci(out, at),
        Platform::Kubernetes => kubernetes(out, at),
        Platform::Generic => {}
    }
    true
}

fn broad_regex(out: &mut Findings, at: &RuleAt<'_>, claim: &str, matcher: &Matcher) {
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

fn github(out: &mut Findings, at: &RuleAt<'_>) {
    let production = at.level.is_production();
    // The tenant: which repositories can satisfy the rule. Probed with
    // repositories of other owners, named like the pattern's own.
    let ids_pinned = at.pins("repository_id") || at.pins("repository_owner_id");
    let sub_text = at.matcher("sub").map(pattern_text).unwrap_or_default();
    let repo_text = at
        .matcher("repository")
        .map(pattern_text)
        .or_else(|| {
            sub_text
                .strip_prefix("repo:")
                .and_then(|r| r.split(':').next())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let (owner_pattern, name_pattern) = repo_text.split_once('/').unwrap_or((repo_text.as_str(), ""));
    let owner_literal: String = owner_pattern.chars().take_while(|c| !is_wild(*c)).collect();
    let owner_literal = if owner_literal.is_empty() {
        at.matcher("repository_owner").map(pattern_text).unwrap_or_default()
    } else {
        owner_literal
    };
    let name = if !name_pattern.is_empty() && !name_pattern.chars().any(is_wild) {
        name_pattern
    } else {
        PROBE
    };
    let reaches = |repository: &str| {
        let owner = repository.split('/').next().unwrap_or_default();
        at.accepts("repository", repository)
            && at.accepts("repository_owner", owner)
            && at.accepts("sub", &sub_probe(&sub_text, repository))
    };
    let foreign_owners = [PROBE.to_string(), format!("{owner_literal}-{PROBE}")];
    let any_owner = !ids_pinned
        && foreign_owners
            .iter()
            .filter(|o| **o != owner_literal)
            .any(|o| reaches(&format!("{o}/{name}")) || reaches(&format!("{o}/{PROBE}")));
    let owner_wide = !at.pins("repository_id")
        && !any_owner
        && !owner_literal.is_empty()
        && reaches(&format!("{owner_literal}/{PROBE}"));
    let owner_id_only = !at.pins("repository_id")
        && at.pins("repository_owner_id")
        && at.matcher("repository").is_none_or(|m| !is_finite(m))
        && at.matcher("sub").is_none_or(|m| !is_finite(m))
        && reaches(&format!("{PROBE}/{PROBE}"));
    if any_owner {
        out.push(
            "S008",
            Severity::Error,
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!(
                "{} does not pin an owner: repositories of other owners on {} can get it",
                at.name(),
                at.issuer.url
            ),
            "bind repository_owner_id and repository_id (or an exact repository) to yours",
        );
    } else if owner_wide || owner_id_only {
        let owner = if owner_literal.is_empty() {
            "the owner".to_string()
        } else {
            format!("`{owner_literal}`")
        };
        let path = ["repository", "sub", "repository_owner", "repository_owner_id"]
            .iter()
            .find(|c| at.matcher(c).is_some())
            .map_or_else(|| at.path(), |c| at.claim_path(c));
        out.push(
            "S002",
            by_level(at.level),
            Some(at.grant),
            Some(at.index),
            path,
            format!(
                "{} lets every repository of {owner} (including ones created later) get grant `{}`",
                at.name(),
                at.grant.name
            ),
            "list the repositories that need it (one_of) and bind repository_id",
        );
    }
    // The subject: pull requests and other branches.
    if let Some(sub) = at.matcher("sub")
        && !is_finite(sub)
    {
        let prefix = literal_prefix(sub);
        let repo_text = prefix
            .strip_prefix("repo:")
            .and_then(|r| r.split(':').next())
            .unwrap_or(PROBE)
            .to_string();
        let pr = accepts(sub, &format!("repo:{repo_text}:pull_request"));
        let branch = accepts(sub, &format!("repo:{repo_text}:ref:refs/heads/{PROBE}"));
        if pr || branch {
            let what = match (pr, branch) {
                (true, true) => "pull requests and every branch",
                (true, false) => "pull requests",
                _ => "every branch",
            };
            out.push(
                "S003",
                if pr { by_level(at.level) } else { Severity::Warning },
                Some(at.grant),
                Some(at.index),
                at.claim_path("sub"),
                format!("sub {sub} matches {what} of `{repo_text}`"),
                "match the exact subject, e.g. repo:OWNER/REPO:ref:refs/heads/main or :environment:NAME",
            );
        }
    }
    // Pull requests in production. Only a named environment counts: one a
    // workflow names for the first time exists without protection rules.
    let environment_bound = at.pins("environment")
        || match at.matcher("sub") {
            Some(Matcher::Exact(sub)) => sub.contains(":environment:"),
            Some(Matcher::OneOf(subs)) => subs.iter().all(|s| s.contains(":environment:")),
            _ => false,
        };
    // An allow-list of events: `not: pull_request` still admits
    // workflow_run and issue_comment, which outsiders can trigger.
    let events_safe = at.pins("event_name")
        && !at.accepts("event_name", "pull_request")
        && !at.accepts("event_name", "pull_request_target");
    if production && !events_safe && !environment_bound {
        out.push(
            "S004",
            Severity::Error,
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!(
                "{} (criticality `{}`) can be met by a pull_request or pull_request_target run: \
                 pull_request_target runs with the base branch's ref, so a ref binding alone does not keep it out",
                at.name(),
                at.level.name()
            ),
            "bind event_name to an allow-list (one_of: [push, workflow_dispatch]) or an environment with protection rules",
        );
    } else if !production && at.matcher("event_name").is_none() && !environment_bound {
        let pr_ref = at.accepts("ref", "refs/pull/1/merge");
        if pr_ref && at.matcher("ref").is_some() {
            out.push(
                "S004",
                Severity::Warning,
                Some(at.grant),
                Some(at.index),
                at.claim_path("ref"),
                format!("{} accepts pull request refs (refs/pull/N/merge)", at.name()),
                "bind ref to the branches that may have it, or bind event_name",
            );
        }
    }
    if production {
        if !at.pins("ref_protected") || at.accepts("ref_protected", "false") {
            out.push(
                "S005",
                Severity::Warning,
                Some(at.grant),
                Some(at.index),
                at.path(),
                format!(
                    "{} does not require ref_protected: true: anyone who can push a branch can get it",
                    at.name()
                ),
                "add `ref_protected: true` (and protect the branch or tag)",
            );
        }
        if !environment_bound {
            out.push(
                "S006",
                Severity::Warning,
                Some(at.grant),
                Some(at.index),
                at.path(),
                format!(
                    "{} binds no environment: GitHub environments add reviewers and branch rules",
                    at.name()
                ),
                "bind `environment: production` and configure its protection rules",
            );
        }
    }
    let by_name = ["repository", "repository_owner", "sub"]
        .iter()
        .any(|c| at.matcher(c).is_some());
    // Immutable subjects (`repo:acme@91234567/api@812345678`) and custom
    // ones with id claims pin ids too.
    let sub_has_ids = at
        .matcher("sub")
        .map(literal_prefix)
        .is_some_and(|p| p.contains('@') || p.contains("repository_id:") || p.contains("repository_owner_id:"));
    if by_name && !any_owner && !at.pins("repository_id") && !at.pins("repository_owner_id") && !sub_has_ids {
        out.push(
            "S007",
            if production { Severity::Warning } else { Severity::Info },
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!(
                "{} is bound by names only: a deleted and re-created (or renamed) repository or owner inherits it",
                at.name()
            ),
            "also bind repository_id (and repository_owner_id): IDs are never reused",
        );
    }
}

fn gitlab(out: &mut Findings, at: &RuleAt<'_>) {
    let shared = at.issuer.url.trim_end_matches('/') == "https://gitlab.com";
    let foreign = |m: &Matcher| {
        let text = pattern_text(m);
        let literal: String = text.chars().take_while(|c| !is_wild(*c)).collect();
        let name = text
            .rsplit('/')
            .next()
            .filter(|n| !n.chars().any(is_wild))
            .unwrap_or(PROBE);
        [
            PROBE.to_string(),
            format!("{PROBE}/{name}"),
            format!("{PROBE}/{PROBE}"),
            format!("{literal}-{PROBE}"),
            format!("{literal}-{PROBE}/{name}"),
        ]
        .iter()
        .any(|v| *v != literal && accepts(m, v))
    };
    let tenant_pinned = ["project_id", "project_path", "namespace_id", "namespace_path"]
        .iter()
        .any(|c| at.matcher(c).is_some_and(|m| !foreign(m)))
        || (at.matcher("sub").is_some()
            && !at.accepts("sub", &format!("project_path:{PROBE}/{PROBE}:ref_type:branch:ref:main")));
    if shared && !tenant_pinned {
        out.push(
            "S008",
            Severity::Error,
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!(
                "{} does not pin a project or group: any project on gitlab.com can get it",
                at.name()
            ),
            "bind project_id (or namespace_id) to yours",
        );
    }
    let by_path = at.matcher("project_path").is_some() || at.matcher("namespace_path").is_some();
    if shared && tenant_pinned && by_path && !at.pins("project_id") && !at.pins("namespace_id") {
        out.push(
            "S007",
            if at.level.is_production() {
                Severity::Warning
            } else {
                Severity::Info
            },
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!(
                "{} is bound by paths only: a group or project renamed away and re-created under the path inherits it",
                at.name()
            ),
            "also bind project_id (or namespace_id): IDs are never reused",
        );
    }
    if at.level.is_production() && (!at.pins("ref_protected") || at.accepts("ref_protected", "false")) {
        out.push(
            "S005",
            Severity::Warning,
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!("{} does not require ref_protected: true", at.name()),
            "add `ref_protected: true` (and protect the branch or tag)",
        );
    }
}

fn buildkite(out: &mut Findings, at: &RuleAt<'_>) {
    let by_id = at.pins("organization_id");
    let by_slug = at.pins("organization_slug")
        || (at.matcher("sub").is_some()
            && !at.accepts(
                "sub",
                &format!("organization:{PROBE}:pipeline:x:ref:refs/heads/main:commit:0:step:x"),
            ));
    if !by_id && !by_slug {
        out.push(
            "S008",
            Severity::Error,
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!(
                "{} does not pin an organization: every Buildkite organization shares issuer {}",
                at.name(),
                at.issuer.url
            ),
            "bind organization_id (a UUID that never changes)",
        );
    } else if !by_id {
        out.push(
            "S007",
            Severity::Warning,
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!(
                "{} pins the organization by slug only: slugs can change hands",
                at.name()
            ),
            "bind organization_id instead (request it with `--claim organization_id`)",
        );
    }
}

fn circleci(out: &mut Findings, at: &RuleAt<'_>) {
    if !at.pins("oidc.circleci.com/project-id") {
        out.push(
            "S008",
            by_level(at.level),
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!(
                "{} does not pin a project: every project of the organization can get it",
                at.name()
            ),
            "bind `oidc.circleci.com/project-id`",
        );
    }
}

fn kubernetes(out: &mut Findings, at: &RuleAt<'_>) {
    let sub_pinned = at.pins("sub");
    let sub_text = at.matcher("sub").map(pattern_text).unwrap_or_default();
    let account_name = sub_text
        .rsplit(':')
        .next()
        .filter(|n| !n.is_empty() && !n.chars().any(is_wild))
        .unwrap_or("default")
        .to_string();
    let namespace = at.pins("kubernetes.io.namespace")
        || (at.matcher("sub").is_some()
            && ["default", account_name.as_str(), PROBE]
                .iter()
                .all(|sa| !at.accepts("sub", &format!("system:serviceaccount:{PROBE}:{sa}"))));
    let account = at.pins("kubernetes.io.serviceaccount.name")
        || (at.matcher("sub").is_some() && {
            let prefix = at.matcher("sub").map(literal_prefix).unwrap_or_default();
            let ns = prefix
                .strip_prefix("system:serviceaccount:")
                .and_then(|r| r.split(':').next())
                .unwrap_or(PROBE)
                .to_string();
            !at.accepts("sub", &format!("system:serviceaccount:{ns}:{PROBE}"))
        });
    if !(sub_pinned || namespace && account) {
        let what = match (namespace, account) {
            (false, false) => "any namespace and any service account",
            (false, true) => "any namespace",
            _ => "any service account of the namespace",
        };
        out.push(
            "S009",
            Severity::Error,
            Some(at.grant),
            Some(at.index),
            at.path(),
            format!("{} accepts {what}", at.name()),
            "bind sub: system:serviceaccount:NAMESPACE:NAME (or both kubernetes.io.namespace and kubernetes.io.serviceaccount.name)",
        );
    }
}

fn duplicate_rules(out: &mut Findings, grant: &GrantSpec) {
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

fn issuer_checks(out: &mut Findings, config: &Config) {
    for issuer in &config.issuers {
        let used = config
            .policy
            .grants()
            .flat_map(|g| g.rules.iter())
            .chain(config.policy.auditors())
            .any(|r| r.issuer == issuer.name);
        if !used {
            out.push(
                "S015",
                Severity::Warning,
                None,
                None,
                format!("issuers.{}", issuer.name),
                format!(
                    "issuer `{}` is trusted but no rule refers to it: its keys are fetched for nothing",
                    issuer.name
                ),
                "remove it, or add the rules it was meant for",
            );
        }
        if issuer.max_token_lifetime > LONG_TOKEN {
            let extra = if issuer.platform == Platform::Kubernetes {
                " (the kubelet's default API tokens live a year)"
            } else {
                ""
            };
            out.push(
                "S010",
                Severity::Warning,
                None,
                None,
                format!("issuers.{}.max_token_lifetime", issuer.name),
                format!(
                    "issuer `{}` accepts tokens living up to {}{extra}: a leaked one can be replayed that long",
                    issuer.name,
                    duration::format(issuer.max_token_lifetime)
                ),
                "lower max_token_lifetime; request short-lived tokens (e.g. projected tokens with expirationSeconds)",
            );
        }
        if issuer.platform == Platform::CircleCi && !issuer.url.contains("/org/") {
            out.push(
                "S008",
                Severity::Error,
                None,
                None,
                format!("issuers.{}.issuer", issuer.name),
                format!(
                    "CircleCI issuer `{}` is not an organization's (https://oidc.circleci.com/org/ORG_ID)",
                    issuer.url
                ),
                "use your organization's issuer URL",
            );
        }
    }
}
