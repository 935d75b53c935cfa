//! Installation access tokens: issued within the installation, used,
//! revoked, expired, rate limited.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{APP_ID, app_jwt, call, create_token, get, names, now};
use crate::github_emulator::{Account, GitHubEmulator, RateLimit, tokens};

#[tokio::test]
async fn a_token_lists_exactly_its_repositories_until_revoked() {
    let github = GitHubEmulator::start(APP_ID).await;
    let id = github.install(
        "octo-org",
        Account::Organization,
        &["zeta", "alpha", "infra", "site"],
        &[("contents", "write"), ("pull_requests", "write")],
    );
    let reply = create_token(
        &github,
        id,
        json!({"repositories": ["zeta", "alpha"], "permissions": {"contents": "read"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let token = reply.body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ghs_") && token.len() == 40, "{token}");
    assert!(token[4..].chars().all(|c| c.is_ascii_alphanumeric()), "{token}");
    // A write installation grants read; metadata comes along.
    assert_eq!(
        reply.body["permissions"],
        json!({"contents": "read", "metadata": "read"})
    );
    assert_eq!(reply.body["repository_selection"], "selected");
    assert_eq!(names(&reply), ["alpha", "zeta"]);
    assert_eq!(reply.body["repositories"][0]["full_name"], "octo-org/alpha");
    let expires_at = reply.body["expires_at"].as_str().unwrap();
    let expires = time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp();
    assert!(expires_at.len() == 20 && expires_at.ends_with('Z'), "{expires_at}");
    assert!((now() + 3590..=now() + 3600).contains(&expires), "{expires_at}");

    let issued = github.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(
        (issued[0].token.as_str(), issued[0].installation_id),
        (token.as_str(), id)
    );
    assert_eq!(issued[0].repositories, ["alpha", "zeta"]);
    assert_eq!(issued[0].expires_at, expires_at);
    assert_eq!(issued[0].hashed_token, tokens::hashed_token(&token));
    assert_eq!(issued[0].hashed_token.len(), 44, "base64 of 32 bytes, padded");

    for scheme in ["token", "Bearer"] {
        let listed = get(&github, "/installation/repositories", &format!("{scheme} {token}")).await;
        assert_eq!(listed.status, StatusCode::OK, "{scheme}: {:?}", listed.body);
        assert_eq!(
            (listed.body["total_count"].clone(), names(&listed)),
            (json!(2), vec!["alpha".into(), "zeta".into()])
        );
    }
    let first = get(
        &github,
        "/installation/repositories?per_page=1",
        &format!("token {token}"),
    )
    .await;
    assert_eq!(names(&first), ["alpha"]);
    assert!(first.header("link").unwrap().contains("page=2"), "{:?}", first.headers);

    // Without `repositories` a token gets all of them, and the answer leaves them out.
    let all = create_token(&github, id, json!({})).await;
    assert_eq!(all.body["repositories"], Value::Null);
    assert_eq!(github.issued()[1].repositories, ["alpha", "infra", "site", "zeta"]);
    assert_eq!(
        all.body["permissions"],
        json!({"contents": "write", "metadata": "read", "pull_requests": "write"})
    );

    let url = format!("{}/installation/token", github.url);
    let revoked = call(Method::DELETE, &url, Some(&format!("token {token}")), None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert!(github.is_revoked(&token));
    let refused = get(&github, "/installation/repositories", &format!("token {token}")).await;
    assert_eq!(
        (refused.status, refused.message()),
        (StatusCode::UNAUTHORIZED, "Bad credentials")
    );
    let again = call(Method::DELETE, &url, Some(&format!("token {token}")), None).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    // The other token is untouched.
    let other = all.body["token"].as_str().unwrap();
    assert!(!github.is_revoked(other));
    assert_eq!(
        get(&github, "/installation/repositories", &format!("token {other}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        github
            .requests()
            .iter()
            .filter(|r| *r == "DELETE /installation/token")
            .count(),
        2
    );
}

#[tokio::test]
async fn asking_beyond_the_installation_is_refused_and_issues_nothing() {
    let github = GitHubEmulator::start(APP_ID).await;
    let id = github.install(
        "octo-org",
        Account::Organization,
        &["infra"],
        &[("contents", "read"), ("issues", "write")],
    );
    let not_accessible = tokens::NOT_ACCESSIBLE;
    let not_granted = tokens::NOT_GRANTED;
    let cases = [
        (
            json!({"repositories": ["infra", "secret"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            not_accessible,
        ),
        (
            json!({"repositories": ["octo-org/infra"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            not_accessible,
        ),
        (
            json!({"repository_ids": [1]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            not_accessible,
        ),
        (
            json!({"permissions": {"contents": "write"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            not_granted,
        ),
        (
            json!({"permissions": {"pull_requests": "read"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            not_granted,
        ),
        (
            json!({"permissions": {"issues": "admin"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            not_granted,
        ),
        (
            json!({"permissions": {"contents": "none"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            not_granted,
        ),
        (
            json!({"permissions": {"no_such_thing": "read"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            not_granted,
        ),
        (json!({"repositories": "infra"}), StatusCode::UNPROCESSABLE_ENTITY, ""),
    ];
    for (body, status, message) in cases {
        let reply = create_token(&github, id, body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {:?}", reply.body);
        assert!(reply.message().starts_with(message), "{body}: {:?}", reply.body);
        assert!(
            reply.body["documentation_url"]
                .as_str()
                .unwrap()
                .contains("create-an-installation-access-token")
        );
    }
    assert_eq!(
        create_token(&github, id + 1000, json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(github.issued().is_empty(), "{:?}", github.issued());

    // Within bounds: by name, by id, and `issues: read` under `issues: write`.
    let by_name = create_token(&github, id, json!({"repositories": ["INFRA"]})).await;
    assert_eq!(names(&by_name), ["infra"]);
    let repo_id = by_name.body["repositories"][0]["id"].clone();
    let reply = create_token(
        &github,
        id,
        json!({"repository_ids": [repo_id], "permissions": {"issues": "read"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(names(&reply), ["infra"]);
    assert_eq!(reply.body["permissions"], json!({"issues": "read", "metadata": "read"}));
}

#[tokio::test]
async fn expired_tokens_are_bad_credentials() {
    let github = GitHubEmulator::start(APP_ID).await;
    let id = github.install("octocat", Account::User, &["dotfiles"], &[("contents", "read")]);
    let token = create_token(&github, id, json!({})).await.body["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(&github, "/installation/repositories", &format!("token {token}"))
            .await
            .status,
        StatusCode::OK
    );
    github.expire_all_tokens();
    let reply = get(&github, "/installation/repositories", &format!("token {token}")).await;
    assert_eq!(
        (reply.status, reply.message()),
        (StatusCode::UNAUTHORIZED, "Bad credentials")
    );
    assert!(!github.is_revoked(&token));
}

#[tokio::test]
async fn rate_limits_answer_as_github_documents_them() {
    let github = GitHubEmulator::start(APP_ID).await;
    let id = github.install("octo-org", Account::Organization, &["infra"], &[("contents", "read")]);
    let kinds = [
        (RateLimit::Primary { reset_in_secs: 120 }, StatusCode::FORBIDDEN),
        (
            RateLimit::PrimaryTooManyRequests { reset_in_secs: 120 },
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (RateLimit::Secondary { retry_after_secs: 30 }, StatusCode::FORBIDDEN),
        (
            RateLimit::SecondaryTooManyRequests { retry_after_secs: 30 },
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (RateLimit::SecondaryWithoutRetryAfter, StatusCode::FORBIDDEN),
    ];
    for (kind, status) in kinds {
        github.rate_limit_next(1, kind);
        let reply = create_token(&github, id, json!({})).await;
        assert_eq!(reply.status, status, "{kind:?}");
        let reset: i64 = reply.header("x-ratelimit-reset").unwrap().parse().unwrap();
        match kind {
            RateLimit::Primary { .. } | RateLimit::PrimaryTooManyRequests { .. } => {
                assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
                assert!((now() + 119..=now() + 120).contains(&reset), "{reset}");
                assert_eq!(reply.header("retry-after"), None);
            }
            RateLimit::Secondary { .. } | RateLimit::SecondaryTooManyRequests { .. } => {
                assert_eq!(reply.header("retry-after"), Some("30"));
                assert_ne!(reply.header("x-ratelimit-remaining"), Some("0"));
                assert!(reply.message().contains("secondary rate limit"), "{:?}", reply.body);
            }
            RateLimit::SecondaryWithoutRetryAfter => {
                assert_eq!(reply.header("retry-after"), None);
                assert!(reply.message().contains("secondary rate limit"), "{:?}", reply.body);
            }
        }
    }
    github.rate_limit_next(2, RateLimit::Secondary { retry_after_secs: 5 });
    assert_eq!(create_token(&github, id, json!({})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(create_token(&github, id, json!({})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(create_token(&github, id, json!({})).await.status, StatusCode::CREATED);
    assert_eq!(github.issued().len(), 1);
}

#[tokio::test]
async fn stateless_tokens_are_long_and_work_like_the_others() {
    let github = GitHubEmulator::start(APP_ID).await;
    let id = github.install("octo-org", Account::Organization, &["infra"], &[("contents", "read")]);
    let url = format!("{}/app/installations/{id}/access_tokens", github.url);
    let http = reqwest::Client::builder().user_agent("stint-tests").build().unwrap();
    let forced: Value = http
        .post(&url)
        .bearer_auth(app_jwt(&github))
        .header("x-github-stateless-s2s-token", "enabled")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = forced["token"].as_str().unwrap();
    assert!(token.len() > 500 && token.matches('.').count() == 2, "{token}");
    assert!(
        token[4..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
    );
    assert_eq!(
        get(&github, "/installation/repositories", &format!("token {token}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        create_token(&github, id, json!({})).await.body["token"]
            .as_str()
            .unwrap()
            .len(),
        40
    );
    github.issue_stateless_tokens(true);
    assert!(
        create_token(&github, id, json!({})).await.body["token"]
            .as_str()
            .unwrap()
            .len()
            > 500
    );
}
