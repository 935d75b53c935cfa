//! How a batch reaches a sink, and what its answer means for the position.

use super::event::Event;
use super::settings::{Format, SinkKind, SinkSettings};

/// Why a batch was not delivered. None of them moves the position: the
/// same records go again, in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The sink could not be reached, did not answer within `timeout`, or
    /// answered that it could not take the batch now (5xx, 408, 429):
    /// retried with growing pauses.
    Unavailable(String),
    /// The sink refused the batch in a way a retry will not change (401,
    /// 403, 400 …, or stint's token cannot be read): logged as an error and
    /// retried at the slowest pace, `max_backoff`, until someone fixes it.
    Rejected(String),
    /// The batch is too large for the sink (413): sent again in smaller
    /// batches.
    TooLarge(String),
}

impl SendError {
    /// The metric label of this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            SendError::Unavailable(_) => "unavailable",
            SendError::Rejected(_) => "rejected",
            SendError::TooLarge(_) => "too_large",
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unavailable(why) | SendError::Rejected(why) | SendError::TooLarge(why) => f.write_str(why),
        }
    }
}

/// A sink's connection.
#[async_trait::async_trait]
pub trait Transport: Send {
    /// Delivers `events`, in order; `Ok` only once the sink acknowledged
    /// them (HTTP: a 2xx answer; syslog: written and flushed).
    async fn send(&mut self, events: &[Event<'_>]) -> Result<(), SendError>;
}

/// One event in the sink's format, as JSON text.
pub fn encode(format: Format, event: &Event<'_>) -> String {
    match format {
        Format::Stint => event.export_line(),
        Format::Ocsf => super::ocsf::event(event).to_string(),
    }
}

/// The transport `settings` name. An error is `(key, message)`: a token,
/// CA file or address that cannot be used stops the start with its key.
pub fn open(settings: &SinkSettings) -> Result<Box<dyn Transport>, (String, String)> {
    Ok(match settings.kind {
        SinkKind::Http | SinkKind::SplunkHec => Box::new(super::http::HttpSink::new(settings)?),
        SinkKind::Syslog => Box::new(super::syslog::SyslogSink::new(settings)?),
    })
}
