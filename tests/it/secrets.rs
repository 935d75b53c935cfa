//! `kind: secrets`: values from moto's Secrets Manager through the real SDK.

use std::time::Duration;

use aws_sdk_secretsmanager::primitives::Blob;
use serde_json::json;
use stint::server::StartOptions;

use crate::harness::{TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;
use crate::moto::{CountingProxy, Moto, stint_identity};

const GRANT: &str = r#"
  api-secrets:
    kind: secrets
    ttl: 10m
    secrets: [prod/api/db, "prod/api/db#password", prod/api/stripe, prod/api/cert]
    cache_ttl: 1s
    allow:
      - issuer: ci
        claims: { sub: "system:serviceaccount:acme:api" }
"#;

async fn setup(aws_url: &str, moto: &Moto) -> (TestIssuer, TestBroker, aws_sdk_secretsmanager::Client) {
    let admin = aws_sdk_secretsmanager::Client::new(&moto.sdk("AKIAADMIN", "admin", None).await);
    admin
        .create_secret()
        .name("prod/api/db")
        .secret_string(json!({"username": "api", "password": "pw-1", "port": 5432}).to_string())
        .send()
        .await
        .unwrap();
    admin
        .create_secret()
        .name("prod/api/stripe")
        .secret_string("sk_live_stripe")
        .send()
        .await
        .unwrap();
    admin
        .create_secret()
        .name("prod/api/cert")
        .secret_binary(Blob::new(vec![0u8, 159, 146, 150]))
        .send()
        .await
        .unwrap();
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_full(
        &issuer_yaml("ci", &issuer, "kubernetes", ""),
        GRANT,
        &Moto::aws_yaml(aws_url, ""),
        StartOptions {
            aws_credentials: Some(stint_identity()),
            ..StartOptions::default()
        },
    )
    .await;
    (issuer, broker, admin)
}

fn k8s_token(issuer: &TestIssuer) -> String {
    issuer.sign(&issuer.fixture_claims("kubernetes-projected-sa"))
}

#[tokio::test]
async fn returns_values_versions_and_json_keys_and_audits_no_value() {
    let moto = Moto::start().await;
    let (issuer, broker, _) = setup(&moto.url, &moto).await;
    let answer = broker.issue("api-secrets", &k8s_token(&issuer), None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let secrets = &answer.body["secrets"];
    assert_eq!(secrets["prod/api/db#password"], "pw-1");
    assert_eq!(secrets["prod/api/stripe"], "sk_live_stripe");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(secrets["prod/api/db"].as_str().unwrap()).unwrap()["port"],
        5432
    );
    assert_eq!(secrets["prod/api/cert"], "AJ+Slg==");
    assert_eq!(answer.body["encodings"], json!({"prod/api/cert": "base64"}));
    let versions = answer.body["versions"].as_object().unwrap();
    assert_eq!(versions.len(), 4);
    assert!(versions.values().all(|v| v.as_str().is_some_and(|s| !s.is_empty())));

    let record = broker.audit_record(&answer.request_id()).await;
    assert_eq!(record.detail["versions"], answer.body["versions"]);
    let row = serde_json::to_string(&record).unwrap();
    for value in ["pw-1", "sk_live_stripe", "AJ+Slg=="] {
        assert!(!row.contains(value), "secret value {value} in the audit record");
    }
}

#[tokio::test]
async fn callers_may_ask_for_a_subset_but_nothing_outside_the_grant() {
    let moto = Moto::start().await;
    let (issuer, broker, _) = setup(&moto.url, &moto).await;
    let subset = broker
        .issue(
            "api-secrets",
            &k8s_token(&issuer),
            Some(json!({"secrets": ["prod/api/stripe"]})),
        )
        .await;
    assert_eq!(subset.status, 200, "{}", subset.text);
    assert_eq!(subset.body["secrets"], json!({"prod/api/stripe": "sk_live_stripe"}));

    let outside = broker
        .issue(
            "api-secrets",
            &k8s_token(&issuer),
            Some(json!({"secrets": ["prod/other"]})),
        )
        .await;
    assert_eq!(
        (outside.status.as_u16(), outside.code()),
        (403, "secret_not_in_grant"),
        "{}",
        outside.text
    );
    assert!(outside.body.get("secrets").is_none());

    // `secrets` on a grant of another kind is a client mistake.
    let grants = "  t:\n    kind: token\n    ttl: 1m\n    audience: x\n    allow:\n      - issuer: ci\n        claims: { sub: \"system:serviceaccount:acme:api\" }\n";
    let token_broker = TestBroker::start(&issuer, "kubernetes", grants).await;
    let wrong = token_broker
        .issue("t", &k8s_token(&issuer), Some(json!({"secrets": ["x"]})))
        .await;
    assert_eq!((wrong.status.as_u16(), wrong.code()), (400, "invalid_request"));
}

#[tokio::test]
async fn values_are_cached_for_cache_ttl_and_served_while_aws_is_down() {
    let mut moto = Moto::start().await;
    let proxy = CountingProxy::start(&moto.url).await;
    let (issuer, broker, admin) = setup(&proxy.url, &moto).await;
    let token = k8s_token(&issuer);
    let ask = || broker.issue("api-secrets", &token, Some(json!({"secrets": ["prod/api/stripe"]})));
    assert_eq!(ask().await.body["secrets"]["prod/api/stripe"], "sk_live_stripe");
    assert_eq!(proxy.get_secret_calls(), 1);

    admin
        .put_secret_value()
        .secret_id("prod/api/stripe")
        .secret_string("sk_live_rotated")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ask().await.body["secrets"]["prod/api/stripe"],
        "sk_live_stripe",
        "inside cache_ttl"
    );
    assert_eq!(proxy.get_secret_calls(), 1);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let rotated = ask().await;
    assert_eq!(
        rotated.body["secrets"]["prod/api/stripe"], "sk_live_rotated",
        "after cache_ttl"
    );
    assert_eq!(proxy.get_secret_calls(), 2);

    // Concurrent misses share one GetSecretValue.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let answers = futures_util::future::join_all((0..20).map(|_| ask())).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(proxy.get_secret_calls(), 3);

    // Inside cache_ttl, a cached value is served with AWS down; a miss is 503.
    moto.stop();
    assert_eq!(ask().await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let down = ask().await;
    assert_eq!(
        (down.status.as_u16(), down.code()),
        (503, "upstream_unavailable"),
        "{}",
        down.text
    );
}

#[tokio::test]
async fn missing_secret_or_key_is_a_502_naming_it() {
    let moto = Moto::start().await;
    let issuer = TestIssuer::start().await;
    let grants = r#"
  broken:
    kind: secrets
    ttl: 10m
    secrets: [prod/does-not-exist]
    allow: [ { issuer: ci, claims: { sub: "system:serviceaccount:acme:api" } } ]
  no-key:
    kind: secrets
    ttl: 10m
    secrets: ["prod/api/stripe#password"]
    allow: [ { issuer: ci, claims: { sub: "system:serviceaccount:acme:api" } } ]
"#;
    let admin = aws_sdk_secretsmanager::Client::new(&moto.sdk("AKIAADMIN", "admin", None).await);
    admin
        .create_secret()
        .name("prod/api/stripe")
        .secret_string("plain")
        .send()
        .await
        .unwrap();
    let broker = TestBroker::start_full(
        &issuer_yaml("ci", &issuer, "kubernetes", ""),
        grants,
        &Moto::aws_yaml(&moto.url, ""),
        StartOptions {
            aws_credentials: Some(stint_identity()),
            ..StartOptions::default()
        },
    )
    .await;
    let missing = broker.issue("broken", &k8s_token(&issuer), None).await;
    assert_eq!(
        (missing.status.as_u16(), missing.code()),
        (502, "upstream_refused"),
        "{}",
        missing.text
    );
    assert!(missing.body["detail"].as_str().unwrap().contains("prod/does-not-exist"));
    let no_key = broker.issue("no-key", &k8s_token(&issuer), None).await;
    assert_eq!(
        (no_key.status.as_u16(), no_key.code()),
        (502, "upstream_refused"),
        "{}",
        no_key.text
    );
    assert!(
        !no_key.text.contains("plain"),
        "the secret value never appears in an error"
    );
}

#[tokio::test]
async fn several_uncached_secrets_are_read_in_one_batch_call() {
    let moto = Moto::start().await;
    let proxy = CountingProxy::start(&moto.url).await;
    let (issuer, broker, _) = setup(&proxy.url, &moto).await;
    let answer = broker.issue("api-secrets", &k8s_token(&issuer), None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["secrets"]["prod/api/db#password"], "pw-1");
    assert_eq!(answer.body["secrets"]["prod/api/cert"], "AJ+Slg==");
    assert_eq!(
        (proxy.batch_get_secret_calls(), proxy.get_secret_calls()),
        (1, 0),
        "three secrets, one call"
    );
    // Cached now: no call at all.
    assert_eq!(broker.issue("api-secrets", &k8s_token(&issuer), None).await.status, 200);
    assert_eq!((proxy.batch_get_secret_calls(), proxy.get_secret_calls()), (1, 0));
}
