//! SIEM stand-ins on real ports: an HTTP receiver (webhook or Splunk HEC)
//! that can be told to fail or hang, and a syslog listener over TCP or
//! TLS that reads octet-counted RFC 5424 frames.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// How the HTTP receiver answers the next batches.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// 200, and the lines are kept.
    Take,
    /// This status, and the lines are dropped.
    Fail(u16),
    /// The lines are kept (the receiver got them) but no answer ever comes:
    /// the sender cannot know, and must send them again.
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub answered: Option<u16>,
}

#[derive(Clone)]
struct Shared {
    mode: Arc<Mutex<Mode>>,
    /// `Some(token)`: answer as Splunk HEC, refusing other tokens with 401.
    splunk: Option<String>,
    requests: Arc<Mutex<Vec<Received>>>,
    lines: Arc<Mutex<Vec<String>>>,
}

/// An HTTP receiver on 127.0.0.1.
pub struct HttpReceiver {
    pub url: String,
    shared: Shared,
}

async fn receive(State(shared): State<Shared>, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let mode = shared.mode.lock().unwrap().clone();
    let mut received = Received {
        path: uri.path().to_string(),
        headers: headers.clone(),
        answered: None,
    };
    let keep = |lines: &Mutex<Vec<String>>| {
        lines
            .lock()
            .unwrap()
            .extend(body.lines().filter(|l| !l.is_empty()).map(str::to_string));
    };
    if let Some(token) = &shared.splunk {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(format!("Splunk {token}").as_str()) {
            received.answered = Some(401);
            shared.requests.lock().unwrap().push(received);
            return (StatusCode::UNAUTHORIZED, r#"{"text":"Invalid token","code":4}"#).into_response();
        }
    }
    match mode {
        Mode::Take => {
            keep(&shared.lines);
            received.answered = Some(200);
            shared.requests.lock().unwrap().push(received);
            let answer = if shared.splunk.is_some() {
                r#"{"text":"Success","code":0}"#
            } else {
                ""
            };
            (StatusCode::OK, answer).into_response()
        }
        Mode::Fail(status) => {
            received.answered = Some(status);
            shared.requests.lock().unwrap().push(received);
            (StatusCode::from_u16(status).unwrap(), "try later").into_response()
        }
        Mode::Hang => {
            keep(&shared.lines);
            shared.requests.lock().unwrap().push(received);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

impl HttpReceiver {
    /// A generic webhook receiver.
    pub async fn start() -> HttpReceiver {
        HttpReceiver::serve(None).await
    }

    /// A Splunk HEC stand-in that accepts only `Authorization: Splunk TOKEN`.
    pub async fn splunk(token: &str) -> HttpReceiver {
        HttpReceiver::serve(Some(token.to_string())).await
    }

    async fn serve(splunk: Option<String>) -> HttpReceiver {
        let shared = Shared {
            mode: Arc::new(Mutex::new(Mode::Take)),
            splunk,
            requests: Arc::default(),
            lines: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        HttpReceiver { url, shared }
    }

    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Every line kept so far, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        self.shared.lines.lock().unwrap().clone()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until a kept line satisfies `done` (the shipper is a loop
    /// of its own; this only bounds a hang).
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        wait_lines(what, || self.lines(), done).await
    }
}

pub async fn wait_lines(what: &str, lines: impl Fn() -> Vec<String>, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    for _ in 0..1200 {
        let now = lines();
        if done(&now) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = lines();
    panic!(
        "the receiver never got {what}; it has {} lines: {:?}",
        now.len(),
        now.last()
    );
}

/// The records in `lines` (export-format events), as (seq, record_hash),
/// in arrival order; checkpoints apart.
pub fn seqs(lines: &[String]) -> (Vec<(i64, String)>, Vec<i64>) {
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    for line in lines {
        let value: Value = serde_json::from_str(line).unwrap();
        match value.get("checkpoint") {
            Some(c) => checkpoints.push(c["seq"].as_i64().unwrap()),
            None => records.push((
                value["seq"].as_i64().unwrap(),
                value["record_hash"].as_str().unwrap().to_string(),
            )),
        }
    }
    (records, checkpoints)
}

/// At-least-once, in order: each record first arrives right after the one
/// before it, and every repeat carries the same `record_hash`. Returns the
/// highest `seq` and the number of repeats.
pub fn assert_in_order_without_gaps(records: &[(i64, String)]) -> (i64, usize) {
    let mut first_seen: std::collections::BTreeMap<i64, String> = Default::default();
    let mut next = 1;
    let mut repeats = 0;
    for (seq, hash) in records {
        match first_seen.get(seq) {
            Some(seen) => {
                assert_eq!(seen, hash, "record {seq} arrived twice with different hashes");
                repeats += 1;
            }
            None => {
                assert_eq!(*seq, next, "record {seq} arrived before record {next}");
                first_seen.insert(*seq, hash.clone());
                next += 1;
            }
        }
    }
    (next - 1, repeats)
}

/// A syslog listener: every octet-counted frame, over plain TCP or TLS.
pub struct SyslogReceiver {
    pub port: u16,
    messages: Arc<Mutex<Vec<String>>>,
    /// Connections accepted, and those still open.
    connections: Arc<Mutex<(usize, usize)>>,
    hang_up: tokio::sync::watch::Sender<u64>,
}

impl SyslogReceiver {
    /// Listens on 127.0.0.1; with `tls`, as `localhost` with that
    /// certificate and key (PEM).
    pub async fn start(tls: Option<(String, String)>) -> SyslogReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages: Arc<Mutex<Vec<String>>> = Arc::default();
        let connections: Arc<Mutex<(usize, usize)>> = Arc::default();
        let (hang_up, hung_up) = tokio::sync::watch::channel(0u64);
        let acceptor = tls.map(|(cert, key)| {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let (kept, counted) = (messages.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                {
                    let mut counted = counted.lock().unwrap();
                    counted.0 += 1;
                    counted.1 += 1;
                }
                let (kept, counted, acceptor, mut hung_up) =
                    (kept.clone(), counted.clone(), acceptor.clone(), hung_up.clone());
                hung_up.mark_unchanged();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                read_frames(stream, kept, &mut hung_up).await;
                            }
                        }
                        None => read_frames(tcp, kept, &mut hung_up).await,
                    }
                    counted.lock().unwrap().1 -= 1;
                });
            }
        });
        SyslogReceiver {
            port,
            messages,
            connections,
            hang_up,
        }
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.lock().unwrap().0
    }

    /// Closes every open connection (a receiver restarting) and waits
    /// until they are closed.
    pub async fn hang_up(&self) {
        self.hang_up.send_modify(|n| *n += 1);
        for _ in 0..200 {
            if self.connections.lock().unwrap().1 == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the syslog connections did not close");
    }
}

/// One `LEN SP MSG` frame (RFC 6587 octet counting); `None` at the end.
async fn read_frame(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<String> {
    let mut length = Vec::new();
    loop {
        let byte = stream.read_u8().await.ok()?;
        if byte == b' ' {
            break;
        }
        assert!(
            byte.is_ascii_digit(),
            "a frame starts with its length in digits, got {byte:#x}"
        );
        length.push(byte);
    }
    let length: usize = String::from_utf8(length).unwrap().parse().unwrap();
    let mut message = vec![0; length];
    stream.read_exact(&mut message).await.unwrap();
    Some(String::from_utf8(message).unwrap())
}

/// Reads frames until the peer closes or the receiver hangs up.
async fn read_frames(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    kept: Arc<Mutex<Vec<String>>>,
    hung_up: &mut tokio::sync::watch::Receiver<u64>,
) {
    loop {
        tokio::select! {
            frame = read_frame(&mut stream) => match frame {
                Some(message) => kept.lock().unwrap().push(message),
                None => return,
            },
            _ = hung_up.changed() => return,
        }
    }
}
