//! `stint audit console` in a real browser: a store filled through the
//! real broker, the console as its own process, headless Chromium driven
//! by Playwright (tests/console/browse.py) doing what an auditor does.
//! Screenshots of each page are kept under the test's target temp folder
//! (`console-screenshots/`) for a reviewer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::stint;
use crate::harness::{DEPLOY_GRANT, TestBroker};
use crate::issuer::TestIssuer;
use crate::process::free_port;

/// The Python with Playwright, and Chromium: both installed by
/// scripts/test. Missing ones fail the test with how to get them.
fn browser_tools() -> (PathBuf, PathBuf) {
    let venv = std::env::var("STINT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/stint-venv"));
    let python = venv.join("bin/python");
    let chromium = PathBuf::from(std::env::var("STINT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let playwright = std::process::Command::new(&python)
        .args(["-c", "import playwright"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        playwright && chromium.exists(),
        "the console test needs Playwright in {} and Chromium at {}: run scripts/test, which installs both \
         (pip install playwright==1.64.1; apt-get install chromium)",
        venv.display(),
        chromium.display()
    );
    (python, chromium)
}

/// Runs browse.py in `mode`; what the browser saw.
async fn browse(python: &Path, chromium: &Path, base: &str, shots: &Path, mode: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/browse.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python)
            .args([script, base, shots.to_str().unwrap(), mode])
            .env("STINT_CHROMIUM", chromium)
            .output(),
    )
    .await
    .expect("the browser finishes")
    .unwrap();
    assert!(
        out.status.success(),
        "browse.py {mode} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_filters_opens_a_record_and_verifies_the_chain_in_a_browser() {
    let (python, chromium) = browser_tools();
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let good = issuer.sign(&issuer.github());
    let mut outsider = issuer.github();
    outsider.insert("repository".into(), serde_json::json!("acme/other"));
    let outsider = issuer.sign(&outsider);
    for _ in 0..5 {
        assert_eq!(broker.issue("deploy", &good, None).await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(broker.issue("deploy", &outsider, None).await.status, 403);
    }
    for _ in 0..2 {
        let anonymous = broker
            .http
            .post(format!("{}/v1/issue/deploy", broker.url))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);
    }

    let port = free_port();
    let store = format!("sqlite://{}", broker.audit_db().display());
    let key = broker.dir.path().join("audit.key");
    // The broker's own config, so each record's decision can be explained.
    std::fs::write(
        broker.dir.path().join("console.yaml"),
        format!(
            "audit: {{ store: \"{store}\", key_file: {key} }}\nsigning: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
            crate::harness::issuer_yaml("ci", &issuer, "github", ""),
            key = key.display()
        ),
    )
    .unwrap();
    let mut console = stint(broker.dir.path())
        .args(["audit", "console", "--config", "console.yaml"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = None;
    for _ in 0..100 {
        if let Ok(answer) = http.get(format!("{base}/")).send().await {
            up = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = up.expect("the console answers");
    assert_eq!(answer.status(), 200);
    let csp = answer.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe"), "{csp}");
    // A page elsewhere that resolves its own name to 127.0.0.1 gets nothing.
    let rebound = http
        .get(format!("{base}/records"))
        .header("host", format!("attacker.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);

    // The overview for one grant.
    let one = http
        .get(format!("{base}/?range=7d&grant=deploy"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(one.contains("grant <code>deploy</code>"), "{one}");
    // A denial explained claim by claim under the config.
    let mismatch = broker
        .server
        .broker
        .audit()
        .query(&stint::audit::AuditQuery {
            reason: Some("claims_mismatch".into()),
            limit: Some(1),
            ..stint::audit::AuditQuery::default()
        })
        .await
        .unwrap()[0]
        .seq
        .unwrap();
    let page = http
        .get(format!("{base}/records/{mismatch}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Decision now: denied"), "{page}");
    assert!(
        page.contains("&quot;acme/other&quot;") || page.contains("\"acme/other\""),
        "{page}"
    );
    // The denied records as OCSF, for a SIEM that normalises on it.
    let ocsf = http
        .get(format!("{base}/export?format=ocsf&outcome=denied"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<serde_json::Value> = ocsf.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 5, "{ocsf}");
    assert!(
        events
            .iter()
            .all(|e| e["class_uid"] == 3002 && e["metadata"]["sequence"].is_i64() && e["raw_data"].is_string()),
        "{ocsf}"
    );
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let seen = browse(&python, &chromium, &base, &shots, "look").await;
    assert_eq!(seen["cards"]["issued"], 5, "{seen}");
    assert_eq!(seen["cards"]["denied"], 5, "{seen}");
    assert!(seen["chart_bars"].as_u64().unwrap() > 1, "{seen}");
    assert!(
        seen["filtered_url"].as_str().unwrap().contains("outcome=denied"),
        "{seen}"
    );
    assert_eq!(seen["filtered_outcomes"], serde_json::json!(["denied"]), "{seen}");
    assert_eq!(seen["filtered_rows"], 3, "the claims_mismatch denials: {seen}");
    assert!(seen["record_heading"].as_str().unwrap().contains("denied"), "{seen}");
    assert_eq!(seen["record_reason"], "claims_mismatch", "{seen}");
    assert!(seen["integrity"].as_str().unwrap().starts_with("Intact."), "{seen}");
    assert_eq!(seen["problems"], serde_json::json!([]), "{seen}");

    // Someone edits a record behind the log's back.
    let db = rusqlite::Connection::open(broker.audit_db()).unwrap();
    db.execute("UPDATE audit_records SET subject = 'someone-else' WHERE seq = 3", [])
        .unwrap();
    drop(db);
    let seen = browse(&python, &chromium, &base, &shots, "tampered").await;
    assert!(seen["integrity"].as_str().unwrap().starts_with("Broken."), "{seen}");
    assert_eq!(seen["broken_link"], "/records/3", "{seen}");

    for shot in [
        "overview",
        "records-denied",
        "record",
        "integrity-look",
        "integrity-tampered",
    ] {
        let path = shots.join(format!("{shot}.png"));
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
            "{}",
            path.display()
        );
    }
    console.kill().await.unwrap();
}
