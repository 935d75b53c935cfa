//! RFC 5424 syslog over TCP or TLS, each message octet-counted (RFC 6587
//! §3.4.1), so a message may hold any byte and a receiver never has to
//! guess where one ends. Syslog has no acknowledgment: a batch counts as
//! delivered once it is written and flushed to the connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::event::Event;
use super::settings::{Format, SinkSettings};
use super::transport::{SendError, Transport, encode};
use crate::audit::Outcome;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// One syslog sink and its open connection.
pub struct SyslogSink {
    address: String,
    host: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    format: Format,
    facility: u8,
    hostname: String,
    timeout: Duration,
    connection: Option<Box<dyn Stream>>,
}

impl SyslogSink {
    /// Checks the address and loads the TLS roots; connects on first send.
    pub fn new(settings: &SinkSettings) -> Result<SyslogSink, (String, String)> {
        let bad = |m: &str| (".url".to_string(), m.to_string());
        let (scheme, address) = settings
            .url
            .split_once("://")
            .ok_or_else(|| bad("not tcp:// or tls://"))?;
        let parsed = reqwest::Url::parse(&format!("tcp://{address}")).map_err(|_| bad("not HOST:PORT"))?;
        let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
        // The URL parser keeps the brackets of an IPv6 literal.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tls = match scheme {
            "tls" => Some(Arc::new(
                crate::pg_tls::client_config(settings.ca_file.as_deref()).map_err(|e| {
                    let key = if settings.ca_file.is_some() { ".ca_file" } else { ".url" };
                    (key.to_string(), e)
                })?,
            )),
            _ => None,
        };
        Ok(SyslogSink {
            address: address.trim_end_matches('/').to_string(),
            host,
            tls,
            format: settings.format,
            facility: settings.facility,
            hostname: hostname(),
            timeout: settings.timeout,
            connection: None,
        })
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.address))?;
        let _ = tcp.set_nodelay(true);
        let Some(config) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| format!("{}: not a server name: {e}", self.host))?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {}", self.address, crate::pg_tls::describe(&e)))?;
        Ok(Box::new(stream))
    }

    fn message(&self, event: &Event<'_>) -> String {
        let (severity, msgid) = match event {
            Event::Record(r) => match r.outcome {
                Outcome::Issued => (6, "issued"),
                Outcome::Revoked => (6, "revoked"),
                Outcome::Denied => (5, "denied"),
                Outcome::Error => (4, "error"),
            },
            Event::Checkpoint(_) => (6, "checkpoint"),
        };
        message(
            u16::from(self.facility) * 8 + severity,
            &timestamp(event.time()),
            &self.hostname,
            msgid,
            &encode(self.format, event),
        )
    }
}

/// An RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
/// STRUCTURED-DATA MSG`, without structured data; MSG is the event's JSON
/// (MSG-ANY: no BOM, which JSON parsers would trip over).
fn message(priority: u16, timestamp: &str, hostname: &str, msgid: &str, body: &str) -> String {
    format!(
        "<{priority}>1 {timestamp} {hostname} stint {} {msgid} - {body}",
        std::process::id()
    )
}

/// Octet counting: the length of the message in bytes, a space, the message.
fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// An RFC 3339 time cut to the six fractional digits RFC 5424 allows.
fn timestamp(time: &str) -> String {
    let Some((whole, rest)) = time.split_once('.') else {
        return time.to_string();
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let (fraction, zone) = rest.split_at(digits);
    let fraction: String = fraction.chars().take(6).collect();
    format!("{whole}.{fraction}{zone}")
}

/// This host's name as RFC 5424 allows it (printable ASCII, at most 255),
/// or `-` when it cannot be read.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = name.trim().chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    if name.is_empty() { "-".to_string() } else { name }
}

/// Whether the peer has closed a connection we only ever write to: a
/// receiver sends nothing, so a readable socket means end of stream (or
/// an error). Checked before each batch, so a batch is not written into a
/// connection the receiver already dropped.
async fn closed(connection: &mut Box<dyn Stream>) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(1), connection.read(&mut byte)).await {
        Err(_) => false,
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => false,
    }
}

#[async_trait::async_trait]
impl Transport for SyslogSink {
    async fn send(&mut self, events: &[Event<'_>]) -> Result<(), SendError> {
        let mut frames = Vec::new();
        for event in events {
            frames.extend(frame(&self.message(event)));
        }
        if let Some(connection) = self.connection.as_mut()
            && closed(connection).await
        {
            self.connection = None;
        }
        let timeout = self.timeout;
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => tokio::time::timeout(timeout, self.connect())
                .await
                .map_err(|_| SendError::Unavailable(format!("no connection within {}s", timeout.as_secs())))?
                .map_err(SendError::Unavailable)?,
        };
        let written = tokio::time::timeout(timeout, async {
            connection.write_all(&frames).await?;
            connection.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {
                self.connection = Some(connection);
                Ok(())
            }
            // The connection is dropped: the next batch opens a new one.
            Ok(Err(e)) => Err(SendError::Unavailable(format!("writing to {}: {e}", self.address))),
            Err(_) => Err(SendError::Unavailable(format!(
                "{} did not take the batch within {}s",
                self.address,
                timeout.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_rfc5424_and_octet_counted() {
        let text = message(
            86,
            &timestamp("2026-12-01T10:00:00.123456789Z"),
            "host-1",
            "issued",
            "{\"é\":1}",
        );
        assert!(
            text.starts_with("<86>1 2026-12-01T10:00:00.123456Z host-1 stint "),
            "{text}"
        );
        assert!(text.ends_with(" issued - {\"é\":1}"));
        let framed = frame(&text);
        let expected = format!("{} {text}", text.len());
        assert_eq!(framed, expected.as_bytes());
        assert_eq!(timestamp("2026-12-01T10:00:00Z"), "2026-12-01T10:00:00Z");
        assert_eq!(timestamp("2026-12-01T10:00:00.5+02:00"), "2026-12-01T10:00:00.5+02:00");
    }
}
