//! GitHub Actions: other owners (S008), other repositories of the owner
//! (S002), pull requests and branches (S003, S004), protected refs and
//! environments (S005, S006), names without ids (S007).

use super::probe::{PROBE, accepts, is_finite, is_wild, literal_prefix, pattern_text, sub_probe};
use super::{Findings, RuleAt};
use crate::lint::Severity;
use crate::policy::Matcher;

pub(super) fn github(out: &mut Findings, at: &RuleAt<'_>) {
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
    // A name pattern that only starts (or ends) like one repository, such
    // as `acme/api.*`: whoever may create `acme/api-anything` gets the grant.
    let name_literal: String = name_pattern.chars().take_while(|c| !is_wild(*c)).collect();
    let name_wide = (!name_literal.is_empty() || name_pattern.starts_with('*'))
        .then(|| {
            [
                format!("{name_literal}-{PROBE}"),
                format!("{name_literal}{PROBE}"),
                name_pattern.replace('*', PROBE).replace('?', "x"),
            ]
            .into_iter()
            .filter(|n| *n != name_pattern)
            .map(|n| format!("{owner_literal}/{n}"))
            .find(|repository| reaches(repository))
        })
        .flatten()
        .filter(|_| !at.pins("repository_id") && !any_owner && !owner_wide && !owner_literal.is_empty());
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
            at.outsider_severity(),
            Some(at.grant),
            Some(at.index),
            path,
            format!(
                "{} lets every repository of {owner} (including ones created later) get grant `{}` ({})",
                at.name(),
                at.grant.name,
                at.stakes()
            ),
            "list the repositories that need it (one_of) and bind repository_id",
        );
    } else if let Some(probe) = name_wide {
        let path = ["repository", "sub"]
            .iter()
            .find(|c| at.matcher(c).is_some())
            .map_or_else(|| at.path(), |c| at.claim_path(c));
        out.push(
            "S002",
            at.outsider_severity(),
            Some(at.grant),
            Some(at.index),
            path,
            format!(
                "{} accepts repository `{probe}`: whoever may create a repository of `{owner_literal}` \
                 named like `{repo_text}` gets grant `{}` ({})",
                at.name(),
                at.grant.name,
                at.stakes()
            ),
            "name the repositories exactly (one_of) and bind repository_id",
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
                if pr { at.outsider_severity() } else { Severity::Warning },
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
