//! Secrets hygiene: what a secret must never reach (logs, another job's
//! cache hit, a redirect target, files others can read), and the client
//! certificate a broker with `tls.client_ca_file` asks for.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use stint::server::StartOptions;

use crate::harness::{DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;
use crate::moto::{Moto, stint_identity};
use crate::process::free_port;
use crate::store::postgres_host_port;

const STINT: &str = env!("CARGO_BIN_EXE_stint");

/// `stint` with a clean environment, run to its end.
async fn stint(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(STINT);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("stint finishes")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_second_job_with_the_same_subject_but_denied_claims_gets_no_cached_credentials() {
    let _moto = Moto::start().await;
    let issuer = TestIssuer::start().await;
    let grant = "  deploy-aws:\n    kind: aws\n    role_arn: arn:aws:iam::123456789012:role/deploy\n    ttl: 1h\n    allow:\n      - issuer: ci\n        claims: { repository: acme/api, event_name: push }\n";
    let broker = TestBroker::start_full(
        &issuer_yaml("ci", &issuer, "github", ""),
        grant,
        &Moto::aws_yaml(&_moto.url, ""),
        StartOptions {
            aws_credentials: Some(stint_identity()),
            ..StartOptions::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let allowed = issuer.github();
    let mut denied = allowed.clone();
    denied.insert("event_name".into(), json!("pull_request_target"));
    assert_eq!(allowed["sub"], denied["sub"], "same issuer and subject");
    std::fs::write(dir.path().join("allowed.jwt"), issuer.sign(&allowed)).unwrap();
    std::fs::write(dir.path().join("denied.jwt"), issuer.sign(&denied)).unwrap();
    let run = |token: &'static str| {
        let url = broker.url.clone();
        let dir = dir.path().to_path_buf();
        async move {
            stint(
                &dir,
                &[
                    "credential-process",
                    "--broker",
                    &url,
                    "--token-file",
                    token,
                    "--grant",
                    "deploy-aws",
                ],
                &[],
            )
            .await
        }
    };
    let (code, stdout, stderr) = run("allowed.jwt").await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("AccessKeyId"));
    let (code, stdout, stderr) = run("allowed.jwt").await;
    assert_eq!(code, 0, "the same token is served from the cache: {stderr}");
    assert!(stdout.contains("AccessKeyId"));

    let (code, stdout, stderr) = run("denied.jwt").await;
    assert_eq!(code, 4, "the broker decides for the other token: {stdout}{stderr}");
    assert!(!stdout.contains("AccessKeyId"), "no cached credentials: {stdout}");
    let audit = broker.server.broker.audit();
    let count = |outcome| {
        let audit = audit.clone();
        async move {
            audit
                .query(&stint::audit::AuditQuery {
                    outcome: Some(outcome),
                    ..Default::default()
                })
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(count(stint::audit::Outcome::Issued).await, 1);
    assert_eq!(count(stint::audit::Outcome::Denied).await, 1, "the refusal is audited");
}

/// A one-route server: `/v1/issue/...` redirects to `/elsewhere` on the same
/// origin (reqwest keeps `Authorization` within one origin); whatever
/// reaches `/elsewhere` is recorded.
async fn redirecting_broker() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::http::HeaderMap;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route(
            "/v1/issue/{grant}",
            axum::routing::post(|| async {
                (axum::http::StatusCode::TEMPORARY_REDIRECT, [("location", "/elsewhere")])
            }),
        )
        .route(
            "/elsewhere",
            axum::routing::post(move |headers: HeaderMap| {
                let record = record.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    record.lock().unwrap().push(auth);
                    axum::Json(json!({"kind": "token", "token": "x"}))
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, seen)
}

#[tokio::test]
async fn the_client_follows_no_redirect_so_the_token_stays_with_the_broker() {
    let (url, seen) = redirecting_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = stint(
        dir.path(),
        &["token", "--grant", "deploy", "--broker", &url],
        &[("STINT_TOKEN", "the-callers-oidc-token")],
    )
    .await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "the redirect target got {:?}",
        seen.lock().unwrap()
    );
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains("307") && stderr.contains("/elsewhere") && stderr.contains("no redirects"),
        "{stderr}"
    );
    assert!(!stderr.contains("the-callers-oidc-token"));
}

struct ClientPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA for client certificates and one client certificate it signed.
fn client_pki() -> ClientPki {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let client_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["ci-runner".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&client_key, &issuer).unwrap();
    ClientPki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: client_key.serialize_pem(),
    }
}

#[tokio::test]
async fn the_client_presents_its_certificate_to_a_broker_that_requires_one() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), server_cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), server_cert.signing_key.serialize_pem()).unwrap();
    let pki = client_pki();
    std::fs::write(dir.path().join("clients.crt"), &pki.ca_pem).unwrap();
    std::fs::write(dir.path().join("client.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.path().join("client.key"), &pki.key_pem).unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: sqlite://audit.db, key_file: audit.key }}\n\
         signing: {{ key_file: signing.key }}\ntls: {{ cert_file: tls.crt, key_file: tls.key, client_ca_file: clients.crt }}\n\
         issuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
        issuer_yaml("ci", &issuer, "github", "")
    );
    let config = stint::config::Config::parse(&text, "test.yaml", dir.path(), &|_| None).unwrap();
    let server = stint::server::start(config).await.unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let base = [
        "token",
        "--grant",
        "deploy",
        "--broker",
        &url,
        "--ca-file",
        "tls.crt",
        "--token-file",
        "token",
    ];

    let (code, stdout, stderr) = stint(dir.path(), &base, &[]).await;
    assert_eq!(code, 5, "{stdout}{stderr}");
    assert!(
        stderr.contains("--client-cert"),
        "the error says what is missing: {stderr}"
    );
    assert!(
        !stderr.contains("retrying"),
        "a refused handshake is not retried: {stderr}"
    );

    let mut with_flags = base.to_vec();
    with_flags.extend(["--client-cert", "client.crt", "--client-key", "client.key"]);
    let (code, stdout, stderr) = stint(dir.path(), &with_flags, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim().split('.').count(), 3, "a JWT: {stdout}");

    let (code, stdout, stderr) = stint(
        dir.path(),
        &base,
        &[("STINT_CLIENT_CERT", "client.crt"), ("STINT_CLIENT_KEY", "client.key")],
    )
    .await;
    assert_eq!(code, 0, "the variables work too: {stderr}");
    assert_eq!(stdout.trim().split('.').count(), 3);
    server.shutdown().await;
}

/// `stint serve` at `log_level`, issuing a `postgres` grant against the
/// machine's PostgreSQL: the new role's password appears nowhere on stderr.
async fn postgres_issuance_logs_no_password(log_level: &str) {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (host, port) = postgres_host_port();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    std::fs::write(dir.path().join("admin.pw"), "not-used-with-trust-auth\n").unwrap();
    let config = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: sqlite://audit.db, key_file: audit.key }}\n\
         signing: {{ key_file: signing.key }}\nissuers:\n{}\n\
         databases:\n  app:\n    host: {host}\n    port: {port}\n    dbname: test\n    admin_user: postgres\n    admin_password_file: admin.pw\n\
         grants:\n  app-db:\n    kind: postgres\n    database: app\n    ttl: 5m\n    username_template: \"stint_ithyg{tag}_{{id}}\"\n\
         \x20   creation_statements: |\n      CREATE ROLE \"{{{{name}}}}\" LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}';\n\
         \x20   allow:\n      - issuer: ci\n        claims: {{ repository_owner: acme }}\n",
        issuer_yaml("ci", &issuer, "github", "")
    );
    std::fs::write(dir.path().join("stint.yaml"), &config).unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let (port, admin) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(STINT)
        .args(["serve", "--config", "stint.yaml"])
        .current_dir(dir.path())
        .env("STINT_LISTEN", format!("127.0.0.1:{port}"))
        .env("STINT_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("STINT_LOG", log_level)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !reqwest::get(format!("http://127.0.0.1:{admin}/healthz"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stint serve did not start: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = issuer.sign(&issuer.github());
    let http = reqwest::Client::new();
    let body: Value = http
        .post(format!("http://127.0.0.1:{port}/v1/issue/app-db"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let password = body["database"]["password"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_string();
    let lease = body["lease_id"].as_str().unwrap().to_string();
    let revoked = http
        .post(format!("http://127.0.0.1:{port}/v1/leases/{lease}/revoke"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "the test's role is dropped");
    crate::process::terminate(&child);
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    // Without the pins this log holds tokio-postgres' DEBUG line
    // `executing simple query: CREATE ROLE ... PASSWORD '...'`.
    assert!(log.contains("/v1/issue/"), "the issuance is in the log: {log}");
    // The access line as an operator greps it: plain values, the route's template.
    assert!(
        log.contains("method=POST route=/v1/issue/{grant} status=200"),
        "the access line: {log}"
    );
    assert!(password.len() >= 16);
    assert!(
        !log.contains(&password),
        "the issued password is in the {log_level} log"
    );
    assert!(!log.contains(&token), "the caller's token is in the {log_level} log");
}

#[tokio::test]
async fn a_debug_run_logs_no_issued_password() {
    postgres_issuance_logs_no_password("debug").await;
}

#[tokio::test]
async fn a_trace_run_logs_no_issued_password() {
    postgres_issuance_logs_no_password("trace").await;
}

#[tokio::test]
async fn key_files_others_can_read_stop_start_up_and_stint_files_are_private() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: sqlite://audit.db, key_file: audit.key, mirror: \"file:{}\" }}\n\
         signing: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
        dir.path().join("mirror.jsonl").display(),
        issuer_yaml("ci", &issuer, "github", "")
    );
    let parse = || stint::config::Config::parse(&text, "test.yaml", dir.path(), &|_| None).unwrap();
    let server = stint::server::start(parse()).await.unwrap();
    let issued = reqwest::Client::new()
        .post(format!("http://{}/v1/issue/deploy", server.addr))
        .bearer_auth(issuer.sign(&issuer.github()))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 200);
    server.shutdown().await;
    for file in ["audit.key", "signing.key", "audit.db", "mirror.jsonl"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }

    for key in ["audit.key", "signing.key"] {
        let path = dir.path().join(key);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = stint::server::start(parse())
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains(key) && err.contains("chmod 600"), "{key}: {err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[tokio::test]
async fn a_password_in_the_audit_store_url_stays_out_of_start_up_errors() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    for store in [
        format!("postgres://stint@127.0.0.1:{closed}/test?password=s3cr3t-in-query"),
        format!("postgres://stint:s3cr3t-in-userinfo@127.0.0.1:{closed}/test?connect_timeout=2"),
        format!("postgres://stint@127.0.0.1:{closed}/test?pass%77ord=s3cr3t-encoded"),
    ] {
        let text = format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: \"{store}\", key_file: audit.key }}\n\
             signing: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
            issuer_yaml("ci", &issuer, "github", "")
        );
        let config = stint::config::Config::parse(&text, "test.yaml", dir.path(), &|_| None).unwrap();
        let err = stint::server::start(config)
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("127.0.0.1"), "a start-up error naming the store: {err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
