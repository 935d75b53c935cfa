//! The happy path per token shape, the issued token itself, and TTL rules.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde_json::{Value, json};

use crate::harness::{DEPLOY_GRANT, TestBroker};
use crate::issuer::{EC_KID, Signer, TestIssuer};

/// Verifies a stint token as a downstream service would: JWKS over HTTP,
/// issuer and audience pinned.
async fn verify_downstream(broker: &TestBroker, token: &str, audience: &str) -> Value {
    let discovery = broker.get("/.well-known/openid-configuration").await.body;
    let jwks_url = discovery["jwks_uri"].as_str().expect("jwks_uri");
    let set: JwkSet = reqwest::get(jwks_url).await.unwrap().json().await.unwrap();
    let header = decode_header(token).unwrap();
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("kid published in JWKS");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("a downstream verifier accepts the token")
        .claims
}

#[tokio::test]
async fn github_token_gets_a_signed_token_that_verifies_downstream() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let token = issuer.sign(&issuer.github());

    let answer = broker.issue("deploy", &token, None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["kind"], "token");
    assert_eq!(answer.body["grant"], "deploy");
    assert_eq!(answer.body["token_type"], "Bearer");
    let issued = answer.body["token"].as_str().unwrap();

    let claims = verify_downstream(&broker, issued, "deploy-api").await;
    assert_eq!(claims["sub"], "repo:acme/api:environment:production");
    assert_eq!(claims["aud"], "deploy-api");
    assert_eq!(claims["repository"], "acme/api");
    assert_eq!(claims["ref"], "refs/heads/main");
    assert_eq!(claims["run_id"], "15012345678");
    assert_eq!(claims["jti"], answer.body["issuance_id"]);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300,
        "grant ttl is 5m"
    );
    assert!(claims.get("actor").is_none(), "only copy_claims are copied");
    let expires_at = time::OffsetDateTime::parse(
        answer.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires_at.unix_timestamp(), claims["exp"].as_i64().unwrap());
}

#[tokio::test]
async fn gitlab_token_is_accepted_with_its_own_claims() {
    let issuer = TestIssuer::start().await;
    let grants = r#"
  gitlab-deploy:
    kind: token
    ttl: 5m
    audience: deploy-api
    copy_claims: [project_path]
    allow:
      - issuer: ci
        claims:
          project_path: acme/api
          ref_protected: true
          pipeline_source: { one_of: [push, web] }
"#;
    let broker = TestBroker::start(&issuer, "gitlab", grants).await;
    let answer = broker
        .issue("gitlab-deploy", &issuer.sign(&issuer.fixture_claims("gitlab-ci")), None)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let claims = verify_downstream(&broker, answer.body["token"].as_str().unwrap(), "deploy-api").await;
    assert_eq!(claims["project_path"], "acme/api");
    assert_eq!(claims["sub"], "project_path:acme/api:ref_type:branch:ref:main");
}

#[tokio::test]
async fn kubernetes_token_with_es256_and_array_audience_is_accepted() {
    let issuer = TestIssuer::start().await;
    let grants = r#"
  api-token:
    kind: token
    ttl: 10m
    audience: internal-api
    allow:
      - issuer: ci
        claims:
          kubernetes.io.namespace: acme
          kubernetes.io.serviceaccount.name: api
"#;
    let broker = TestBroker::start(&issuer, "kubernetes", grants).await;
    let claims = issuer.fixture_claims("kubernetes-projected-sa");
    // Kubernetes headers carry no `typ`.
    let token = issuer.sign_with(&json!({"alg": "ES256", "kid": EC_KID}), &claims, Signer::Ec);
    let answer = broker.issue("api-token", &token, None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let issued = verify_downstream(&broker, answer.body["token"].as_str().unwrap(), "internal-api").await;
    assert_eq!(issued["sub"], "system:serviceaccount:acme:api");
}

#[tokio::test]
async fn requested_ttl_is_honoured_up_to_max_and_refused_beyond() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;

    let answer = broker
        .issue("deploy", &issuer.sign(&issuer.github()), Some(json!({"ttl": "10m"})))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let claims = verify_downstream(&broker, answer.body["token"].as_str().unwrap(), "deploy-api").await;
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);

    let too_long = broker
        .issue("deploy", &issuer.sign(&issuer.github()), Some(json!({"ttl": "31m"})))
        .await;
    assert_eq!(too_long.status, 400, "longer than max_ttl is an error, not clamped");
    assert_eq!(too_long.code(), "ttl_exceeds_max");
    assert!(too_long.body["detail"].as_str().unwrap().contains("max_ttl 30m"));
    assert!(too_long.body.get("token").is_none());

    let bad = broker
        .issue("deploy", &issuer.sign(&issuer.github()), Some(json!({"ttl": "soon"})))
        .await;
    assert_eq!((bad.status.as_u16(), bad.code()), (400, "invalid_ttl"));

    let unknown_field = broker
        .issue("deploy", &issuer.sign(&issuer.github()), Some(json!({"tll": "5m"})))
        .await;
    assert_eq!(
        (unknown_field.status.as_u16(), unknown_field.code()),
        (400, "invalid_request")
    );
    assert!(unknown_field.body["detail"].as_str().unwrap().contains("tll"));
}

#[tokio::test]
async fn oversized_body_is_413_problem_json() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let response = broker
        .http
        .post(format!("{}/v1/issue/deploy", broker.url))
        .bearer_auth(issuer.sign(&issuer.github()))
        .body(vec![b' '; 100 * 1024])
        .send()
        .await
        .unwrap();
    let answer = crate::harness::answer(response).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.body["request_id"], answer.request_id());
}

#[tokio::test]
async fn grants_lists_only_what_the_token_could_be_issued() {
    let issuer = TestIssuer::start().await;
    let grants = format!(
        "{DEPLOY_GRANT}\n  other-repo:\n    kind: token\n    ttl: 1m\n    audience: x\n    allow:\n      - issuer: ci\n        claims:\n          repository: acme/other\n"
    );
    let broker = TestBroker::start(&issuer, "github", &grants).await;
    let answer = broker.grants(&issuer.sign(&issuer.github())).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.body,
        json!({"grants": [{"name": "deploy", "kind": "token", "description": "deploy token", "ttl": "5m", "max_ttl": "30m"}]})
    );
    let anonymous = crate::harness::answer(
        broker
            .http
            .get(format!("{}/v1/grants", broker.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((anonymous.status.as_u16(), anonymous.code()), (401, "token_missing"));
}

#[tokio::test]
async fn unknown_route_and_method_are_problem_json() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let missing = broker.get("/v2/nothing").await;
    assert_eq!((missing.status.as_u16(), missing.code()), (404, "not_found"));
    assert_eq!(missing.content_type(), "application/problem+json");
    let wrong_method = broker.get("/v1/issue/deploy").await;
    assert_eq!(
        (wrong_method.status.as_u16(), wrong_method.code()),
        (405, "method_not_allowed")
    );
}

#[tokio::test]
async fn buildkite_and_circleci_tokens_match_their_own_claims() {
    let issuer = TestIssuer::start().await;
    let other = TestIssuer::start().await;
    let issuers = format!(
        "{}{}",
        crate::harness::issuer_yaml("buildkite", &issuer, "buildkite", ""),
        crate::harness::issuer_yaml("circleci", &other, "circleci", "")
    );
    let grants = r#"
  bk:
    kind: token
    ttl: 1m
    audience: x
    allow:
      - issuer: buildkite
        claims: { organization_id: 0194a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2d, pipeline_slug: api, build_branch: main }
  cci:
    kind: token
    ttl: 1m
    audience: x
    allow:
      - issuer: circleci
        claims:
          oidc.circleci.com/vcs-origin: github.com/acme/api
          oidc.circleci.com/vcs-ref: refs/heads/main
          oidc.circleci.com/ssh-rerun: false
"#;
    let broker = TestBroker::start_with(&issuers, grants, "").await;
    let bk = broker
        .issue("bk", &issuer.sign(&issuer.fixture_claims("buildkite")), None)
        .await;
    assert_eq!(bk.status, 200, "{}", bk.text);
    let mut bad_bk = issuer.fixture_claims("buildkite");
    bad_bk.insert("build_number".into(), json!("42"));
    assert_eq!(
        broker.issue("bk", &issuer.sign(&bad_bk), None).await.code(),
        "claim_invalid"
    );
    let cci = broker
        .issue("cci", &other.sign(&other.fixture_claims("circleci")), None)
        .await;
    assert_eq!(cci.status, 200, "{}", cci.text);
    let mut rerun = other.fixture_claims("circleci");
    rerun.insert("oidc.circleci.com/ssh-rerun".into(), json!(true));
    assert_eq!(
        broker.issue("cci", &other.sign(&rerun), None).await.status,
        403,
        "an SSH rerun is not a pipeline run"
    );
}

#[tokio::test]
async fn body_must_be_a_json_object_and_bad_paths_are_problems() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let array = broker
        .issue("deploy", &issuer.sign(&issuer.github()), Some(json!(["10m"])))
        .await;
    assert_eq!((array.status.as_u16(), array.code()), (400, "invalid_request"));
    let bad_utf8 = broker.issue("%FF", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(
        (bad_utf8.status.as_u16(), bad_utf8.code()),
        (403, "denied"),
        "{}",
        bad_utf8.text
    );
    assert_eq!(
        broker.audit_record(&bad_utf8.request_id()).await.reason.as_deref(),
        Some("unknown_grant")
    );
    // Copied claims keep their JSON type.
    let grants = "  n:\n    kind: token\n    ttl: 1m\n    audience: x\n    copy_claims: [runner_id]\n    allow:\n      - issuer: ci\n        claims: { project_path: acme/api }\n";
    let gitlab = TestBroker::start(&issuer, "gitlab", grants).await;
    let answer = gitlab
        .issue("n", &issuer.sign(&issuer.fixture_claims("gitlab-ci")), None)
        .await;
    let payload = answer.body["token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["runner_id"], json!(60006));
}
