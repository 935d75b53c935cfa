//! Kubernetes: other namespaces and service accounts (S009).

use super::probe::{PROBE, is_wild, literal_prefix, pattern_text};
use super::{Findings, RuleAt};
use crate::lint::Severity;

pub(super) fn kubernetes(out: &mut Findings, at: &RuleAt<'_>) {
    let sub_pinned = at.pins("sub");
    let sub_text = at.matcher("sub").map(pattern_text).unwrap_or_default();
    let account_name = sub_text
        .rsplit(':')
        .next()
        .filter(|n| !n.is_empty() && !n.chars().any(is_wild))
        .unwrap_or("default")
        .to_string();
    // The literal start of a `sub` pattern, split at its namespace:
    // `system:serviceaccount:team-*:api` gives `team-` and no account.
    let prefix = at.matcher("sub").map(literal_prefix).unwrap_or_default();
    let rest = prefix.strip_prefix("system:serviceaccount:").unwrap_or_default();
    let (ns_literal, account_literal) = rest.split_once(':').unwrap_or((rest, ""));
    // Other namespaces: a new one, and ones that only start like the
    // pattern's (`team-*` admits `team-evil`).
    let namespace = at.pins("kubernetes.io.namespace")
        || (at.matcher("sub").is_some() && {
            let namespaces = [
                PROBE.to_string(),
                format!("{ns_literal}-{PROBE}"),
                format!("{ns_literal}{PROBE}"),
            ];
            namespaces.iter().all(|ns| {
                ["default", account_name.as_str(), PROBE]
                    .iter()
                    .all(|sa| !at.accepts("sub", &format!("system:serviceaccount:{ns}:{sa}")))
            })
        });
    // Other service accounts of the namespace, likewise (`api-*`).
    let account = at.pins("kubernetes.io.serviceaccount.name")
        || (at.matcher("sub").is_some() && {
            let ns = if ns_literal.is_empty() { PROBE } else { ns_literal };
            [
                PROBE.to_string(),
                format!("{account_literal}-{PROBE}"),
                format!("{account_literal}{PROBE}"),
            ]
            .iter()
            .all(|sa| !at.accepts("sub", &format!("system:serviceaccount:{ns}:{sa}")))
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
