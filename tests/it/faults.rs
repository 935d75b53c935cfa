//! Faults with real parts: an audit store that hangs, goes away or is
//! locked in the middle of a burst; SIGTERM in the middle of a load; a flood
//! of distinct junk tokens. Nothing is lost, nothing is issued unaudited,
//! and the broker serves again without a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use stint::server::StartOptions;

use crate::harness::{Answer, DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::{RSA_KID, RSA_OTHER_KID, Signer, TestIssuer, keys, rsa_jwk};
use crate::process::{assert_chain_verifies, assert_every_issuance_recorded, free_port, serve, terminate};
use crate::store::{Backend, fresh_store};
use crate::tcp_fault::{FaultProxy, Mode};

/// What a burst of requests got back: request ids of 200s, and the rest.
#[derive(Default)]
struct Tally {
    issued: Vec<String>,
    refused: Vec<(u16, String)>,
}

impl Tally {
    fn take(&mut self, answer: &Answer) {
        if answer.status == 200 {
            self.issued.push(answer.request_id());
        } else {
            self.refused.push((answer.status.as_u16(), answer.code().to_string()));
        }
    }
}

/// `n` concurrent issue requests.
async fn burst(broker: &Arc<TestBroker>, token: &str, n: usize) -> Vec<Answer> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (broker, token) = (broker.clone(), token.to_string());
            tokio::spawn(async move { broker.issue("deploy", &token, None).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Asserts every answer is a 503 problem (never a 200 or a 500) while the
/// store cannot take writes.
fn assert_all_refused(answers: &[Answer], tally: &mut Tally, while_what: &str) {
    for answer in answers {
        tally.take(answer);
        assert_eq!(answer.status, 503, "{while_what}: {}", answer.text);
        assert!(
            ["timeout", "audit_unavailable"].contains(&answer.code()),
            "{while_what}: {}",
            answer.text
        );
        assert_eq!(answer.content_type(), "application/problem+json");
        assert!(!answer.request_id().is_empty());
    }
}

/// Polls until an issuance succeeds again, within `within`.
async fn until_issued(broker: &TestBroker, token: &str, tally: &mut Tally, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let answer = broker.issue("deploy", token, None).await;
        tally.take(&answer);
        if answer.status == 200 {
            return started.elapsed();
        }
        assert_ne!(answer.status, 500, "{}", answer.text);
        assert!(
            started.elapsed() < within,
            "still refusing {within:?} after the store came back: {}",
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readiness(broker: &TestBroker) -> (u16, String) {
    let answer = broker.admin_get("/readyz").await;
    (
        answer.status.as_u16(),
        answer.body["audit"].as_str().unwrap_or("").to_string(),
    )
}

/// Polls `/readyz` until it is 200, within `within`.
async fn until_ready(broker: &TestBroker, within: Duration) {
    let started = Instant::now();
    loop {
        let (status, audit) = readiness(broker).await;
        if status == 200 {
            return;
        }
        assert!(
            started.elapsed() < within,
            "still not ready after {within:?}: audit {audit}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_store_that_hangs_then_goes_away_mid_burst_loses_nothing_and_recovers() {
    let (store, _) = fresh_store(Backend::Postgres).await;
    let (host, port) = crate::store::postgres_host_port();
    let target = format!("{host}:{port}");
    let proxy = FaultProxy::start(&target).await;
    let proxied = store.replacen(&target, &proxy.addr.to_string(), 1);
    let issuer = TestIssuer::start().await;
    let broker = Arc::new(
        TestBroker::start_on(
            &proxied,
            "  timeout: 1s\n",
            &issuer_yaml("ci", &issuer, "github", ""),
            DEPLOY_GRANT,
            "limits: { request_timeout: 2s }\n",
            StartOptions::default(),
        )
        .await,
    );
    let token = issuer.sign(&issuer.github());
    let mut tally = Tally::default();

    for answer in burst(&broker, &token, 10).await {
        assert_eq!(answer.status, 200, "{}", answer.text);
        tally.take(&answer);
    }
    assert_eq!(readiness(&broker).await, (200, "ok".into()));

    // Hanging: connections stay open, nothing moves.
    proxy.set(Mode::Hang);
    let answers = burst(&broker, &token, 20).await;
    assert_all_refused(&answers, &mut tally, "store hanging");
    let (status, audit) = readiness(&broker).await;
    assert_eq!(status, 503, "not ready while the store hangs (audit {audit})");
    proxy.set(Mode::Pass);
    until_issued(&broker, &token, &mut tally, Duration::from_secs(15)).await;
    until_ready(&broker, Duration::from_secs(15)).await;

    // Gone: every connection cut, new ones refused.
    proxy.set(Mode::Down);
    let answers = burst(&broker, &token, 20).await;
    assert_all_refused(&answers, &mut tally, "store down");
    let (status, audit) = readiness(&broker).await;
    assert_eq!(
        (status, audit.as_str()),
        (503, "unavailable"),
        "not ready while the store is down"
    );
    proxy.set(Mode::Pass);
    until_issued(&broker, &token, &mut tally, Duration::from_secs(15)).await;
    until_ready(&broker, Duration::from_secs(15)).await;
    for answer in burst(&broker, &token, 10).await {
        assert_eq!(answer.status, 200, "serves again: {}", answer.text);
        tally.take(&answer);
    }

    assert!(tally.refused.len() >= 40, "{:?}", tally.refused);
    // Reconciled against the store itself, not through the proxy.
    assert_every_issuance_recorded(&store, &tally.issued).await;
    assert_chain_verifies(&store, &broker.dir.path().join("audit.key")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_sqlite_store_makes_the_broker_unready_until_released() {
    let issuer = TestIssuer::start().await;
    let broker = Arc::new(
        TestBroker::start_with(
            &issuer_yaml("ci", &issuer, "github", ""),
            DEPLOY_GRANT,
            "limits: { request_timeout: 1s }\n",
        )
        .await,
    );
    let token = issuer.sign(&issuer.github());
    let mut tally = Tally::default();
    assert_eq!(broker.issue("deploy", &token, None).await.status, 200);

    // Another process (here: another connection) holds the write lock.
    let locker = rusqlite::Connection::open(broker.audit_db()).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let answers = burst(&broker, &token, 8).await;
    assert_all_refused(&answers, &mut tally, "store locked");
    let (status, audit) = readiness(&broker).await;
    assert_eq!(status, 503, "not ready while appends fail (audit {audit})");
    // Which word depends on where the writer is waiting: on the lock
    // (stalled), after giving up (failing), or holding the connection a
    // read needs (unavailable). Never "ok".
    assert!(
        ["stalled", "failing", "unavailable"].contains(&audit.as_str()),
        "{audit}"
    );

    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    until_issued(&broker, &token, &mut tally, Duration::from_secs(15)).await;
    until_ready(&broker, Duration::from_secs(15)).await;
    let db = format!("sqlite://{}", broker.audit_db().display());
    assert_every_issuance_recorded(&db, &tally.issued).await;
    assert_chain_verifies(&db, &broker.dir.path().join("audit.key")).await;
}

fn write_config(dir: &std::path::Path, issuer: &TestIssuer, extra: &str) -> std::path::PathBuf {
    let config = dir.join("stint.yaml");
    std::fs::write(
        &config,
        format!(
            "audit: {{ store: sqlite://audit.db, key_file: audit.key }}\nsigning: {{ key_file: signing.key }}\n{extra}issuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
            issuer_yaml("ci", issuer, "github", "")
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_load_finishes_in_flight_requests_loses_no_record_and_exits_0() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &issuer, "jwks: { refetch_cooldown: 0s }\n");
    let port = free_port();
    let mut child = serve(&config, port, free_port()).await;
    let url = format!("http://127.0.0.1:{port}/v1/issue/deploy");

    // Steady load from 6 clients until the listener is gone.
    let issued: Arc<Mutex<Vec<String>>> = Arc::default();
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (url, issued, stopping) = (url.clone(), issued.clone(), stopping.clone());
        let token = issuer.sign(&issuer.github());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                match http.post(&url).bearer_auth(&token).send().await {
                    Ok(response) => {
                        let id = response.headers()["x-request-id"].to_str().unwrap().to_string();
                        let status = response.status();
                        let body = response.text().await.unwrap();
                        assert_eq!(status, 200, "{body}");
                        issued.lock().unwrap().push(id);
                    }
                    // Refused connections are how a stopped listener answers.
                    Err(e) => {
                        assert!(
                            stopping.load(std::sync::atomic::Ordering::SeqCst),
                            "error before SIGTERM: {e}"
                        );
                        return;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Requests that are surely in flight at SIGTERM: signed with a key the
    // broker has not seen, so each waits for a slow JWKS refetch.
    issuer.set_jwks(json!({"keys": [rsa_jwk(&keys().rsa, RSA_KID), rsa_jwk(&keys().rsa_other, RSA_OTHER_KID)]}));
    issuer.set_jwks_delay(Duration::from_millis(1500));
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let token = issuer.sign_with(
                &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_OTHER_KID}),
                &issuer.github(),
                Signer::RsaOther,
            );
            let url = url.clone();
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .post(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("an in-flight request is answered");
                let id = response.headers()["x-request-id"].to_str().unwrap().to_string();
                (response.status().as_u16(), id)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    terminate(&child);

    for request in slow {
        let (status, id) = request.await.unwrap();
        assert_eq!(status, 200, "the request in flight at SIGTERM finished");
        issued.lock().unwrap().push(id);
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stint exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let issued = issued.lock().unwrap().clone();
    assert!(issued.len() > 20, "the load ran: {} issuances", issued.len());
    let store = format!("sqlite://{}", dir.path().join("audit.db").display());
    assert_every_issuance_recorded(&store, &issued).await;
    assert_chain_verifies(&store, &dir.path().join("audit.key")).await;
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `n` distinct junk tokens of about 6 KiB each from 32 clients, all of
/// which must be refused with 401.
async fn flood(url: &str, issuer: &TestIssuer, n: usize, offset: usize) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let padding = "x".repeat(6 * 1024);
    let trusted = issuer.url.clone();
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (url, next, padding, trusted) = (url.to_string(), next.clone(), padding.clone(), trusted.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return;
                }
                let unique = i + offset;
                // A trusted issuer with a kid nobody published, an issuer
                // nobody trusts, and something that is not a token at all.
                let iss = match unique % 3 {
                    0 => trusted.clone(),
                    1 => format!("https://issuer-{unique}.invalid"),
                    _ => String::new(),
                };
                let token = if iss.is_empty() {
                    format!("junk{unique}.{padding}.x")
                } else {
                    let header = json!({"alg": "RS256", "typ": "JWT", "kid": format!("flood-{unique}")});
                    let claims = json!({"iss": iss, "sub": format!("s{unique}"),
                        "jti": format!("{unique}"), "pad": padding, "exp": 4_000_000_000u64});
                    crate::issuer::sign_raw(&header.to_string(), &claims.to_string(), Signer::Rsa)
                };
                let response = http.post(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(response.status(), 401, "{}", response.text().await.unwrap());
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_stays_bounded_under_a_flood_of_distinct_invalid_tokens() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &issuer, "jwks: { refetch_cooldown: 30s }\n");
    let port = free_port();
    let child = serve(&config, port, free_port()).await;
    let pid = child.id().unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/issue/deploy");

    // Warm up allocator arenas, connection buffers and SQLite's page cache.
    flood(&url, &issuer, 3_000, 0).await;
    let before = rss_kib(pid);
    flood(&url, &issuer, 20_000, 3_000).await;
    let after = rss_kib(pid);
    // Kept, 20,000 tokens of 6 KiB would be about 120 MiB.
    let grown = after.saturating_sub(before);
    eprintln!("resident memory: {before} KiB after warm-up, {after} KiB after the flood");
    assert!(
        grown < 24 * 1024,
        "resident memory grew {grown} KiB ({before} → {after}) over 20,000 distinct invalid tokens"
    );
}
