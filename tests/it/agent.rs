//! `stint agent` as a sidecar runs it: the real binary with a config file,
//! the broker on a real port, a `token` grant of a few seconds so renewals
//! happen within the test. `/metrics` is checked along the way.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::client::stint;
use crate::harness::TestBroker;
use crate::issuer::TestIssuer;
pub(crate) use crate::process::free_port;

const GRANT: &str = r#"
  feed:
    kind: token
    ttl: 3s
    audience: feed-api
    allow:
      - issuer: ci
        claims: { repository: acme/api }
"#;

fn config(broker: &str, port: u16) -> String {
    format!("broker: {broker}\ntoken_file: token\nhealth_listen: 127.0.0.1:{port}\ngrants:\n  feed:\n    files: out\n")
}

/// The files in `dir` with their contents and modes.
pub(crate) fn files(dir: &Path) -> BTreeMap<String, (String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .map(|e| {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().to_string(), (text, mode))
        })
        .collect()
}

pub(crate) async fn status(url: &str) -> Option<u16> {
    reqwest::get(url).await.ok().map(|r| r.status().as_u16())
}

/// Polls `check` every 100ms for up to `limit`.
pub(crate) async fn until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn agent_fetches_writes_renews_and_is_ready_only_once_fetched() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", GRANT).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("agent.yaml"), config(&broker.url, port)).unwrap();
    let mut agent = stint(dir.path())
        .args(["agent", "--config", "agent.yaml"])
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");

    // No token yet: alive, not ready, nothing written.
    assert!(
        until(Duration::from_secs(30), async || status(&format!("{base}/healthz"))
            .await
            == Some(200))
        .await
    );
    assert_eq!(status(&format!("{base}/readyz")).await, Some(503));
    assert!(files(&dir.path().join("out")).is_empty());

    // The token appears (as a kubelet projects it): the agent picks it up.
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    assert!(
        until(Duration::from_secs(60), async || status(&format!("{base}/readyz"))
            .await
            == Some(200))
        .await
    );
    let first = files(&dir.path().join("out"));
    assert!(!first.is_empty());
    for (name, (text, mode)) in &first {
        assert_eq!(*mode, 0o600, "{name}");
        assert!(!text.is_empty(), "{name}");
    }

    // A 3s credential is renewed: the files change before long.
    assert!(
        until(Duration::from_secs(30), async || {
            let now = files(&dir.path().join("out"));
            !now.is_empty() && now != first
        })
        .await,
        "never renewed"
    );

    // Metrics: the renewals, the failures while the token was missing,
    // and the time left of the current credential, per grant.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{grant=\"feed\"}} ")))
            .and_then(|v| v.parse::<i64>().ok())
    };
    assert!(value("stint_agent_issued_total").is_some_and(|n| n >= 2), "{metrics}");
    assert!(value("stint_agent_failures_total").is_some_and(|n| n >= 1), "{metrics}");
    assert!(
        value("stint_agent_seconds_to_expiry").is_some_and(|n| (0..=3).contains(&n)),
        "{metrics}"
    );

    // SIGTERM: exit 0, and no credential is left on the shared volume.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), agent.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    assert!(files(&dir.path().join("out")).is_empty());
}

#[tokio::test]
async fn agent_refuses_an_unknown_key_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = config("http://127.0.0.1:1", free_port()).replace("files: out", "file: out");
    std::fs::write(dir.path().join("agent.yaml"), text).unwrap();
    let run = stint(dir.path()).args(["agent", "--config", "agent.yaml"]).output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the agent ran")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("agent.yaml: grants.feed.file: unknown field `file`"),
        "{stderr}"
    );
}

pub(crate) const AWS_GRANT: &str = r#"
  app-aws:
    kind: aws
    role_arn: arn:aws:iam::123456789012:role/app
    ttl: 15m
    allow:
      - issuer: ci
        claims: { repository: acme/api }
"#;

const CALLER: &str = r#"
import os, boto3
sts = boto3.client("sts", region_name="us-east-1", endpoint_url=os.environ["MOTO_URL"])
print(sts.get_caller_identity()["Arn"])
"#;

#[tokio::test]
async fn boto3_gets_credentials_from_the_agents_aws_endpoint_and_others_get_401() {
    let moto = crate::moto::Moto::start().await;
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_at(
        "127.0.0.1:0",
        "sqlite://audit.db",
        "",
        &crate::harness::issuer_yaml("ci", &issuer, "github", ""),
        AWS_GRANT,
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
    let text = format!(
        "broker: {}\ntoken_file: token\nhealth_listen: 127.0.0.1:{health}\naws_endpoint:\n  listen: 127.0.0.1:{aws}\n  grant: app-aws\n  authorization_token_file: aws-token\ngrants:\n  app-aws: {{}}\n",
        broker.url
    );
    std::fs::write(dir.path().join("agent.yaml"), text).unwrap();
    let _agent = stint(dir.path())
        .args(["agent", "--config", "agent.yaml"])
        .spawn()
        .unwrap();
    let ready = format!("http://127.0.0.1:{health}/readyz");
    assert!(until(Duration::from_secs(60), async || status(&ready).await == Some(200)).await);

    // The authorization token is in a 0600 file the app can be pointed at.
    use std::os::unix::fs::PermissionsExt;
    let token_path = dir.path().join("aws-token");
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&token_path).unwrap();

    // Any AWS SDK (here boto3, in another process) uses the endpoint alone.
    let python = format!("{}/.cache/stint-venv/bin/python", std::env::var("HOME").unwrap());
    let out = tokio::process::Command::new(python)
        .args(["-c", CALLER])
        .env_clear()
        .env("HOME", dir.path())
        .env("MOTO_URL", &moto.url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://127.0.0.1:{aws}/creds"),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.trim())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("assumed-role/app/"), "{stdout}");

    // Without the token, or with a wrong one: 401 and no credential.
    let url = format!("http://127.0.0.1:{aws}/creds");
    let http = reqwest::Client::new();
    let none = http.get(&url).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    assert!(!none.text().await.unwrap().contains("AccessKeyId"));
    let wrong = http.get(&url).header("authorization", "x").send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = http
        .get(&url)
        .header("authorization", token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
}
