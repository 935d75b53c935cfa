//! Config reload without a restart: SIGHUP and `reload.watch` put new
//! grants in force atomically; a bad file changes nothing; a request in
//! flight finishes on the config it started with.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stint::config::Config;
use stint::server::StartOptions;

use crate::harness::{Answer, issuer_yaml};
use crate::issuer::{RSA_KID, RSA_OTHER_KID, Signer, TestIssuer, keys, rsa_jwk};
use crate::process::{free_port, serve};

fn config_text(issuer: &TestIssuer, repository: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: sqlite://audit.db, key_file: audit.key }}\n\
         signing: {{ key_file: signing.key }}\njwks: {{ refetch_cooldown: 0s }}\n{extra}issuers:\n{}\ngrants:\n  deploy:\n    kind: token\n    ttl: 5m\n    audience: deploy-api\n    allow:\n      - issuer: ci\n        claims:\n          repository: {repository}\n",
        issuer_yaml("ci", issuer, "github", "")
    )
}

struct Running {
    server: stint::server::RunningServer,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn issue(&self, token: &str) -> Answer {
        crate::harness::answer(
            self.http
                .post(format!("http://{}/v1/issue/deploy", self.server.addr))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.server.admin_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

async fn start(path: &Path, dir: tempfile::TempDir) -> Running {
    let config = Config::load(path).unwrap();
    let server = stint::server::start_with(
        config,
        StartOptions {
            config_path: Some(path.to_path_buf()),
            ..StartOptions::default()
        },
    )
    .await
    .unwrap();
    for _ in 0..100 {
        if server.broker.verifier().issuers_without_keys().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running {
        server,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

fn token_for(issuer: &TestIssuer, repository: &str) -> String {
    let mut claims = issuer.github();
    claims.insert("repository".into(), json!(repository));
    issuer.sign(&claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_swaps_grants_atomically_and_a_bad_file_changes_nothing() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stint.yaml");
    std::fs::write(&path, config_text(&issuer, "acme/api", "")).unwrap();
    let broker = Arc::new(start(&path, dir).await);
    assert_eq!(broker.issue(&token_for(&issuer, "acme/api")).await.status, 200);

    // A request that is in flight during the reload: its token's key must
    // be fetched, slowly.
    issuer.set_jwks(json!({"keys": [rsa_jwk(&keys().rsa, RSA_KID), rsa_jwk(&keys().rsa_other, RSA_OTHER_KID)]}));
    issuer.set_jwks_delay(Duration::from_millis(1000));
    let mut claims = issuer.github();
    claims.insert("repository".into(), json!("acme/api"));
    let slow_token = issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_OTHER_KID}),
        &claims,
        Signer::RsaOther,
    );
    let slow = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.issue(&slow_token).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(
        &path,
        config_text(&issuer, "acme/web", "").replace("admin_listen: 127.0.0.1:0", "admin_listen: 127.0.0.1:1"),
    )
    .unwrap();
    let reloaded = broker.server.reload_config().unwrap();
    assert_eq!(reloaded.grants, 1);
    assert!(!reloaded.issuers_changed);
    assert_eq!(
        reloaded.needs_restart,
        vec!["admin_listen"],
        "listeners only change with a restart"
    );
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "the request in flight kept its config: {}", slow.text);
    issuer.set_jwks_delay(Duration::ZERO);

    let old = broker.issue(&token_for(&issuer, "acme/api")).await;
    assert_eq!((old.status.as_u16(), old.code()), (403, "denied"), "{}", old.text);
    assert_eq!(broker.issue(&token_for(&issuer, "acme/web")).await.status, 200);

    // A broken file is refused as a whole; the last good config serves on.
    std::fs::write(
        &path,
        config_text(&issuer, "acme/web", "").replace("kind: token", "kind: tokn"),
    )
    .unwrap();
    let refused = broker.server.reload_config().unwrap_err();
    assert!(refused.contains("grants.deploy.kind"), "{refused}");
    assert_eq!(broker.issue(&token_for(&issuer, "acme/web")).await.status, 200);
    let metrics = broker.metrics().await;
    assert!(
        metrics.contains(r#"stint_config_reloads_total{outcome="success"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stint_config_reloads_total{outcome="failure"} 1"#),
        "{metrics}"
    );

    // A grant of a kind this broker started without needs a restart.
    std::fs::write(
        &path,
        config_text(&issuer, "acme/web", "").replace(
            "    kind: token\n    ttl: 5m\n    audience: deploy-api\n",
            "    kind: aws\n    ttl: 15m\n    role_arn: arn:aws:iam::111122223333:role/deploy\n",
        ),
    )
    .unwrap();
    let refused = broker.server.reload_config().unwrap_err();
    assert!(refused.contains("restart"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_watch_picks_up_an_edited_file() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stint.yaml");
    let watch = "reload: { watch: 1s }\n";
    std::fs::write(&path, config_text(&issuer, "acme/api", watch)).unwrap();
    let broker = start(&path, dir).await;
    assert_eq!(broker.issue(&token_for(&issuer, "acme/web")).await.status, 403);
    std::fs::write(&path, config_text(&issuer, "acme/web", watch)).unwrap();
    let started = Instant::now();
    while broker.issue(&token_for(&issuer, "acme/web")).await.status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the edit was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_stint_serve() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stint.yaml");
    std::fs::write(&path, config_text(&issuer, "acme/api", "")).unwrap();
    let port = free_port();
    let child = serve(&path, port, free_port()).await;
    let http = reqwest::Client::new();
    let issue = |repository: &str| {
        let request = http
            .post(format!("http://127.0.0.1:{port}/v1/issue/deploy"))
            .bearer_auth(token_for(&issuer, repository));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(issue("acme/web").await, 403);
    std::fs::write(&path, config_text(&issuer, "acme/web", "")).unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let started = Instant::now();
    while issue("acme/web").await != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(issue("acme/api").await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_known_keys_of_unchanged_issuers() {
    let issuer = TestIssuer::start().await;
    let other = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stint.yaml");
    let with_other = |audience: &str| {
        config_text(&issuer, "acme/api", "").replace(
            "issuers:\n",
            &format!(
                "issuers:\n  other:\n    issuer: \"{}\"\n    audience: \"{audience}\"\n    algorithms: [RS256]\n    platform: github\n",
                other.url
            ),
        )
    };
    std::fs::write(&path, with_other("one")).unwrap();
    let broker = start(&path, dir).await;
    assert_eq!(broker.issue(&token_for(&issuer, "acme/api")).await.status, 200);
    let fetched = issuer.jwks_fetches();

    // The issuer is down when another issuer's settings change.
    issuer.set_down(true);
    std::fs::write(&path, with_other("two")).unwrap();
    let reloaded = broker.server.reload_config().unwrap();
    assert!(reloaded.issuers_changed);
    let answer = broker.issue(&token_for(&issuer, "acme/api")).await;
    assert_eq!(answer.status, 200, "its keys were kept: {}", answer.text);
    assert_eq!(issuer.jwks_fetches(), fetched, "no refetch for an unchanged issuer");
}

/// An `aws` grant whose session cache survives reloads, on `moto_url`.
fn aws_config_text(issuer: &TestIssuer, moto_url: &str, max_ttl: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: sqlite://audit.db, key_file: audit.key }}\n\
         signing: {{ key_file: signing.key }}\n{aws}issuers:\n{issuers}\ngrants:\n  deploy-aws:\n    kind: aws\n    \
         role_arn: arn:aws:iam::123456789012:role/deploy\n    ttl: 15m\n    max_ttl: {max_ttl}\n    allow:\n      \
         - issuer: ci\n        claims: {{ repository: acme/api }}\n",
        aws = crate::moto::Moto::aws_yaml(moto_url, ""),
        issuers = issuer_yaml("ci", issuer, "github", ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_lowers_max_ttl_never_serves_a_longer_cached_session() {
    let moto = crate::moto::Moto::start().await;
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stint.yaml");
    std::fs::write(&path, aws_config_text(&issuer, &moto.url, "12h")).unwrap();
    let config = Config::load(&path).unwrap();
    let server = stint::server::start_with(
        config,
        StartOptions {
            config_path: Some(path.clone()),
            aws_credentials: Some(crate::moto::stint_identity()),
        },
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let issue = |ttl: Option<&str>| {
        let body = ttl.map_or_else(|| json!({}), |ttl| json!({ "ttl": ttl }));
        let request = http
            .post(format!("http://{}/v1/issue/deploy-aws", server.addr))
            .bearer_auth(token_for(&issuer, "acme/api"))
            .json(&body);
        async move { crate::harness::answer(request.send().await.unwrap()).await }
    };
    let access_key = |answer: &Answer| answer.body["credentials"]["AccessKeyId"].as_str().unwrap().to_string();

    // A 12h session, then the default 15m: the cached 12h session serves it.
    let long = issue(Some("12h")).await;
    assert_eq!(long.status, 200, "{}", long.text);
    let cached = issue(None).await;
    assert_eq!(access_key(&cached), access_key(&long), "the cache is in use");

    std::fs::write(&path, aws_config_text(&issuer, &moto.url, "1h")).unwrap();
    server.reload_config().unwrap();
    let after = issue(None).await;
    let now = stint::clock::now();
    assert_eq!(after.status, 200, "{}", after.text);
    let expires_at = time::OffsetDateTime::parse(
        after.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(
        expires_at <= now + 3600,
        "expires {}s from now, past the new max_ttl of 1h",
        expires_at - now
    );
    assert_ne!(access_key(&after), access_key(&long), "a fresh session");
}
