//! Claims each platform sends (from the documented tokens in
//! tests/fixtures/oidc and the platforms' docs). A rule on any other name
//! can never match: a missing claim fails every matcher.

use crate::identity::Platform;

const REGISTERED: &[&str] = &["iss", "sub", "aud", "exp", "iat", "nbf", "jti"];

const GITHUB: &[&str] = &[
    "actor",
    "actor_id",
    "base_ref",
    "check_run_id",
    "enterprise",
    "enterprise_id",
    "environment",
    "environment_node_id",
    "event_name",
    "head_ref",
    "job_workflow_ref",
    "job_workflow_sha",
    "ref",
    "ref_protected",
    "ref_type",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "repository_visibility",
    "run_attempt",
    "run_id",
    "run_number",
    "runner_environment",
    "sha",
    "workflow",
    "workflow_ref",
    "workflow_sha",
];

const GITLAB: &[&str] = &[
    "ci_config_ref_uri",
    "ci_config_sha",
    "deployment_tier",
    "environment",
    "environment_action",
    "environment_protected",
    "groups_direct",
    "job_id",
    "job_namespace_id",
    "job_namespace_path",
    "job_project_id",
    "job_project_path",
    "namespace_id",
    "namespace_path",
    "pipeline_id",
    "pipeline_source",
    "project_id",
    "project_path",
    "project_visibility",
    "ref",
    "ref_path",
    "ref_protected",
    "ref_type",
    "runner_environment",
    "runner_id",
    "sha",
    "user_access_level",
    "user_email",
    "user_id",
    "user_login",
];

const BUILDKITE: &[&str] = &[
    "agent_id",
    "build_branch",
    "build_commit",
    "build_id",
    "build_number",
    "build_source",
    "build_tag",
    "cluster_id",
    "cluster_name",
    "job_id",
    "organization_id",
    "organization_slug",
    "pipeline_id",
    "pipeline_slug",
    "queue_id",
    "queue_key",
    "runner_environment",
    "step_key",
];

const CIRCLECI: &[&str] = &[
    "oidc.circleci.com/context-ids",
    "oidc.circleci.com/job-id",
    "oidc.circleci.com/org-id",
    "oidc.circleci.com/pipeline-definition-id",
    "oidc.circleci.com/pipeline-id",
    "oidc.circleci.com/project-id",
    "oidc.circleci.com/ssh-rerun",
    "oidc.circleci.com/vcs-origin",
    "oidc.circleci.com/vcs-ref",
    "oidc.circleci.com/workflow-id",
];

const KUBERNETES: &[&str] = &[
    "kubernetes.io.namespace",
    "kubernetes.io.node.name",
    "kubernetes.io.node.uid",
    "kubernetes.io.pod.name",
    "kubernetes.io.pod.uid",
    "kubernetes.io.secret.name",
    "kubernetes.io.secret.uid",
    "kubernetes.io.serviceaccount.name",
    "kubernetes.io.serviceaccount.uid",
    "kubernetes.io.warnafter",
];

/// Whether `platform` can send a claim called `name`; always true for a
/// generic issuer, whose claims stint cannot know.
pub fn is_known(platform: Platform, name: &str) -> bool {
    if REGISTERED.contains(&name) {
        return true;
    }
    match platform {
        Platform::GitHubActions => GITHUB.contains(&name) || name.starts_with("repo_property_"),
        Platform::GitLabCi => GITLAB.contains(&name),
        Platform::Buildkite => {
            BUILDKITE.contains(&name)
                || name.starts_with("agent_tag:")
                || name.starts_with("https://aws.amazon.com/tags.")
        }
        Platform::CircleCi => CIRCLECI.contains(&name),
        Platform::Kubernetes => KUBERNETES.contains(&name),
        Platform::Generic => true,
    }
}

/// The platforms (never `generic`) whose tokens carry a claim called `name`
/// that is not a registered one: one platform means the claim shows whose
/// tokens a rule was written for.
pub fn platforms_sending(name: &str) -> Vec<Platform> {
    if REGISTERED.contains(&name) {
        return Vec::new();
    }
    [
        Platform::GitHubActions,
        Platform::GitLabCi,
        Platform::Buildkite,
        Platform::CircleCi,
        Platform::Kubernetes,
    ]
    .into_iter()
    .filter(|p| is_known(*p, name))
    .collect()
}

/// Whether `word` is a claim name of any platform: in a custom GitHub
/// subject (`repository_owner_id:1:environment:prod`) such names are the
/// template's fixed parts, not values.
pub fn is_claim_name(word: &str) -> bool {
    [GITHUB, GITLAB, BUILDKITE, CIRCLECI, KUBERNETES]
        .iter()
        .any(|list| list.contains(&word))
}
