//! The admin listener: health, readiness, Prometheus metrics.

use crate::harness::{DEPLOY_GRANT, TestBroker};
use crate::issuer::TestIssuer;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    assert_eq!(broker.admin_get("/healthz").await.status, 200);
    let ready = broker.admin_get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.body["issuers_without_keys"], serde_json::json!([]));

    assert_eq!(
        broker
            .issue("deploy", &issuer.sign(&issuer.github()), None)
            .await
            .status,
        200
    );
    let mut denied = issuer.github();
    denied.insert("environment".into(), "staging".into());
    assert_eq!(broker.issue("deploy", &issuer.sign(&denied), None).await.status, 403);
    assert_eq!(
        broker
            .issue("no-such-grant", &issuer.sign(&issuer.github()), None)
            .await
            .status,
        403
    );

    let metrics = broker.admin_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text;
    assert!(
        text.contains(r#"stint_issuances_total{grant="deploy",outcome="issued",reason=""} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"stint_issuances_total{grant="deploy",outcome="denied",reason="claims_mismatch"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"stint_issuances_total{grant="(unknown)",outcome="denied",reason="unknown_grant"} 1"#),
        "unknown grant names do not become label values: {text}"
    );
    assert!(
        text.contains(
            r#"stint_http_request_duration_seconds_count{route="/v1/issue/{grant}",method="POST",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"stint_jwks_fetch_attempts{issuer="ci"} 1"#), "{text}");

    // The admin endpoints are not on the public listener.
    assert_eq!(broker.get("/metrics").await.status, 404);
}

#[tokio::test]
async fn admin_responses_carry_request_ids_and_problems() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let missing = broker.admin_get("/nothing").await;
    assert_eq!((missing.status.as_u16(), missing.code()), (404, "not_found"));
    assert!(!broker.admin_get("/healthz").await.request_id().is_empty());
    // Made-up methods do not create metric series.
    for method in ["FOO1", "FOO2"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        broker
            .http
            .request(m, format!("{}/v1/grants", broker.url))
            .send()
            .await
            .unwrap();
    }
    let text = broker.admin_get("/metrics").await.text;
    assert!(!text.contains("FOO1") && text.contains(r#"method="OTHER""#), "{text}");
}
