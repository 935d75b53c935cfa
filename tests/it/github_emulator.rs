//! A GitHub REST API emulator for tests: GitHub is not reachable from the
//! machines these tests run on, so a real HTTP server on a free port plays
//! the part of `api.github.com` (or a GitHub Enterprise Server under
//! `/api/v3`) for one GitHub App. It follows GitHub's documentation for the
//! endpoints stint uses, strictly, so a broker that passes here behaves on
//! GitHub too. Tests assert stint's behaviour, never the emulator's.
//!
//! Modelled behaviours and where each comes from (docs.github.com unless
//! said otherwise):
//!
//! - **App JWT** (`apps/creating-github-apps/authenticating-with-a-github-app/
//!   generating-a-json-web-token-jwt-for-a-github-app`): RS256 only, signed
//!   with the App's private key; `iss` is the App id (number or string) or
//!   its client id; `iat` an integer not in the future; `exp` numeric, in
//!   the future and "no more than 10 minutes into the future" measured from
//!   GitHub's clock (the page's own Ruby sample sends `iat` = now − 60 and
//!   `exp` = now + 600, 11 minutes apart, so `exp − iat` is not what is
//!   limited). A JWT must come as `Authorization: Bearer` (the page's
//!   "bearer vs token" note); the scheme is case-insensitive (RFC 9110, and
//!   actions/create-github-app-token sends `bearer`). Refusals are 401 with
//!   GitHub's own messages, as quoted in public issues: "A JSON web token
//!   could not be decoded" (bad signature, wrong algorithm, or an `iss` of
//!   another App: octokit/auth-app.js#375), "'Issued at' claim ('iat') must
//!   be an Integer representing the time that the assertion was issued"
//!   (probot#967, a clock ahead of GitHub's), "'Expiration time' claim
//!   ('exp') must be a numeric value representing the future time at which
//!   the assertion expires" (github3.py#1050), "'Expiration time' claim
//!   ('exp') is too far in the future" (actions/create-github-app-token#178).
//! - **Installation lookups** (`rest/apps/apps`: get-an-organization-,
//!   get-a-user-, get-a-repository-installation-for-the-authenticated-app):
//!   200 with the installation object, or 404 `Not Found` when the App is
//!   not installed there. `/orgs/{org}/installation` answers for
//!   organizations only; `/users/{username}/installation` answers for any
//!   account, organizations included (undocumented, but GitHub serves an
//!   organization at `/users/{org}`: actions/create-github-app-token#175).
//!   `GET /app` and `GET /app/installations/{id}` are served too.
//! - **Installation access tokens** (`rest/apps/apps#create-an-installation-
//!   access-token-for-an-app` and `apps/.../generating-an-installation-
//!   access-token-for-a-github-app`): 201 with `token`, `expires_at` one hour
//!   out, `permissions`, `repository_selection`, and `repositories` (only
//!   when the request named repositories, as octokit's auth-app treats it).
//!   Narrowed by `repositories` (names without the owner) or
//!   `repository_ids`, never beyond the installation: 422 "There is at least
//!   one repository that does not exist or is not accessible to the parent
//!   installation."; `permissions` at most the installation's (read < write
//!   < admin, levels per permission from the REST schema `app-permissions`),
//!   an unknown name or level included: 422 "The permissions requested are
//!   not granted to this installation."; unknown installation: 404. Apps
//!   hold `metadata: read` whenever they hold a repository permission
//!   (`rest/overview/permissions-required-for-github-apps`, "Metadata"), and
//!   a narrowed token carries it too. Tokens are `ghs_` and 36 alphanumerics
//!   (`authentication/.../about-authentication-to-github`, token prefixes);
//!   since April 2026 GitHub also mints stateless `ghs_` JWT-format tokens
//!   of ~520 characters with two dots, forced per request by
//!   `X-GitHub-Stateless-S2S-Token: enabled` (github.blog changelog
//!   2026-05-15), so a client must not assume a length.
//! - **Using a token** (`rest/apps/installations#list-repositories-
//!   accessible-to-the-app-installation`): `Authorization: token ghs_…` or
//!   `Bearer ghs_…` lists exactly the token's repositories (`per_page` up to
//!   100, `page`); an unknown, revoked or expired token is 401 "Bad
//!   credentials" (expired: "Using an expired token produces a status code
//!   of 401", from the create-token page).
//! - **Revocation** (`rest/apps/installations#revoke-an-installation-access-
//!   token`): `DELETE /installation/token` with the token, 204, and the token
//!   is refused from then on; revoking it again is 401.
//! - **Rate limits** (`rest/using-the-rest-api/rate-limits-for-the-rest-api`
//!   and `.../troubleshooting-the-rest-api`): a primary limit is 403 or 429
//!   with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` in UTC epoch
//!   seconds; a secondary limit is 403 or 429 with a message naming it and
//!   `retry-after` in seconds, or with no `retry-after` at all ("wait for at
//!   least one minute"), while `x-ratelimit-remaining` need not be 0.
//! - **User-Agent** (`rest/using-the-rest-api/getting-started-with-the-rest-
//!   api#user-agent`): "Requests with no User-Agent header will be
//!   rejected": 403 with GitHub's plain-text answer. `Accept` and
//!   `X-GitHub-Api-Version` are not required (GitHub defaults them).
//! - **Enterprise Server** (`enterprise-server@3.x/rest/quickstart`): the
//!   REST API lives under `http(s)://HOSTNAME/api/v3`; nothing else answers.

mod app_jwt;
mod keys;
mod permissions;
mod routes;
mod shapes;
mod tests;
mod tokens;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;

pub use keys::unrelated_key_pem;

/// What kind of account an installation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Account {
    Organization,
    User,
}

impl Account {
    /// The `type` GitHub writes for the account.
    fn as_str(self) -> &'static str {
        match self {
            Account::Organization => "Organization",
            Account::User => "User",
        }
    }
}

/// A token the emulator handed out, as GitHub answered it.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: String,
    pub installation_id: u64,
    /// Repository names (without owner), sorted.
    pub repositories: Vec<String>,
    pub permissions: BTreeMap<String, String>,
    /// `YYYY-MM-DDTHH:MM:SSZ`, as issued (`expire_all_tokens` does not rewrite it).
    pub expires_at: String,
    /// Base64 (standard, padded) of the token's SHA-256: the `hashed_token`
    /// field of GitHub's audit log.
    pub hashed_token: String,
}

/// How the next `POST .../access_tokens` is turned away.
#[derive(Clone, Copy, Debug)]
pub enum RateLimit {
    /// 403, `x-ratelimit-remaining: 0`, `x-ratelimit-reset` = now + `reset_in_secs`.
    Primary { reset_in_secs: u64 },
    /// As `Primary`, with 429 (the docs allow either status).
    PrimaryTooManyRequests { reset_in_secs: u64 },
    /// 403 with `retry-after`, quota left (`x-ratelimit-remaining` > 0).
    Secondary { retry_after_secs: u64 },
    /// As `Secondary`, with 429.
    SecondaryTooManyRequests { retry_after_secs: u64 },
    /// 403, a secondary limit with no `retry-after` ("wait at least one minute").
    SecondaryWithoutRetryAfter,
}

/// One repository of an installation.
#[derive(Clone, Debug)]
struct Repository {
    id: u64,
    name: String,
}

/// The App installed on one account.
#[derive(Clone, Debug)]
struct Installation {
    id: u64,
    login: String,
    account: Account,
    account_id: u64,
    repositories: Vec<Repository>,
    permissions: BTreeMap<String, String>,
}

/// What the emulator knows of a token after issuing it.
struct TokenState {
    installation_id: u64,
    repositories: Vec<Repository>,
    expires_at: i64,
    revoked: bool,
}

/// Everything that changes while the emulator runs.
#[derive(Default)]
struct World {
    installations: Vec<Installation>,
    tokens: HashMap<String, TokenState>,
    issued: Vec<IssuedToken>,
    requests: Vec<String>,
    rate_limits: VecDeque<RateLimit>,
    next_id: u64,
    stateless_tokens: bool,
    down: bool,
}

impl World {
    /// A fresh id; ids of every kind share one counter so none collide.
    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn installation(&self, id: u64) -> Option<&Installation> {
        self.installations.iter().find(|i| i.id == id)
    }

    /// Logins are case-insensitive on GitHub.
    fn installation_for(&self, login: &str) -> Option<&Installation> {
        self.installations.iter().find(|i| i.login.eq_ignore_ascii_case(login))
    }
}

/// The emulated GitHub: one App, its installations, the tokens it issued.
struct GitHub {
    app_id: u64,
    client_id: String,
    /// API base as clients use it (ends in `/api/v3` on Enterprise Server).
    api_url: String,
    /// Web base for `html_url`s.
    web_url: String,
    world: Mutex<World>,
}

impl GitHub {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

/// A running GitHub API emulator.
pub struct GitHubEmulator {
    /// API base: `http://127.0.0.1:PORT`, or `http://127.0.0.1:PORT/api/v3`.
    pub url: String,
    github: Arc<GitHub>,
}

impl GitHubEmulator {
    /// github.com shape: the API at the root.
    pub async fn start(app_id: u64) -> GitHubEmulator {
        Self::serve(app_id, "").await
    }

    /// Enterprise Server shape: the API under `/api/v3`, 404 elsewhere.
    pub async fn start_ghes(app_id: u64) -> GitHubEmulator {
        Self::serve(app_id, "/api/v3").await
    }

    async fn serve(app_id: u64, prefix: &str) -> GitHubEmulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind github emulator");
        let origin = format!("http://{}", listener.local_addr().expect("addr"));
        let web_url = if prefix.is_empty() {
            "https://github.com".to_string()
        } else {
            origin.clone()
        };
        let github = Arc::new(GitHub {
            app_id,
            client_id: format!("Iv23li{app_id:014}"),
            api_url: format!("{origin}{prefix}"),
            web_url,
            world: Mutex::new(World {
                next_id: 41_000_000,
                ..World::default()
            }),
        });
        let api = routes::api().with_state(github.clone());
        let router = if prefix.is_empty() {
            api
        } else {
            Router::new().nest(prefix, api)
        };
        let router = router
            .fallback(routes::not_found)
            .layer(axum::middleware::from_fn_with_state(github.clone(), routes::front_door));
        tokio::spawn(async move { axum::serve(listener, router).await });
        GitHubEmulator {
            url: github.api_url.clone(),
            github,
        }
    }

    /// The App's id.
    pub fn app_id(&self) -> u64 {
        self.github.app_id
    }

    /// The App's client id (accepted as JWT `iss` like the App id).
    pub fn client_id(&self) -> String {
        self.github.client_id.clone()
    }

    /// The App's private key as GitHub hands it out: PKCS#1
    /// `BEGIN RSA PRIVATE KEY` PEM.
    pub fn app_key_pem(&self) -> String {
        keys::pkcs1_pem(keys::app_key())
    }

    /// The same key as PKCS#8 `BEGIN PRIVATE KEY` PEM (what
    /// `openssl pkcs8 -topk8` makes of GitHub's file).
    pub fn app_key_pkcs8_pem(&self) -> String {
        keys::pkcs8_pem(keys::app_key())
    }

    /// Installs the App on `owner` with these repositories (names without
    /// owner) and permissions; returns the installation id. `metadata: read`
    /// is added as GitHub does for any App with repository access.
    pub fn install(&self, owner: &str, account: Account, repositories: &[&str], permissions: &[(&str, &str)]) -> u64 {
        let mut world = self.github.world();
        assert!(
            world.installation_for(owner).is_none(),
            "the App is installed on {owner} already (one installation per account)"
        );
        let mut granted: BTreeMap<String, String> = BTreeMap::new();
        for (name, level) in permissions {
            assert!(
                permissions::is_valid(name, level),
                "GitHub has no permission {name}: {level}"
            );
            granted.insert((*name).to_string(), (*level).to_string());
        }
        granted.entry("metadata".into()).or_insert_with(|| "read".into());
        let repositories = repositories
            .iter()
            .map(|name| Repository {
                id: world.fresh_id(),
                name: (*name).to_string(),
            })
            .collect();
        let id = world.fresh_id();
        let account_id = world.fresh_id();
        world.installations.push(Installation {
            id,
            login: owner.to_string(),
            account,
            account_id,
            repositories,
            permissions: granted,
        });
        id
    }

    /// Every token issued so far, in order.
    pub fn issued(&self) -> Vec<IssuedToken> {
        self.github.world().issued.clone()
    }

    /// Whether `DELETE /installation/token` revoked this token.
    pub fn is_revoked(&self, token: &str) -> bool {
        self.github.world().tokens.get(token).is_some_and(|t| t.revoked)
    }

    /// `METHOD /path` of every request received, in order, refused ones
    /// included; the path as sent (with `/api/v3` on Enterprise Server).
    pub fn requests(&self) -> Vec<String> {
        self.github.world().requests.clone()
    }

    /// The next `n` `POST .../access_tokens` with a valid JWT answer `kind`.
    pub fn rate_limit_next(&self, n: usize, kind: RateLimit) {
        let mut world = self.github.world();
        world.rate_limits.extend(std::iter::repeat_n(kind, n));
    }

    /// Makes every token issued so far expired (tests the hour without waiting).
    pub fn expire_all_tokens(&self) {
        let past = stint::clock::now() - 1;
        for token in self.github.world().tokens.values_mut() {
            token.expires_at = past;
        }
    }

    /// Mints stateless (JWT-format, ~520 characters) tokens from now on, as
    /// GitHub's 2026 rollout does; `X-GitHub-Stateless-S2S-Token` still
    /// overrides it per request.
    pub fn issue_stateless_tokens(&self, on: bool) {
        self.github.world().stateless_tokens = on;
    }

    /// While `down`, every request is answered 503 (still recorded).
    pub fn set_down(&self, down: bool) {
        self.github.world().down = down;
    }
}
