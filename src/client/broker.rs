//! The HTTP client side of `POST /v1/issue/{grant}`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

/// Why a broker call failed. Displayed as one line: status, title, detail,
/// request id. Never a token or credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Bad local setup (URL, CA file).
    #[error("{0}")]
    Setup(String),
    /// No answer from the broker.
    #[error("cannot reach the broker at {url}: {message}")]
    Unreachable {
        /// Broker base URL.
        url: String,
        /// Transport error.
        message: String,
    },
    /// The broker answered with an error.
    #[error("broker refused grant `{grant}`: {status} {title}: {detail} (code {code}, request id {request_id})")]
    Refused {
        /// The grant asked for.
        grant: String,
        /// HTTP status.
        status: u16,
        /// Problem title.
        title: String,
        /// Problem detail.
        detail: String,
        /// Problem code.
        code: String,
        /// Request id for the broker's audit log.
        request_id: String,
    },
    /// The answer is not what this client understands.
    #[error("the broker's answer for grant `{grant}` is not understood: {message}")]
    BadAnswer {
        /// The grant asked for.
        grant: String,
        /// What is missing.
        message: String,
    },
}

impl ClientError {
    /// Process exit code: 4 the broker said no (4xx), 5 broker or upstream
    /// unavailable (5xx, unreachable), 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused { status, .. } if *status < 500 => 4,
            ClientError::Refused { .. } | ClientError::Unreachable { .. } => 5,
            _ => 1,
        }
    }
}

/// A client for one broker.
pub struct BrokerClient {
    base: String,
    http: reqwest::Client,
}

impl BrokerClient {
    /// `base` like `https://stint.example`; TLS is verified, against the
    /// system roots or `ca_file` (PEM) in addition.
    pub fn new(base: &str, ca_file: Option<&Path>) -> Result<BrokerClient, ClientError> {
        let parsed =
            reqwest::Url::parse(base).map_err(|_| ClientError::Setup(format!("--broker `{base}` is not a URL")))?;
        // The OIDC token travels in this request: plain http only to this machine.
        let loopback = match parsed.host() {
            Some(url::Host::Domain(name)) => name == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(ClientError::Setup(format!(
                    "--broker `{base}` must be https (plain http only to a loopback host: the OIDC token would travel in clear)"
                )));
            }
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("stint-client/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| ClientError::Setup(format!("--ca-file {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClientError::Setup(format!("--ca-file {}: not a PEM certificate: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(format!("cannot build the HTTP client: {e}")))?;
        Ok(BrokerClient {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// The HTTP client (also used for GitHub's token endpoint).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Asks for `grant`; returns the 200 body.
    pub async fn issue(
        &self,
        grant: &str,
        token: &str,
        options: Map<String, Value>,
    ) -> Result<Map<String, Value>, ClientError> {
        let url = format!("{}/v1/issue/{}", self.base, urlencode(grant));
        let response = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&Value::Object(options))
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                message: e.to_string(),
            })?;
        let status = response.status();
        let header_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            return Err(ClientError::Refused {
                grant: grant.to_string(),
                status: status.as_u16(),
                title: status.canonical_reason().unwrap_or("").to_string(),
                detail: text("detail"),
                code: text("code"),
                request_id: header_id,
            });
        }
        match body {
            Value::Object(map) => Ok(map),
            _ => Err(ClientError::BadAnswer {
                grant: grant.to_string(),
                message: "not a JSON object".into(),
            }),
        }
    }
}

fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
