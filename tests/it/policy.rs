//! Policy over HTTP: matchers, traps, and denials that reveal nothing.

use serde_json::{Map, Value, json};

use crate::harness::{Answer, TestBroker};
use crate::issuer::TestIssuer;

const GRANTS: &str = r#"
  org-wide:
    kind: token
    ttl: 1m
    audience: a
    allow:
      - issuer: ci
        claims:
          repository: { glob: "acme/*" }
  exact:
    kind: token
    ttl: 1m
    audience: a
    allow:
      - issuer: ci
        claims:
          repository: acme/api
  release:
    kind: token
    ttl: 1m
    audience: a
    allow:
      - issuer: ci
        claims:
          ref: { regex: "refs/tags/v[0-9]+\\.[0-9]+\\.[0-9]+" }
          ref_protected: true
  no-prt:
    kind: token
    ttl: 1m
    audience: a
    allow:
      - issuer: ci
        claims:
          repository: acme/api
          event_name: { not: { one_of: [pull_request_target, pull_request] } }
  two-rules:
    kind: token
    ttl: 1m
    audience: a
    allow:
      - issuer: ci
        claims: { repository: acme/web }
      - issuer: ci
        claims: { repository: acme/api, environment: production }
  other-issuer:
    kind: token
    ttl: 1m
    audience: a
    allow:
      - issuer: elsewhere
        claims: { sub: x }
"#;

async fn setup() -> (TestIssuer, TestIssuer, TestBroker) {
    let issuer = TestIssuer::start().await;
    let elsewhere = TestIssuer::start().await;
    let issuers = format!(
        "{}{}",
        crate::harness::issuer_yaml("ci", &issuer, "github", ""),
        crate::harness::issuer_yaml("elsewhere", &elsewhere, "generic", "")
    );
    let broker = TestBroker::start_with(&issuers, GRANTS, "").await;
    (issuer, elsewhere, broker)
}

fn claims(issuer: &TestIssuer, changes: &[(&str, &str)]) -> Map<String, Value> {
    let mut claims = issuer.github();
    for (name, value) in changes {
        claims.insert(name.to_string(), json!(value));
    }
    claims
}

async fn ask(broker: &TestBroker, issuer: &TestIssuer, grant: &str, changes: &[(&str, &str)]) -> Answer {
    broker.issue(grant, &issuer.sign(&claims(issuer, changes)), None).await
}

#[tokio::test]
async fn glob_star_stays_inside_one_path_segment() {
    let (issuer, _, broker) = setup().await;
    assert_eq!(
        ask(&broker, &issuer, "org-wide", &[("repository", "acme/api")])
            .await
            .status,
        200
    );
    let nested = ask(&broker, &issuer, "org-wide", &[("repository", "acme/x/y")]).await;
    assert_eq!(nested.status, 403, "acme/* must not match acme/x/y");
    assert_eq!(
        ask(&broker, &issuer, "org-wide", &[("repository", "acmex/api")])
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn exact_match_has_no_prefix_trap() {
    let (issuer, _, broker) = setup().await;
    assert_eq!(ask(&broker, &issuer, "exact", &[]).await.status, 200);
    let evil = ask(&broker, &issuer, "exact", &[("repository", "acme/api-evil")]).await;
    assert_eq!(evil.status, 403);
    assert_eq!(
        ask(&broker, &issuer, "exact", &[("repository", "acme/ap")])
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn regex_is_anchored_and_booleans_match_string_claims() {
    let (issuer, _, broker) = setup().await;
    let tag = [("ref", "refs/tags/v1.2.3"), ("ref_protected", "true")];
    assert_eq!(ask(&broker, &issuer, "release", &tag).await.status, 200);
    let suffix = [("ref", "refs/tags/v1.2.3-evil"), ("ref_protected", "true")];
    assert_eq!(ask(&broker, &issuer, "release", &suffix).await.status, 403);
    let unprotected = [("ref", "refs/tags/v1.2.3"), ("ref_protected", "false")];
    let answer = ask(&broker, &issuer, "release", &unprotected).await;
    assert_eq!(answer.status, 403);
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .ends_with("did not match: ref_protected"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn not_and_one_of() {
    let (issuer, _, broker) = setup().await;
    assert_eq!(
        ask(&broker, &issuer, "no-prt", &[("event_name", "push")]).await.status,
        200
    );
    assert_eq!(
        ask(&broker, &issuer, "no-prt", &[("event_name", "pull_request_target")])
            .await
            .status,
        403
    );
    assert_eq!(
        ask(&broker, &issuer, "no-prt", &[("event_name", "pull_request")])
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn rules_are_alternatives_and_all_matchers_of_a_rule_must_hold() {
    let (issuer, _, broker) = setup().await;
    assert_eq!(
        ask(&broker, &issuer, "two-rules", &[]).await.status,
        200,
        "second rule matches"
    );
    assert_eq!(
        ask(&broker, &issuer, "two-rules", &[("repository", "acme/web")])
            .await
            .status,
        200
    );
    let staging = ask(&broker, &issuer, "two-rules", &[("environment", "staging")]).await;
    assert_eq!(staging.status, 403, "environment must hold too");
}

#[tokio::test]
async fn denial_names_claims_never_expected_values() {
    let (issuer, _, broker) = setup().await;
    let answer = ask(&broker, &issuer, "exact", &[("repository", "acme/api-evil")]).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.code(), "denied");
    assert_eq!(answer.content_type(), "application/problem+json");
    let detail = answer.body["detail"].as_str().unwrap();
    assert!(detail.contains("repository"), "{detail}");
    assert!(
        !detail.contains("acme/api"),
        "the expected value must not leak: {detail}"
    );
}

#[tokio::test]
async fn unknown_grant_looks_like_a_grant_without_a_rule_for_the_issuer() {
    let (issuer, _, broker) = setup().await;
    let unknown = ask(&broker, &issuer, "does-not-exist", &[]).await;
    let unbound = ask(&broker, &issuer, "other-issuer", &[]).await;
    assert_eq!((unknown.status.as_u16(), unbound.status.as_u16()), (403, 403));
    let shape = |a: &Answer, name: &str| {
        let mut body = a.body.clone();
        body["request_id"] = json!("-");
        body["detail"] = json!(a.body["detail"].as_str().unwrap().replace(name, "NAME"));
        body
    };
    assert_eq!(shape(&unknown, "does-not-exist"), shape(&unbound, "other-issuer"));
    // The audit log keeps the truth.
    assert_eq!(
        broker.audit_record(&unknown.request_id()).await.reason.as_deref(),
        Some("unknown_grant")
    );
    assert_eq!(
        broker.audit_record(&unbound.request_id()).await.reason.as_deref(),
        Some("issuer_not_bound")
    );
}

#[tokio::test]
async fn rules_bind_to_their_issuer() {
    let (issuer, elsewhere, broker) = setup().await;
    // The `elsewhere` issuer cannot use `exact`, even with matching claims.
    let mut claims = elsewhere.base_claims();
    claims.insert("sub".into(), json!("x"));
    claims.insert("repository".into(), json!("acme/api"));
    let answer = broker.issue("exact", &elsewhere.sign(&claims), None).await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    assert_eq!(
        broker
            .issue("other-issuer", &elsewhere.sign(&claims), None)
            .await
            .status,
        200
    );
    assert_eq!(ask(&broker, &issuer, "other-issuer", &[("sub", "x")]).await.status, 403);
}

#[tokio::test]
async fn hostile_grant_names_are_not_echoed_verbatim() {
    let (issuer, _, broker) = setup().await;
    let name = format!("{}%3Cscript%3E", "x".repeat(100));
    let answer = ask(&broker, &issuer, &name, &[]).await;
    assert_eq!(answer.status, 403);
    let detail = answer.body["detail"].as_str().unwrap();
    assert!(
        !detail.contains("<script>") && !detail.contains(&"x".repeat(65)),
        "{detail}"
    );
    let record = broker.audit_record(&answer.request_id()).await;
    assert_eq!(record.grant.unwrap().len(), 64);
}

#[tokio::test]
async fn pull_request_tokens_are_kept_out_of_deploy_grants() {
    let (issuer, _, broker) = setup().await;
    let mut pr = issuer.fixture_claims("github-actions-pull-request");
    assert_eq!(broker.issue("no-prt", &issuer.sign(&pr), None).await.status, 403);
    pr.insert("event_name".into(), json!("push"));
    pr.insert("repository".into(), json!("acme/api"));
    assert_eq!(broker.issue("no-prt", &issuer.sign(&pr), None).await.status, 200);
}
