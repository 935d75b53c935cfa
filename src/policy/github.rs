//! GitHub's own rules for what a `github` grant names: logins and
//! repository names, and App permissions as GitHub defines them (the `app-permissions`
//! schema of GitHub's REST API description, used by `POST
//! /app/installations/{id}/access_tokens`): each name with the levels it
//! takes. A grant's `permissions` are its ceiling; a request may ask for
//! less, never more.

use std::collections::BTreeMap;

/// A permission level. GitHub orders them read < write < admin: a token
/// with `write` can do what `read` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `admin` (projects and custom properties only).
    Admin,
}

impl Level {
    /// The level written `text`, if GitHub has one so named.
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "read" => Some(Level::Read),
            "write" => Some(Level::Write),
            "admin" => Some(Level::Admin),
            _ => None,
        }
    }

    /// GitHub's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Admin => "admin",
        }
    }
}

use Level::{Admin, Read, Write};

/// Every permission an installation token can carry, with its levels.
/// Keep in step with GitHub's `app-permissions` schema.
const PERMISSIONS: &[(&str, &[Level])] = &[
    // Repository permissions.
    ("actions", &[Read, Write]),
    ("administration", &[Read, Write]),
    ("attestations", &[Read, Write]),
    ("checks", &[Read, Write]),
    ("codespaces", &[Read, Write]),
    ("contents", &[Read, Write]),
    ("dependabot_secrets", &[Read, Write]),
    ("deployments", &[Read, Write]),
    ("discussions", &[Read, Write]),
    ("environments", &[Read, Write]),
    ("issues", &[Read, Write]),
    ("merge_queues", &[Read, Write]),
    ("metadata", &[Read, Write]),
    ("packages", &[Read, Write]),
    ("pages", &[Read, Write]),
    ("pull_requests", &[Read, Write]),
    ("repository_advisories", &[Read, Write]),
    ("repository_custom_properties", &[Read, Write]),
    ("repository_hooks", &[Read, Write]),
    ("repository_projects", &[Read, Write, Admin]),
    ("secret_scanning_alerts", &[Read, Write]),
    ("secrets", &[Read, Write]),
    ("security_events", &[Read, Write]),
    ("single_file", &[Read, Write]),
    ("statuses", &[Read, Write]),
    ("vulnerability_alerts", &[Read, Write]),
    ("workflows", &[Write]),
    // Organization permissions.
    ("members", &[Read, Write]),
    ("organization_administration", &[Read, Write]),
    ("organization_announcement_banners", &[Read, Write]),
    ("organization_copilot_seat_management", &[Write]),
    ("organization_custom_org_roles", &[Read, Write]),
    ("organization_custom_properties", &[Read, Write, Admin]),
    ("organization_custom_roles", &[Read, Write]),
    ("organization_events", &[Read]),
    ("organization_hooks", &[Read, Write]),
    ("organization_packages", &[Read, Write]),
    ("organization_personal_access_token_requests", &[Read, Write]),
    ("organization_personal_access_tokens", &[Read, Write]),
    ("organization_plan", &[Read]),
    ("organization_projects", &[Read, Write, Admin]),
    ("organization_secrets", &[Read, Write]),
    ("organization_self_hosted_runners", &[Read, Write]),
    ("organization_user_blocking", &[Read, Write]),
    ("team_discussions", &[Read, Write]),
    // User permissions (an App installed on a user account).
    ("email_addresses", &[Read, Write]),
    ("followers", &[Read, Write]),
    ("git_ssh_keys", &[Read, Write]),
    ("gpg_keys", &[Read, Write]),
    ("interaction_limits", &[Read, Write]),
    ("profile", &[Write]),
    ("starring", &[Read, Write]),
];

/// Permissions that reach beyond the repositories a grant names: the
/// organization's (members, teams, settings, secrets, runners), the user
/// account's, and a repository's `administration` (collaborators, teams,
/// deleting it). A grant needs `allow_organization_permissions: true` for
/// any of them.
pub fn is_organization_level(name: &str) -> bool {
    name.starts_with("organization_")
        || matches!(
            name,
            "members"
                | "administration"
                | "team_discussions"
                | "email_addresses"
                | "followers"
                | "git_ssh_keys"
                | "gpg_keys"
                | "interaction_limits"
                | "profile"
                | "starring"
        )
}

/// Checks one `name: level` pair against GitHub's table; the error says
/// what GitHub accepts.
pub fn check(name: &str, level: &str) -> Result<Level, String> {
    let Some((_, levels)) = PERMISSIONS.iter().find(|(n, _)| *n == name) else {
        return Err(format!(
            "`{name}` is not a GitHub App permission (see https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app)"
        ));
    };
    let allowed = || levels.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(", ");
    match Level::parse(level) {
        Some(parsed) if levels.contains(&parsed) => Ok(parsed),
        _ => Err(format!("`{name}` takes {}, not `{level}`", allowed())),
    }
}

/// What `asked` wants beyond `ceiling`, one phrase per permission (empty:
/// within it).
pub fn beyond(asked: &BTreeMap<String, Level>, ceiling: &BTreeMap<String, Level>) -> Vec<String> {
    asked
        .iter()
        .filter_map(|(name, level)| match ceiling.get(name) {
            None => Some(format!("{name}: {} (the grant has no {name})", level.as_str())),
            Some(max) if level > max => Some(format!(
                "{name}: {} (the grant allows {})",
                level.as_str(),
                max.as_str()
            )),
            Some(_) => None,
        })
        .collect()
}

/// A GitHub login (organization or user): 1-39 of letters, digits and
/// single hyphens, not at either end.
pub fn is_login(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 39
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A repository name GitHub can have: 1-100 of letters, digits, `.`, `-`
/// and `_`, and not `.` or `..`.
pub fn is_repository_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The repository name within `owner` that `entry` (`name` or
/// `owner/name`) means; an error when it names another owner or is not a
/// name GitHub can have.
pub fn repository_in(owner: &str, entry: &str) -> Result<String, String> {
    let name = match entry.split_once('/') {
        None => entry,
        // GitHub logins are case-insensitive.
        Some((other, name)) if other.eq_ignore_ascii_case(owner) => name,
        Some((other, _)) => {
            return Err(format!(
                "`{entry}` belongs to `{other}`, not to the grant's owner `{owner}`"
            ));
        }
    };
    if !is_repository_name(name) {
        return Err(format!("`{entry}` is not a repository name GitHub can have"));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_entries_stay_within_the_owner() {
        assert_eq!(repository_in("acme", "infra"), Ok("infra".to_string()));
        assert_eq!(repository_in("acme", "ACME/infra"), Ok("infra".to_string()));
        assert!(repository_in("acme", "evil/infra").is_err_and(|e| e.contains("belongs to `evil`")));
        assert!(repository_in("acme", "acme/a/b").is_err());
        assert!(repository_in("acme", "..").is_err());
        assert!(repository_in("acme", "in fra").is_err());
    }

    #[test]
    fn logins_are_github_logins() {
        assert!(is_login("acme-corp"));
        assert!(!is_login("-acme"));
        assert!(!is_login("acme--corp"));
        assert!(!is_login("acme/corp"));
        assert!(!is_login(&"a".repeat(40)));
    }

    #[test]
    fn levels_are_checked_per_permission() {
        assert_eq!(check("contents", "write"), Ok(Write));
        assert!(check("contents", "admin").is_err_and(|e| e.contains("takes read, write")));
        assert!(check("workflows", "read").is_err_and(|e| e.contains("takes write")));
        assert_eq!(check("organization_projects", "admin"), Ok(Admin));
        assert!(check("content", "read").is_err_and(|e| e.contains("not a GitHub App permission")));
    }

    #[test]
    fn organization_permissions_are_told_apart() {
        for name in ["members", "administration", "organization_secrets", "organization_plan"] {
            assert!(is_organization_level(name), "{name}");
        }
        for name in ["contents", "pull_requests", "workflows", "metadata"] {
            assert!(!is_organization_level(name), "{name}");
        }
    }

    #[test]
    fn a_request_beyond_the_ceiling_names_each_excess() {
        let map = |pairs: &[(&str, Level)]| pairs.iter().map(|(n, l)| ((*n).to_string(), *l)).collect();
        let ceiling = map(&[("contents", Write), ("issues", Read)]);
        assert!(beyond(&map(&[("contents", Read)]), &ceiling).is_empty());
        assert_eq!(
            beyond(&map(&[("issues", Write), ("actions", Read)]), &ceiling),
            vec![
                "actions: read (the grant has no actions)".to_string(),
                "issues: write (the grant allows read)".to_string()
            ]
        );
    }
}
