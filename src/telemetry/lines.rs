//! The log line format: what `tracing-subscriber`'s `Full` (text) and
//! `Json` formats print for an event outside any span, written with less
//! work. Every request logs one line, so its cost is paid per request:
//! the stock formats read the clock into a calendar date field by field,
//! look up the current span (log lines show none), and the JSON one
//! serializes through `serde` a few bytes at a time. Here the date and time
//! down to the second are formatted once per second per thread and the
//! JSON is written directly. The output is the same, byte for byte (tests
//! below compare it with the stock formats).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The line format: text (as `Full`, without ANSI colour) or JSON (as
/// `Json`: `timestamp`, `level`, `fields`, `target`).
pub struct LineFormat {
    /// JSON lines instead of text.
    pub json: bool,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        if self.json {
            writer.write_str("{\"timestamp\":\"")?;
            timestamp(&mut writer)?;
            writer.write_str("\",\"level\":\"")?;
            writer.write_str(meta.level().as_str())?;
            writer.write_str("\",\"fields\":{")?;
            let mut fields = JsonFields {
                out: &mut writer,
                first: true,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
            writer.write_str("},\"target\":")?;
            json_string(&mut writer, meta.target())?;
            writer.write_str("}\n")
        } else {
            timestamp(&mut writer)?;
            write!(writer, " {:>5} ", meta.level().as_str())?;
            writer.write_str(meta.target())?;
            writer.write_str(": ")?;
            ctx.format_fields(writer.by_ref(), event)?;
            writer.write_char('\n')
        }
    }
}

thread_local! {
    /// The last second formatted on this thread: (seconds since the epoch,
    /// `YYYY-MM-DDTHH:MM:SS`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `2026-12-05T04:35:10.123456Z`: UTC, microseconds, as `SystemTime`'s
/// formatter in `tracing-subscriber` writes it.
fn timestamp(out: &mut impl fmt::Write) -> fmt::Result {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            let text = crate::clock::rfc3339(i64::try_from(seconds).unwrap_or(i64::MAX));
            cached.1 = text.trim_end_matches('Z').to_string();
            cached.0 = seconds;
        }
        out.write_str(&cached.1)
    })?;
    write!(out, ".{:06}Z", now.subsec_micros())
}

/// An event's fields as the members of a JSON object, in the order they
/// were recorded, as `tracing-serde` writes them: strings and `Debug`
/// values as JSON strings, 64-bit numbers and booleans as themselves
/// (128-bit numbers go through `record_debug`, as strings).
struct JsonFields<'a, W: fmt::Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonFields<'_, W> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !self.first {
                self.out.write_char(',')?;
            }
            self.first = false;
            json_string(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for JsonFields<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(JsonEscape(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| json_string(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's number text (`1.0`, not `1`); not finite is `null`.
        self.member(field, |out| match serde_json::Number::from_f64(value) {
            Some(number) => write!(out, "{number}"),
            None => out.write_str("null"),
        });
    }
}

/// `text` as a JSON string, quotes included.
fn json_string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    JsonEscape(out).write_str(text)?;
    out.write_char('"')
}

/// Escapes what passes through it as the inside of a JSON string, as
/// serde_json does: `"` and `\`, the short forms `\b \f \n \r \t`, and
/// `\u00XX` for other control characters.
struct JsonEscape<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for JsonEscape<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escaped = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            // `at` and `plain` sit next to ASCII bytes: char boundaries.
            self.0.write_str(text.get(plain..at).unwrap_or_default())?;
            if escaped.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escaped)?;
            }
            plain = at + 1;
        }
        self.0.write_str(text.get(plain..).unwrap_or_default())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a failed step is the test's report
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(bytes)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// The lines logged by `events` under a subscriber with `format`.
    fn lines(json: bool, ours: bool) -> Vec<String> {
        let out = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(out.clone())
            .with_ansi(false);
        let subscriber: Box<dyn Subscriber + Send + Sync> = match (json, ours) {
            (_, true) => Box::new(tracing_subscriber::registry().with(layer.event_format(LineFormat { json }))),
            (true, false) => Box::new(tracing_subscriber::registry().with(layer.json())),
            (false, false) => Box::new(tracing_subscriber::registry().with(layer)),
        };
        tracing::subscriber::with_default(subscriber, events);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    use tracing_subscriber::layer::SubscriberExt as _;

    /// Every kind of field stint logs, and text that needs escaping.
    fn events() {
        let id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        tracing::info!(request_id = %id, method = "POST", route = "/v1/issue/{grant}", status = 200u16, elapsed_ms = 3u64, "request");
        tracing::warn!(request_id = id, error = %"upstream said \"no\"\n\tand\u{1}left", "provider failed");
        tracing::error!(target: "stint::audit", count = -4i64, ok = true, ratio = 0.5f64, whole = 2.0f64, list = ?["a", "b\\c"], "audit write failed; credential withheld");
        tracing::info!("a line with only a message: {} and ünïcödé", 42);
        tracing::info!(big = u128::MAX, small = i128::MIN, nan = f64::NAN, "wide numbers");
    }

    /// Text and JSON lines are the stock formats' lines, byte for byte
    /// after the timestamp.
    #[test]
    fn lines_match_the_stock_formats() {
        // The text line keeps a value's newline, as the stock format does.
        for (json, count) in [(false, 6), (true, 5)] {
            let (ours, stock) = (lines(json, true), lines(json, false));
            assert_eq!(ours.len(), count, "{ours:?}");
            assert_eq!(ours.len(), stock.len());
            let stamp = "2026-12-05T04:35:10.123456Z".len();
            for (ours, stock) in ours.iter().zip(&stock) {
                // The timestamp starts a text line, or is JSON's first member.
                let without_time = |line: &str| match line.strip_prefix("{\"timestamp\":\"") {
                    Some(rest) => rest[stamp..].to_string(),
                    None if line.starts_with("20") => line[stamp..].to_string(),
                    None => line.to_string(),
                };
                assert_eq!(without_time(ours), without_time(stock), "json: {json}");
                if json {
                    serde_json::from_str::<serde_json::Value>(ours).expect("a JSON line");
                }
            }
        }
    }

    #[test]
    fn the_timestamp_is_utc_with_microseconds() {
        let mut text = String::new();
        timestamp(&mut text).unwrap();
        timestamp(&mut String::new()).unwrap(); // the cached second, used again
        assert_eq!(text.len(), "2026-12-05T04:35:10.123456Z".len(), "{text}");
        let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!((now - parsed).whole_seconds().abs() <= 2, "{text} is now");
    }

    #[test]
    fn json_strings_escape_as_serde_json_does() {
        let text = "q\"b\\n\nr\rt\tb\u{8}f\u{c}c\u{1f}\u{7f}é";
        let mut ours = String::new();
        json_string(&mut ours, text).unwrap();
        assert_eq!(ours, serde_json::to_string(text).unwrap());
    }
}
