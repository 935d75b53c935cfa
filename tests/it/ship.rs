//! Shipping the log to a SIEM (`audit.ship`), against receivers on real
//! ports: every record arrives, in `seq` order, repeats only with the same
//! `seq` and hash, and the received copy verifies offline.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stint::audit::commands::{self, StoreChoice};

use crate::harness::{DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;
use crate::receivers::{HttpReceiver, Mode, SyslogReceiver, assert_in_order_without_gaps, seqs, wait_lines};

/// The value of the metric line starting with `series` (0 when absent).
pub async fn metric(admin_url: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{admin_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls until `series` satisfies `done` (bounds a hang only).
pub async fn until_metric(admin_url: &str, series: &str, done: impl Fn(f64) -> bool) -> f64 {
    let started = Instant::now();
    loop {
        let value = metric(admin_url, series).await;
        if done(value) {
            return value;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{series} stays at {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A broker shipping to one sink, `sink_yaml` its keys (6 spaces in).
async fn broker_shipping(issuer: &TestIssuer, sink_yaml: &str) -> TestBroker {
    TestBroker::start_on(
        "sqlite://audit.db",
        &format!("  ship:\n    siem:\n{sink_yaml}"),
        &issuer_yaml("ci", issuer, "github", ""),
        DEPLOY_GRANT,
        "",
        Default::default(),
    )
    .await
}

/// Issues `n` requests; every third is denied (a feature branch).
async fn issue_some(issuer: &TestIssuer, broker: &TestBroker, n: usize) {
    for i in 0..n {
        let mut claims = issuer.github();
        if i % 3 == 2 {
            claims.insert("ref".into(), json!("refs/heads/feature"));
        }
        let answer = broker.issue("deploy", &issuer.sign(&claims), None).await;
        assert_eq!(answer.status, if i % 3 == 2 { 403 } else { 200 }, "{}", answer.text);
    }
}

fn store_choice(broker: &TestBroker) -> StoreChoice {
    StoreChoice {
        config: None,
        store: Some(format!("sqlite://{}", broker.audit_db().display())),
        audit_key_file: Some(broker.dir.path().join("audit.key")),
    }
}

/// `stint audit verify --export` of `lines` as written to a file.
async fn verify_offline(broker: &TestBroker, lines: &[String]) -> Result<String, String> {
    let path = broker.dir.path().join("received.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let pubkey = commands::pubkey(&store_choice(broker)).unwrap();
    commands::verify(&StoreChoice::default(), Some(&path), Some(&pubkey))
        .await
        .map_err(|e| e.to_string())
}

/// Splunk HEC: a wrong token is refused (401) and retried, never skipped;
/// once the token file holds the right one, every record arrives in HEC's
/// shape, its `event` the record exactly as `stint audit export` writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_gets_every_record_once_its_token_is_right() {
    let issuer = TestIssuer::start().await;
    let hec = HttpReceiver::splunk("right-token").await;
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("hec.token");
    std::fs::write(&token_file, "wrong-token\n").unwrap();
    let broker = broker_shipping(
        &issuer,
        &format!(
            "      sink: splunk_hec\n      url: \"{}\"\n      token_file: \"{}\"\n      index: security\n      max_backoff: 1s\n      timeout: 2s\n",
            hec.url,
            token_file.display()
        ),
    )
    .await;
    issue_some(&issuer, &broker, 4).await;

    let rejected = "stint_audit_ship_failures_total{sink=\"siem\",reason=\"rejected\"}";
    until_metric(&broker.admin_url, rejected, |v| v >= 2.0).await;
    until_metric(&broker.admin_url, "stint_audit_ship_lag_records{sink=\"siem\"}", |v| {
        v == 4.0
    })
    .await;
    assert!(hec.lines().is_empty(), "nothing was taken with the wrong token");
    assert!(hec.requests().iter().all(|r| r.answered == Some(401)));

    std::fs::write(&token_file, "right-token\n").unwrap();
    let lines = hec.wait_for("4 records", |l| l.len() >= 5).await;
    let taken: Vec<_> = hec.requests().into_iter().filter(|r| r.answered == Some(200)).collect();
    let first = &taken[0];
    assert_eq!(first.path, "/services/collector/event");
    assert_eq!(first.headers["authorization"], "Splunk right-token");
    assert_eq!(first.headers["content-type"], "application/json");

    let mut export = Vec::new();
    commands::export(&store_choice(&broker), None, None, &mut export)
        .await
        .unwrap();
    let exported: Vec<&str> = std::str::from_utf8(&export).unwrap().lines().collect();
    let events: Vec<String> = lines
        .iter()
        .map(|line| {
            let hec_event: Value = serde_json::from_str(line).unwrap();
            assert_eq!(hec_event["source"], "stint");
            assert_eq!(hec_event["sourcetype"], "stint:audit");
            assert_eq!(hec_event["index"], "security");
            assert!(hec_event["time"].as_f64().unwrap() > 1.7e9, "{line}");
            hec_event["event"].to_string()
        })
        .collect();
    // The same events as the export (which puts checkpoints last).
    let normal = |lines: Vec<&str>| {
        let mut lines: Vec<String> = lines
            .into_iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(
        normal(events.iter().map(String::as_str).collect()),
        normal(exported.clone())
    );
    // Byte for byte, too: the event is the export line as it is.
    assert!(
        lines[0].ends_with(&format!(",\"event\":{}}}", exported[0])),
        "{}",
        lines[0]
    );
    let (records, checkpoints) = seqs(&events);
    assert_eq!(assert_in_order_without_gaps(&records), (4, 0));
    assert_eq!(checkpoints, [3], "the checkpoint follows the record it signs");
    assert_eq!(
        metric(&broker.admin_url, "stint_audit_ship_lag_records{sink=\"siem\"}").await,
        0.0
    );
    assert_eq!(
        metric(&broker.admin_url, "stint_audit_ship_records_total{sink=\"siem\"}").await,
        4.0
    );
}

/// OCSF: issue requests are Authentication events (class 3002) with the
/// mapped status, user, endpoint and ids; each keeps its export line in
/// `raw_data`, so the SIEM copy verifies offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsf_events_carry_the_mapped_fields_and_verify_through_raw_data() {
    let issuer = TestIssuer::start().await;
    let receiver = HttpReceiver::start().await;
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("token"), "s3cret").unwrap();
    let broker = broker_shipping(
        &issuer,
        &format!(
            "      sink: http\n      url: \"{}/ocsf\"\n      format: ocsf\n      token_file: \"{}\"\n      scheme: Bearer\n",
            receiver.url,
            secrets.path().join("token").display()
        ),
    )
    .await;
    issue_some(&issuer, &broker, 3).await;
    let lines = receiver.wait_for("3 records and a checkpoint", |l| l.len() >= 4).await;
    let request = &receiver.requests()[0];
    assert_eq!(request.headers["authorization"], "Bearer s3cret");
    assert_eq!(request.headers["content-type"], "application/x-ndjson");

    let events: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let store = stint::audit::open_existing(&format!("sqlite://{}", broker.audit_db().display()))
        .await
        .unwrap();
    let records = store.chain(0, 10).await.unwrap();
    for (event, record) in events.iter().zip(&records) {
        assert_eq!(event["class_uid"], 3002);
        assert_eq!(event["category_uid"], 3);
        assert_eq!(event["activity_id"], 1, "a request for credentials is a logon");
        assert_eq!(event["type_uid"], 300201);
        assert_eq!(event["auth_protocol_id"], 4);
        assert_eq!(event["metadata"]["uid"], json!(record.record_hash));
        assert_eq!(event["metadata"]["sequence"], json!(record.seq));
        assert_eq!(event["metadata"]["correlation_uid"], json!(record.request_id));
        assert_eq!(event["metadata"]["version"], "1.3.0");
        assert_eq!(event["user"]["uid"], "repo:acme/api:environment:production");
        assert_eq!(event["actor"]["idp"]["name"], "ci");
        assert_eq!(event["service"]["name"], "deploy");
        assert_eq!(event["src_endpoint"]["ip"], "127.0.0.1");
        assert_eq!(event["unmapped"]["claims"]["repository"], "acme/api");
    }
    assert_eq!(
        (events[0]["status_id"].as_u64(), events[0]["status"].as_str()),
        (Some(1), Some("Success"))
    );
    assert_eq!(events[0]["session"]["uid"], json!(records[0].issuance_id));
    assert!(events[0]["session"]["expiration_time"].as_i64().unwrap() > events[0]["time"].as_i64().unwrap());
    assert_eq!(
        (events[2]["status_id"].as_u64(), events[2]["status_code"].as_str()),
        (Some(2), Some("claims_mismatch"))
    );
    assert_eq!(events[2]["severity_id"], 3);
    assert_eq!(events[3]["class_uid"], 0, "the checkpoint is a base event");
    assert_eq!(events[3]["unmapped"]["checkpoint"]["seq"], 3);

    let raw: Vec<String> = events
        .iter()
        .map(|e| e["raw_data"].as_str().unwrap().to_string())
        .collect();
    let ok = verify_offline(&broker, &raw).await.unwrap();
    assert!(
        ok.starts_with("ok: 3 records (seq 1..3), 1 checkpoints (last at seq 3)"),
        "{ok}"
    );
}

/// Syslog over TCP: RFC 5424 messages, octet-counted; a receiver that
/// drops the connection costs nothing (the next batch opens a new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tcp_is_rfc5424_octet_counted_and_survives_a_dropped_connection() {
    let issuer = TestIssuer::start().await;
    let syslog = SyslogReceiver::start(None).await;
    let broker = broker_shipping(
        &issuer,
        &format!("      sink: syslog\n      url: tcp://127.0.0.1:{}\n", syslog.port),
    )
    .await;
    issue_some(&issuer, &broker, 1).await;
    wait_lines("a message", || syslog.messages(), |m| !m.is_empty()).await;
    syslog.hang_up().await;
    issue_some(&issuer, &broker, 1).await;
    wait_lines("2 messages", || syslog.messages(), |m| m.len() >= 2).await;
    assert_eq!(syslog.connections(), 2, "a new connection after the drop");
    issue_some(&issuer, &broker, 1).await;
    let mut denied = issuer.github();
    denied.insert("ref".into(), json!("refs/heads/feature"));
    assert_eq!(broker.issue("deploy", &issuer.sign(&denied), None).await.status, 403);
    let messages = wait_lines("5 messages", || syslog.messages(), |m| m.len() >= 5).await;

    let mut bodies = Vec::new();
    for message in &messages {
        // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
        let parts: Vec<&str> = message.splitn(8, ' ').collect();
        let (pri, version) = parts[0].split_once('>').unwrap();
        assert_eq!(version, "1", "{message}");
        let fraction = parts[1].trim_end_matches('Z').split('.').nth(1).unwrap_or("");
        assert!(
            parts[1].ends_with('Z') && fraction.len() <= 6,
            "RFC 5424 allows 6 digits: {message}"
        );
        assert_eq!((parts[3], parts[6]), ("stint", "-"), "{message}");
        let priority: u32 = pri.trim_start_matches('<').parse().unwrap();
        let expected = match parts[5] {
            "issued" | "checkpoint" => 10 * 8 + 6,
            "denied" => 10 * 8 + 5,
            other => panic!("msgid {other}"),
        };
        assert_eq!(priority, expected, "facility authpriv, severity by outcome: {message}");
        bodies.push(parts[7].to_string());
    }
    let (records, checkpoints) = seqs(&bodies);
    assert_eq!(assert_in_order_without_gaps(&records), (4, 0));
    assert_eq!(checkpoints, [3]);
    assert_eq!(messages[3].split(' ').nth(5), Some("checkpoint"), "{}", messages[3]);
    assert!(
        verify_offline(&broker, &bodies)
            .await
            .unwrap()
            .starts_with("ok: 4 records")
    );
}

/// Syslog over TLS, the server checked against `ca_file` and its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_checks_the_server_and_delivers() {
    let issuer = TestIssuer::start().await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (certified.cert.pem(), certified.signing_key.serialize_pem());
    let syslog = SyslogReceiver::start(Some((cert.clone(), key))).await;
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("ca.pem"), &cert).unwrap();
    let broker = broker_shipping(
        &issuer,
        &format!(
            "      sink: syslog\n      url: tls://localhost:{}\n      ca_file: \"{}\"\n      format: ocsf\n",
            syslog.port,
            secrets.path().join("ca.pem").display()
        ),
    )
    .await;
    issue_some(&issuer, &broker, 2).await;
    let messages = wait_lines("2 messages", || syslog.messages(), |m| m.len() >= 2).await;
    let event: Value = serde_json::from_str(messages[0].splitn(8, ' ').nth(7).unwrap()).unwrap();
    assert_eq!(
        (event["class_uid"].as_u64(), event["metadata"]["sequence"].as_i64()),
        (Some(3002), Some(1))
    );
}

/// The position never moves past a record that is not what was written:
/// the shipper ships up to it, says why in the log and the metrics, and
/// waits; the broker goes on issuing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_in_the_store_stops_the_shipper_at_it() {
    let issuer = TestIssuer::start().await;
    let receiver = HttpReceiver::start().await;
    receiver.set(Mode::Fail(500));
    let broker = broker_shipping(
        &issuer,
        &format!(
            "      sink: http\n      url: \"{}\"\n      max_backoff: 1s\n",
            receiver.url
        ),
    )
    .await;
    issue_some(&issuer, &broker, 6).await;
    rusqlite::Connection::open(broker.audit_db())
        .unwrap()
        .execute("UPDATE audit_records SET subject = 'repo:evil/x' WHERE seq = 4", [])
        .unwrap();
    receiver.set(Mode::Take);
    let chain = "stint_audit_ship_failures_total{sink=\"siem\",reason=\"chain\"}";
    until_metric(&broker.admin_url, chain, |v| v >= 1.0).await;
    let (records, _) = seqs(&receiver.lines());
    assert_eq!(
        assert_in_order_without_gaps(&records).0,
        3,
        "records 1..3 went, 4 never"
    );
    issue_some(&issuer, &broker, 3).await;
    until_metric(&broker.admin_url, chain, |v| v >= 2.0).await;
    let (records, _) = seqs(&receiver.lines());
    assert_eq!(
        assert_in_order_without_gaps(&records).0,
        3,
        "nothing past it, however long it waits"
    );
    assert_eq!(
        metric(&broker.admin_url, "stint_audit_ship_lag_records{sink=\"siem\"}").await,
        6.0
    );
}

/// A token the broker cannot read stops the start, naming the key.
#[tokio::test]
async fn a_sink_whose_token_cannot_be_read_stops_the_start_with_its_key() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit:\n  store: sqlite://audit.db\n  key_file: audit.key\n  ship:\n    siem:\n      sink: splunk_hec\n      url: https://splunk.acme.example:8088\n      token_file: missing.token\n\
         signing: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
        issuer_yaml("ci", &issuer, "github", "")
    );
    let config = stint::config::Config::parse(&text, "stint.yaml", dir.path(), &|_| None).unwrap();
    let Err(e) = stint::server::start(config).await else {
        panic!("the broker started without its sink's token")
    };
    let e = e.to_string();
    assert!(
        e.starts_with("stint.yaml: audit.ship.siem.token_file: cannot read "),
        "{e}"
    );
    assert!(e.contains("missing.token"), "{e}");
}
