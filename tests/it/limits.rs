//! Load limits: shedding, timeouts, rate limits per client and per caller,
//! and the JWKS refetch limit under a storm of unknown key ids.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::harness::{DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::{RSA_OTHER_KID, Signer, TestIssuer, keys, rsa_jwk};

async fn broker(issuer: &TestIssuer, extra: &str) -> TestBroker {
    TestBroker::start_with(&issuer_yaml("ci", issuer, "github", ""), DEPLOY_GRANT, extra).await
}

#[tokio::test]
async fn per_client_and_per_caller_rate_limits_answer_429() {
    let issuer = TestIssuer::start().await;
    let by_client = broker(&issuer, "limits: { per_client: { per_second: 0.01, burst: 2 } }\n").await;
    for _ in 0..2 {
        assert_eq!(
            by_client
                .issue("deploy", &issuer.sign(&issuer.github()), None)
                .await
                .status,
            200
        );
    }
    let limited = by_client.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(
        (limited.status.as_u16(), limited.code()),
        (429, "rate_limited"),
        "{}",
        limited.text
    );
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(limited.content_type(), "application/problem+json");

    let by_caller = broker(&issuer, "limits: { per_subject: { per_second: 0.01, burst: 2 } }\n").await;
    for _ in 0..2 {
        assert_eq!(
            by_caller
                .issue("deploy", &issuer.sign(&issuer.github()), None)
                .await
                .status,
            200
        );
    }
    let limited = by_caller.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!((limited.status.as_u16(), limited.code()), (429, "rate_limited"));
    let record = by_caller.audit_record(&limited.request_id()).await;
    assert_eq!(record.reason.as_deref(), Some("rate_limited"));
    let mut other = issuer.github();
    other.insert("sub".into(), json!("repo:acme/api:ref:refs/heads/main"));
    assert_eq!(
        by_caller.issue("deploy", &issuer.sign(&other), None).await.status,
        200,
        "another caller is not held back"
    );
}

fn rotated(issuer: &TestIssuer) -> String {
    issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_OTHER_KID}),
        &issuer.github(),
        Signer::RsaOther,
    )
}

#[tokio::test]
async fn excess_load_is_shed_and_slow_requests_time_out() {
    let issuer = TestIssuer::start().await;
    let broker = Arc::new(
        broker(
            &issuer,
            "limits: { max_in_flight: 1, request_timeout: 1s }\njwks: { refetch_cooldown: 0s }\n",
        )
        .await,
    );
    // A request that must fetch the issuer's keys, slowly.
    issuer.set_jwks(json!({"keys": [rsa_jwk(&keys().rsa_other, RSA_OTHER_KID)]}));
    issuer.set_jwks_delay(Duration::from_millis(2500));
    let slow = {
        let (broker, token) = (broker.clone(), rotated(&issuer));
        tokio::spawn(async move { broker.issue("deploy", &token, None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = broker.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(
        (shed.status.as_u16(), shed.code()),
        (503, "overloaded"),
        "{}",
        shed.text
    );
    assert_eq!(shed.headers.get("retry-after").unwrap(), "1");
    let slow = slow.await.unwrap();
    assert_eq!((slow.status.as_u16(), slow.code()), (503, "timeout"), "{}", slow.text);
    // The timed-out flow still runs, and holds the one slot, until its keys
    // arrive: then it is recorded (nothing cut off half-way) and the broker
    // serves again.
    issuer.set_jwks_delay(Duration::ZERO);
    let started = std::time::Instant::now();
    loop {
        let next = broker.issue("deploy", &rotated(&issuer), None).await;
        if next.status == 200 {
            break;
        }
        assert_eq!(next.code(), "overloaded", "{}", next.text);
        assert!(started.elapsed() < Duration::from_secs(10), "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = broker.audit_record(&slow.request_id()).await;
    assert_eq!(record.outcome, stint::audit::Outcome::Issued, "{record:?}");
}

#[tokio::test]
async fn a_storm_of_unknown_key_ids_makes_at_most_one_fetch_per_cooldown() {
    let issuer = TestIssuer::start().await;
    // All 1,000 at once are in flight together while the one fetch runs:
    // room for them, so each is answered by the key check, not shed.
    let broker = Arc::new(
        broker(
            &issuer,
            "jwks: { refetch_cooldown: 2s }\nlimits: { max_in_flight: 1024 }\n",
        )
        .await,
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = issuer.jwks_fetches();
    let mut tasks = Vec::new();
    for n in 0..1000 {
        let token = issuer.sign_with(
            &json!({"alg": "RS256", "typ": "JWT", "kid": format!("storm-{n}")}),
            &issuer.github(),
            Signer::Rsa,
        );
        let broker = broker.clone();
        tasks.push(tokio::spawn(async move {
            let answer = broker.issue("deploy", &token, None).await;
            (answer.status.as_u16(), answer.code().to_string())
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), (401, "key_not_found".to_string()));
    }
    assert_eq!(issuer.jwks_fetches() - before, 1, "1,000 unknown kids, one fetch");
}

#[tokio::test]
async fn a_global_rate_limit_holds_back_every_client_together() {
    let issuer = TestIssuer::start().await;
    let broker = broker(&issuer, "limits: { global: { per_second: 0.01, burst: 3 } }\n").await;
    for _ in 0..3 {
        assert_eq!(
            broker
                .issue("deploy", &issuer.sign(&issuer.github()), None)
                .await
                .status,
            200
        );
    }
    // Another caller, another path: the listener's bucket is shared.
    let mut other = issuer.github();
    other.insert("sub".into(), json!("repo:acme/api:ref:refs/heads/main"));
    let limited = broker.issue("deploy", &issuer.sign(&other), None).await;
    assert_eq!(
        (limited.status.as_u16(), limited.code()),
        (429, "rate_limited"),
        "{}",
        limited.text
    );
    let wait: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 1, "{wait}");
    assert_eq!(limited.content_type(), "application/problem+json");
    assert_eq!(broker.get("/.well-known/jwks.json").await.status, 429);
    // The admin listener is not limited: health checks keep working.
    assert_eq!(broker.admin_get("/healthz").await.status, 200);
}

#[tokio::test]
async fn oversized_headers_get_a_problem_not_a_dropped_connection() {
    let issuer = TestIssuer::start().await;
    let broker = broker(&issuer, "limits: { max_header_bytes: 24576 }\n").await;
    let answer = crate::harness::answer(
        broker
            .http
            .get(format!("{}/v1/grants", broker.url))
            .header("x-padding", "p".repeat(25 * 1024))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (431, "headers_too_large"),
        "{}",
        answer.text
    );
    assert!(
        answer.body["detail"].as_str().unwrap().contains("24576"),
        "{}",
        answer.text
    );
    assert!(!answer.request_id().is_empty());
    // Just under the limit still gets through to the handler.
    let answer = crate::harness::answer(
        broker
            .http
            .get(format!("{}/v1/grants", broker.url))
            .header("x-padding", "p".repeat(20 * 1024))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_ready_after_its_request_timed_out_is_recorded_then_revoked_as_undelivered() {
    use crate::leases::{broker_on, fixture, role_exists};
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (_, port) = crate::store::postgres_host_port();
    let broker = broker_on(
        "sqlite://audit.db",
        &issuer,
        &f,
        port,
        "limits: { request_timeout: 1s }\njwks: { refetch_cooldown: 0s }\n",
    )
    .await;
    // The caller's key must be fetched, slowly: the request times out, its
    // flow goes on and creates the role for nobody.
    issuer.set_jwks(json!({"keys": [rsa_jwk(&keys().rsa_other, RSA_OTHER_KID)]}));
    issuer.set_jwks_delay(Duration::from_millis(2500));
    let late = broker.issue("app-db", &rotated(&issuer), None).await;
    assert_eq!((late.status.as_u16(), late.code()), (503, "timeout"), "{}", late.text);

    let records = async || {
        broker
            .server
            .broker
            .audit()
            .query(&stint::audit::AuditQuery {
                grant: Some("app-db".into()),
                ..stint::audit::AuditQuery::default()
            })
            .await
            .unwrap()
    };
    let started = std::time::Instant::now();
    let revoked = loop {
        let found = records().await;
        if let Some(r) = found.iter().find(|r| r.outcome == stint::audit::Outcome::Revoked) {
            break r.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never revoked: {found:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(revoked.reason.as_deref(), Some("undelivered"));
    let issued = records()
        .await
        .into_iter()
        .find(|r| r.outcome == stint::audit::Outcome::Issued)
        .expect("the issuance is recorded");
    assert_eq!(issued.request_id, late.request_id());
    let role = revoked.detail["username"].as_str().unwrap().to_string();
    assert!(!role_exists(&role).await, "{role} was never handed out and is gone");
}
