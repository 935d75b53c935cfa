//! Audit records: what they hold, what they never hold, and fail-closed.

use serde_json::json;
use stint::audit::Outcome;

use crate::harness::{DEPLOY_GRANT, TestBroker};
use crate::issuer::TestIssuer;

#[tokio::test]
async fn issuance_record_holds_who_what_when_and_why() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let claims = issuer.github();
    let token = issuer.sign(&claims);
    let answer = broker.issue("deploy", &token, Some(json!({"ttl": "7m"}))).await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let record = broker.audit_record(&answer.request_id()).await;
    assert_eq!(record.outcome, Outcome::Issued);
    assert_eq!(record.reason, None);
    assert_eq!(record.grant.as_deref(), Some("deploy"));
    assert_eq!(record.kind.as_deref(), Some("token"));
    assert_eq!(record.issuer.as_deref(), Some("ci"));
    assert_eq!(record.subject.as_deref(), Some("repo:acme/api:environment:production"));
    for (name, value) in [
        ("repository", "acme/api"),
        ("ref", "refs/heads/main"),
        ("workflow_ref", "acme/api/.github/workflows/deploy.yml@refs/heads/main"),
        ("run_id", "15012345678"),
        ("actor", "acme-dev"),
        ("environment", "production"),
        ("event_name", "push"),
    ] {
        assert_eq!(record.claims.get(name), Some(&json!(value)), "claim {name}");
    }
    assert_eq!(
        record.issuance_id.as_ref(),
        answer.body["issuance_id"].as_str().map(str::to_string).as_ref()
    );
    assert_eq!(record.ttl_seconds, Some(420));
    assert_eq!(record.expires_at.as_deref(), answer.body["expires_at"].as_str());
    assert!(record.client_addr.as_deref().unwrap().starts_with("127.0.0.1:"));

    let jti = claims["jti"].as_str().unwrap();
    let hash = record.token_jti_hmac.clone().unwrap();
    assert_eq!(hash.len(), 64);
    assert_ne!(hash, jti);

    // Nothing secret in the stored row: not the caller's token, not the issued one.
    let conn = rusqlite::Connection::open(broker.audit_db()).unwrap();
    let row: String = conn
        .query_row(
            "SELECT json_array(time, request_id, outcome, reason, grant_name, kind, issuer, subject, claims, \
             token_jti_hmac, issuance_id, ttl_seconds, expires_at, client_addr, detail) FROM audit_records WHERE request_id = ?1",
            [answer.request_id()],
            |r| r.get(0),
        )
        .unwrap();
    let issued = answer.body["token"].as_str().unwrap();
    assert!(
        !row.contains(token.split('.').nth(2).unwrap()),
        "caller token signature in audit"
    );
    assert!(
        !row.contains(issued.split('.').nth(2).unwrap()),
        "issued token in audit"
    );
    assert!(!row.contains(jti), "raw jti in audit");
}

#[tokio::test]
async fn denial_record_has_reason_and_verified_identity() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let mut claims = issuer.github();
    claims.insert("ref".into(), json!("refs/heads/feature"));
    let answer = broker.issue("deploy", &issuer.sign(&claims), None).await;
    assert_eq!(answer.status, 403);
    let record = broker.audit_record(&answer.request_id()).await;
    assert_eq!(record.outcome, Outcome::Denied);
    assert_eq!(record.reason.as_deref(), Some("claims_mismatch"));
    assert_eq!(record.subject.as_deref(), Some("repo:acme/api:environment:production"));
    assert_eq!(record.claims.get("ref"), Some(&json!("refs/heads/feature")));
    assert_eq!(record.issuance_id, None, "a denial issues nothing");
    assert_eq!(record.expires_at, None);
}

#[tokio::test]
async fn audit_failure_withholds_the_credential_with_503() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    assert_eq!(
        broker
            .issue("deploy", &issuer.sign(&issuer.github()), None)
            .await
            .status,
        200
    );

    // Break the log underneath the running broker.
    let conn = rusqlite::Connection::open(broker.audit_db()).unwrap();
    conn.execute_batch("DROP TABLE audit_records").unwrap();

    let answer = broker.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(answer.code(), "audit_unavailable");
    assert!(answer.body.get("token").is_none());
    assert!(!answer.text.contains("eyJ"), "no JWT anywhere in the body");
    assert_eq!(answer.headers.get("retry-after").unwrap(), "5");

    // Denials fail closed too, and readiness reports it.
    let mut denied = issuer.github();
    denied.insert("ref".into(), json!("refs/heads/x"));
    assert_eq!(broker.issue("deploy", &issuer.sign(&denied), None).await.status, 503);
    assert_eq!(broker.admin_get("/readyz").await.status, 503);
}

#[tokio::test]
async fn auditors_page_through_the_log_and_everyone_else_gets_403() {
    let issuer = TestIssuer::start().await;
    let auditors = "auditors:\n  - issuer: ci\n    claims: { repository: acme/security, ref: refs/heads/main }\n";
    let broker = TestBroker::start_with(
        &crate::harness::issuer_yaml("ci", &issuer, "github", ""),
        DEPLOY_GRANT,
        auditors,
    )
    .await;
    for i in 0..5 {
        let mut claims = issuer.github();
        if i == 2 {
            claims.insert("ref".into(), json!("refs/heads/x"));
        }
        broker.issue("deploy", &issuer.sign(&claims), None).await;
    }
    let mut auditor = issuer.github();
    auditor.insert("repository".into(), json!("acme/security"));
    let auditor = issuer.sign(&auditor);
    let get = |query: &str, token: &str| {
        let request = broker
            .http
            .get(format!("{}/v1/audit{query}", broker.url))
            .bearer_auth(token);
        async move { crate::harness::answer(request.send().await.unwrap()).await }
    };

    let page = get("?limit=2", &auditor).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let seqs: Vec<i64> = page.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [5, 4], "newest first");
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    let next = get(&format!("?limit=2&cursor={cursor}"), &auditor).await;
    let seqs: Vec<i64> = next.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 2]);

    let denied = get("?outcome=denied", &auditor).await;
    assert_eq!(denied.body["records"].as_array().unwrap().len(), 1);
    assert!(denied.body.get("next_cursor").is_none());

    let outsider = get("", &issuer.sign(&issuer.github())).await;
    assert_eq!((outsider.status.as_u16(), outsider.code()), (403, "denied"));
    assert!(outsider.body.get("records").is_none());
    let anonymous = crate::harness::answer(
        broker
            .http
            .get(format!("{}/v1/audit", broker.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(anonymous.status, 401);
    let bad = get("?since=yesterday", &auditor).await;
    assert_eq!((bad.status.as_u16(), bad.code()), (400, "invalid_request"));
}

#[tokio::test]
async fn single_use_grants_accept_each_token_once_across_brokers_on_one_store() {
    let issuer = TestIssuer::start().await;
    let shared = tempfile::tempdir().unwrap();
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: sqlite://audit.db, key_file: audit.key }}\n\
         signing: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{}",
        crate::harness::issuer_yaml("ci", &issuer, "github", ""),
        DEPLOY_GRANT.replace("    ttl: 5m\n", "    ttl: 5m\n    single_use_token: true\n")
    );
    let start = || async {
        let config = stint::config::Config::parse(&text, "test.yaml", shared.path(), &|_| None).unwrap();
        stint::server::start(config).await.unwrap()
    };
    let (a, b) = (start().await, start().await);
    let issue = |addr: std::net::SocketAddr, token: String| async move {
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/v1/issue/deploy"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        crate::harness::answer(response).await
    };
    let token = issuer.sign(&issuer.github());
    assert_eq!(issue(a.addr, token.clone()).await.status, 200);
    let replay = issue(b.addr, token.clone()).await;
    assert_eq!(
        (replay.status.as_u16(), replay.code()),
        (401, "token_replayed"),
        "{}",
        replay.text
    );
    assert_eq!(issue(a.addr, token).await.code(), "token_replayed");
    assert_eq!(
        issue(b.addr, issuer.sign(&issuer.github())).await.status,
        200,
        "a new token works"
    );

    // A denied request does not use the token up.
    let mut other_ref = issuer.github();
    other_ref.insert("ref".into(), json!("refs/heads/x"));
    let denied_token = issuer.sign(&other_ref);
    assert_eq!(issue(a.addr, denied_token.clone()).await.status, 403);
    assert_eq!(
        issue(a.addr, denied_token).await.status,
        403,
        "still a policy denial, not a replay"
    );

    // Without a jti a single-use grant cannot work.
    let mut no_jti = issuer.github();
    no_jti.remove("jti");
    let answer = issue(b.addr, issuer.sign(&no_jti)).await;
    assert_eq!((answer.status.as_u16(), answer.code()), (401, "claim_missing"));
    a.shutdown().await;
    b.shutdown().await;

    // Both brokers wrote one chain that verifies.
    let choice = stint::audit::commands::StoreChoice {
        config: None,
        store: Some(format!("sqlite://{}", shared.path().join("audit.db").display())),
        audit_key_file: Some(shared.path().join("audit.key")),
    };
    let ok = stint::audit::commands::verify(&choice, None, None).await.unwrap();
    assert!(ok.starts_with("ok: 7 records"), "{ok}");
}

#[tokio::test]
async fn the_mirror_gets_every_record_as_a_json_line_after_the_store() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n\
         audit: {{ store: sqlite://audit.db, key_file: audit.key, mirror: \"file:{}\" }}\n\
         signing: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{}",
        dir.path().join("mirror.jsonl").display(),
        crate::harness::issuer_yaml("ci", &issuer, "github", ""),
        DEPLOY_GRANT
    );
    let config = stint::config::Config::parse(&text, "test.yaml", dir.path(), &|_| None).unwrap();
    let server = stint::server::start(config).await.unwrap();
    let client = reqwest::Client::new();
    for _ in 0..2 {
        client
            .post(format!("http://{}/v1/issue/deploy", server.addr))
            .bearer_auth(issuer.sign(&issuer.github()))
            .send()
            .await
            .unwrap();
    }
    server.shutdown().await;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("mirror.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["seq"], 2, "mirrored records carry their chain position");
    assert_eq!(lines[0]["outcome"], "issued");
}
