//! `kind: github` end to end: the broker on a real port, GitHub played by
//! the emulator (`github_emulator`), the caller's OIDC token from the test
//! issuer. What is asserted is stint's own behaviour: its scoping and
//! refusals, its leases and revocations, its audit records, its answers to
//! GitHub's errors and rate limits.

use std::time::Duration;

use serde_json::{Value, json};
use stint::audit::{AuditQuery, Outcome};

use crate::github_emulator::{Account, GitHubEmulator, RateLimit};
use crate::harness::{TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;

const APP_ID: u64 = 4242;

/// A grant on App `deployer` for `acme`: `infra` and the caller's own
/// repository (from its `repository` claim), contents and pull requests.
fn grant(name: &str, ttl: &str, extra: &str) -> String {
    format!(
        r#"
  {name}:
    kind: github
    app: deployer
    owner: acme
    repositories: [infra, "{{claims.repository}}"]
    permissions: {{ contents: write, pull_requests: write }}
    ttl: {ttl}
    max_ttl: 1h
{extra}    allow:
      - issuer: ci
        claims: {{ repository_owner: acme }}
"#
    )
}

fn app_yaml(emulator: &GitHubEmulator, key_line: &str) -> String {
    format!(
        "github_apps:\n  deployer:\n    app_id: {APP_ID}\n    {key_line}\n    api_url: \"{}\"\nleases: {{ reap_interval: 1s }}\n",
        emulator.url
    )
}

struct Setup {
    emulator: GitHubEmulator,
    issuer: TestIssuer,
    broker: TestBroker,
    _key: tempfile::TempDir,
}

async fn setup_with(emulator: GitHubEmulator, grants: &str) -> Setup {
    emulator.install(
        "acme",
        Account::Organization,
        &["infra", "api", "web"],
        &[("contents", "write"), ("pull_requests", "write"), ("metadata", "read")],
    );
    let key = tempfile::tempdir().unwrap();
    let pem = key.path().join("app.pem");
    std::fs::write(&pem, emulator.app_key_pem()).unwrap();
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_with(
        &issuer_yaml("ci", &issuer, "github", ""),
        grants,
        &app_yaml(&emulator, &format!("private_key_file: {}", pem.display())),
    )
    .await;
    Setup {
        emulator,
        issuer,
        broker,
        _key: key,
    }
}

async fn setup(grants: &str) -> Setup {
    setup_with(GitHubEmulator::start(APP_ID).await, grants).await
}

/// A caller token from `acme/api`.
fn caller(issuer: &TestIssuer) -> String {
    issuer.sign(&issuer.github())
}

/// What the token can reach, asked of GitHub with the token itself.
async fn reachable(emulator: &GitHubEmulator, token: &str) -> (u16, Vec<String>) {
    let answer = reqwest::Client::new()
        .get(format!("{}/installation/repositories", emulator.url))
        .header("authorization", format!("Bearer {token}"))
        .header("user-agent", "stint-tests")
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap_or_default();
    let mut names: Vec<String> = body["repositories"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r["full_name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    (status, names)
}

fn token_requests(emulator: &GitHubEmulator) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST") && r.ends_with("/access_tokens"))
        .count()
}

async fn records(broker: &TestBroker, grant: &str, outcome: Outcome) -> Vec<stint::audit::AuditRecord> {
    broker
        .server
        .broker
        .audit()
        .query(&AuditQuery {
            grant: Some(grant.into()),
            outcome: Some(outcome),
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

/// `POST /v1/leases/{id}/revoke` with `token` as the bearer.
async fn revoke(broker: &TestBroker, lease: &str, token: &str) -> crate::harness::Answer {
    let answer = broker
        .http
        .post(format!("{}/v1/leases/{lease}/revoke", broker.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    crate::harness::answer(answer).await
}

/// Waits until GitHub has `token` revoked, failing with `why` after `within`.
async fn until_revoked(emulator: &GitHubEmulator, token: &str, within: Duration, why: &str) {
    let started = std::time::Instant::now();
    while !emulator.is_revoked(token) {
        assert!(started.elapsed() < within, "{why}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GitHub, down until now, comes back; the reaper then revokes `token`,
/// which was not revoked while it was down.
async fn github_comes_back_and_revokes(emulator: &GitHubEmulator, token: &str) {
    assert!(!emulator.is_revoked(token), "revoked while GitHub was down");
    emulator.set_down(false);
    until_revoked(
        emulator,
        token,
        Duration::from_secs(60),
        "never revoked once GitHub was back",
    )
    .await;
}

/// The first `revoked` record of `grant`, once the reaper or a request wrote it.
async fn first_revoked(broker: &TestBroker, grant: &str) -> stint::audit::AuditRecord {
    loop {
        if let Some(r) = records(broker, grant, Outcome::Revoked).await.into_iter().next() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_token_reaches_exactly_the_grants_repositories_and_its_record_joins_githubs_log() {
    let s = setup(&grant("push", "10m", "")).await;
    let issued = s.broker.issue("push", &caller(&s.issuer), None).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    let token = issued.body["token"].as_str().unwrap();
    assert!(token.starts_with("ghs_"), "{token}");
    assert_eq!(issued.body["kind"], "github");
    assert_eq!(issued.body["repositories"], json!(["acme/api", "acme/infra"]));
    assert_eq!(issued.body["permissions"]["contents"], "write");
    assert_eq!(issued.body["lease_id"], issued.body["issuance_id"]);
    // stint's ttl, not GitHub's hour.
    let expires = time::OffsetDateTime::parse(
        issued.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!((expires - stint::clock::now() - 600).abs() <= 5, "{expires}");

    // GitHub, asked with the token, shows exactly those repositories.
    assert_eq!(
        reachable(&s.emulator, token).await,
        (200, vec!["acme/api".to_string(), "acme/infra".to_string()])
    );
    // The record carries what an auditor needs to find the token in
    // GitHub's audit log, and never the token.
    let record = s.broker.audit_record(&issued.request_id()).await;
    let github = &s.emulator.issued()[0];
    assert_eq!(record.detail["token_sha256"], json!(github.hashed_token));
    assert_eq!(record.detail["installation_id"], json!(github.installation_id));
    assert_eq!(record.detail["repositories"], json!(["acme/api", "acme/infra"]));
    assert_eq!(record.detail["app_id"], json!(APP_ID));
    assert!(!serde_json::to_string(&record).unwrap().contains(token));
}

#[tokio::test]
async fn a_caller_may_ask_for_less_never_for_more_and_a_refusal_calls_no_github() {
    let s = setup(&grant("push", "10m", "")).await;
    let token = caller(&s.issuer);
    let less = s
        .broker
        .issue(
            "push",
            &token,
            Some(json!({"repositories": ["infra"], "permissions": {"contents": "read"}})),
        )
        .await;
    assert_eq!(less.status, 200, "{}", less.text);
    let github = &s.emulator.issued()[0];
    assert_eq!(github.repositories, vec!["infra".to_string()]);
    assert_eq!(github.permissions.get("contents").map(String::as_str), Some("read"));
    assert_eq!(github.permissions.get("pull_requests"), None);

    let before = token_requests(&s.emulator);
    for (ask, names) in [
        (json!({"repositories": ["web"]}), "repositories web"),
        (json!({"repositories": ["other/infra"]}), "repositories other/infra"),
        (
            json!({"permissions": {"issues": "read"}}),
            "issues: read (the grant has no issues)",
        ),
        (json!({"permissions": {"pull_requests": "admin"}}), "pull_requests"),
        (
            json!({"permissions": {"workflows": "write"}}),
            "workflows: write (the grant has no workflows)",
        ),
    ] {
        let refused = s.broker.issue("push", &token, Some(ask.clone())).await;
        assert_eq!(
            (refused.status.as_u16(), refused.code()),
            (400, "invalid_request"),
            "{ask}: {}",
            refused.text
        );
        assert!(
            refused.body["detail"].as_str().unwrap().contains(names),
            "{ask}: {}",
            refused.text
        );
    }
    assert_eq!(token_requests(&s.emulator), before, "a refused ask reached GitHub");
}

#[tokio::test]
async fn githubs_refusals_become_answers_an_admin_can_act_on() {
    let grants = format!(
        "{}{}",
        grant("too-much", "10m", "").replace("pull_requests: write", "actions: write"),
        grant("elsewhere", "10m", "")
            .replace("    owner: acme", "    owner: globex")
            .replace(", \"{claims.repository}\"", "")
    );
    let s = setup(&grants).await;
    let token = caller(&s.issuer);
    // The grant asks for more than the App's installation has: GitHub's 422.
    let refused = s.broker.issue("too-much", &token, None).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code()),
        (502, "upstream_refused"),
        "{}",
        refused.text
    );
    assert!(refused.text.contains("ask an owner"), "{}", refused.text);
    // The App is not installed on the owner: GitHub's 404.
    let missing = s.broker.issue("elsewhere", &token, None).await;
    assert_eq!(missing.status, 502, "{}", missing.text);
    assert!(missing.text.contains("not installed on `globex`"), "{}", missing.text);
    let record = s.broker.audit_record(&missing.request_id()).await;
    assert_eq!(record.outcome, Outcome::Error);
    assert!(s.emulator.issued().is_empty());
}

#[tokio::test]
async fn at_its_ttl_the_reaper_revokes_the_token_at_github() {
    let s = setup(&grant("push", "2s", "")).await;
    let issued = s.broker.issue("push", &caller(&s.issuer), None).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    let token = issued.body["token"].as_str().unwrap().to_string();
    assert_eq!(reachable(&s.emulator, &token).await.0, 200);
    until_revoked(&s.emulator, &token, Duration::from_secs(20), "never revoked").await;
    assert_eq!(reachable(&s.emulator, &token).await.0, 401, "the token still works");
    let revoked = first_revoked(&s.broker, "push").await;
    assert_eq!(revoked.reason.as_deref(), Some("expired"));
    assert_eq!(revoked.kind.as_deref(), Some("github"));
    assert_eq!(
        revoked.detail["token_sha256"],
        json!(s.emulator.issued()[0].hashed_token)
    );
    assert_eq!(revoked.detail["app"], "deployer");
}

#[tokio::test]
async fn its_holder_revokes_it_early_and_github_refuses_it_afterwards() {
    let s = setup(&grant("push", "10m", "")).await;
    let token = caller(&s.issuer);
    let issued = s.broker.issue("push", &token, None).await;
    let gh = issued.body["token"].as_str().unwrap().to_string();
    let lease = issued.body["lease_id"].as_str().unwrap();
    let answer = revoke(&s.broker, lease, &token).await;
    assert_eq!(
        (answer.status.as_u16(), answer.body["state"].as_str()),
        (200, Some("revoked")),
        "{}",
        answer.text
    );
    assert!(s.emulator.is_revoked(&gh));
    assert_eq!(reachable(&s.emulator, &gh).await.0, 401);
    let revoked = records(&s.broker, "push", Outcome::Revoked).await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].reason.as_deref(), Some("revoked_by_caller"));
}

#[tokio::test]
async fn a_revocation_github_cannot_take_is_retried_until_it_can() {
    let s = setup(&grant("push", "1s", "")).await;
    let issued = s.broker.issue("push", &caller(&s.issuer), None).await;
    let gh = issued.body["token"].as_str().unwrap().to_string();
    s.emulator.set_down(true);
    // The reaper tries, fails, and keeps the lease active and failing.
    let store = s.broker.server.leases.as_ref().unwrap().store().clone();
    let started = std::time::Instant::now();
    loop {
        let failing = store.list(true, 10).await.unwrap();
        if !failing.is_empty() {
            assert_eq!(failing[0].kind, stint::leases::LeaseKind::Github);
            assert!(
                failing[0].last_error.as_deref().unwrap_or("").contains("503"),
                "{failing:?}"
            );
            assert_eq!(store.counts().await.unwrap(), (1, 1), "one active lease, failing");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never listed as failing");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    github_comes_back_and_revokes(&s.emulator, &gh).await;
}

#[tokio::test]
async fn githubs_rate_limit_is_a_503_with_retry_after_and_no_storm() {
    let s = setup(&grant("push", "10m", "")).await;
    let token = caller(&s.issuer);
    s.emulator
        .rate_limit_next(1, RateLimit::Secondary { retry_after_secs: 30 });
    let limited = s.broker.issue("push", &token, None).await;
    assert_eq!(
        (limited.status.as_u16(), limited.code()),
        (503, "upstream_throttled"),
        "{}",
        limited.text
    );
    assert_eq!(limited.headers.get("retry-after").unwrap(), "30");
    let asked = token_requests(&s.emulator);
    // While GitHub said to wait, callers are answered without asking it.
    for _ in 0..20 {
        let again = s.broker.issue("push", &token, None).await;
        assert_eq!(again.status, 503, "{}", again.text);
        let wait: u32 = again
            .headers
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&wait), "{wait}");
    }
    assert_eq!(token_requests(&s.emulator), asked, "a retry storm reached GitHub");
}

#[tokio::test]
async fn an_enterprise_server_api_url_works_the_same() {
    let s = setup_with(GitHubEmulator::start_ghes(APP_ID).await, &grant("push", "10m", "")).await;
    assert!(s.emulator.url.ends_with("/api/v3"));
    let issued = s.broker.issue("push", &caller(&s.issuer), None).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    let host = s
        .emulator
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(issued.body["git_host"], json!(host));
    assert!(s.emulator.requests().iter().all(|r| r.contains(" /api/v3/")));
}

#[tokio::test]
async fn the_app_key_can_come_from_secrets_manager() {
    let moto = crate::moto::Moto::start().await;
    let emulator = GitHubEmulator::start(APP_ID).await;
    emulator.install(
        "acme",
        Account::Organization,
        &["infra", "api"],
        &[("contents", "write"), ("pull_requests", "write")],
    );
    let admin = aws_sdk_secretsmanager::Client::new(&moto.sdk("AKIAADMIN", "admin", None).await);
    admin
        .create_secret()
        .name("ci/github-app")
        .secret_string(json!({"pem": emulator.app_key_pem()}).to_string())
        .send()
        .await
        .unwrap();
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_full(
        &issuer_yaml("ci", &issuer, "github", ""),
        &grant("push", "10m", ""),
        &format!(
            "{}{}",
            app_yaml(&emulator, "private_key_secret: \"ci/github-app#pem\""),
            crate::moto::Moto::aws_yaml(&moto.url, "")
        ),
        stint::server::StartOptions {
            aws_credentials: Some(crate::moto::stint_identity()),
            ..stint::server::StartOptions::default()
        },
    )
    .await;
    let issued = broker.issue("push", &caller(&issuer), None).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    assert_eq!(emulator.issued().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_stint_exec_git_uses_the_token_and_it_is_revoked_when_the_command_exits() {
    let s = setup(&grant("push", "10m", "")).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), caller(&s.issuer)).unwrap();
    let host = s.emulator.url.trim_start_matches("http://").to_string();
    // A helper the user configured before (or actions/checkout's header)
    // must not win over the grant's token.
    std::fs::write(
        dir.path().join(".gitconfig"),
        "[credential]\n\thelper = \"!f() { echo username=someone; echo password=stale; }; f\"\n",
    )
    .unwrap();
    let script = format!(
        "printf 'protocol=https\\nhost={host}\\n\\n' | git credential fill > filled && printf %s \"$GH_TOKEN\" > gh && printf %s \"$GITHUB_TOKEN\" > github"
    );
    let out = crate::client::stint(dir.path())
        .args([
            "exec",
            "--broker",
            &s.broker.url,
            "--token-file",
            "token",
            "--grant",
            "push",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let token = std::fs::read_to_string(dir.path().join("gh")).unwrap();
    assert!(token.starts_with("ghs_"), "{token}");
    assert_eq!(std::fs::read_to_string(dir.path().join("github")).unwrap(), token);
    let filled = std::fs::read_to_string(dir.path().join("filled")).unwrap();
    assert!(filled.contains("username=x-access-token\n"), "{filled}");
    assert!(filled.contains(&format!("password={token}\n")), "{filled}");

    // The command is done: so is its token.
    assert!(s.emulator.is_revoked(&token));
    assert_eq!(reachable(&s.emulator, &token).await.0, 401);
    let revoked = records(&s.broker, "push", Outcome::Revoked).await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].reason.as_deref(), Some("revoked_by_caller"));
}

#[tokio::test]
async fn an_early_revocation_while_github_is_down_ends_the_lease_and_finishes_once_github_is_back() {
    let s = setup(&grant("push", "10m", "")).await;
    let token = caller(&s.issuer);
    let issued = s.broker.issue("push", &token, None).await;
    let gh = issued.body["token"].as_str().unwrap().to_string();
    let lease = issued.body["lease_id"].as_str().unwrap().to_string();
    s.emulator.set_down(true);
    let answer = revoke(&s.broker, &lease, &token).await;
    assert_eq!(
        (answer.status.as_u16(), answer.body["state"].as_str()),
        (202, Some("revoking")),
        "{}",
        answer.text
    );
    // The caller is told what is left to do for this kind of lease.
    let detail = answer.body["detail"].as_str().unwrap();
    assert!(detail.contains("GitHub token") && !detail.contains("role"), "{detail}");
    github_comes_back_and_revokes(&s.emulator, &gh).await;
    let revoked = first_revoked(&s.broker, "push").await;
    assert_eq!(revoked.reason.as_deref(), Some("revoked_by_caller"));
    assert_eq!(revoked.request_id, answer.request_id());
}

#[tokio::test]
async fn another_caller_cannot_revoke_a_github_lease_and_the_refusal_is_recorded_as_github() {
    let s = setup(&grant("push", "10m", "")).await;
    let issued = s.broker.issue("push", &caller(&s.issuer), None).await;
    let gh = issued.body["token"].as_str().unwrap().to_string();
    let lease = issued.body["lease_id"].as_str().unwrap();
    let mut other = s.issuer.github();
    other.insert("sub".into(), json!("repo:acme/web:ref:refs/heads/main"));
    let refused = revoke(&s.broker, lease, &s.issuer.sign(&other)).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code()),
        (404, "lease_not_found"),
        "{}",
        refused.text
    );
    assert!(!s.emulator.is_revoked(&gh));
    let record = s.broker.audit_record(&refused.request_id()).await;
    assert_eq!(record.outcome, Outcome::Denied);
    assert_eq!(record.kind.as_deref(), Some("github"));
    // An id that names no lease has no kind.
    let unknown = revoke(&s.broker, "01a2231c-0000-7000-8000-000000000000", &caller(&s.issuer)).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let record = s.broker.audit_record(&unknown.request_id()).await;
    assert_eq!(record.kind, None);
}

#[tokio::test]
async fn an_app_key_that_is_not_rsa_stops_the_broker_at_start_naming_the_key() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "MHcCAQEEIA";
    std::fs::write(
        dir.path().join("app.pem"),
        format!("-----BEGIN EC PRIVATE KEY-----\n{secret}==\n-----END EC PRIVATE KEY-----\n"),
    )
    .unwrap();
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: sqlite://audit.db, key_file: audit.key }}\n\
         signing: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{}\
         github_apps:\n  deployer: {{ app_id: {APP_ID}, private_key_file: app.pem }}\n",
        issuer_yaml("ci", &issuer, "github", ""),
        grant("push", "10m", "")
    );
    // The config itself is fine: `stint config check` and `policy lint`
    // need no key.
    let config = stint::config::Config::parse(&text, "test.yaml", dir.path(), &|_| None).unwrap();
    let err = stint::server::start(config).await.err().unwrap().to_string();
    assert!(
        err.contains("github_apps.deployer.private_key_file") && err.contains("not an RSA private key"),
        "{err}"
    );
    assert!(!err.contains(secret), "{err}");
    // Refused before anything was created.
    for left in ["audit.key", "signing.key", "audit.db"] {
        assert!(!dir.path().join(left).exists(), "{left} was created");
    }
}
