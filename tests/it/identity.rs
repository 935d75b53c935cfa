//! Every token check, one failing token each: a 401 problem+json whose
//! `code` names the check, and an audit record of the denial.

use serde_json::{Map, Value, json};

use crate::harness::{DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::{EC_KID, RSA_KID, RSA_OTHER_KID, Signer, TestIssuer, b64, keys, now, rsa_jwk, sign_raw};

async fn setup() -> (TestIssuer, TestBroker) {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    (issuer, broker)
}

/// Sends `token`; asserts a 401 problem with `code`, and that the denial is audited.
async fn refused(broker: &TestBroker, token: &str, code: &str) {
    let answer = broker.issue("deploy", token, None).await;
    assert_eq!(answer.status, 401, "expected 401 {code}, got {}", answer.text);
    assert_eq!(answer.code(), code, "{}", answer.text);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.body["type"], format!("urn:stint:problem:{code}"));
    assert_eq!(answer.body["status"], 401);
    assert!(
        !answer.body["detail"].as_str().unwrap_or("").is_empty(),
        "a useful detail"
    );
    assert_eq!(answer.body["request_id"], answer.request_id());
    assert!(answer.headers.contains_key("www-authenticate"));
    let record = broker.audit_record(&answer.request_id()).await;
    assert_eq!(record.outcome, stint::audit::Outcome::Denied);
    assert_eq!(record.reason.as_deref(), Some(code));
    assert!(record.subject.is_none(), "an unverified subject is never recorded");
}

fn with(mut claims: Map<String, Value>, name: &str, value: Value) -> Map<String, Value> {
    claims.insert(name.to_string(), value);
    claims
}

fn without(mut claims: Map<String, Value>, name: &str) -> Map<String, Value> {
    claims.remove(name);
    claims
}

#[tokio::test]
async fn time_claims_are_enforced_with_leeway() {
    let (issuer, broker) = setup().await;
    let now = now();
    refused(
        &broker,
        &issuer.sign(&with(issuer.github(), "exp", json!(now - 61))),
        "token_expired",
    )
    .await;
    refused(
        &broker,
        &issuer.sign(&with(issuer.github(), "nbf", json!(now + 600))),
        "token_not_yet_valid",
    )
    .await;
    let future = with(with(issuer.github(), "iat", json!(now + 600)), "exp", json!(now + 900));
    refused(&broker, &issuer.sign(&future), "token_issued_in_future").await;
    let long_lived = with(issuer.github(), "exp", json!(now + 2 * 3600));
    refused(&broker, &issuer.sign(&long_lived), "token_lifetime_too_long").await;
    refused(&broker, &issuer.sign(&without(issuer.github(), "exp")), "claim_missing").await;
    refused(&broker, &issuer.sign(&without(issuer.github(), "iat")), "claim_missing").await;
    // Within the 60 s leeway still passes.
    let barely = with(issuer.github(), "exp", json!(now - 30));
    assert_eq!(broker.issue("deploy", &issuer.sign(&barely), None).await.status, 200);
}

#[tokio::test]
async fn audience_must_be_present_ours_and_alone() {
    let (issuer, broker) = setup().await;
    refused(&broker, &issuer.sign(&without(issuer.github(), "aud")), "claim_missing").await;
    refused(
        &broker,
        &issuer.sign(&with(issuer.github(), "aud", json!("https://github.com/acme"))),
        "audience_mismatch",
    )
    .await;
    let shared = with(
        issuer.github(),
        "aud",
        json!([crate::issuer::AUDIENCE, "https://other.example"]),
    );
    refused(&broker, &issuer.sign(&shared), "audience_not_exclusive").await;
}

#[tokio::test]
async fn extra_audiences_pass_when_exclusivity_is_off() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_with(
        &issuer_yaml("ci", &issuer, "github", "    exclusive_audience: false\n"),
        DEPLOY_GRANT,
        "",
    )
    .await;
    let shared = with(
        issuer.github(),
        "aud",
        json!([crate::issuer::AUDIENCE, "https://other.example"]),
    );
    assert_eq!(broker.issue("deploy", &issuer.sign(&shared), None).await.status, 200);
}

#[tokio::test]
async fn issuer_must_be_an_allowlisted_string() {
    let (issuer, broker) = setup().await;
    refused(
        &broker,
        &issuer.sign(&with(issuer.github(), "iss", json!("https://evil.example"))),
        "issuer_not_trusted",
    )
    .await;
    refused(
        &broker,
        &issuer.sign(&with(issuer.github(), "iss", json!([issuer.url]))),
        "claim_invalid",
    )
    .await;
    // A trailing slash is a different issuer.
    refused(
        &broker,
        &issuer.sign(&with(issuer.github(), "iss", json!(format!("{}/", issuer.url)))),
        "issuer_not_trusted",
    )
    .await;
}

#[tokio::test]
async fn algorithm_is_pinned_and_never_chosen_by_the_header() {
    let issuer = TestIssuer::start().await;
    // This issuer is pinned to RS256 only.
    let yaml = issuer_yaml("ci", &issuer, "github", "").replace("[RS256, ES256]", "[RS256]");
    let broker = TestBroker::start_with(&yaml, DEPLOY_GRANT, "").await;
    let claims = issuer.github();
    let payload = Value::Object(claims.clone()).to_string();

    // ES256 is a fine algorithm, but not one pinned for this issuer.
    let es = issuer.sign_with(
        &json!({"alg": "ES256", "typ": "JWT", "kid": EC_KID}),
        &claims,
        Signer::Ec,
    );
    refused(&broker, &es, "algorithm_not_allowed").await;

    // alg=none, unsigned.
    let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&payload));
    refused(&broker, &none, "token_malformed").await;
    let none_with_sig = format!("{}.{}.c2ln", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&payload));
    refused(&broker, &none_with_sig, "algorithm_not_allowed").await;

    // HS256 keyed with the issuer's public key: the classic confusion attack.
    let public_jwk = rsa_jwk(&keys().rsa, RSA_KID).to_string();
    let input = format!(
        "{}.{}",
        b64(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{RSA_KID}"}}"#)),
        b64(&payload)
    );
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, public_jwk.as_bytes()),
        input.as_bytes(),
    );
    refused(
        &broker,
        &format!("{input}.{}", b64(mac.as_ref())),
        "algorithm_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn symmetric_keys_in_the_jwks_are_never_used() {
    let issuer = TestIssuer::start().await;
    issuer.set_jwks(json!({"keys": [
        {"kty": "oct", "kid": "shared", "k": b64("secret-secret-secret-secret-1234"), "alg": "HS256"},
        rsa_jwk(&keys().rsa, RSA_KID),
    ]}));
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let token = issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "shared"}),
        &issuer.github(),
        Signer::Rsa,
    );
    refused(&broker, &token, "key_not_found").await;
}

#[tokio::test]
async fn header_checks_crit_and_typ() {
    let (issuer, broker) = setup().await;
    let crit = issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID, "crit": ["exp"], "exp": 1}),
        &issuer.github(),
        Signer::Rsa,
    );
    refused(&broker, &crit, "header_crit_unsupported").await;
    let typ = issuer.sign_with(
        &json!({"alg": "RS256", "typ": "at+jwt", "kid": RSA_KID}),
        &issuer.github(),
        Signer::Rsa,
    );
    refused(&broker, &typ, "token_type_invalid").await;
    let no_typ = issuer.sign_with(&json!({"alg": "RS256", "kid": RSA_KID}), &issuer.github(), Signer::Rsa);
    assert_eq!(
        broker.issue("deploy", &no_typ, None).await.status,
        200,
        "typ is optional"
    );
}

#[tokio::test]
async fn signature_must_verify_with_the_named_key() {
    let (issuer, broker) = setup().await;
    let token = issuer.sign(&issuer.github());
    let mut parts: Vec<&str> = token.split('.').collect();
    let tampered_payload = b64(Value::Object(with(issuer.github(), "repository", json!("acme/api"))).to_string());
    parts[1] = &tampered_payload;
    refused(&broker, &parts.join("."), "signature_invalid").await;
    // Signed by a key the issuer does not publish, claiming a published kid.
    let forged = issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID}),
        &issuer.github(),
        Signer::RsaOther,
    );
    refused(&broker, &forged, "signature_invalid").await;
    // A kid the issuer does not publish.
    let unknown = issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_OTHER_KID}),
        &issuer.github(),
        Signer::RsaOther,
    );
    refused(&broker, &unknown, "key_not_found").await;
}

#[tokio::test]
async fn structure_size_and_duplicates() {
    let (issuer, broker) = setup().await;
    refused(&broker, "not-a-jwt", "token_malformed").await;
    refused(&broker, "a.b.c.d", "token_malformed").await;
    let huge = with(issuer.github(), "padding", json!("x".repeat(17 * 1024)));
    refused(&broker, &issuer.sign(&huge), "token_too_large").await;

    // The same claim twice: a typed reader and a map reader would disagree.
    let mut payload = Value::Object(issuer.github()).to_string();
    payload.insert_str(1, r#""repository":"evil/repo","#);
    let dup = sign_raw(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID}).to_string(),
        &payload,
        Signer::Rsa,
    );
    refused(&broker, &dup, "token_duplicate_claim").await;
}

#[tokio::test]
async fn missing_or_malformed_authorization_is_audited_401() {
    let (_issuer, broker) = setup().await;
    let response = broker
        .http
        .post(format!("{}/v1/issue/deploy", broker.url))
        .send()
        .await
        .unwrap();
    let answer = crate::harness::answer(response).await;
    assert_eq!((answer.status.as_u16(), answer.code()), (401, "token_missing"));
    assert_eq!(
        broker.audit_record(&answer.request_id()).await.reason.as_deref(),
        Some("token_missing")
    );

    let response = broker
        .http
        .post(format!("{}/v1/issue/deploy", broker.url))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    let answer = crate::harness::answer(response).await;
    assert_eq!((answer.status.as_u16(), answer.code()), (401, "token_malformed"));
}

#[tokio::test]
async fn platform_claim_types_are_enforced() {
    let (issuer, broker) = setup().await;
    refused(
        &broker,
        &issuer.sign(&with(issuer.github(), "repository", json!(["acme/api"]))),
        "claim_invalid",
    )
    .await;
    refused(
        &broker,
        &issuer.sign(&with(issuer.github(), "ref_protected", json!(true))),
        "claim_invalid",
    )
    .await;
    refused(
        &broker,
        &issuer.sign(&with(issuer.github(), "run_id", json!(15012345678u64))),
        "claim_invalid",
    )
    .await;
    refused(
        &broker,
        &issuer.sign(&without(issuer.github(), "repository")),
        "claim_invalid",
    )
    .await;
    refused(
        &broker,
        &issuer.sign(&with(issuer.github(), "sub", json!(""))),
        "claim_invalid",
    )
    .await;
}

#[tokio::test]
async fn legacy_kubernetes_tokens_are_refused() {
    let issuer = TestIssuer::start().await;
    let grants = "  k:\n    kind: token\n    ttl: 1m\n    audience: x\n    allow:\n      - issuer: ci\n        claims:\n          sub: system:serviceaccount:acme:api\n";
    let broker = TestBroker::start(&issuer, "kubernetes", grants).await;
    let mut legacy = issuer.base_claims();
    legacy.insert("sub".into(), json!("system:serviceaccount:acme:api"));
    legacy.insert("kubernetes.io/serviceaccount/namespace".into(), json!("acme"));
    let answer = broker.issue("k", &issuer.sign(&legacy), None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (401, "claim_invalid"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn error_details_never_echo_key_material() {
    let (issuer, broker) = setup().await;
    let forged = issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID}),
        &issuer.github(),
        Signer::RsaOther,
    );
    let answer = broker.issue("deploy", &forged, None).await;
    let public = rsa_jwk(&keys().rsa, RSA_KID);
    let modulus = public["n"].as_str().unwrap();
    assert!(!answer.text.contains(&modulus[..40]));
    assert!(
        !answer.text.contains(forged.split('.').nth(2).unwrap()),
        "the signature is not echoed"
    );
}

#[tokio::test]
async fn ambiguous_flattened_claim_names_are_refused() {
    let (issuer, broker) = setup().await;
    let mut claims = issuer.github();
    claims.insert("kubernetes.io.namespace".into(), json!("acme"));
    claims.insert("kubernetes.io".into(), json!({"namespace": "other"}));
    refused(&broker, &issuer.sign(&claims), "claim_invalid").await;
}

#[tokio::test]
async fn a_second_issuers_key_with_a_colliding_kid_is_never_used() {
    let trusted = TestIssuer::start().await;
    let other = TestIssuer::start().await;
    let issuers = format!(
        "{}{}",
        issuer_yaml("ci", &trusted, "github", ""),
        issuer_yaml("other", &other, "github", "")
    );
    let broker = TestBroker::start_with(&issuers, DEPLOY_GRANT, "").await;
    // `other` publishes a different key under the kid `trusted` uses.
    other.set_jwks(json!({"keys": [rsa_jwk(&keys().rsa_other, RSA_KID)]}));
    // A token claiming `trusted` as issuer, signed with other's key and kid:
    // keys come only from the named issuer's JWKS.
    let forged = trusted.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID}),
        &trusted.github(),
        Signer::RsaOther,
    );
    refused(&broker, &forged, "signature_invalid").await;
}
