//! The JWKS cache: discovery checks, refetch cooldown, coalescing, and
//! known keys surviving an issuer outage. Fetches are counted at the issuer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::harness::{DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::{RSA_KID, RSA_OTHER_KID, Signer, TestIssuer, ec_jwk, keys, rsa_jwk};

fn rotated_token(issuer: &TestIssuer) -> String {
    issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_OTHER_KID}),
        &issuer.github(),
        Signer::RsaOther,
    )
}

async fn broker_with_cooldown(issuer: &TestIssuer, cooldown: &str) -> TestBroker {
    let extra = format!("jwks:\n  refetch_cooldown: {cooldown}\n");
    TestBroker::start_with(&issuer_yaml("ci", issuer, "github", ""), DEPLOY_GRANT, &extra).await
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_cooldown() {
    let issuer = TestIssuer::start().await;
    let broker = broker_with_cooldown(&issuer, "1s").await;
    assert_eq!(issuer.jwks_fetches(), 1, "one start-up fetch");
    assert_eq!(
        broker
            .issue("deploy", &issuer.sign(&issuer.github()), None)
            .await
            .status,
        200
    );
    assert_eq!(issuer.jwks_fetches(), 1, "known keys are served from the cache");

    // The issuer rotates. Inside the cooldown the new kid is not fetched.
    issuer.set_jwks(json!({"keys": [rsa_jwk(&keys().rsa, RSA_KID), rsa_jwk(&keys().rsa_other, RSA_OTHER_KID)]}));
    for _ in 0..5 {
        assert_eq!(
            broker.issue("deploy", &rotated_token(&issuer), None).await.code(),
            "key_not_found"
        );
    }
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "unknown kids inside the cooldown cause no fetch"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(broker.issue("deploy", &rotated_token(&issuer), None).await.status, 200);
    assert_eq!(issuer.jwks_fetches(), 2, "one refetch after the cooldown");

    // A kid the issuer really does not have: one refetch, then quiet.
    let bogus = issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "nope"}),
        &issuer.github(),
        Signer::Rsa,
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..5 {
        assert_eq!(broker.issue("deploy", &bogus, None).await.code(), "key_not_found");
    }
    assert_eq!(issuer.jwks_fetches(), 3);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let issuer = TestIssuer::start().await;
    let broker = Arc::new(broker_with_cooldown(&issuer, "0s").await);
    assert_eq!(issuer.jwks_fetches(), 1);
    issuer.set_jwks(json!({"keys": [rsa_jwk(&keys().rsa, RSA_KID), rsa_jwk(&keys().rsa_other, RSA_OTHER_KID)]}));
    issuer.set_jwks_delay(Duration::from_millis(300));

    let token = rotated_token(&issuer);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (broker, token) = (broker.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            broker.issue("deploy", &token, None).await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(issuer.jwks_fetches(), 2, "ten concurrent misses, one fetch");
}

#[tokio::test]
async fn known_keys_keep_working_while_the_issuer_is_down() {
    let issuer = TestIssuer::start().await;
    let broker = broker_with_cooldown(&issuer, "0s").await;
    issuer.set_down(true);
    assert_eq!(
        broker
            .issue("deploy", &issuer.sign(&issuer.github()), None)
            .await
            .status,
        200
    );
    // An unknown kid while down is a plain 401, not an outage for everyone.
    let answer = broker.issue("deploy", &rotated_token(&issuer), None).await;
    assert_eq!((answer.status.as_u16(), answer.code()), (401, "key_not_found"));
}

#[tokio::test]
async fn issuer_unreachable_without_cached_keys_is_503() {
    let issuer = TestIssuer::start().await;
    issuer.set_down(true);
    let broker = broker_with_cooldown(&issuer, "0s").await;
    let answer = broker.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (503, "issuer_unavailable"),
        "{}",
        answer.text
    );
    let record = broker.audit_record(&answer.request_id()).await;
    assert_eq!(record.outcome, stint::audit::Outcome::Error);

    issuer.set_down(false);
    assert_eq!(
        broker
            .issue("deploy", &issuer.sign(&issuer.github()), None)
            .await
            .status,
        200,
        "recovers"
    );
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() {
    let issuer = TestIssuer::start().await;
    issuer.set_discovery_issuer("https://someone-else.example");
    let broker = broker_with_cooldown(&issuer, "0s").await;
    let answer = broker.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!((answer.status.as_u16(), answer.code()), (503, "issuer_unavailable"));
    assert_eq!(
        issuer.jwks_fetches(),
        0,
        "no JWKS is fetched from a mismatched discovery document"
    );
}

#[tokio::test]
async fn oversized_jwks_is_refused() {
    let issuer = TestIssuer::start().await;
    let filler: Vec<_> = (0..400)
        .map(|i| {
            let mut k = ec_jwk(&format!("filler-{i}"));
            k["x5c"] = json!(["A".repeat(1024)]);
            k
        })
        .collect();
    let mut all = vec![rsa_jwk(&keys().rsa, RSA_KID)];
    all.extend(filler);
    issuer.set_jwks(json!({ "keys": all }));
    let broker = broker_with_cooldown(&issuer, "0s").await;
    let answer = broker.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (503, "issuer_unavailable"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn issuer_down_at_start_is_503_even_inside_the_cooldown() {
    let issuer = TestIssuer::start().await;
    issuer.set_down(true);
    let broker = broker_with_cooldown(&issuer, "30s").await;
    let answer = broker.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (503, "issuer_unavailable"),
        "{}",
        answer.text
    );
    assert_eq!(answer.headers.get("retry-after").unwrap(), "5");
}
