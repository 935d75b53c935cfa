//! The one-shot client asks again when the broker is busy, restarting or
//! rate limiting, within `--retry-for` and never sooner than its
//! `Retry-After`; what a retry cannot change ends it at once.

use std::time::{Duration, Instant};

use stint::audit::Outcome;
use stint::server::StartOptions;

use crate::client::{Ran, run, stint};
use crate::harness::{DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;

/// `stint token --grant deploy` against `broker`, and how long it took.
async fn token(dir: &std::path::Path, broker: &str, extra: &[&str]) -> (Ran, Duration) {
    let mut command = stint(dir);
    command
        .args([
            "token",
            "--grant",
            "deploy",
            "--broker",
            broker,
            "--token-file",
            "token",
        ])
        .args(extra);
    let started = Instant::now();
    let ran = run(command).await;
    (ran, started.elapsed())
}

/// A loopback port nothing listens on (yet), and its URL: where a broker
/// that is not up is looked for.
fn nothing_listening() -> (u16, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (port, format!("http://127.0.0.1:{port}"))
}

/// The request id a line of stderr names (`request id ID)`).
fn request_id(line: &str) -> String {
    let start = line.find("request id ").expect("a request id") + "request id ".len();
    line[start..].chars().take_while(|c| *c != ')').collect()
}

#[tokio::test]
async fn a_caller_over_its_rate_is_asked_again_after_retry_after() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_with(
        &issuer_yaml("ci", &issuer, "github", ""),
        DEPLOY_GRANT,
        "limits: { per_subject: { per_second: 0.5, burst: 1 } }\n",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();

    let (first, _) = token(dir.path(), &broker.url, &[]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);

    let (refused, _) = token(dir.path(), &broker.url, &["--retry-for", "0s"]).await;
    assert_eq!(refused.code, 4, "--retry-for 0s: the 429 ends it: {}", refused.stderr);
    assert!(
        refused.stderr.contains("429") && refused.stderr.contains("code rate_limited"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("retrying"), "{}", refused.stderr);

    let (retried, took) = token(dir.path(), &broker.url, &[]).await;
    assert_eq!(retried.code, 0, "the retry is issued: {}", retried.stderr);
    assert_eq!(retried.stdout.trim().split('.').count(), 3, "a JWT: {}", retried.stdout);
    let line = retried
        .stderr
        .lines()
        .find(|l| l.contains("retrying in"))
        .unwrap_or_else(|| panic!("one line says it retries: {}", retried.stderr));
    assert!(
        line.starts_with("stint: broker refused grant `deploy`: 429") && line.contains("left of --retry-for"),
        "{line}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "no sooner than Retry-After (at least 1s): {:?}",
        took
    );
    let denial = broker.audit_record(&request_id(line)).await;
    assert_eq!(
        (denial.outcome, denial.reason.as_deref()),
        (Outcome::Denied, Some("rate_limited")),
        "the turned-away try is audited as what it was"
    );
}

#[tokio::test]
async fn a_broker_that_is_not_up_yet_is_waited_for() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    let (port, url) = nothing_listening();

    let client = {
        let dir = dir.path().to_path_buf();
        let url = url.clone();
        tokio::spawn(async move { token(&dir, &url, &[]).await.0 })
    };
    // The client finds nothing listening, and tries again while the
    // broker starts (a rolling restart, a job that starts the broker).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _broker = TestBroker::start_at(
        &format!("127.0.0.1:{port}"),
        "sqlite://audit.db",
        "",
        &issuer_yaml("ci", &issuer, "github", ""),
        DEPLOY_GRANT,
        "",
        StartOptions::default(),
    )
    .await;
    let ran = client.await.unwrap();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.stdout.trim().split('.').count(), 3, "a JWT: {}", ran.stdout);
    assert!(
        ran.stderr.contains(&format!("cannot reach the broker at {url}")) && ran.stderr.contains("retrying in"),
        "{}",
        ran.stderr
    );

    let (gone, _) = token(dir.path(), "http://127.0.0.1:9", &["--retry-for", "0s"]).await;
    assert_eq!(gone.code, 5, "nothing listening, no retries: {}", gone.stderr);
    assert!(!gone.stderr.contains("retrying"), "{}", gone.stderr);
}

/// `--retry-for` bounds the command, not each grant: when waiting for the
/// broker to come up used most of it on the first grant, a second grant
/// turned away for longer than what is left ends `stint exec` at once
/// (with a budget per grant it would wait out the `Retry-After`).
#[tokio::test]
async fn the_grants_of_one_exec_share_its_retry_for() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    let (port, url) = nothing_listening();

    let started = Instant::now();
    let client = {
        let mut command = stint(dir.path());
        command.args([
            "exec",
            "--broker",
            &url,
            "--token-file",
            "token",
            "--grant",
            "deploy",
            "--grant",
            "release",
            "--retry-for",
            "8s",
            "--",
            "true",
        ]);
        tokio::spawn(run(command))
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    // One issuance per 5 s per caller: `deploy` spends it, and `release`
    // is told to come back in 5 s, more than the 4 s or less left of 8.
    let release = DEPLOY_GRANT.replace("  deploy:", "  release:");
    let _broker = TestBroker::start_at(
        &format!("127.0.0.1:{port}"),
        "sqlite://audit.db",
        "",
        &issuer_yaml("ci", &issuer, "github", ""),
        &format!("{DEPLOY_GRANT}{release}"),
        "limits: { per_subject: { per_second: 0.2, burst: 1 } }\n",
        StartOptions::default(),
    )
    .await;
    let ran = client.await.unwrap();
    let took = started.elapsed();
    assert_eq!(ran.code, 4, "the 429 ends it: {}", ran.stderr);
    assert!(
        ran.stderr.contains("grant `release`: 429") && ran.stderr.contains("code rate_limited"),
        "{}",
        ran.stderr
    );
    assert!(
        !ran.stderr
            .lines()
            .any(|l| l.contains("grant `release`") && l.contains("retrying in")),
        "no retry past the command's --retry-for: {}",
        ran.stderr
    );
    assert!(took < Duration::from_secs(12), "{took:?}");
}
