//! Starts the real broker on free ports with a config written for the test.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use stint::audit::{AuditQuery, AuditRecord};
use stint::config::Config;
use stint::server::{RunningServer, StartOptions};

use crate::issuer::TestIssuer;

/// A running broker with its temp folder and an HTTP client.
pub struct TestBroker {
    pub url: String,
    pub admin_url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub server: RunningServer,
}

/// An HTTP answer, body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn request_id(&self) -> String {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// One issuer block for the config.
pub fn issuer_yaml(name: &str, issuer: &TestIssuer, platform: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    issuer: \"{url}\"\n    audience: \"{aud}\"\n    algorithms: [RS256, ES256]\n    platform: {platform}\n{extra}",
        url = issuer.url,
        aud = crate::issuer::AUDIENCE
    )
}

impl TestBroker {
    /// A broker trusting `issuer` as `ci` with `platform`'s claim model.
    pub async fn start(issuer: &TestIssuer, platform: &str, grants_yaml: &str) -> TestBroker {
        TestBroker::start_with(&issuer_yaml("ci", issuer, platform, ""), grants_yaml, "").await
    }

    /// A broker from config fragments (`issuers:` body, `grants:` body, extra top-level YAML).
    pub async fn start_with(issuers_yaml: &str, grants_yaml: &str, extra_yaml: &str) -> TestBroker {
        TestBroker::start_full(issuers_yaml, grants_yaml, extra_yaml, StartOptions::default()).await
    }

    /// A broker with explicit start options (e.g. stint's own AWS identity).
    pub async fn start_full(
        issuers_yaml: &str,
        grants_yaml: &str,
        extra_yaml: &str,
        options: StartOptions,
    ) -> TestBroker {
        TestBroker::start_on("sqlite://audit.db", "", issuers_yaml, grants_yaml, extra_yaml, options).await
    }

    /// A broker on the audit store `store`, with more `audit:` keys (each
    /// line indented by two spaces) in `audit_yaml`.
    pub async fn start_on(
        store: &str,
        audit_yaml: &str,
        issuers_yaml: &str,
        grants_yaml: &str,
        extra_yaml: &str,
        options: StartOptions,
    ) -> TestBroker {
        TestBroker::start_at(
            "127.0.0.1:0",
            store,
            audit_yaml,
            issuers_yaml,
            grants_yaml,
            extra_yaml,
            options,
        )
        .await
    }

    /// As [`TestBroker::start_on`], listening on `listen` (a broker
    /// started again where a client knows it).
    pub async fn start_at(
        listen: &str,
        store: &str,
        audit_yaml: &str,
        issuers_yaml: &str,
        grants_yaml: &str,
        extra_yaml: &str,
        options: StartOptions,
    ) -> TestBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        // Brokers sharing a store share an audit key: a test may name one.
        let key_line = if audit_yaml.contains("key_file:") {
            ""
        } else {
            "  key_file: audit.key\n"
        };
        let text = format!(
            "listen: {listen}\nadmin_listen: 127.0.0.1:0\naudit:\n  store: \"{store}\"\n{key_line}  checkpoint_every: 3\n{audit_yaml}\
             signing:\n  key_file: signing.key\nissuers:\n{issuers_yaml}\ngrants:\n{grants_yaml}\n{extra_yaml}\n"
        );
        let config = Config::parse(&text, "test.yaml", dir.path(), &|_| None)
            .unwrap_or_else(|e| panic!("test config must be valid: {e}\n{text}"));
        let server = stint::server::start_with(config, options).await.expect("broker starts");
        let broker = TestBroker {
            url: format!("http://{}", server.addr),
            admin_url: format!("http://{}", server.admin_addr),
            dir,
            http: reqwest::Client::new(),
            server,
        };
        broker.wait_for_keys().await;
        broker
    }

    /// Waits until the start-up JWKS prefetch finished, so fetch counts are stable.
    pub async fn wait_for_keys(&self) {
        for _ in 0..100 {
            if self.server.broker.verifier().issuers_without_keys().await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST /v1/issue/{grant}` with a bearer token and an optional JSON body.
    pub async fn issue(&self, grant: &str, token: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .post(format!("{}/v1/issue/{grant}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("request reaches the broker")).await
    }

    /// `GET /v1/grants`.
    pub async fn grants(&self, token: &str) -> Answer {
        answer(
            self.http
                .get(format!("{}/v1/grants", self.url))
                .bearer_auth(token)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// GET on the public listener.
    pub async fn get(&self, path: &str) -> Answer {
        answer(
            self.http
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Answer {
        answer(
            self.http
                .get(format!("{}{path}", self.admin_url))
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// The audit record written for `request_id`.
    pub async fn audit_record(&self, request_id: &str) -> AuditRecord {
        let records = self
            .server
            .broker
            .audit()
            .query(&AuditQuery {
                request_id: Some(request_id.to_string()),
                ..AuditQuery::default()
            })
            .await
            .expect("audit query");
        assert_eq!(records.len(), 1, "exactly one audit record per request id {request_id}");
        records.into_iter().next().expect("one record")
    }

    /// Path of the SQLite audit log.
    pub fn audit_db(&self) -> std::path::PathBuf {
        self.dir.path().join("audit.db")
    }
}

/// The grant most tests use: GitHub, acme/api, main, production.
pub const DEPLOY_GRANT: &str = r#"
  deploy:
    kind: token
    description: deploy token
    ttl: 5m
    max_ttl: 30m
    audience: deploy-api
    copy_claims: [repository, ref, run_id]
    allow:
      - issuer: ci
        claims:
          repository: acme/api
          ref: refs/heads/main
          environment: production
"#;
