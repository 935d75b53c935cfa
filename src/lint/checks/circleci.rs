//! CircleCI: every project of the organization (S008).

use super::{Findings, RuleAt};

pub(super) fn circleci(out: &mut Findings, at: &RuleAt<'_>) {
    if !at.pins("oidc.circleci.com/project-id") {
        out.push(
            "S008",
            at.outsider_severity(),
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
