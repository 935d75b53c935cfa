//! The client commands as a CI job runs them: the real `stint` binary, a
//! stand-in for GitHub's token endpoint, the broker on a real port.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use stint::server::StartOptions;

use crate::harness::{DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::{AUDIENCE, TestIssuer};
use crate::moto::{Moto, stint_identity};

pub(crate) const STINT: &str = env!("CARGO_BIN_EXE_stint");
pub(crate) const REQUEST_TOKEN: &str = "gh-request-token-123";

#[derive(Clone)]
struct GitHubState {
    token: String,
    audiences: Arc<Mutex<Vec<String>>>,
}

async fn github_token(
    State(state): State<GitHubState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let authorized =
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {REQUEST_TOKEN}"));
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let audience = query.get("audience").cloned().unwrap_or_default();
    state.audiences.lock().unwrap().push(audience.clone());
    if audience != AUDIENCE {
        return StatusCode::BAD_REQUEST.into_response();
    }
    axum::Json(json!({"value": state.token})).into_response()
}

/// A stand-in for GitHub Actions' ID-token endpoint.
pub(crate) async fn github_endpoint(token: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let audiences = Arc::new(Mutex::new(Vec::new()));
    let state = GitHubState {
        token,
        audiences: audiences.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token?api-version=2.0", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/token", axum::routing::get(github_token))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, audiences)
}

/// `stint` with a clean environment (no token source leaks in from the host).
pub(crate) fn stint(dir: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(STINT);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

pub(crate) struct Ran {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) async fn run(mut command: tokio::process::Command) -> Ran {
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("stint finishes")
        .unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

#[tokio::test]
async fn exec_on_github_actions_gets_a_token_runs_the_command_and_passes_its_exit_code() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let (endpoint, audiences) = github_endpoint(issuer.sign(&issuer.github())).await;
    let dir = tempfile::tempdir().unwrap();

    let mut command = stint(dir.path());
    command
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", &endpoint)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN)
        .env("STINT_BROKER", &broker.url)
        .args(["exec", "-v", "--audience", AUDIENCE, "--grant", "deploy", "--"])
        .args(["sh", "-c", "printf %s \"$STINT_TOKEN_DEPLOY\" > issued.jwt; exit 7"]);
    let ran = run(command).await;
    assert_eq!(ran.code, 7, "the child's exit code comes back: {}", ran.stderr);
    assert_eq!(audiences.lock().unwrap().as_slice(), [AUDIENCE.to_string()]);
    let issued = std::fs::read_to_string(dir.path().join("issued.jwt")).unwrap();
    assert_eq!(issued.split('.').count(), 3, "the child saw the issued token");
    assert!(ran.stderr.contains("OIDC token from GitHub Actions"), "{}", ran.stderr);
    assert!(ran.stderr.contains("grant deploy: kind token"), "{}", ran.stderr);
    let signature = issued.split('.').nth(2).unwrap();
    assert!(
        !ran.stdout.contains(signature) && !ran.stderr.contains(signature),
        "no credential in stint's output"
    );
}

#[tokio::test]
async fn broker_refusals_are_one_line_with_the_request_id_and_exit_4() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    let mut command = stint(dir.path());
    command.args([
        "exec",
        "--broker",
        &broker.url,
        "--token-file",
        "token",
        "--grant",
        "nope",
        "--",
        "true",
    ]);
    let ran = run(command).await;
    assert_eq!(ran.code, 4, "{}", ran.stderr);
    let line = ran.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("403 Forbidden") && line.contains("request id 0"),
        "{line}"
    );

    let mut command = stint(dir.path());
    command.args([
        "token",
        "--broker",
        &broker.url,
        "--token-file",
        "token",
        "--grant",
        "deploy",
    ]);
    let ran = run(command).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        ran.stdout.trim().split('.').count(),
        3,
        "stint token prints the issued token"
    );
}

#[tokio::test]
async fn no_token_anywhere_exits_3_and_lists_what_was_tried() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = stint(dir.path());
    command.args([
        "exec",
        "--broker",
        "http://127.0.0.1:9",
        "--k8s-token-file",
        "missing",
        "--grant",
        "x",
        "--",
        "true",
    ]);
    let ran = run(command).await;
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("Tried, in order") && ran.stderr.contains("id-token: write"),
        "{}",
        ran.stderr
    );
}

#[tokio::test]
async fn signals_reach_the_child() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    let mut command = stint(dir.path());
    command.args([
        "exec",
        "--broker",
        &broker.url,
        "--token-file",
        "token",
        "--grant",
        "deploy",
        "--",
    ]);
    command.args([
        "sh",
        "-c",
        "trap 'exit 42' TERM; touch started; while true; do sleep 0.1; done",
    ]);
    let child = command.spawn().unwrap();
    for _ in 0..100 {
        if dir.path().join("started").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(42),
        "SIGTERM was forwarded and the child's code came back"
    );
}

const SECRETS_GRANT: &str = r#"
  api-secrets:
    kind: secrets
    ttl: 10m
    secrets: ["prod/api/db#password", prod/api/stripe]
    allow:
      - issuer: ci
        claims: { repository: acme/api }
"#;

async fn secrets_broker(moto: &Moto, issuer: &TestIssuer) -> TestBroker {
    let admin = aws_sdk_secretsmanager::Client::new(&moto.sdk("AKIAADMIN", "admin", None).await);
    let db = json!({"username": "api", "password": "pw-1-very-secret"}).to_string();
    admin
        .create_secret()
        .name("prod/api/db")
        .secret_string(db)
        .send()
        .await
        .unwrap();
    admin
        .create_secret()
        .name("prod/api/stripe")
        .secret_string("sk_live_stripe_value")
        .send()
        .await
        .unwrap();
    TestBroker::start_full(
        &issuer_yaml("ci", issuer, "github", ""),
        SECRETS_GRANT,
        &Moto::aws_yaml(&moto.url, ""),
        StartOptions {
            aws_credentials: Some(stint_identity()),
            ..StartOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn secrets_reach_the_child_but_never_stints_output_and_are_masked_on_github() {
    let moto = Moto::start().await;
    let issuer = TestIssuer::start().await;
    let broker = secrets_broker(&moto, &issuer).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    let check =
        "test \"$DB_PASSWORD\" = pw-1-very-secret && test \"$PROD_API_STRIPE\" = sk_live_stripe_value && echo child-ok";

    let mut command = stint(dir.path());
    command.args([
        "exec",
        "-v",
        "--broker",
        &broker.url,
        "--token-file",
        "token",
        "--grant",
        "api-secrets",
    ]);
    command.args(["--env", "DB_PASSWORD=prod/api/db#password", "--", "sh", "-c", check]);
    let ran = run(command).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.stdout.contains("child-ok"));
    for secret in ["pw-1-very-secret", "sk_live_stripe_value"] {
        assert!(
            !ran.stdout.contains(secret) && !ran.stderr.contains(secret),
            "{secret} leaked:\n{}\n{}",
            ran.stdout,
            ran.stderr
        );
    }
    assert!(
        ran.stderr.contains("DB_PASSWORD") && ran.stderr.contains("PROD_API_STRIPE"),
        "-v names the variables"
    );

    // Under GitHub Actions every value is masked before the child runs.
    let mut command = stint(dir.path());
    command.env("GITHUB_ACTIONS", "true");
    command.args([
        "exec",
        "--broker",
        &broker.url,
        "--token-file",
        "token",
        "--grant",
        "api-secrets",
        "--",
    ]);
    command.args(["sh", "-c", "echo child-ran"]);
    let ran = run(command).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let masks: Vec<&str> = ran
        .stdout
        .lines()
        .take_while(|l| l.starts_with("::add-mask::"))
        .collect();
    assert_eq!(
        masks,
        ["::add-mask::pw-1-very-secret", "::add-mask::sk_live_stripe_value"]
    );
    assert!(ran.stdout.ends_with("child-ran\n"));
}

#[tokio::test]
async fn aws_sdk_uses_stint_as_credential_process_and_the_cache_spares_the_broker() {
    let moto = Moto::start().await;
    let (key, secret) = moto.iam_for_stint().await;
    moto.enable_auth().await;
    let issuer = TestIssuer::start().await;
    let grant = "  deploy-aws:\n    kind: aws\n    role_arn: arn:aws:iam::123456789012:role/deploy\n    ttl: 1h\n    allow:\n      - issuer: ci\n        claims: { repository: acme/api }\n";
    let broker = TestBroker::start_full(
        &issuer_yaml("ci", &issuer, "github", ""),
        grant,
        &Moto::aws_yaml(&moto.url, ""),
        StartOptions {
            aws_credentials: Some(crate::moto::credentials(&key, &secret, None)),
            ..StartOptions::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        dir.path().join("aws-config"),
        format!(
            "[profile stint]\ncredential_process = {STINT} credential-process --broker {} --token-file {} --grant deploy-aws\n",
            broker.url,
            token_file.display()
        ),
    )
    .unwrap();
    let script = format!(
        "import boto3\nfor _ in range(2):\n    s = boto3.Session(profile_name='stint')\n    print(s.client('sts', endpoint_url='{}', region_name='us-east-1').get_caller_identity()['Arn'])\n",
        moto.url
    );
    let mut command = tokio::process::Command::new(Moto::python());
    command
        .args(["-c", &script])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("AWS_CONFIG_FILE", dir.path().join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let ran = run(command).await;
    assert_eq!(ran.code, 0, "boto3 failed:\n{}", ran.stderr);
    let arns: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(
        arns,
        ["arn:aws:sts::123456789012:assumed-role/deploy/stint-acme-api-15012345678"; 2]
    );

    // Two SDK sessions, one issuance: the second came from the 0600 cache.
    let issued = broker
        .server
        .broker
        .audit()
        .query(&stint::audit::AuditQuery {
            outcome: Some(stint::audit::Outcome::Issued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(issued.len(), 1);
    let cache_dir = dir.path().join(".cache").join("stint");
    let file = std::fs::read_dir(&cache_dir).unwrap().next().unwrap().unwrap().path();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
}
