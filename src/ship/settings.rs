//! What one `audit.ship.NAME` entry says, once the config has checked it.
//! The config builds these; the shipper never sees raw YAML.

use std::path::PathBuf;
use std::time::Duration;

/// The protocol a sink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// A generic webhook: one POST per batch, one JSON event per line.
    Http,
    /// Splunk's HTTP Event Collector (`/services/collector/event`).
    SplunkHec,
    /// RFC 5424 syslog over TCP or TLS, octet-counted (RFC 6587).
    Syslog,
}

impl SinkKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Http => "http",
            SinkKind::SplunkHec => "splunk_hec",
            SinkKind::Syslog => "syslog",
        }
    }
}

/// How each event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The record exactly as `stint audit export` writes it, and a
    /// checkpoint as its `{"checkpoint": …}` line.
    Stint,
    /// OCSF 1.3 events (Authentication, class 3002; checkpoints as Base
    /// Events), the export line kept in `raw_data`.
    Ocsf,
}

/// Where a sink's token comes from: never the config file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file (trailing newlines removed), read again before each batch so
    /// a rotated secret is picked up without a restart.
    File(PathBuf),
    /// An environment variable of the process.
    Env(String),
}

impl Secret {
    /// The value now; an error says where it was looked for.
    pub fn read(&self) -> Result<String, String> {
        let value = match self {
            Secret::File(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
            }
            Secret::Env(name) => {
                std::env::var(name).map_err(|_| format!("the environment variable {name} is not set"))?
            }
        };
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        if value.trim().is_empty() {
            return Err(match self {
                Secret::File(path) => format!("{} is empty", path.display()),
                Secret::Env(name) => format!("the environment variable {name} is empty"),
            });
        }
        Ok(value)
    }

    /// The config key this came from (`token_file` or `token_env`).
    pub fn key(&self) -> &'static str {
        match self {
            Secret::File(_) => "token_file",
            Secret::Env(_) => "token_env",
        }
    }
}

/// One sink, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSettings {
    /// The `NAME` of `audit.ship.NAME`; also the key of its position.
    pub name: String,
    /// Its protocol.
    pub kind: SinkKind,
    /// `https://…` (or `http://` to a loopback host), or for syslog
    /// `tcp://HOST:PORT` or `tls://HOST:PORT`.
    pub url: String,
    /// The token sent with each batch (http, splunk_hec).
    pub token: Option<Secret>,
    /// The header the token goes in (http; default `Authorization`).
    pub header: String,
    /// A word put before the token in that header, e.g. `Bearer` (http).
    pub scheme: Option<String>,
    /// PEM roots to trust instead of the system's (https, tls://).
    pub ca_file: Option<PathBuf>,
    /// How events are written.
    pub format: Format,
    /// Records per batch (checkpoints ride along).
    pub batch_size: u32,
    /// Longest one delivery may take (connect, send, answer).
    pub timeout: Duration,
    /// Longest wait between retries; a refusal that will not change
    /// (401, 403, 400 …) is retried at this pace.
    pub max_backoff: Duration,
    /// Splunk `index` of each event; the token's default when `None`.
    pub index: Option<String>,
    /// Splunk `sourcetype`; `stint:audit` or `stint:ocsf` when `None`.
    pub sourcetype: Option<String>,
    /// Syslog facility number (RFC 5424): 10 (`authpriv`) by default.
    pub facility: u8,
    /// Whether `stint serve` ships this sink (else only `stint audit ship`).
    pub in_broker: bool,
}

/// Syslog facility names stint accepts, with their RFC 5424 numbers.
pub const FACILITIES: &[(&str, u8)] = &[
    ("auth", 4),
    ("authpriv", 10),
    ("audit", 13),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];
