//! The HTTP client side of `POST /v1/issue/{grant}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::percent::encode as urlencode;
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
        /// No connection could be made (refused, unreachable, timed out
        /// connecting): the request never left, so asking again is safe.
        /// False for a TLS failure or a connection lost mid-request.
        not_sent: bool,
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
        /// The `Retry-After` header in seconds, if the answer had one
        /// (18 hours at most: a `u16` keeps the error small).
        retry_after: Option<u16>,
    },
    /// The broker (or something in front of it) answered with a redirect.
    /// It is not followed: the request carries the caller's OIDC token.
    #[error(
        "the broker at {url} answered {status} redirecting to `{location}`; stint follows no redirects (the OIDC token would go along): set --broker to the final URL"
    )]
    Redirected {
        /// Broker base URL.
        url: String,
        /// HTTP status (3xx).
        status: u16,
        /// The `Location` header, as sent.
        location: String,
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
    /// The wait the broker (or a proxy) asked for with `Retry-After`.
    pub fn asked_wait(&self) -> Option<Duration> {
        match self {
            ClientError::Refused {
                retry_after: Some(secs),
                ..
            } => Some(Duration::from_secs(u64::from(*secs))),
            _ => None,
        }
    }

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

/// TLS settings for reaching the broker.
#[derive(Debug, Clone, Default)]
pub struct BrokerTls {
    /// Extra CA certificate (PEM) to trust (`--ca-file`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) to present (`--client-cert`), for a
    /// broker with `tls.client_ca_file`.
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of `client_cert` (`--client-key`).
    pub client_key: Option<PathBuf>,
}

/// A client for one broker.
pub struct BrokerClient {
    base: String,
    http: reqwest::Client,
    /// Whether a client certificate is configured (see [`transport_message`]).
    presents_certificate: bool,
}

impl BrokerClient {
    /// `base` like `https://stint.example`; TLS is verified, against the
    /// system roots or `tls.ca_file` (PEM) in addition, and the client
    /// certificate in `tls` is presented when the broker asks for one.
    /// Redirects are never followed (see [`ClientError::Redirected`]).
    pub fn new(base: &str, tls: &BrokerTls) -> Result<BrokerClient, ClientError> {
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
            // A redirect would carry the bearer token to wherever it
            // points (reqwest keeps `Authorization` within one origin, and
            // a path there may be someone else's).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("stint-client/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &tls.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| ClientError::Setup(format!("--ca-file {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClientError::Setup(format!("--ca-file {}: not a PEM certificate: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let identity = client_identity(tls)?;
        let presents_certificate = identity.is_some();
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(format!("cannot build the HTTP client: {e}")))?;
        Ok(BrokerClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            presents_certificate,
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
            .map_err(|e| self.unreachable(&e))?;
        self.answer(response, grant).await
    }

    /// Ends a lease early (`POST /v1/leases/{lease_id}/revoke`), as the
    /// caller it was issued to. Returns the 200 or 202 body (`state` is
    /// `revoked` or `revoking`).
    pub async fn revoke(&self, lease_id: &str, token: &str) -> Result<Map<String, Value>, ClientError> {
        let url = format!("{}/v1/leases/{}/revoke", self.base, urlencode(lease_id));
        let response = self
            .http
            .post(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        self.answer(response, &format!("lease {lease_id}")).await
    }

    /// A broker answer as its JSON object, or the error it says. `subject`
    /// names what was asked for in the error (`grant`'s name, `lease ID`).
    async fn answer(&self, response: reqwest::Response, subject: &str) -> Result<Map<String, Value>, ClientError> {
        let status = response.status();
        if status.is_redirection() {
            return Err(ClientError::Redirected {
                url: self.base.clone(),
                status: status.as_u16(),
                location: response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
        let header_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        // Only the delay-seconds form: a broker sends nothing else, and a
        // date from a proxy is left to the backoff.
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| u16::try_from(secs).unwrap_or(u16::MAX));
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            return Err(ClientError::Refused {
                grant: subject.to_string(),
                status: status.as_u16(),
                title: status.canonical_reason().unwrap_or("").to_string(),
                detail: text("detail"),
                code: text("code"),
                request_id: header_id,
                retry_after,
            });
        }
        match body {
            Value::Object(map) => Ok(map),
            _ => Err(ClientError::BadAnswer {
                grant: subject.to_string(),
                message: "not a JSON object".into(),
            }),
        }
    }
}

impl BrokerClient {
    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            message: self.transport_message(e),
            not_sent: never_sent(e),
        }
    }

    /// The transport error with its causes (rustls says why a handshake
    /// failed), and the fix when the broker wants a client certificate.
    /// With TLS 1.3 a broker refuses a missing certificate after the
    /// handshake, with an alert the client may not read before the
    /// connection is gone: a connection closed or reset under an https
    /// request without a certificate gets the fix as a possibility.
    fn transport_message(&self, e: &reqwest::Error) -> String {
        let text = crate::pg_tls::describe(e);
        let lower = text.to_ascii_lowercase();
        let hint = "pass --client-cert and --client-key, or set STINT_CLIENT_CERT and STINT_CLIENT_KEY";
        let dropped = [
            "reset by peer",
            "broken pipe",
            "connection closed",
            "unexpected eof",
            "peer closed",
        ]
        .iter()
        .any(|sign| lower.contains(sign));
        if lower.contains("certificaterequired") || lower.contains("certificate required") {
            format!("{text} (the broker requires a client certificate: {hint})")
        } else if dropped && !self.presents_certificate && self.base.starts_with("https://") {
            format!("{text} (if the broker requires a client certificate: {hint})")
        } else {
            text
        }
    }
}

/// Whether `e` means no connection was made, so the request never left:
/// refused (a broker restarting), unreachable, or timed out connecting.
/// A TLS failure is a connect error too, but a retry cannot change it, and
/// a connection lost after the request was written may have been answered
/// by the broker: neither counts.
fn never_sent(e: &reqwest::Error) -> bool {
    use std::io::ErrorKind;
    if !e.is_connect() {
        return false;
    }
    if e.is_timeout() {
        return true;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::TimedOut
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            );
        }
        cause = inner.source();
    }
    false
}

/// The client certificate and key as one reqwest identity; both flags or
/// neither.
fn client_identity(tls: &BrokerTls) -> Result<Option<reqwest::Identity>, ClientError> {
    let (cert, key) = match (&tls.client_cert, &tls.client_key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            return Err(ClientError::Setup(
                "--client-cert and --client-key go together (STINT_CLIENT_CERT / STINT_CLIENT_KEY)".into(),
            ));
        }
    };
    let read = |flag: &str, path: &Path| {
        std::fs::read(path).map_err(|e| ClientError::Setup(format!("{flag} {}: {e}", path.display())))
    };
    let mut pem = read("--client-cert", cert)?;
    pem.push(b'\n');
    pem.extend(read("--client-key", key)?);
    reqwest::Identity::from_pem(&pem).map(Some).map_err(|e| {
        ClientError::Setup(format!(
            "--client-cert {} / --client-key {}: not a PEM certificate and private key: {e}",
            cert.display(),
            key.display()
        ))
    })
}
