//! `audit.ship.NAME`: the SIEM sinks the log is shipped to. Each key is
//! checked here, so a typo or a token written into the file stops the start
//! with the key named, never a shipper that quietly sends nothing.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawShipSink;
use super::{FieldError, check_name, check_url, duration_at, field};
use crate::ship::{FACILITIES, Format, Secret, SinkKind, SinkSettings};

/// Largest `batch_size`: a batch is one request body (or one write), held
/// in memory while it is sent.
const MAX_BATCH: u32 = 10_000;

/// One sink, checked.
pub(super) fn sink_settings(
    name: &str,
    raw: RawShipSink,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<SinkSettings, FieldError> {
    check_name(name)?;
    let kind = match raw.sink.as_str() {
        "http" => SinkKind::Http,
        "splunk_hec" => SinkKind::SplunkHec,
        "syslog" => SinkKind::Syslog,
        other => {
            return Err(field(
                ".sink",
                format!("`{other}` is unknown: use http, splunk_hec or syslog"),
            ));
        }
    };
    let tls = match kind {
        SinkKind::Syslog => syslog_url(&raw.url)?,
        _ => {
            check_url(&raw.url).map_err(|m| field(".url", m))?;
            raw.url.starts_with("https://")
        }
    };
    if raw.ca_file.is_some() && !tls {
        return Err(field(
            ".ca_file",
            "only with an https:// url (or tls:// for syslog): nothing is verified over plain TCP",
        ));
    }
    let token = match (&raw.token_file, &raw.token_env) {
        (Some(_), Some(_)) => return Err(field("", "set only one of token_file and token_env")),
        (Some(file), None) => Some(Secret::File(resolve(file))),
        (None, Some(var)) if var.trim().is_empty() => return Err(field(".token_env", "must not be empty")),
        (None, Some(var)) => Some(Secret::Env(var.clone())),
        (None, None) => None,
    };
    match kind {
        SinkKind::SplunkHec if token.is_none() => {
            return Err(field(
                "",
                "a Splunk HEC token is needed: set token_file or token_env (never the token itself)",
            ));
        }
        SinkKind::Syslog if token.is_some() => {
            return Err(field(
                "",
                "syslog sends no token: remove token_file/token_env (use tls:// with ca_file to check the server)",
            ));
        }
        _ => {}
    }
    only_for(kind, SinkKind::Http, ".header", raw.header.is_some())?;
    only_for(kind, SinkKind::Http, ".scheme", raw.scheme.is_some())?;
    only_for(kind, SinkKind::SplunkHec, ".index", raw.index.is_some())?;
    only_for(kind, SinkKind::SplunkHec, ".sourcetype", raw.sourcetype.is_some())?;
    only_for(kind, SinkKind::Syslog, ".facility", raw.facility.is_some())?;
    let header = raw.header.unwrap_or_else(|| "Authorization".to_string());
    if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return Err(field(".header", format!("`{header}` is not an HTTP header name")));
    }
    if let Some(scheme) = &raw.scheme {
        if token.is_none() {
            return Err(field(
                ".scheme",
                "needs token_file or token_env: it is the word before the token",
            ));
        }
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(field(
                ".scheme",
                format!("`{scheme}` is not an auth scheme such as Bearer"),
            ));
        }
    }
    let format = match raw.format.as_deref() {
        None | Some("stint") => Format::Stint,
        Some("ocsf") => Format::Ocsf,
        Some(other) => return Err(field(".format", format!("`{other}` is unknown: use stint or ocsf"))),
    };
    let batch_size = raw.batch_size.unwrap_or(100);
    if !(1..=MAX_BATCH).contains(&batch_size) {
        return Err(field(".batch_size", format!("must be 1-{MAX_BATCH}")));
    }
    let timeout = bounded(".timeout", raw.timeout.as_deref(), Duration::from_secs(10), 300)?;
    let max_backoff = bounded(
        ".max_backoff",
        raw.max_backoff.as_deref(),
        Duration::from_secs(60),
        3600,
    )?;
    let facility = match raw.facility.as_deref() {
        None => 10,
        Some(text) => FACILITIES
            .iter()
            .find(|(n, _)| *n == text)
            .map(|(_, code)| *code)
            .ok_or_else(|| {
                let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
                field(
                    ".facility",
                    format!("`{text}` is unknown: use one of {}", names.join(", ")),
                )
            })?,
    };
    for (key, value) in [(".index", &raw.index), (".sourcetype", &raw.sourcetype)] {
        if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
            return Err(field(key, "must not be empty"));
        }
    }
    Ok(SinkSettings {
        name: name.to_string(),
        kind,
        url: raw.url,
        token,
        header,
        scheme: raw.scheme,
        ca_file: raw.ca_file.as_deref().map(resolve),
        format,
        batch_size,
        timeout,
        max_backoff,
        index: raw.index,
        sourcetype: raw.sourcetype,
        facility,
        in_broker: raw.in_broker.unwrap_or(true),
    })
}

/// `tcp://HOST:PORT` (false) or `tls://HOST:PORT` (true).
fn syslog_url(url: &str) -> Result<bool, FieldError> {
    let refuse = || {
        field(
            ".url",
            format!("`{url}` must be tcp://HOST:PORT or tls://HOST:PORT (RFC 5424 syslog over TCP, octet-counted)"),
        )
    };
    let (tls, rest) = match url.split_once("://") {
        Some(("tcp", rest)) => (false, rest),
        Some(("tls", rest)) => (true, rest),
        _ => return Err(refuse()),
    };
    let parsed = reqwest::Url::parse(&format!("tcp://{rest}")).map_err(|_| refuse())?;
    let clean = parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.host_str().is_some_and(|h| !h.is_empty())
        && parsed.port().is_some()
        && matches!(parsed.path(), "" | "/")
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if clean { Ok(tls) } else { Err(refuse()) }
}

fn only_for(kind: SinkKind, wanted: SinkKind, key: &str, given: bool) -> Result<(), FieldError> {
    if given && kind != wanted {
        return Err(field(
            key,
            format!("only for sink: {} (this sink is {})", wanted.as_str(), kind.as_str()),
        ));
    }
    Ok(())
}

/// A duration of at least 1s and at most `max_secs`.
fn bounded(key: &str, text: Option<&str>, default: Duration, max_secs: u64) -> Result<Duration, FieldError> {
    let value = match text {
        Some(text) => duration_at(key, text)?,
        None => default,
    };
    if value < Duration::from_secs(1) || value > Duration::from_secs(max_secs) {
        return Err(field(
            key,
            format!(
                "must be between 1s and {}",
                crate::duration::format(Duration::from_secs(max_secs))
            ),
        ));
    }
    Ok(value)
}
