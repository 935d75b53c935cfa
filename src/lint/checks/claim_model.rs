//! Which platform's tokens an issuer signs, when its config does not say
//! (S021). An issuer without `platform` whose URL is not one stint knows is
//! `generic`: the broker checks no token shape and lint would run no
//! platform check, so `sub: { glob: "system:serviceaccount:*:*" }` would pass
//! unseen. What the rules bind and the issuer URL give the claim model away;
//! lint checks the rules as that platform and says `platform` is missing.

use super::Findings;
use super::probe::pattern_text;
use crate::identity::{IssuerConfig, Platform};
use crate::lint::Severity;
use crate::lint::known_claims::platforms_sending;
use crate::policy::{Matcher, Rule};

/// The claim model lint checks an issuer's rules against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ClaimModel {
    /// Written in config, inferred by the broker from a well-known URL, or
    /// `generic` with nothing pointing elsewhere.
    Declared(Platform),
    /// `platform` is not written and the issuer is `generic`, but one
    /// platform's shape shows; `evidence` says what showed it.
    Inferred { platform: Platform, evidence: String },
    /// `platform` is not written and the rules show several platforms.
    Ambiguous { evidence: Vec<(Platform, String)> },
}

impl ClaimModel {
    /// The platform whose checks run on the rules.
    pub(super) fn platform(&self) -> Platform {
        match self {
            ClaimModel::Declared(p) | ClaimModel::Inferred { platform: p, .. } => *p,
            ClaimModel::Ambiguous { .. } => Platform::Generic,
        }
    }
}

/// The claim model of `issuer`, whose rules are `rules`. `written` is
/// whether the config names its `platform`: an operator who wrote
/// `platform: generic` has said the tokens are nobody's, and is believed.
pub(super) fn claim_model<'a>(
    issuer: &IssuerConfig,
    written: bool,
    rules: impl Iterator<Item = &'a Rule>,
) -> ClaimModel {
    if written || issuer.platform != Platform::Generic {
        return ClaimModel::Declared(issuer.platform);
    }
    let mut evidence: Vec<(Platform, String)> = Vec::new();
    let mut note = |platform: Platform, what: String| {
        if !evidence.iter().any(|(p, _)| *p == platform) {
            evidence.push((platform, what));
        }
    };
    if let Some(platform) = platform_of_url(&issuer.url) {
        note(platform, format!("issuer URL {}", issuer.url));
    }
    for rule in rules {
        for (claim, matcher) in &rule.claims {
            if let [platform] = platforms_sending(claim).as_slice() {
                note(*platform, format!("claim `{claim}`"));
            }
            if claim == "sub" {
                for text in subject_texts(matcher) {
                    if let Some(platform) = platform_of_subject(&text) {
                        note(platform, format!("sub `{text}`"));
                    }
                }
            }
        }
    }
    match evidence.len() {
        0 => ClaimModel::Declared(Platform::Generic),
        1 => {
            let (platform, evidence) = evidence.remove(0);
            ClaimModel::Inferred { platform, evidence }
        }
        _ => ClaimModel::Ambiguous { evidence },
    }
}

/// S021: the issuer leaves `platform` out and its tokens are another
/// platform's. A warning: what the rules let through is reported by the
/// platform's own checks, which ran as if `platform` were set.
pub(super) fn platform_not_set(out: &mut Findings, issuer: &IssuerConfig, model: &ClaimModel) {
    let name = &issuer.name;
    let (message, fix) = match model {
        ClaimModel::Declared(_) => return,
        ClaimModel::Inferred { platform, evidence } => (
            format!(
                "issuer `{name}` does not set `platform`, so stint treats its tokens as `generic` and checks no \
                 token shape; its {evidence} shows {} tokens: lint checked its rules as `{}`",
                platform.name(),
                platform.name()
            ),
            format!("set `platform: {}` on the issuer", platform.name()),
        ),
        ClaimModel::Ambiguous { evidence } => {
            let seen: Vec<String> = evidence
                .iter()
                .map(|(p, what)| format!("{} ({what})", p.name()))
                .collect();
            (
                format!(
                    "issuer `{name}` does not set `platform`, and its rules show tokens of several platforms: {}; \
                     lint ran no platform check on them",
                    seen.join(", ")
                ),
                "set `platform` on the issuer, and move rules for another platform to that platform's issuer"
                    .to_string(),
            )
        }
    };
    out.push(
        "S021",
        Severity::Warning,
        None,
        None,
        format!("issuers.{name}"),
        message,
        &fix,
    );
}

/// Issuer URLs that belong to one platform but that the broker does not
/// infer (it infers only the shared SaaS issuers; see `Platform::infer`).
fn platform_of_url(url: &str) -> Option<Platform> {
    let url = url.trim_end_matches('/');
    let host = url
        .strip_prefix("https://")
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    if (host.starts_with("token.actions.") && host.ends_with(".ghe.com")) || url.ends_with("/_services/token") {
        Some(Platform::GitHubActions) // GHE.com and GHES
    } else if host.starts_with("gitlab.") {
        Some(Platform::GitLabCi)
    } else if (host.starts_with("oidc.eks.") && host.ends_with(".amazonaws.com"))
        || url.starts_with("https://container.googleapis.com/v1/projects/")
        || host.ends_with(".oic.prod-aks.azure.com")
        || host.starts_with("kubernetes.default.svc")
    {
        Some(Platform::Kubernetes) // EKS, GKE, AKS, in-cluster
    } else {
        None
    }
}

/// The literal texts of a `sub` matcher.
fn subject_texts(matcher: &Matcher) -> Vec<String> {
    match matcher {
        Matcher::OneOf(items) => items.clone(),
        Matcher::Not(_) | Matcher::Bool(_) => Vec::new(),
        other => vec![pattern_text(other)],
    }
}

/// The platform whose `sub` template `text` follows.
fn platform_of_subject(text: &str) -> Option<Platform> {
    let text = text.trim_start_matches('^');
    if text.starts_with("system:serviceaccount:") {
        Some(Platform::Kubernetes)
    } else if text.starts_with("repo:") {
        Some(Platform::GitHubActions)
    } else if text.starts_with("project_path:") {
        Some(Platform::GitLabCi)
    } else if text.starts_with("organization:") && text.contains(":pipeline:") {
        Some(Platform::Buildkite)
    } else if text.starts_with("org/") && text.contains("/project/") {
        Some(Platform::CircleCi)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::MatcherSpec;

    fn issuer(url: &str) -> IssuerConfig {
        IssuerConfig {
            name: "ci".into(),
            url: url.into(),
            audience: "stint".into(),
            exclusive_audience: true,
            algorithms: Vec::new(),
            max_token_lifetime: std::time::Duration::from_secs(3600),
            leeway: std::time::Duration::from_secs(60),
            platform: Platform::infer(url),
        }
    }

    fn rule(claims: &[(&str, MatcherSpec)]) -> Rule {
        Rule {
            issuer: "ci".into(),
            claims: claims
                .iter()
                .map(|(c, m)| match Matcher::compile(m) {
                    Ok(m) => (c.to_string(), m),
                    Err(e) => unreachable!("test spec must compile: {e}"),
                })
                .collect(),
        }
    }

    #[test]
    fn a_service_account_subject_shows_kubernetes() {
        let rules = [rule(&[("sub", MatcherSpec::Glob("system:serviceaccount:*:*".into()))])];
        let model = claim_model(&issuer("https://k8s.acme.example"), false, rules.iter());
        assert_eq!(model.platform(), Platform::Kubernetes, "{model:?}");
    }

    #[test]
    fn claim_names_and_urls_show_their_platform() {
        let cases = [
            (
                "https://ci.acme.example",
                "repository_owner_id",
                Platform::GitHubActions,
            ),
            (
                "https://ci.acme.example",
                "kubernetes.io.namespace",
                Platform::Kubernetes,
            ),
            ("https://ci.acme.example", "project_id", Platform::GitLabCi),
            ("https://ci.acme.example", "organization_slug", Platform::Buildkite),
            (
                "https://ci.acme.example",
                "oidc.circleci.com/project-id",
                Platform::CircleCi,
            ),
            (
                "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC",
                "sub",
                Platform::Kubernetes,
            ),
            (
                "https://ghes.acme.example/_services/token",
                "sub",
                Platform::GitHubActions,
            ),
        ];
        for (url, claim, want) in cases {
            let rules = [rule(&[(claim, MatcherSpec::Exact("x".into()))])];
            let model = claim_model(&issuer(url), false, rules.iter());
            assert_eq!(model.platform(), want, "{url} {claim}: {model:?}");
        }
    }

    #[test]
    fn a_written_platform_and_shapeless_rules_are_believed() {
        let rules = [rule(&[("sub", MatcherSpec::Glob("system:serviceaccount:*:*".into()))])];
        let model = claim_model(&issuer("https://k8s.acme.example"), true, rules.iter());
        assert_eq!(model, ClaimModel::Declared(Platform::Generic));
        let rules = [rule(&[("team", MatcherSpec::Exact("billing".into()))])];
        let model = claim_model(&issuer("https://idp.acme.example"), false, rules.iter());
        assert_eq!(model, ClaimModel::Declared(Platform::Generic));
    }

    #[test]
    fn two_shapes_are_ambiguous() {
        let rules = [
            rule(&[("sub", MatcherSpec::Exact("system:serviceaccount:a:b".into()))]),
            rule(&[("repository_owner_id", MatcherSpec::Exact("1".into()))]),
        ];
        let model = claim_model(&issuer("https://idp.acme.example"), false, rules.iter());
        assert!(matches!(model, ClaimModel::Ambiguous { .. }), "{model:?}");
    }
}
