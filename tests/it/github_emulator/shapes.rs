//! GitHub's JSON objects for accounts, repositories and installations, as
//! the REST reference's response schemas show them (the fields a client
//! may read; the emulator fills the rest with plausible constants).

use serde_json::{Value, json};

use super::{GitHub, Installation, Repository};

/// The `simple-user` of an installation's account.
fn account_json(github: &GitHub, owner: &Installation) -> Value {
    let (login, id) = (&owner.login, owner.account_id);
    json!({
        "login": login,
        "id": id,
        "node_id": format!("U_{id}"),
        "type": owner.account.as_str(),
        "site_admin": false,
        "url": format!("{}/users/{login}", github.api_url),
        "html_url": format!("{}/{login}", github.web_url),
    })
}

/// A repository object; `owner` is the installation whose account owns it.
pub(super) fn repository_json(github: &GitHub, owner: &Installation, repo: &Repository) -> Value {
    let full_name = format!("{}/{}", owner.login, repo.name);
    json!({
        "id": repo.id,
        "node_id": format!("R_{}", repo.id),
        "name": repo.name,
        "full_name": full_name,
        "owner": account_json(github, owner),
        "private": true,
        "visibility": "private",
        "html_url": format!("{}/{full_name}", github.web_url),
        "url": format!("{}/repos/{full_name}", github.api_url),
    })
}

/// The `installation` object of the lookups and `GET /app/installations/{id}`.
pub(super) fn installation_json(github: &GitHub, installation: &Installation) -> Value {
    let id = installation.id;
    json!({
        "id": id,
        "client_id": github.client_id,
        "account": account_json(github, installation),
        "repository_selection": "selected",
        "access_tokens_url": format!("{}/app/installations/{id}/access_tokens", github.api_url),
        "repositories_url": format!("{}/installation/repositories", github.api_url),
        "html_url": format!("{}/settings/installations/{id}", github.web_url),
        "app_id": github.app_id,
        "app_slug": "stint-test-app",
        "target_id": installation.account_id,
        "target_type": installation.account.as_str(),
        "permissions": installation.permissions,
        "events": [],
        "created_at": "2026-01-05T10:00:00Z",
        "updated_at": "2026-01-05T10:00:00Z",
        "single_file_name": null,
        "has_multiple_single_files": false,
        "single_file_paths": [],
        "suspended_by": null,
        "suspended_at": null,
    })
}
