//! GitLab CI: other projects on gitlab.com (S008), paths without ids
//! (S007), protected refs (S005).

use super::probe::{PROBE, accepts, is_wild, pattern_text};
use super::{Findings, RuleAt};
use crate::lint::Severity;
use crate::policy::Matcher;

pub(super) fn gitlab(out: &mut Findings, at: &RuleAt<'_>) {
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
