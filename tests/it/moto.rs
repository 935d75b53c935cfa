//! A real `moto_server` per test (isolated state, countable calls), the AWS
//! SDK pointed at it, and a counting proxy for "how many upstream calls".

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

fn moto_binary() -> String {
    std::env::var("STINT_MOTO_SERVER").unwrap_or_else(|_| {
        panic!(
            "moto_server is needed for the AWS tests and was not found.\n\
             Run scripts/test (it installs moto[server] into a venv and sets STINT_MOTO_SERVER),\n\
             or: python3 -m venv .venv && .venv/bin/pip install 'moto[server]' && \
             export STINT_MOTO_SERVER=$PWD/.venv/bin/moto_server"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running moto_server; killed on drop.
pub struct Moto {
    pub url: String,
    port: u16,
    child: Option<Child>,
}

impl Moto {
    pub async fn start() -> Moto {
        let mut moto = Moto {
            url: String::new(),
            port: free_port(),
            child: None,
        };
        moto.url = format!("http://127.0.0.1:{}", moto.port);
        moto.spawn().await;
        moto
    }

    async fn spawn(&mut self) {
        let child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", moto_binary()));
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if reqwest::get(format!("{}/moto-api/", self.url)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not come up on {}", self.url);
    }

    /// Stops the server (an AWS outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (state is gone).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Turns on SigV4 + IAM checks for every following request.
    pub async fn enable_auth(&self) {
        let response = reqwest::Client::new()
            .post(format!("{}/moto-api/reset-auth", self.url))
            .body("0")
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// IAM as an operator sets it up: a user `stint` allowed to assume role
    /// `deploy`, which may read secrets. Returns stint's access key.
    pub async fn iam_for_stint(&self) -> (String, String) {
        let iam = aws_sdk_iam::Client::new(&self.sdk("AKIAADMIN", "admin", None).await);
        iam.create_user().user_name("stint").send().await.unwrap();
        let key = iam.create_access_key().user_name("stint").send().await.unwrap();
        let key = key.access_key().unwrap();
        let allow = |action: &str| {
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]})
                .to_string()
        };
        iam.put_user_policy()
            .user_name("stint")
            .policy_name("assume")
            .policy_document(allow("sts:AssumeRole"))
            .send()
            .await
            .unwrap();
        let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:user/stint")},
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]}]});
        iam.create_role()
            .role_name("deploy")
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
            .unwrap();
        let read = allow("secretsmanager:GetSecretValue");
        iam.put_role_policy()
            .role_name("deploy")
            .policy_name("read")
            .policy_document(read)
            .send()
            .await
            .unwrap();
        (key.access_key_id().to_string(), key.secret_access_key().to_string())
    }

    /// The Python of moto's venv (it has boto3).
    pub fn python() -> String {
        let moto = moto_binary();
        std::path::Path::new(&moto)
            .with_file_name("python")
            .display()
            .to_string()
    }

    /// SDK config for this server with the given keys.
    pub async fn sdk(&self, access_key: &str, secret: &str, token: Option<&str>) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(credentials(access_key, secret, token))
            .load()
            .await
    }

    /// The `aws:` config block for a broker that uses this server via `url`.
    pub fn aws_yaml(url: &str, extra: &str) -> String {
        format!(
            "aws:\n  region: {REGION}\n  endpoint_url: \"{url}\"\n  max_attempts: 1\n  connect_timeout: 1s\n  operation_timeout: 5s\n{extra}"
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn credentials(access_key: &str, secret: &str, token: Option<&str>) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        access_key,
        secret,
        token.map(str::to_string),
        None,
        "test",
    ))
}

/// stint's own (fake, no-auth mode) identity.
pub fn stint_identity() -> SharedCredentialsProvider {
    credentials("AKIASTINTTESTING0001", "stint-test-secret", None)
}

#[derive(Clone)]
struct ProxyState {
    target: String,
    http: reqwest::Client,
    assume_role: Arc<AtomicUsize>,
    get_secret: Arc<AtomicUsize>,
    batch_get_secret: Arc<AtomicUsize>,
}

/// Forwards to moto and counts AssumeRole and GetSecretValue calls.
pub struct CountingProxy {
    pub url: String,
    state: ProxyState,
}

async fn forward(
    State(state): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.windows(17).any(|w| w == b"Action=AssumeRole") {
        state.assume_role.fetch_add(1, Ordering::SeqCst);
    }
    if headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.ends_with(".GetSecretValue"))
    {
        state.get_secret.fetch_add(1, Ordering::SeqCst);
    }
    if headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.ends_with(".BatchGetSecretValue"))
    {
        state.batch_get_secret.fetch_add(1, Ordering::SeqCst);
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = state.http.request(method, format!("{}{path}", state.target)).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(upstream) => {
            let status = upstream.status();
            let headers = upstream.headers().clone();
            let body = upstream.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if name != "transfer-encoding" && name != "content-length" && name != "connection" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
    }
}

impl CountingProxy {
    pub async fn start(target: &str) -> CountingProxy {
        let state = ProxyState {
            target: target.to_string(),
            http: reqwest::Client::new(),
            assume_role: Arc::default(),
            get_secret: Arc::default(),
            batch_get_secret: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new().fallback(forward).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        CountingProxy { url, state }
    }

    pub fn assume_role_calls(&self) -> usize {
        self.state.assume_role.load(Ordering::SeqCst)
    }

    pub fn get_secret_calls(&self) -> usize {
        self.state.get_secret.load(Ordering::SeqCst)
    }

    pub fn batch_get_secret_calls(&self) -> usize {
        self.state.batch_get_secret.load(Ordering::SeqCst)
    }
}
