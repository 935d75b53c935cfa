//! The `stint` binary: config errors, `stint dev` end to end, `audit query`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STINT: &str = env!("CARGO_BIN_EXE_stint");

const GOOD_CONFIG: &str = r#"
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
audit: { store: "sqlite://audit.db", key_file: audit.key }
signing: { key_file: signing.key }
issuers:
  github:
    issuer: https://token.actions.githubusercontent.com
    audience: stint
    algorithms: [RS256]
grants:
  deploy:
    kind: token
    ttl: 15m
    audience: deploy-api
    allow:
      - issuer: github
        claims:
          repository: acme/api
"#;

fn run(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(STINT)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run stint");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn config_errors_name_file_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (GOOD_CONFIG.replace("    allow:", "    alow:"), "grants.deploy", "alow"),
        (
            GOOD_CONFIG.replace("[RS256]", "[HS256]"),
            "issuers.github.algorithms[0]",
            "asymmetric",
        ),
        (
            GOOD_CONFIG.replace("ttl: 15m", "ttl: 15 minutes"),
            "grants.deploy.ttl",
            "15m",
        ),
        (
            GOOD_CONFIG.replace("- issuer: github", "- issuer: gitlab"),
            "grants.deploy.allow[0].issuer",
            "gitlab",
        ),
    ];
    for (text, key, hint) in cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, &text).unwrap();
        let (code, _, stderr) = run(&["serve", "--config", "bad.yaml"], dir.path());
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("bad.yaml: "), "names the file: {stderr}");
        assert!(stderr.contains(key), "names the key {key}: {stderr}");
        assert!(stderr.contains(hint), "says what is wrong ({hint}): {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let (check_code, _, check_err) = run(&["config", "check", "--config", "bad.yaml"], dir.path());
        assert_eq!((check_code, check_err.contains(key)), (1, true), "{check_err}");
    }
    std::fs::write(dir.path().join("good.yaml"), GOOD_CONFIG).unwrap();
    let (code, stdout, stderr) = run(&["config", "check", "--config", "good.yaml"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok (1 issuers, 1 grants)"), "{stdout}");
}

/// Kills the child when the test ends, pass or fail.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stint_dev_issues_a_credential_with_its_printed_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(STINT)
            .args([
                "dev",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--issuer-listen",
                "127.0.0.1:0",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stint dev"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    let mut broker = None;
    let mut printed = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        let Some(Ok(line)) = lines.next() else { break };
        printed.push_str(&line);
        printed.push('\n');
        if let Some(url) = line.trim().strip_prefix("broker:") {
            broker = Some(url.trim().to_string());
        }
        if line.contains("curl -s -X POST") {
            break;
        }
    }
    let broker = broker.unwrap_or_else(|| panic!("stint dev printed no broker URL:\n{printed}"));
    assert!(
        printed.contains("token dev"),
        "prints how to get a dev token:\n{printed}"
    );
    assert!(
        printed.contains("/v1/issue/demo-token"),
        "prints a curl line:\n{printed}"
    );

    let (code, token, stderr) = run(
        &[
            "token",
            "dev",
            "--sub",
            "repo:acme/api:ref:refs/heads/main",
            "--claim",
            "repository=acme/api",
            "--claim",
            "ref=refs/heads/main",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim().to_string();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{broker}/v1/issue/demo-token"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<serde_json::Value>().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    assert!(body["token"].as_str().unwrap().starts_with("eyJ"));

    let (code, table, stderr) = run(&["audit", "query"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(table.contains("issued") && table.contains("demo-token"), "{table}");
    let (code, json_lines, _) = run(
        &["audit", "query", "--format", "json", "--outcome", "issued"],
        dir.path(),
    );
    assert_eq!(code, 0);
    let record: serde_json::Value = serde_json::from_str(json_lines.lines().next().unwrap()).unwrap();
    assert_eq!(record["issuance_id"], body["issuance_id"]);
    assert_eq!(record["claims"]["repository"], "acme/api");

    // An auditor holding the token finds its records by jti (stored only as an HMAC).
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
    )
    .unwrap();
    let jti = claims["jti"].as_str().unwrap();
    let (code, found, stderr) = run(&["audit", "query", "--format", "json", "--jti", jti], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(found.lines().count(), 1, "{found}");
    let (_, none, _) = run(&["audit", "query", "--format", "json", "--jti", "other"], dir.path());
    assert_eq!(none.trim(), "");
}

#[test]
fn audit_query_without_a_store_explains_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(&["audit", "query"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("--config") && stderr.contains("--store"), "{stderr}");
}

#[test]
fn audit_query_never_creates_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(&["audit", "query", "--store", "sqlite://missing.db"], dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        !dir.path().join("missing.db").exists(),
        "a mistyped path must not create an empty log"
    );
}
