//! A named attack corpus: each hostile token is refused with a 401
//! problem+json and an audit record, and nothing it carries is fetched,
//! trusted or echoed.

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::{DEPLOY_GRANT, TestBroker};
use crate::issuer::{RSA_KID, Signer, TestIssuer, b64, sign_raw};

async fn setup() -> (TestIssuer, TestBroker) {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    (issuer, broker)
}

async fn refused(broker: &TestBroker, name: &str, token: &str) -> String {
    let answer = broker.issue("deploy", token, None).await;
    assert_eq!(answer.status, 401, "{name}: {}", answer.text);
    assert_eq!(answer.content_type(), "application/problem+json", "{name}");
    let record = broker.audit_record(&answer.request_id()).await;
    assert_eq!(record.outcome, stint::audit::Outcome::Denied, "{name}");
    answer.code().to_string()
}

#[tokio::test]
async fn embedded_keys_and_key_urls_in_the_header_are_never_used() {
    let (issuer, broker) = setup().await;
    let fetched_before = issuer.jwks_fetches();
    // Signed by a key the issuer does not publish, offering that key inline
    // or by URL: stint must only use the issuer's JWKS.
    let attacker = crate::issuer::rsa_jwk(&crate::issuer::keys().rsa_other, RSA_KID);
    for (name, extra) in [
        ("jwk", json!({"jwk": attacker})),
        ("jku", json!({"jku": format!("{}/.well-known/jwks", issuer.url)})),
        ("x5u", json!({"x5u": "https://evil.example/cert.pem"})),
        ("x5c", json!({"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]})),
    ] {
        let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID});
        header
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let token = issuer.sign_with(&header, &issuer.github(), Signer::RsaOther);
        assert_eq!(refused(&broker, name, &token).await, "signature_invalid", "{name}");
    }
    assert_eq!(issuer.jwks_fetches(), fetched_before, "no key URL was followed");
}

#[tokio::test]
async fn hostile_kids_and_headers() {
    let (issuer, broker) = setup().await;
    for (name, kid) in [
        ("path", "../../../etc/passwd".to_string()),
        ("sql", "' OR 1=1 --".to_string()),
        ("huge", "k".repeat(10 * 1024)),
        ("control", "a\u{0}\u{1b}[31m\nb".to_string()),
    ] {
        let token = issuer.sign_with(
            &json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
            &issuer.github(),
            Signer::Rsa,
        );
        let code = refused(&broker, name, &token).await;
        assert!(code == "key_not_found" || code == "token_too_large", "{name}: {code}");
    }
    let cty = issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "cty": "JWT", "kid": RSA_KID}),
        &issuer.github(),
        Signer::Rsa,
    );
    // A nested JWT is not a thing stint unwraps: the outer token is judged as is.
    assert_eq!(broker.issue("deploy", &cty, None).await.status, 200);
    let empty_crit = issuer.sign_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID, "crit": []}),
        &issuer.github(),
        Signer::Rsa,
    );
    assert_eq!(
        refused(&broker, "empty crit", &empty_crit).await,
        "header_crit_unsupported"
    );
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = format!(
            "{}.{}.",
            b64(format!(r#"{{"alg":"{alg}"}}"#)),
            b64(Value::Object(issuer.github()).to_string())
        );
        assert_eq!(refused(&broker, alg, &token).await, "token_malformed", "{alg}");
    }
}

#[tokio::test]
async fn broken_encodings_and_signatures() {
    let (issuer, broker) = setup().await;
    let good = issuer.sign(&issuer.github());
    let parts: Vec<&str> = good.split('.').collect();
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    let mut flipped = signature.clone();
    flipped[10] ^= 0x01;
    let cases = [
        (
            "truncated signature",
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]),
        ),
        (
            "bit-flipped signature",
            format!("{}.{}.{}", parts[0], parts[1], b64(&flipped)),
        ),
        ("padded base64", format!("{}=.{}.{}", parts[0], parts[1], parts[2])),
        (
            "standard alphabet",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                parts[2].replace('-', "+").replace('_', "/")
            ),
        ),
        ("whitespace", format!("{}. {}.{}", parts[0], parts[1], parts[2])),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("array payload", format!("{}.{}.{}", parts[0], b64("[1,2]"), parts[2])),
        (
            "BOM payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(format!("\u{feff}{}", Value::Object(issuer.github()))),
                parts[2]
            ),
        ),
        (
            "invalid UTF-8",
            format!("{}.{}.{}", parts[0], b64([0xff, 0xfe, 0x7b]), parts[2]),
        ),
    ];
    for (name, token) in cases {
        let code = refused(&broker, name, &token).await;
        assert!(
            ["token_malformed", "signature_invalid"].contains(&code.as_str()),
            "{name}: {code}"
        );
    }
    // ECDSA with r = s = 0 (the "psychic signatures" bug).
    let zero = sign_raw(
        &json!({"alg": "ES256", "typ": "JWT", "kid": crate::issuer::EC_KID}).to_string(),
        "{}",
        Signer::Ec,
    );
    let input: Vec<&str> = zero.split('.').collect();
    let payload = b64(Value::Object(issuer.github()).to_string());
    let psychic = format!("{}.{payload}.{}", input[0], b64([0u8; 64]));
    assert_eq!(refused(&broker, "r=s=0", &psychic).await, "signature_invalid");
}

#[tokio::test]
async fn extreme_claims_and_policy_confusion() {
    let (issuer, broker) = setup().await;
    let with = |name: &str, value: Value| {
        let mut claims = issuer.github();
        claims.insert(name.to_string(), value);
        issuer.sign(&claims)
    };
    assert_eq!(
        refused(&broker, "exp string", &with("exp", json!("9999999999"))).await,
        "claim_invalid"
    );
    assert_eq!(
        refused(&broker, "exp huge", &with("exp", json!(1e300))).await,
        "token_lifetime_too_long"
    );
    assert_eq!(
        refused(&broker, "exp negative", &with("exp", json!(-1))).await,
        "token_expired"
    );
    assert_eq!(
        refused(&broker, "aud empty", &with("aud", json!(""))).await,
        "audience_mismatch"
    );
    assert_eq!(
        refused(&broker, "aud empty list", &with("aud", json!([]))).await,
        "audience_mismatch"
    );
    let upper = issuer.url.replace("http://", "HTTP://");
    assert_eq!(
        refused(&broker, "iss case", &with("iss", json!(upper))).await,
        "issuer_not_trusted"
    );

    for (name, claim, value) in [
        ("other repo", "repository", "evil/api"),
        ("suffix repo", "repository", "acme/api-evil"),
        ("other branch", "ref", "refs/heads/dev"),
        ("tag", "ref", "refs/tags/v1"),
        ("encoded colon in sub", "sub", "repo:acme/api%3Aenvironment:production"),
    ] {
        let answer = broker.issue("deploy", &with(claim, json!(value)), None).await;
        if claim == "sub" {
            assert_eq!(answer.status, 200, "sub is not what this grant binds: {name}");
        } else {
            assert_eq!(answer.status, 403, "{name}: {}", answer.text);
        }
    }
}

#[tokio::test]
async fn log_injection_claims_stay_one_json_line() {
    let (issuer, broker) = setup().await;
    let mut claims = issuer.github();
    claims.insert(
        "ref".into(),
        json!("refs/heads/x\n{\"outcome\":\"issued\"}\u{1b}[2J\"'"),
    );
    let answer = broker.issue("deploy", &issuer.sign(&claims), None).await;
    assert_eq!(answer.status, 403);
    let record = broker.audit_record(&answer.request_id()).await;
    let line = serde_json::to_string(&record).unwrap();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    assert!(!line.contains('\u{1b}'), "escape characters are escaped");
    assert_eq!(record.outcome, stint::audit::Outcome::Denied);
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_decoding() {
    let (_issuer, broker) = setup().await;
    // Over the 16 KiB token cap but within the header limit: refused and audited.
    let big = "a".repeat(6 * 1024);
    assert_eq!(
        refused(&broker, "18 KB", &format!("{big}.{big}.{big}")).await,
        "token_too_large"
    );
    // Over the header limit (32 KiB by default): 431 before any parsing,
    // not audited (a flood of these costs no audit write).
    let big = "a".repeat(64 * 1024);
    let answer = broker.issue("deploy", &format!("{big}.{big}.{big}"), None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (431, "headers_too_large"),
        "{}",
        answer.text
    );
    assert_eq!(answer.content_type(), "application/problem+json");
    let found = broker
        .server
        .broker
        .audit()
        .query(&stint::audit::AuditQuery {
            request_id: Some(answer.request_id()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(found.is_empty(), "header-limit refusals are not audited");
    // 8 MB does not even fit in the HTTP server's buffer; it never reaches a decoder.
    let huge = "a".repeat(8 * 1024 * 1024);
    let response = broker
        .http
        .post(format!("{}/v1/issue/deploy", broker.url))
        .bearer_auth(&huge)
        .send()
        .await;
    if let Ok(response) = response {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
}
