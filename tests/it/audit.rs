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
