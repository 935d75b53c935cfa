//! `stint policy lint`: what a config allows that its author probably did
//! not mean to. Most leaks of CI credentials came from trust policies that
//! were too broad (any repository, any branch, pull requests from forks);
//! each check here names one such shape, where it is written, and the fix.

mod checks;
mod known_claims;
pub mod report;

use crate::config::{Config, Location, Locations};
pub use crate::config::{LintSettings, Suppression, Thresholds};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; never fails a run.
    Info,
    /// Probably wrong; fails with `--fail-on warning`.
    Warning,
    /// Wrong; fails by default.
    Error,
}

impl Severity {
    /// The spelling in output and `--fail-on`.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One kind of finding.
#[derive(Debug)]
pub struct Check {
    /// Stable id, e.g. `S002`.
    pub id: &'static str,
    /// Stable name, e.g. `wildcard-repository`.
    pub name: &'static str,
    /// One line on what it catches.
    pub summary: &'static str,
}

/// Every check, in id order.
pub const CHECKS: &[Check] = &[
    Check {
        id: "S001",
        name: "unbound-rule",
        summary: "a rule binds no claim: every token of the issuer gets the grant",
    },
    Check {
        id: "S002",
        name: "wildcard-repository",
        summary: "a wildcard repository or owner: other repositories get the grant",
    },
    Check {
        id: "S003",
        name: "broad-subject",
        summary: "a `sub` pattern that matches pull requests or every branch",
    },
    Check {
        id: "S004",
        name: "pull-request-reachable",
        summary: "a production grant a pull_request or pull_request_target run can get",
    },
    Check {
        id: "S005",
        name: "unprotected-ref",
        summary: "a production grant that does not require a protected ref",
    },
    Check {
        id: "S006",
        name: "no-environment",
        summary: "a production grant without an environment binding",
    },
    Check {
        id: "S007",
        name: "name-only-binding",
        summary: "bound by names only: a renamed or re-created repository or organisation inherits the grant",
    },
    Check {
        id: "S008",
        name: "tenant-unbound",
        summary: "a shared issuer without its organisation or project bound: other tenants get the grant",
    },
    Check {
        id: "S009",
        name: "kubernetes-wildcard",
        summary: "a Kubernetes rule with a wildcard or unbound namespace or service account",
    },
    Check {
        id: "S010",
        name: "long-lived-tokens",
        summary: "an issuer accepting caller tokens that live for hours",
    },
    Check {
        id: "S011",
        name: "broad-regex",
        summary: "a regex that matches any text (`.*`, `.+`) where a glob or exact value would do",
    },
    Check {
        id: "S012",
        name: "ttl-over-threshold",
        summary: "ttl or max_ttl above the threshold of the grant's criticality",
    },
    Check {
        id: "S013",
        name: "long-secret-cache",
        summary: "a secrets grant caching values longer than its criticality allows",
    },
    Check {
        id: "S014",
        name: "replayable-token",
        summary: "single_use_token off where the criticality requires it",
    },
    Check {
        id: "S015",
        name: "unused-issuer",
        summary: "an issuer no rule refers to",
    },
    Check {
        id: "S016",
        name: "unknown-claim",
        summary: "a rule on a claim the issuer's platform never sends: the rule can never match",
    },
    Check {
        id: "S017",
        name: "unreachable-grant",
        summary: "a grant no rule can ever allow",
    },
    Check {
        id: "S018",
        name: "duplicate-rule",
        summary: "a rule that repeats, or is covered by, another rule of the grant",
    },
    Check {
        id: "S019",
        name: "missing-criticality",
        summary: "a grant without `criticality`: the `medium` thresholds are applied",
    },
    Check {
        id: "S020",
        name: "wildcard-pattern",
        summary: "a pattern whose every part that names a workload is a wildcard (`system:serviceaccount:*:*`)",
    },
    Check {
        id: "S021",
        name: "platform-not-set",
        summary: "an issuer without `platform` whose rules or URL show a known platform's tokens",
    },
    Check {
        id: "S022",
        name: "github-organization-permission",
        summary: "a github grant with a permission beyond its repositories (organization, account or administration)",
    },
];

/// A check by id (`S002`) or name (`wildcard-repository`).
pub fn find_check(id_or_name: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.id == id_or_name || c.name == id_or_name)
}

/// The first `lint.ignore` entry that names no check, as the config key and
/// what is wrong with it: a typo there would silently accept nothing.
pub fn unknown_suppression(settings: &LintSettings) -> Option<(String, String)> {
    settings.ignore.iter().enumerate().find_map(|(i, s)| {
        find_check(&s.id).is_none().then(|| {
            (
                format!("lint.ignore[{i}].id"),
                format!("`{}` is not a lint finding id (see `stint policy lint --list`)", s.id),
            )
        })
    })
}

/// One finding.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What kind.
    pub check: &'static Check,
    /// How bad, here.
    pub severity: Severity,
    /// The grant it is about, if any.
    pub grant: Option<String>,
    /// The rule index, if about a rule.
    pub rule: Option<usize>,
    /// Config key path, e.g. `grants.deploy.allow[0].claims.sub`.
    pub path: String,
    /// Where that key is written.
    pub location: Option<Location>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, in one line.
    pub fix: String,
}

/// Findings of one run.
#[derive(Debug, Default)]
pub struct LintReport {
    /// The config file.
    pub file: String,
    /// Findings, most severe first, then by location.
    pub findings: Vec<Finding>,
    /// Findings matched by `lint.ignore`, with the reason.
    pub suppressed: Vec<(Finding, String)>,
}

impl LintReport {
    /// Whether any finding is at or above `level`.
    pub fn fails(&self, level: Severity) -> bool {
        self.findings.iter().any(|f| f.severity >= level)
    }
}

/// Lints `config`, whose text gave `locations`.
pub fn lint(config: &Config, locations: &Locations) -> LintReport {
    let mut findings = checks::run(config, locations);
    for finding in &mut findings {
        finding.location = locations.find(&finding.path);
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| {
                a.location
                    .map(|l| (l.line, l.column))
                    .cmp(&b.location.map(|l| (l.line, l.column)))
            })
            .then_with(|| a.check.id.cmp(b.check.id))
    });
    let mut report = LintReport {
        file: config.source_name.clone(),
        ..LintReport::default()
    };
    for finding in findings {
        let accepted = config.lint.ignore.iter().find(|s| {
            find_check(&s.id).is_some_and(|c| std::ptr::eq(c, finding.check))
                && s.grant.as_ref().is_none_or(|g| finding.grant.as_ref() == Some(g))
        });
        match accepted {
            Some(s) => report.suppressed.push((finding, s.reason.clone())),
            None => report.findings.push(finding),
        }
    }
    report
}
