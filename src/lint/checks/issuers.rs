//! Issuers: unused (S015), long-lived caller tokens (S010), a CircleCI
//! issuer that is not an organization's (S008).

use std::time::Duration;

use super::Findings;
use crate::config::Config;
use crate::duration;
use crate::identity::Platform;
use crate::lint::Severity;

/// Callers' tokens living longer than this are flagged.
const LONG_TOKEN: Duration = Duration::from_secs(6 * 3600);

pub(super) fn issuer_checks(out: &mut Findings, config: &Config) {
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
