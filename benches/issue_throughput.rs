//! Issue throughput with and without audit group commit, in one run.
//!
//! `cargo bench --bench issue_throughput` starts a local OIDC issuer and the
//! broker (SQLite audit, synchronous=FULL), then drives `POST /v1/issue`
//! from concurrent clients for a few seconds per setting. Compare the
//! figures as a ratio: the machine is shared and absolute numbers vary.

// Not every shared part is used here.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use stint::config::Config;
use stint::keys::{SigningAlgorithm, SigningKey};

const CLIENTS: usize = 32;
const SECONDS: u64 = 5;

async fn issuer(key: &SigningKey) -> String {
    common::serve_issuer(json!({"keys": [key.public_jwk()]})).await
}

async fn run(group_commit: bool, key: &SigningKey, issuer_url: &str) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n\
         audit: {{ store: sqlite://audit.db, key_file: audit.key, group_commit: {group_commit} }}\n\
         signing: {{ key_file: signing.key }}\n\
         issuers: {{ bench: {{ issuer: \"{issuer_url}\", audience: stint, algorithms: [ES256], platform: generic }} }}\n\
         grants: {{ t: {{ kind: token, ttl: 5m, audience: x, allow: [ {{ issuer: bench, claims: {{ repository: acme/api }} }} ] }} }}\n"
    );
    let config = Config::parse(&text, "bench", dir.path(), &|_| None).expect("config");
    let server = stint::server::start(config).await.expect("start");
    let url = format!("http://{}/v1/issue/t", server.addr);
    let now = stint::clock::now();
    let token = key
        .sign_jwt(
            &json!({"iss": issuer_url, "sub": "bench", "aud": "stint", "iat": now, "exp": now + 600,
            "jti": "bench", "repository": "acme/api"}),
        )
        .expect("sign");
    let http = reqwest::Client::new();
    // Warm up (JWKS fetch, connections).
    for _ in 0..10 {
        http.post(&url).bearer_auth(&token).send().await.expect("warm-up");
    }
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, url, token, done) = (http.clone(), url.clone(), token.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let response = http.post(&url).bearer_auth(&token).send().await.expect("request");
                assert_eq!(response.status(), 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    server.shutdown().await;
    done.load(Ordering::Relaxed) as f64 / SECONDS as f64
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let key = SigningKey::generate(SigningAlgorithm::ES256).expect("key");
    let issuer_url = issuer(&key).await;
    let without = run(false, &key, &issuer_url).await;
    let with = run(true, &key, &issuer_url).await;
    println!("issue throughput, {CLIENTS} clients, {SECONDS}s each, SQLite synchronous=FULL");
    println!("  one commit per record : {without:8.0} issuances/s");
    println!("  group commit          : {with:8.0} issuances/s");
    println!("  ratio                 : {:.2}x", with / without.max(1.0));
}
