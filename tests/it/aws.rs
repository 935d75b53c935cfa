//! `kind: aws`: STS sessions from moto_server through the real AWS SDK.
//! stint's own validation is asserted here, not moto's (moto checks nothing).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stint::server::StartOptions;

use crate::harness::{TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;
use crate::moto::{ACCOUNT, CountingProxy, Moto, stint_identity};

const ROLE: &str = "arn:aws:iam::123456789012:role/deploy";

fn aws_grant(extra: &str) -> String {
    format!(
        r#"
  deploy-aws:
    kind: aws
    role_arn: {ROLE}
    ttl: 15m
    max_ttl: 1h
    session_tags:
      repo: "{{claims.repository}}"
      ref: "{{claims.ref}}"
    transitive_tag_keys: [repo]
    session_policy:
      Version: "2012-10-17"
      Statement:
        - Effect: Allow
          Action: ["s3:GetObject"]
          Resource: ["arn:aws:s3:::acme-artifacts/{{claims.repository}}/*"]
{extra}    allow:
      - issuer: ci
        claims: {{ repository: {{ glob: "acme/*" }} }}
"#
    )
}

async fn broker(issuer: &TestIssuer, aws_url: &str, grants: &str, aws_extra: &str) -> TestBroker {
    TestBroker::start_full(
        &issuer_yaml("ci", issuer, "github", ""),
        grants,
        &Moto::aws_yaml(aws_url, aws_extra),
        StartOptions {
            aws_credentials: Some(stint_identity()),
            ..StartOptions::default()
        },
    )
    .await
}

fn epoch(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[tokio::test]
async fn issues_credentials_in_credential_process_shape_and_audits_them() {
    let moto = Moto::start().await;
    let issuer = TestIssuer::start().await;
    let broker = broker(&issuer, &moto.url, &aws_grant(""), "").await;

    let answer = broker
        .issue(
            "deploy-aws",
            &issuer.sign(&issuer.github()),
            Some(json!({"ttl": "20m"})),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["kind"], "aws");
    let creds = &answer.body["credentials"];
    assert_eq!(creds["Version"], 1);
    for field in ["AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"] {
        assert!(creds[field].as_str().is_some_and(|v| !v.is_empty()), "{field}: {creds}");
    }
    assert_eq!(
        creds.as_object().unwrap().len(),
        5,
        "exactly the credential_process members"
    );
    assert_eq!(creds["Expiration"], answer.body["expires_at"]);
    let lifetime = epoch(creds["Expiration"].as_str().unwrap()) - stint::clock::now();
    assert!(
        (1190..=1200).contains(&lifetime),
        "DurationSeconds is the requested 20m: {lifetime}"
    );

    let record = broker.audit_record(&answer.request_id()).await;
    assert_eq!(record.kind.as_deref(), Some("aws"));
    assert_eq!(record.detail["access_key_id"], creds["AccessKeyId"]);
    assert_eq!(record.detail["role_arn"], ROLE);
    assert_eq!(record.detail["session_name"], "stint-acme-api-15012345678");
    assert_eq!(record.detail["source_identity"], "repo-acme-api-environment-production");
    assert_eq!(record.detail["duration_seconds"], 1200);
    assert_eq!(record.detail["cache"], "miss");
    assert_eq!(record.expires_at.as_deref(), creds["Expiration"].as_str());
    let row = serde_json::to_string(&record).unwrap();
    assert!(
        !row.contains(creds["SecretAccessKey"].as_str().unwrap()),
        "no secret key in audit"
    );
    assert!(
        !row.contains(creds["SessionToken"].as_str().unwrap()),
        "no session token in audit"
    );
}

#[tokio::test]
async fn stint_validates_what_moto_would_accept() {
    let moto = Moto::start().await;
    let proxy = CountingProxy::start(&moto.url).await;
    let issuer = TestIssuer::start().await;
    let broker = broker(&issuer, &proxy.url, &aws_grant(""), "").await;
    let token = || issuer.sign(&issuer.github());

    let short = broker.issue("deploy-aws", &token(), Some(json!({"ttl": "10m"}))).await;
    assert_eq!(
        (short.status.as_u16(), short.code()),
        (400, "invalid_ttl"),
        "{}",
        short.text
    );
    assert!(short.body["detail"].as_str().unwrap().contains("15m"));
    let long = broker.issue("deploy-aws", &token(), Some(json!({"ttl": "2h"}))).await;
    assert_eq!((long.status.as_u16(), long.code()), (400, "ttl_exceeds_max"));

    // A claim value that cannot be an AWS tag value: a deterministic 403.
    let mut bad_ref = issuer.github();
    bad_ref.insert("ref".into(), json!("refs/heads/feat#1"));
    let answer = broker.issue("deploy-aws", &issuer.sign(&bad_ref), None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (403, "claim_not_usable"),
        "{}",
        answer.text
    );
    assert!(answer.body["detail"].as_str().unwrap().contains("session tag `ref`"));
    let record = broker.audit_record(&answer.request_id()).await;
    assert_eq!(record.reason.as_deref(), Some("claim_not_usable"));

    // A claim may not widen the session policy with a wildcard.
    // (Tags refuse `*` too, so this grant has none: the policy check itself must catch it.)
    let grants = aws_grant("")
        .replace("{ glob: \"acme/*\" }", "{ regex: \".*\" }")
        .replace("    session_tags:\n      repo: \"{claims.repository}\"\n      ref: \"{claims.ref}\"\n    transitive_tag_keys: [repo]\n", "");
    let wide = broker_for_wildcards(&issuer, &proxy.url, &grants).await;
    let mut star = issuer.github();
    star.insert("repository".into(), json!("acme/*"));
    let answer = wide.issue("deploy-aws", &issuer.sign(&star), None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (403, "claim_not_usable"),
        "{}",
        answer.text
    );
    assert!(answer.body["detail"].as_str().unwrap().contains("session policy"));

    assert_eq!(proxy.assume_role_calls(), 0, "nothing invalid reached AWS");
    assert_eq!(broker.issue("deploy-aws", &token(), None).await.status, 200);
    assert_eq!(proxy.assume_role_calls(), 1);
}

async fn broker_for_wildcards(issuer: &TestIssuer, url: &str, grants: &str) -> TestBroker {
    broker(issuer, url, grants, "").await
}

#[tokio::test]
async fn concurrent_identical_requests_make_one_assume_role_and_later_ones_hit_the_cache() {
    let moto = Moto::start().await;
    let proxy = CountingProxy::start(&moto.url).await;
    let issuer = TestIssuer::start().await;
    let broker = Arc::new(broker(&issuer, &proxy.url, &aws_grant(""), "").await);

    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (broker, token) = (broker.clone(), issuer.sign(&issuer.github()));
        tasks.push(tokio::spawn(
            async move { broker.issue("deploy-aws", &token, None).await },
        ));
    }
    let mut keys = std::collections::BTreeSet::new();
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text);
        keys.insert(answer.body["credentials"]["AccessKeyId"].as_str().unwrap().to_string());
    }
    assert_eq!(proxy.assume_role_calls(), 1, "100 identical misses, one AssumeRole");
    assert_eq!(keys.len(), 1);

    let again = broker.issue("deploy-aws", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(proxy.assume_role_calls(), 1, "served from the cache");
    let record = broker.audit_record(&again.request_id()).await;
    assert_eq!(record.detail["cache"], "hit");
    // The same story in metrics: one upstream call, the rest coalesced or hits.
    let metrics = broker.admin_get("/metrics").await.text;
    let value = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        value(r#"stint_upstream_requests_total{service="aws-sts",operation="AssumeRole",outcome="ok"} "#),
        1,
        "{metrics}"
    );
    let lookups = value(r#"stint_cache_requests_total{cache="sts",result="miss"} "#)
        + value(r#"stint_cache_requests_total{cache="sts",result="coalesced"} "#)
        + value(r#"stint_cache_requests_total{cache="sts",result="hit"} "#);
    assert_eq!(lookups, 101, "{metrics}");
    assert_eq!(
        value(r#"stint_cache_requests_total{cache="sts",result="miss"} "#),
        1,
        "{metrics}"
    );
    assert!(
        value(r#"stint_audit_appends_total{outcome="success"} "#) >= 101,
        "{metrics}"
    );
    assert_ne!(
        record.detail["session_issuance_id"],
        json!(record.issuance_id),
        "joins the session's CloudTrail tag"
    );

    // Another caller never receives this caller's session.
    let mut other = issuer.github();
    other.insert("sub".into(), json!("repo:acme/web:ref:refs/heads/main"));
    let answer = broker.issue("deploy-aws", &issuer.sign(&other), None).await;
    assert_ne!(
        answer.body["credentials"]["AccessKeyId"].as_str().unwrap(),
        keys.first().unwrap()
    );
    assert_eq!(proxy.assume_role_calls(), 2);

    // A longer ttl than the cached session covers is a fresh session.
    let longer = broker
        .issue("deploy-aws", &issuer.sign(&issuer.github()), Some(json!({"ttl": "1h"})))
        .await;
    assert_eq!(longer.status, 200);
    assert_eq!(proxy.assume_role_calls(), 3);
}

#[tokio::test]
async fn sts_calls_are_rate_limited_per_account_with_429() {
    let moto = Moto::start().await;
    let proxy = CountingProxy::start(&moto.url).await;
    let issuer = TestIssuer::start().await;
    let broker = broker(
        &issuer,
        &proxy.url,
        &aws_grant(""),
        "  sts_rate_limit: { per_second: 0.05, burst: 2 }\n",
    )
    .await;
    let caller = |n: usize| {
        let mut claims = issuer.github();
        claims.insert("sub".into(), json!(format!("repo:acme/api:run:{n}")));
        issuer.sign(&claims)
    };
    assert_eq!(broker.issue("deploy-aws", &caller(1), None).await.status, 200);
    assert_eq!(broker.issue("deploy-aws", &caller(2), None).await.status, 200);
    let limited = broker.issue("deploy-aws", &caller(3), None).await;
    assert_eq!(
        (limited.status.as_u16(), limited.code()),
        (429, "rate_limited"),
        "{}",
        limited.text
    );
    let retry: u64 = limited
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=21).contains(&retry), "{retry}");
    assert_eq!(proxy.assume_role_calls(), 2);
    // A cached session is not an STS call and is not limited.
    assert_eq!(broker.issue("deploy-aws", &caller(1), None).await.status, 200);
}

#[tokio::test]
async fn aws_down_is_503_cache_hits_continue_and_recovery_follows() {
    let mut moto = Moto::start().await;
    let issuer = TestIssuer::start().await;
    let broker = broker(&issuer, &moto.url, &aws_grant(""), "").await;
    let cached = issuer.sign(&issuer.github());
    assert_eq!(broker.issue("deploy-aws", &cached, None).await.status, 200);

    moto.stop();
    let mut other = issuer.github();
    other.insert("sub".into(), json!("repo:acme/api:other"));
    let down = broker.issue("deploy-aws", &issuer.sign(&other), None).await;
    assert_eq!(
        (down.status.as_u16(), down.code()),
        (503, "upstream_unavailable"),
        "{}",
        down.text
    );
    assert!(down.headers.contains_key("retry-after"));
    assert_eq!(
        broker.audit_record(&down.request_id()).await.outcome,
        stint::audit::Outcome::Error
    );
    assert_eq!(
        broker
            .issue("deploy-aws", &issuer.sign(&issuer.github()), None)
            .await
            .status,
        200,
        "cache hit while down"
    );

    moto.restart().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        broker.issue("deploy-aws", &issuer.sign(&other), None).await.status,
        200,
        "recovers"
    );
}

#[tokio::test]
async fn issued_credentials_work_against_aws_with_auth_on() {
    let moto = Moto::start().await;
    let (stint_key, stint_secret) = moto.iam_for_stint().await;
    let admin = moto.sdk("AKIAADMIN", "admin", None).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&admin);
    secrets
        .create_secret()
        .name("prod/api/db")
        .secret_string("s3cret-value")
        .send()
        .await
        .unwrap();
    moto.enable_auth().await;

    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_full(
        &issuer_yaml("ci", &issuer, "github", ""),
        &aws_grant(""),
        &Moto::aws_yaml(&moto.url, ""),
        StartOptions {
            aws_credentials: Some(crate::moto::credentials(&stint_key, &stint_secret, None)),
            ..StartOptions::default()
        },
    )
    .await;
    let answer = broker.issue("deploy-aws", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let c = &answer.body["credentials"];

    // The credentials are real: AWS knows who they are and lets them read.
    let session = moto
        .sdk(
            c["AccessKeyId"].as_str().unwrap(),
            c["SecretAccessKey"].as_str().unwrap(),
            c["SessionToken"].as_str(),
        )
        .await;
    let me = aws_sdk_sts::Client::new(&session)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.arn().unwrap(),
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/deploy/stint-acme-api-15012345678")
    );
    let value = aws_sdk_secretsmanager::Client::new(&session)
        .get_secret_value()
        .secret_id("prod/api/db")
        .send()
        .await
        .unwrap();
    assert_eq!(value.secret_string(), Some("s3cret-value"));

    // With an identity AWS does not know, stint reports a refusal that helps
    // the operator, without passing AWS's own message to the caller.
    let unknown = TestBroker::start_full(
        &issuer_yaml("ci", &issuer, "github", ""),
        &aws_grant(""),
        &Moto::aws_yaml(&moto.url, ""),
        StartOptions {
            aws_credentials: Some(crate::moto::credentials("AKIANOBODY", "nope", None)),
            ..StartOptions::default()
        },
    )
    .await;
    let refused = unknown.issue("deploy-aws", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code()),
        (502, "upstream_refused"),
        "{}",
        refused.text
    );
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains(ROLE) && detail.contains("deploy-aws"), "{detail}");
    assert!(
        !detail.to_lowercase().contains("security token"),
        "AWS's message stays in the log: {detail}"
    );
}
