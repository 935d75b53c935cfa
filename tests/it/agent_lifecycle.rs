//! `stint agent` over a pod's life: the init container (`--once`) and the
//! sidecar taking its credential over, a forced renewal (SIGHUP), the
//! broker going away and coming back, a `postgres` role replaced with an
//! overlap, and an AWS SDK that follows a renewal by itself. Real
//! processes, a broker on real ports.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use stint::audit::{AuditQuery, AuditRecord, Outcome};

use crate::agent::{AWS_GRANT, files, free_port, status, until};
use crate::client::stint;
use crate::harness::{TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;

fn grant(ttl: &str) -> String {
    format!(
        r#"
  feed:
    kind: token
    ttl: {ttl}
    audience: feed-api
    allow:
      - issuer: ci
        claims: {{ repository: acme/api }}
"#
    )
}

/// An agent process whose stderr goes to `agent.log` in its folder.
struct Agent {
    process: tokio::process::Child,
    log: PathBuf,
    health: String,
}

impl Agent {
    fn start(dir: &Path, health_port: u16) -> Agent {
        let log = dir.join("agent.log");
        let process = stint(dir)
            .args(["agent", "--config", "agent.yaml"])
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        Agent {
            process,
            log,
            health: format!("http://127.0.0.1:{health_port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn ready(&self) -> bool {
        let url = format!("{}/readyz", self.health);
        until(Duration::from_secs(60), async || status(&url).await == Some(200)).await
    }

    /// One `stint_agent_*` value for `grant` from `/metrics`.
    async fn metric(&self, name: &str, grant: &str) -> Option<i64> {
        let text = reqwest::get(format!("{}/metrics", self.health))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{grant=\"{grant}\"}} ")))
            .and_then(|v| v.parse().ok())
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.process.id().unwrap()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// SIGTERM, and the exit code.
    async fn stop(mut self) -> (Option<i32>, String) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let exit = tokio::time::timeout(Duration::from_secs(30), self.process.wait())
            .await
            .expect("the agent stops on SIGTERM")
            .unwrap();
        (exit.code(), self.log())
    }
}

async fn issued(broker: &TestBroker, grant: &str) -> usize {
    audited(
        broker,
        AuditQuery {
            grant: Some(grant.into()),
            outcome: Some(Outcome::Issued),
            ..AuditQuery::default()
        },
    )
    .await
    .len()
}

async fn audited(broker: &TestBroker, query: AuditQuery) -> Vec<AuditRecord> {
    broker.server.broker.audit().query(&query).await.unwrap()
}

/// `stint agent --once` in `dir`, as an init container runs it.
async fn init_container(dir: &Path) -> std::process::Output {
    stint(dir)
        .args(["agent", "--config", "agent.yaml", "--once"])
        .output()
        .await
        .unwrap()
}

fn write_config(dir: &Path, broker: &str, health: u16, extra: &str, grants: &str) {
    std::fs::write(
        dir.join("agent.yaml"),
        format!("broker: {broker}\ntoken_file: token\nhealth_listen: 127.0.0.1:{health}\n{extra}grants:\n{grants}"),
    )
    .unwrap();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_init_container_fetches_once_and_the_sidecar_takes_over_without_issuing_again() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", &grant("2m")).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    let health = free_port();
    write_config(
        dir.path(),
        &broker.url,
        health,
        "state_dir: state\n",
        "  feed:\n    files: out\n",
    );

    // The init container: fetched, written, kept, exit 0.
    let once = init_container(dir.path()).await;
    let stderr = String::from_utf8_lossy(&once.stderr);
    assert_eq!(once.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("grant feed: issued, expires"), "{stderr}");
    let written = files(&dir.path().join("out"));
    assert!(!written.is_empty());
    assert!(written.values().all(|(text, mode)| *mode == 0o600 && !text.is_empty()));
    assert_eq!(mode(&dir.path().join("state/feed.json")), 0o600);
    assert_eq!(issued(&broker, "feed").await, 1);

    // The sidecar: ready at once with the same credential, nothing issued.
    let agent = Agent::start(dir.path(), health);
    assert!(agent.ready().await, "{}", agent.log());
    assert_eq!(files(&dir.path().join("out")), written);
    assert_eq!(agent.metric("stint_agent_issued_total", "feed").await, Some(0));
    assert!(
        agent
            .metric("stint_agent_seconds_to_expiry", "feed")
            .await
            .is_some_and(|s| s > 60)
    );
    assert!(agent.log().contains("grant feed: taken over from"), "{}", agent.log());
    assert_eq!(issued(&broker, "feed").await, 1, "one issuance per pod start");

    // SIGHUP forces a renewal: new files, counted, audited.
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        until(Duration::from_secs(30), async || {
            let now = files(&dir.path().join("out"));
            !now.is_empty() && now != written
        })
        .await,
        "{}",
        agent.log()
    );
    // The files are written before the renewal is counted: wait for both.
    assert!(
        until(Duration::from_secs(10), async || {
            agent.metric("stint_agent_issued_total", "feed").await == Some(1)
        })
        .await,
        "stint_agent_issued_total is not 1 after the renewal: {}",
        agent.log()
    );
    assert_eq!(issued(&broker, "feed").await, 2);

    // Stopped: neither the files nor the kept state are left behind.
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(files(&dir.path().join("out")).is_empty());
    assert!(!dir.path().join("state/feed.json").exists());
}

#[tokio::test]
async fn once_gives_up_after_its_timeout_naming_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "x.y.z").unwrap();
    // Nothing listens there: every try fails.
    write_config(
        dir.path(),
        &format!("http://127.0.0.1:{}", free_port()),
        free_port(),
        "",
        "  feed:\n    files: out\n",
    );
    let once = stint(dir.path())
        .args(["agent", "--config", "agent.yaml", "--once", "--timeout", "2s"])
        .output();
    let once = tokio::time::timeout(Duration::from_secs(60), once)
        .await
        .expect("--once ends at its timeout")
        .unwrap();
    let stderr = String::from_utf8_lossy(&once.stderr);
    assert_eq!(once.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("grant feed: not fetched within --timeout 2s"),
        "{stderr}"
    );
    assert!(files(&dir.path().join("out")).is_empty());
}

#[tokio::test]
async fn check_validates_the_config_without_running_it() {
    let dir = tempfile::tempdir().unwrap();
    // Files the config names need not exist where it is checked (a
    // rendered Helm chart on a CI machine).
    write_config(
        dir.path(),
        "https://stint.example",
        free_port(),
        "state_dir: state\nca_file: /nonexistent/ca.pem\n",
        "  feed:\n    files: out\n",
    );
    let good = stint(dir.path())
        .args(["agent", "--config", "agent.yaml", "--check"])
        .output()
        .await
        .unwrap();
    assert_eq!(good.status.code(), Some(0), "{}", String::from_utf8_lossy(&good.stderr));
    assert!(String::from_utf8_lossy(&good.stdout).contains("agent.yaml: ok (1 grant(s))"));

    // The state (whole broker answers) must not be where the app reads.
    write_config(
        dir.path(),
        "https://stint.example",
        free_port(),
        "state_dir: out\n",
        "  feed:\n    files: out\n",
    );
    let bad = stint(dir.path())
        .args(["agent", "--config", "agent.yaml", "--check"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("agent.yaml: state_dir: out is also a grant's `files` directory"),
        "{stderr}"
    );
}

/// The `exp` of the JWT among the files written for a `token` grant.
fn token_exp(dir: &Path) -> i64 {
    use base64::Engine;
    let jwt = files(dir)
        .into_values()
        .map(|(text, _)| text)
        .find(|text| text.split('.').count() == 3)
        .expect("a token file");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').nth(1).unwrap())
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&payload).unwrap()["exp"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_the_credential_is_kept_until_expiry_then_removed_and_renewal_resumes() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", &grant("6s")).await;
    let listen = broker.url.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    let health = free_port();
    write_config(
        dir.path(),
        &broker.url,
        health,
        "",
        "  feed:\n    files: out\n    renew_at: 0.5\n",
    );
    let agent = Agent::start(dir.path(), health);
    assert!(agent.ready().await, "{}", agent.log());
    let out = dir.path().join("out");

    broker.server.shutdown().await;
    // The last credential issued before the broker went: kept to its expiry.
    let mut last_exp = token_exp(&out);
    assert!(
        until(Duration::from_secs(60), async || {
            if files(&out).is_empty() {
                return true;
            }
            last_exp = token_exp(&out);
            false
        })
        .await,
        "the files outlived the credential: {}",
        agent.log()
    );
    let removed_at = stint::clock::now();
    assert!(
        removed_at >= last_exp - 1,
        "removed at {removed_at}, before its expiry {last_exp}: {}",
        agent.log()
    );
    assert!(agent.log().contains("expired with no replacement"), "{}", agent.log());
    assert_eq!(agent.metric("stint_agent_seconds_to_expiry", "feed").await, Some(0));
    assert!(
        agent
            .metric("stint_agent_failures_total", "feed")
            .await
            .is_some_and(|n| n >= 1)
    );
    // Documented: ready stays ready (the pod is not taken out of service
    // for a broker outage); the metric above is what to alert on.
    assert_eq!(status(&format!("{}/readyz", agent.health)).await, Some(200));

    // The broker is back where the agent knows it: files again.
    let _back = TestBroker::start_at(
        &listen,
        "sqlite://audit.db",
        "",
        &issuer_yaml("ci", &issuer, "github", ""),
        &grant("6s"),
        "",
        stint::server::StartOptions::default(),
    )
    .await;
    assert!(
        until(Duration::from_secs(60), async || !files(&out).is_empty()).await,
        "{}",
        agent.log()
    );
    assert!(
        agent
            .metric("stint_agent_seconds_to_expiry", "feed")
            .await
            .is_some_and(|s| s > 0)
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_postgres_role_overlaps_the_old_one_then_the_agent_revokes_it() {
    use crate::leases::{broker_on, fixture, role_exists, token};
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (_, port) = crate::store::postgres_host_port();
    let broker = broker_on("sqlite://audit.db", &issuer, &f, port, "").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("token"),
        token(&issuer, "acme/api", "repo:acme/api:ref:refs/heads/main"),
    )
    .unwrap();
    let health = free_port();
    write_config(
        dir.path(),
        &broker.url,
        health,
        "overlap: 4s\n",
        "  app-db:\n    files: creds\n    ttl: 20s\n    renew_at: 0.2\n",
    );
    let agent = Agent::start(dir.path(), health);
    assert!(agent.ready().await, "{}", agent.log());
    let user = dir.path().join("creds/PGUSER");
    let old = std::fs::read_to_string(&user).unwrap();
    let mut new = old.clone();
    assert!(
        until(Duration::from_secs(60), async || {
            new = std::fs::read_to_string(&user).unwrap_or_default();
            !new.is_empty() && new != old
        })
        .await,
        "{}",
        agent.log()
    );
    // When the files change both roles exist: the app reconnects without a gap.
    assert!(role_exists(&new).await);
    assert!(
        role_exists(&old).await,
        "the old role outlives the renewal by `overlap`"
    );

    // Then the old lease is revoked, as its holder, and the new one stays.
    assert!(
        until(Duration::from_secs(30), async || !role_exists(&old).await).await,
        "{}",
        agent.log()
    );
    assert!(role_exists(&new).await);
    assert!(agent.log().contains("(grant app-db) revoked"), "{}", agent.log());
    let revoked = audited(
        &broker,
        AuditQuery {
            grant: Some("app-db".into()),
            outcome: Some(Outcome::Revoked),
            ..AuditQuery::default()
        },
    )
    .await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0].reason.as_deref(), Some("revoked_by_caller"));
    assert_eq!(
        revoked[0].detail["revoked_by"]["subject"],
        "repo:acme/api:ref:refs/heads/main"
    );
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

const FOLLOWER: &str = r#"
import os, sys, boto3
session = boto3.session.Session()
sts = session.client("sts", region_name="us-east-1", endpoint_url=os.environ["MOTO_URL"])
for _ in sys.stdin:
    arn = sts.get_caller_identity()["Arn"]
    key = session.get_credentials().get_frozen_credentials().access_key
    print(key, arn, flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_sdk_follows_a_forced_renewal_by_itself() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let moto = crate::moto::Moto::start().await;
    let issuer = TestIssuer::start().await;
    // min_remaining = ttl: no cached session, so each renewal is a new one.
    let grants = AWS_GRANT.replace("ttl: 15m", "ttl: 15m\n    min_remaining: 15m");
    let broker = TestBroker::start_at(
        "127.0.0.1:0",
        "sqlite://audit.db",
        "",
        &issuer_yaml("ci", &issuer, "github", ""),
        &grants,
        &crate::moto::Moto::aws_yaml(&moto.url, ""),
        stint::server::StartOptions {
            aws_credentials: Some(crate::moto::stint_identity()),
            ..stint::server::StartOptions::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    let (health, aws) = (free_port(), free_port());
    write_config(
        dir.path(),
        &broker.url,
        health,
        &format!("aws_endpoint:\n  listen: 127.0.0.1:{aws}\n  grant: app-aws\n  authorization_token_file: aws-token\n"),
        "  app-aws: {}\n",
    );
    let agent = Agent::start(dir.path(), health);
    assert!(agent.ready().await, "{}", agent.log());

    let python = format!("{}/.cache/stint-venv/bin/python", std::env::var("HOME").unwrap());
    let mut app = tokio::process::Command::new(python)
        .args(["-c", FOLLOWER])
        .env_clear()
        .env("HOME", dir.path())
        .env("MOTO_URL", &moto.url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://127.0.0.1:{aws}/creds"),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", dir.path().join("aws-token"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = app.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(app.stdout.take().unwrap()).lines();
    let mut call = async || {
        stdin.write_all(b"\n").await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the app answers")
            .unwrap()
            .expect("the app is running");
        let (key, arn) = line.split_once(' ').unwrap();
        (key.to_string(), arn.to_string())
    };
    let (first, arn) = call().await;
    assert!(arn.contains("assumed-role/app/"), "{arn}");

    // A forced renewal: the endpoint serves a new session...
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let token = std::fs::read_to_string(dir.path().join("aws-token")).unwrap();
    let http = reqwest::Client::new();
    assert!(
        until(Duration::from_secs(30), async || {
            let Ok(answer) = http
                .get(format!("http://127.0.0.1:{aws}/creds"))
                .header("authorization", token.trim())
                .send()
                .await
            else {
                return false;
            };
            let body: serde_json::Value = answer.json().await.unwrap_or_default();
            body["AccessKeyId"].as_str().is_some_and(|k| k != first)
        })
        .await,
        "{}",
        agent.log()
    );
    // ...and the SDK, unchanged and unrestarted, signs with it.
    let (second, arn) = call().await;
    assert_ne!(second, first, "the SDK still uses the old session");
    assert!(arn.contains("assumed-role/app/"), "{arn}");
    let (code, log) = agent.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_over_its_rate_waits_as_long_as_the_broker_asks() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_with(
        &issuer_yaml("ci", &issuer, "github", ""),
        &grant("2m"),
        "limits: { per_subject: { per_second: 0.2, burst: 1 } }\n",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = issuer.sign(&issuer.github());
    std::fs::write(dir.path().join("token"), &token).unwrap();
    write_config(dir.path(), &broker.url, free_port(), "", "  feed:\n    files: out\n");
    // Another process of the same caller spent the bucket: the next
    // issuance is 5 s away, and the broker says so (Retry-After).
    assert_eq!(broker.issue("feed", &token, None).await.status, 200);

    let once = init_container(dir.path()).await;
    let stderr = String::from_utf8_lossy(&once.stderr);
    assert_eq!(once.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("429") && stderr.contains("retry 1 in"), "{stderr}");
    let refused = audited(
        &broker,
        AuditQuery {
            outcome: Some(Outcome::Denied),
            ..AuditQuery::default()
        },
    )
    .await;
    assert_eq!(
        refused.iter().map(|r| r.reason.as_deref()).collect::<Vec<_>>(),
        [Some("rate_limited")],
        "one refusal: the retry waited for Retry-After instead of spending tries (and audit records) before it"
    );
    assert_eq!(issued(&broker, "feed").await, 2);
}
