//! GitHub App permissions and their levels, from the REST API's
//! `app-permissions` schema (the body of create-an-installation-access-
//! token-for-an-app). A level grants every lower one: read < write < admin.

/// Each permission with the levels GitHub accepts for it.
const PERMISSIONS: &[(&str, &[&str])] = &[
    // Repository permissions.
    ("actions", RW),
    ("administration", RW),
    ("checks", RW),
    ("codespaces", RW),
    ("contents", RW),
    ("dependabot_secrets", RW),
    ("deployments", RW),
    ("environments", RW),
    ("issues", RW),
    ("metadata", RW),
    ("packages", RW),
    ("pages", RW),
    ("pull_requests", RW),
    ("repository_custom_properties", RW),
    ("repository_hooks", RW),
    ("repository_projects", RWA),
    ("secret_scanning_alerts", RW),
    ("secrets", RW),
    ("security_events", RW),
    ("single_file", RW),
    ("statuses", RW),
    ("vulnerability_alerts", RW),
    ("workflows", W),
    // Organization permissions.
    ("members", RW),
    ("organization_administration", RW),
    ("organization_custom_roles", RW),
    ("organization_custom_org_roles", RW),
    ("organization_custom_properties", RWA),
    ("organization_copilot_seat_management", W),
    ("organization_announcement_banners", RW),
    ("organization_events", R),
    ("organization_hooks", RW),
    ("organization_personal_access_tokens", RW),
    ("organization_personal_access_token_requests", RW),
    ("organization_plan", R),
    ("organization_projects", RWA),
    ("organization_packages", RW),
    ("organization_secrets", RW),
    ("organization_self_hosted_runners", RW),
    ("organization_user_blocking", RW),
    ("team_discussions", RW),
    // Account permissions.
    ("email_addresses", RW),
    ("followers", RW),
    ("git_ssh_keys", RW),
    ("gpg_keys", RW),
    ("interaction_limits", RW),
    ("profile", W),
    ("starring", RW),
];

const R: &[&str] = &["read"];
const W: &[&str] = &["write"];
const RW: &[&str] = &["read", "write"];
const RWA: &[&str] = &["read", "write", "admin"];

/// Whether GitHub knows `name` and accepts `level` for it.
pub(super) fn is_valid(name: &str, level: &str) -> bool {
    PERMISSIONS
        .iter()
        .any(|(known, levels)| *known == name && levels.contains(&level))
}

/// Whether holding `held` lets a token be asked for `asked`.
pub(super) fn covers(held: &str, asked: &str) -> bool {
    rank(held) >= rank(asked) && rank(asked) > 0
}

fn rank(level: &str) -> u8 {
    match level {
        "read" => 1,
        "write" => 2,
        "admin" => 3,
        _ => 0,
    }
}
