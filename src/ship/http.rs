//! The HTTP sinks: a generic JSON webhook (one event per line) and Splunk's
//! HTTP Event Collector. A batch counts as delivered only on a 2xx answer,
//! and for Splunk only when the body also says `"code": 0`.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;

use super::event::Event;
use super::settings::{Format, Secret, SinkKind, SinkSettings};
use super::transport::{SendError, Transport, encode};

/// One HTTP sink.
pub struct HttpSink {
    client: reqwest::Client,
    url: String,
    kind: SinkKind,
    format: Format,
    token: Option<Secret>,
    header: HeaderName,
    scheme: Option<String>,
    index: Option<String>,
    sourcetype: String,
    timeout: std::time::Duration,
}

impl HttpSink {
    /// Builds the client (TLS roots from `ca_file` or the system's). The
    /// token is read once here, so a missing one stops the start.
    pub fn new(settings: &SinkSettings) -> Result<HttpSink, (String, String)> {
        if let Some(token) = &settings.token {
            token.read().map_err(|e| (format!(".{}", token.key()), e))?;
        }
        let mut builder = reqwest::Client::builder()
            // A redirect would carry the token wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(std::time::Duration::from_secs(10)))
            .user_agent(concat!("stint/", env!("CARGO_PKG_VERSION")));
        if settings.url.starts_with("https://") {
            let tls = crate::pg_tls::client_config(settings.ca_file.as_deref()).map_err(|e| {
                let key = if settings.ca_file.is_some() { ".ca_file" } else { ".url" };
                (key.to_string(), e)
            })?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        let client = builder
            .build()
            .map_err(|e| (".url".to_string(), format!("cannot build the HTTP client: {e}")))?;
        let header = HeaderName::from_bytes(settings.header.as_bytes())
            .map_err(|_| (".header".to_string(), "not an HTTP header name".to_string()))?;
        let url = match settings.kind {
            SinkKind::SplunkHec => hec_url(&settings.url),
            _ => settings.url.clone(),
        };
        let sourcetype = settings.sourcetype.clone().unwrap_or_else(|| {
            match settings.format {
                Format::Stint => "stint:audit",
                Format::Ocsf => "stint:ocsf",
            }
            .to_string()
        });
        Ok(HttpSink {
            client,
            url,
            kind: settings.kind,
            format: settings.format,
            token: settings.token.clone(),
            header,
            scheme: settings.scheme.clone(),
            index: settings.index.clone(),
            sourcetype,
            timeout: settings.timeout,
        })
    }

    fn body(&self, events: &[Event<'_>]) -> String {
        let mut body = String::new();
        for event in events {
            let encoded = encode(self.format, event);
            match self.kind {
                SinkKind::SplunkHec => body.push_str(&self.hec_event(event, &encoded)),
                _ => body.push_str(&encoded),
            }
            body.push('\n');
        }
        body
    }

    /// One HEC event: `event` is the encoded event as it is (no re-encoding,
    /// so the `stint` format stays byte for byte the export line).
    fn hec_event(&self, event: &Event<'_>, encoded: &str) -> String {
        let time = super::ocsf::epoch_millis(event.time()).unwrap_or(0);
        let mut head = serde_json::Map::new();
        head.insert(
            "time".into(),
            serde_json::Number::from_f64(time as f64 / 1000.0).map_or(Value::Null, Value::Number),
        );
        head.insert("source".into(), Value::from("stint"));
        head.insert("sourcetype".into(), Value::from(self.sourcetype.as_str()));
        if let Some(index) = &self.index {
            head.insert("index".into(), Value::from(index.as_str()));
        }
        let head = Value::Object(head).to_string();
        // `{...}` without its closing brace, then the event.
        format!("{},\"event\":{encoded}}}", head.trim_end_matches('}'))
    }

    fn authorization(&self) -> Result<Option<HeaderValue>, SendError> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        let token = token
            .read()
            .map_err(|e| SendError::Rejected(format!("{}: {e}", token.key())))?;
        let text = match (self.kind, &self.scheme) {
            (SinkKind::SplunkHec, _) => format!("Splunk {token}"),
            (_, Some(scheme)) => format!("{scheme} {token}"),
            (_, None) => token,
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| SendError::Rejected("the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// A HEC URL without a path gets the event endpoint.
fn hec_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.path(), "" | "/") => {
            format!("{}/services/collector/event", url.trim_end_matches('/'))
        }
        _ => url.to_string(),
    }
}

/// The start of an answer's body, for the log: enough to see why, never
/// a page of HTML.
fn excerpt(body: &str) -> String {
    let flat: String = body.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let flat = flat.trim();
    match flat.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", flat.get(..cut).unwrap_or(flat)),
        None => flat.to_string(),
    }
}

#[async_trait::async_trait]
impl Transport for HttpSink {
    async fn send(&mut self, events: &[Event<'_>]) -> Result<(), SendError> {
        let content_type = match self.kind {
            SinkKind::SplunkHec => "application/json",
            _ => "application/x-ndjson",
        };
        let mut request = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, content_type)
            .body(self.body(events));
        if let Some(value) = self.authorization()? {
            request = request.header(self.header.clone(), value);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                SendError::Unavailable(format!("no answer within {}s", self.timeout.as_secs()))
            } else {
                SendError::Unavailable(crate::pg_tls::describe(&e))
            }
        })?;
        let status = response.status();
        let body = match response.text().await {
            Ok(body) => body,
            Err(e) if e.is_timeout() => {
                return Err(SendError::Unavailable(format!(
                    "the answer did not finish within {}s",
                    self.timeout.as_secs()
                )));
            }
            Err(e) => return Err(SendError::Unavailable(crate::pg_tls::describe(&e))),
        };
        let said = |what: &str| format!("{what} {status}: {}", excerpt(&body));
        if status.is_success() {
            if self.kind == SinkKind::SplunkHec {
                // HEC answers {"text":"Success","code":0}; anything else did not index.
                let code = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("code").and_then(Value::as_i64));
                if code != Some(0) {
                    return Err(SendError::Unavailable(said("Splunk HEC answered")));
                }
            }
            return Ok(());
        }
        Err(match status {
            StatusCode::PAYLOAD_TOO_LARGE => SendError::TooLarge(said("the sink answered")),
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
                SendError::Unavailable(said("the sink answered"))
            }
            s if s.is_server_error() => SendError::Unavailable(said("the sink answered")),
            _ => SendError::Rejected(said("the sink refused the batch with")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hec_url_without_a_path_gets_the_event_endpoint() {
        assert_eq!(
            hec_url("https://splunk:8088"),
            "https://splunk:8088/services/collector/event"
        );
        assert_eq!(
            hec_url("https://splunk:8088/"),
            "https://splunk:8088/services/collector/event"
        );
        assert_eq!(
            hec_url("https://splunk:8088/services/collector"),
            "https://splunk:8088/services/collector"
        );
    }
}
