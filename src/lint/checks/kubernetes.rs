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
