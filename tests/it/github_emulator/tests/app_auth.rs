//! App JWTs, installation lookups, and what GitHub refuses before either.

use jsonwebtoken::Algorithm;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{APP_ID, app_jwt, call, create_token, get, names, now, sign, sign_raw};
use crate::github_emulator::{Account, GitHubEmulator, unrelated_key_pem};

#[tokio::test]
async fn app_jwt_finds_installations_by_organization_user_and_repository() {
    let github = GitHubEmulator::start(APP_ID).await;
    let org = github.install(
        "octo-org",
        Account::Organization,
        &["infra", "site"],
        &[("contents", "write")],
    );
    let user = github.install("octocat", Account::User, &["dotfiles"], &[("issues", "read")]);
    let bearer = format!("Bearer {}", app_jwt(&github));

    let found = get(&github, "/orgs/Octo-Org/installation", &bearer).await;
    assert_eq!(found.status, StatusCode::OK, "{:?}", found.body);
    assert_eq!(found.body["id"], org);
    assert_eq!(found.body["app_id"], APP_ID);
    assert_eq!(found.body["account"]["login"], "octo-org");
    assert_eq!(found.body["account"]["type"], "Organization");
    assert_eq!(
        found.body["permissions"],
        json!({"contents": "write", "metadata": "read"})
    );
    assert_eq!(
        found.body["access_tokens_url"],
        format!("{}/app/installations/{org}/access_tokens", github.url)
    );
    let by_user = get(&github, "/users/octocat/installation", &bearer).await;
    assert_eq!(
        (by_user.status, by_user.body["account"]["type"].clone()),
        (StatusCode::OK, json!("User"))
    );
    assert_eq!(by_user.body["id"], user);
    // Organizations are users too; users are no organizations.
    assert_eq!(
        get(&github, "/users/octo-org/installation", &bearer).await.body["id"],
        org
    );
    let not_org = get(&github, "/orgs/octocat/installation", &bearer).await;
    assert_eq!(
        (not_org.status, not_org.message()),
        (StatusCode::NOT_FOUND, "Not Found")
    );
    assert_eq!(
        get(&github, "/repos/octo-org/site/installation", &bearer).await.body["id"],
        org
    );
    let no_repo = get(&github, "/repos/octo-org/secret/installation", &bearer).await;
    assert_eq!(no_repo.status, StatusCode::NOT_FOUND);
    let by_id = get(&github, &format!("/app/installations/{user}"), &bearer).await;
    assert_eq!(by_id.body["account"]["login"], "octocat");
    assert_eq!(get(&github, "/app", &bearer).await.body["id"], APP_ID);

    // `iss` as a number, as the client id; the key as PKCS#8; GitHub's own
    // Ruby sample (iat now − 60, exp now + 600).
    let pkcs1 = github.app_key_pem();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"), "{pkcs1}");
    for (key, iss, iat, exp) in [
        (pkcs1.clone(), json!(APP_ID), now(), now() + 300),
        (pkcs1.clone(), json!(github.client_id()), now() - 60, now() + 600),
        (
            github.app_key_pkcs8_pem(),
            json!(APP_ID.to_string()),
            now() - 30,
            now() + 570,
        ),
    ] {
        let jwt = sign(&key, Algorithm::RS256, &json!({"iat": iat, "exp": exp, "iss": iss}));
        let reply = get(&github, "/app", &format!("bearer {jwt}")).await;
        assert_eq!(reply.status, StatusCode::OK, "iss {iss}: {:?}", reply.body);
    }
}

#[tokio::test]
async fn app_jwts_github_refuses_are_401_with_its_messages() {
    let github = GitHubEmulator::start(APP_ID).await;
    github.install("octo-org", Account::Organization, &["infra"], &[("contents", "read")]);
    let pem = github.app_key_pem();
    let rs256 = |claims: Value| sign(&pem, Algorithm::RS256, &claims);
    let iss = APP_ID.to_string();
    let undecodable = "A JSON web token could not be decoded";
    let too_far = "'Expiration time' claim ('exp') is too far in the future";
    let expiration = "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires";
    let issued_at = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued";
    let cases = [
        (
            "exp 11 minutes out",
            rs256(json!({"iat": now(), "exp": now() + 660, "iss": iss})),
            too_far,
        ),
        (
            "exp passed",
            rs256(json!({"iat": now() - 120, "exp": now() - 1, "iss": iss})),
            expiration,
        ),
        ("no exp", rs256(json!({"iat": now() - 60, "iss": iss})), expiration),
        (
            "iat ahead",
            rs256(json!({"iat": now() + 30, "exp": now() + 300, "iss": iss})),
            issued_at,
        ),
        (
            "iat a float",
            rs256(json!({"iat": 1.5e9, "exp": now() + 300, "iss": iss})),
            issued_at,
        ),
        ("no iat", rs256(json!({"exp": now() + 300, "iss": iss})), issued_at),
        (
            "another App's id",
            rs256(json!({"iat": now(), "exp": now() + 300, "iss": "7"})),
            undecodable,
        ),
        ("no iss", rs256(json!({"iat": now(), "exp": now() + 300})), undecodable),
        (
            "HS256 keyed with the PEM",
            sign(
                &pem,
                Algorithm::HS256,
                &json!({"iat": now(), "exp": now() + 300, "iss": iss}),
            ),
            undecodable,
        ),
        (
            "RS384",
            sign(
                &pem,
                Algorithm::RS384,
                &json!({"iat": now(), "exp": now() + 300, "iss": iss}),
            ),
            undecodable,
        ),
        (
            "another key",
            sign(
                &unrelated_key_pem(),
                Algorithm::RS256,
                &json!({"iat": now(), "exp": now() + 300, "iss": iss}),
            ),
            undecodable,
        ),
        (
            "RS256-signed, header says none",
            sign_raw(
                &json!({"alg": "none"}),
                &json!({"iat": now(), "exp": now() + 300, "iss": iss}),
            ),
            undecodable,
        ),
        ("not a JWT", "ghs_abc".to_string(), undecodable),
    ];
    for (what, jwt, message) in cases {
        let reply = get(&github, "/orgs/octo-org/installation", &format!("Bearer {jwt}")).await;
        assert_eq!(
            (reply.status, reply.message()),
            (StatusCode::UNAUTHORIZED, message),
            "{what}"
        );
        assert_eq!(
            reply.body["documentation_url"], "https://docs.github.com/rest",
            "{what}"
        );
    }
    let raw = sign_raw(
        &json!({"alg": "RS256"}),
        &json!({"iat": now(), "exp": now() + 300, "iss": iss}),
    );
    assert_eq!(
        get(&github, "/app", &format!("Bearer {raw}")).await.status,
        StatusCode::OK
    );
    // A good JWT passed as `token` is refused: JWTs go as Bearer only.
    let reply = get(
        &github,
        "/orgs/octo-org/installation",
        &format!("token {}", app_jwt(&github)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = get(
        &github,
        "/orgs/octo-org/installation",
        &format!("Bearer {}", app_jwt(&github)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(github.issued().is_empty());
}

#[tokio::test]
async fn enterprise_server_serves_the_api_under_api_v3_only() {
    let github = GitHubEmulator::start_ghes(APP_ID).await;
    assert!(github.url.ends_with("/api/v3"), "{}", github.url);
    let id = github.install("platform", Account::Organization, &["infra"], &[("contents", "write")]);
    let bearer = format!("Bearer {}", app_jwt(&github));
    let origin = github.url.trim_end_matches("/api/v3").to_string();
    let outside = call(
        Method::GET,
        &format!("{origin}/orgs/platform/installation"),
        Some(&bearer),
        None,
    )
    .await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);
    let inside = get(&github, "/orgs/platform/installation", &bearer).await;
    assert_eq!(inside.body["id"], id);
    assert!(
        inside.body["access_tokens_url"]
            .as_str()
            .unwrap()
            .starts_with(&github.url)
    );
    let token = create_token(&github, id, json!({"repositories": ["infra"]})).await;
    assert_eq!(token.status, StatusCode::CREATED, "{:?}", token.body);
    assert_eq!(
        token.body["repositories"][0]["html_url"],
        format!("{origin}/platform/infra")
    );
    let listed = get(
        &github,
        "/installation/repositories",
        &format!("token {}", token.body["token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(names(&listed), ["infra"]);
    assert_eq!(
        github.requests(),
        [
            "GET /orgs/platform/installation".to_string(),
            "GET /api/v3/orgs/platform/installation".into(),
            format!("POST /api/v3/app/installations/{id}/access_tokens"),
            "GET /api/v3/installation/repositories".into(),
        ]
    );
}

#[tokio::test]
async fn requests_without_a_user_agent_are_forbidden() {
    let github = GitHubEmulator::start(APP_ID).await;
    github.install("octo-org", Account::Organization, &["infra"], &[("contents", "read")]);
    let url = format!("{}/orgs/octo-org/installation", github.url);
    let bare = reqwest::Client::new()
        .get(&url)
        .header("authorization", format!("Bearer {}", app_jwt(&github)))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::FORBIDDEN);
    assert!(bare.text().await.unwrap().contains("User-Agent"));
    assert_eq!(
        get(
            &github,
            "/orgs/octo-org/installation",
            &format!("Bearer {}", app_jwt(&github))
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(github.requests().len(), 2);
}

#[tokio::test]
async fn down_answers_503_to_everything() {
    let github = GitHubEmulator::start(APP_ID).await;
    let id = github.install("octo-org", Account::Organization, &["infra"], &[("contents", "read")]);
    github.set_down(true);
    assert_eq!(
        create_token(&github, id, json!({})).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    github.set_down(false);
    assert_eq!(create_token(&github, id, json!({})).await.status, StatusCode::CREATED);
    assert_eq!(github.app_id(), APP_ID);
}
