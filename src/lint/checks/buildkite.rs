//! Buildkite: every organization shares one issuer (S008), and slugs
//! change hands (S007).

use super::probe::PROBE;
use super::{Findings, RuleAt};
use crate::lint::Severity;

pub(super) fn buildkite(out: &mut Findings, at: &RuleAt<'_>) {
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
