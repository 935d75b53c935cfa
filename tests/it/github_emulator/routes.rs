//! The HTTP side: routes, GitHub's JSON shapes and error bodies.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LINK, RETRY_AFTER, USER_AGENT};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::shapes::{installation_json, repository_json};
use super::tokens::{TokenRefusal, TokenRequest};
use super::{GitHub, Installation, RateLimit, app_jwt};

type Shared = Arc<GitHub>;

const DOCS: &str = "https://docs.github.com/rest";
const APPS_DOCS: &str = "https://docs.github.com/rest/apps/apps";
const RATE_LIMIT_DOCS: &str = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";

/// The REST API routes (mounted at `/` or `/api/v3`).
pub(super) fn api() -> Router<Shared> {
    Router::new()
        .route("/app", get(app))
        .route("/app/installations/{id}", get(installation_by_id))
        .route("/app/installations/{id}/access_tokens", post(create_token))
        .route("/orgs/{org}/installation", get(org_installation))
        .route("/users/{username}/installation", get(user_installation))
        .route("/repos/{owner}/{repo}/installation", get(repo_installation))
        .route("/installation/repositories", get(list_repositories))
        .route("/installation/token", delete(revoke_token))
}

/// Runs before routing: records the request, then refuses what GitHub
/// refuses before looking at the path (no `User-Agent`), or everything
/// while down.
pub(super) async fn front_door(State(github): State<Shared>, request: Request, next: Next) -> Response {
    let line = format!("{} {}", request.method(), request.uri().path());
    let down = {
        let mut world = github.world();
        world.requests.push(line);
        world.down
    };
    if down {
        return error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable", DOCS);
    }
    let has_agent = request
        .headers()
        .get(USER_AGENT)
        .is_some_and(|v| !v.as_bytes().is_empty());
    if !has_agent {
        return (
            StatusCode::FORBIDDEN,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.\n",
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("x-github-api-version-selected", "2022-11-28".parse().expect("header"));
    response
}

pub(super) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found", DOCS)
}

/// GitHub's error body: `message`, `documentation_url`, `status`.
fn error(status: StatusCode, message: &str, documentation_url: &str) -> Response {
    let body = json!({"message": message, "documentation_url": documentation_url, "status": status.as_str()});
    (status, axum::Json(body)).into_response()
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// The App JWT check every App endpoint starts with: the 401 to answer,
/// if any.
fn app_refusal(github: &GitHub, headers: &HeaderMap) -> Option<Response> {
    app_jwt::verify(github, authorization(headers), stint::clock::now())
        .err()
        .map(|refusal| error(StatusCode::UNAUTHORIZED, refusal.message(), DOCS))
}

async fn app(State(github): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refused) = app_refusal(&github, &headers) {
        return refused;
    }
    let installations_count = github.world().installations.len();
    axum::Json(json!({
        "id": github.app_id,
        "client_id": github.client_id,
        "slug": "stint-test-app",
        "node_id": format!("A_{}", github.app_id),
        "name": "stint test app",
        "owner": {"login": "stint-test", "id": 1, "type": "Organization"},
        "html_url": format!("{}/apps/stint-test-app", github.web_url),
        "permissions": {"metadata": "read"},
        "events": [],
        "installations_count": installations_count,
    }))
    .into_response()
}

async fn installation_by_id(State(github): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let doc = format!("{APPS_DOCS}#get-an-installation-for-the-authenticated-app");
    if let Some(refused) = app_refusal(&github, &headers) {
        return refused;
    }
    let found = id.parse().ok().and_then(|id| github.world().installation(id).cloned());
    match found {
        Some(installation) => axum::Json(installation_json(&github, &installation)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found", &doc),
    }
}

async fn org_installation(State(github): State<Shared>, Path(org): Path<String>, headers: HeaderMap) -> Response {
    let doc = format!("{APPS_DOCS}#get-an-organization-installation-for-the-authenticated-app");
    lookup(&github, &headers, &doc, |i| {
        i.login.eq_ignore_ascii_case(&org) && i.account == super::Account::Organization
    })
}

async fn user_installation(State(github): State<Shared>, Path(username): Path<String>, headers: HeaderMap) -> Response {
    let doc = format!("{APPS_DOCS}#get-a-user-installation-for-the-authenticated-app");
    lookup(&github, &headers, &doc, |i| i.login.eq_ignore_ascii_case(&username))
}

async fn repo_installation(
    State(github): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let doc = format!("{APPS_DOCS}#get-a-repository-installation-for-the-authenticated-app");
    lookup(&github, &headers, &doc, |i| {
        i.login.eq_ignore_ascii_case(&owner) && i.repositories.iter().any(|r| r.name.eq_ignore_ascii_case(&repo))
    })
}

fn lookup(github: &GitHub, headers: &HeaderMap, doc: &str, matches: impl Fn(&Installation) -> bool) -> Response {
    if let Some(refused) = app_refusal(github, headers) {
        return refused;
    }
    let found = github.world().installations.iter().find(|i| matches(i)).cloned();
    match found {
        Some(installation) => axum::Json(installation_json(github, &installation)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found", doc),
    }
}

async fn create_token(
    State(github): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc = format!("{APPS_DOCS}#create-an-installation-access-token-for-an-app");
    if let Some(refused) = app_refusal(&github, &headers) {
        return refused;
    }
    // The quota belongs to the App, known once the JWT names it.
    let limit = github.world().rate_limits.pop_front();
    if let Some(limit) = limit {
        return rate_limited(&github, limit);
    }
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, "Not Found", &doc);
    };
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        match serde_json::from_slice::<TokenRequest>(&body) {
            Ok(request) => request,
            Err(e) if e.is_data() => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("Invalid request.\n\n{e}"),
                    &doc,
                );
            }
            Err(_) => return error(StatusCode::BAD_REQUEST, "Problems parsing JSON", &doc),
        }
    };
    // The per-request override of GitHub's 2026 token-format rollout; other
    // values are "silently ignored".
    let stateless = match headers
        .get("x-github-stateless-s2s-token")
        .and_then(|v| v.to_str().ok())
    {
        Some("enabled") => Some(true),
        Some("disabled") => Some(false),
        _ => None,
    };
    let minted = match github.mint(id, request, stateless, stint::clock::now()) {
        Ok(minted) => minted,
        Err(TokenRefusal::NoInstallation) => return error(StatusCode::NOT_FOUND, "Not Found", &doc),
        Err(TokenRefusal::Unprocessable(message)) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, message, &doc);
        }
    };
    let installation = github.world().installation(id).cloned();
    let mut body = json!({
        "token": minted.issued.token,
        "expires_at": minted.issued.expires_at,
        "permissions": minted.issued.permissions,
        "repository_selection": "selected",
    });
    if let (Some(repos), Some(owner)) = (minted.named_repositories, installation) {
        body["repositories"] = repos.iter().map(|r| repository_json(&github, &owner, r)).collect();
    }
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

fn rate_limited(github: &GitHub, limit: RateLimit) -> Response {
    let now = stint::clock::now();
    let (status, primary, retry_after, reset) = match limit {
        RateLimit::Primary { reset_in_secs } => (StatusCode::FORBIDDEN, true, None, reset_in_secs),
        RateLimit::PrimaryTooManyRequests { reset_in_secs } => {
            (StatusCode::TOO_MANY_REQUESTS, true, None, reset_in_secs)
        }
        RateLimit::Secondary { retry_after_secs } => (StatusCode::FORBIDDEN, false, Some(retry_after_secs), 3600),
        RateLimit::SecondaryTooManyRequests { retry_after_secs } => {
            (StatusCode::TOO_MANY_REQUESTS, false, Some(retry_after_secs), 3600)
        }
        RateLimit::SecondaryWithoutRetryAfter => (StatusCode::FORBIDDEN, false, None, 3600),
    };
    let request_id = format!("E1A0:{now:X}");
    let (message, doc, remaining) = if primary {
        (
            format!("API rate limit exceeded for app ID {}.", github.app_id),
            format!("{RATE_LIMIT_DOCS}#about-primary-rate-limits"),
            0,
        )
    } else {
        (
            format!(
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID {request_id}."
            ),
            format!("{RATE_LIMIT_DOCS}#about-secondary-rate-limits"),
            4987,
        )
    };
    let mut response = error(status, &message, &doc);
    let headers = response.headers_mut();
    let reset = u64::try_from(now).unwrap_or(0) + reset;
    for (name, value) in [
        ("x-ratelimit-limit", "5000".to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-used", (5000 - remaining).to_string()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
        ("x-github-request-id", request_id),
    ] {
        headers.insert(name, value.parse().expect("header"));
    }
    if let Some(secs) = retry_after {
        headers.insert(RETRY_AFTER, secs.to_string().parse().expect("header"));
    }
    response
}

#[derive(Deserialize)]
struct Page {
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn list_repositories(State(github): State<Shared>, Query(page): Query<Page>, headers: HeaderMap) -> Response {
    let Some(token) = github.live_token(authorization(&headers), stint::clock::now()) else {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials", DOCS);
    };
    let (repositories, owner) = {
        let world = github.world();
        let state = &world.tokens[&token];
        let installation = world.installation(state.installation_id).cloned();
        (
            state.repositories.clone(),
            installation.expect("a token belongs to an installation"),
        )
    };
    let per_page = page.per_page.unwrap_or(30).clamp(1, 100);
    let number = page.page.unwrap_or(1).max(1);
    let shown: Vec<Value> = repositories
        .iter()
        .skip((number - 1) * per_page)
        .take(per_page)
        .map(|r| repository_json(&github, &owner, r))
        .collect();
    let body = json!({
        "total_count": repositories.len(),
        "repository_selection": "selected",
        "repositories": shown,
    });
    let mut response = axum::Json(body).into_response();
    if number * per_page < repositories.len() {
        let next = format!(
            "<{}/installation/repositories?per_page={per_page}&page={}>; rel=\"next\"",
            github.api_url,
            number + 1
        );
        response.headers_mut().insert(LINK, next.parse().expect("header"));
    }
    response
}

async fn revoke_token(State(github): State<Shared>, headers: HeaderMap) -> Response {
    let Some(token) = github.live_token(authorization(&headers), stint::clock::now()) else {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials", DOCS);
    };
    if let Some(state) = github.world().tokens.get_mut(&token) {
        state.revoked = true;
    }
    (StatusCode::NO_CONTENT, Body::empty()).into_response()
}
