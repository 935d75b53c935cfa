//! Logs and traces: one `tracing` subscriber writes log lines (text or JSON)
//! and, when `telemetry.otlp` is configured, exports spans over OTLP/HTTP.
//!
//! With OTLP export on, every request runs in a `request` span, with child
//! spans for verification, the provider and the audit append. Span fields
//! are chosen like log fields: grant, kind, outcome, reason, issuer; never a
//! token, claim value or credential. Log lines show no span (each line about
//! a request carries its `request_id`), so without an exporter no span is
//! made at all: see [`exporting`].

mod lines;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Instrument;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::metrics::Metrics;

/// `telemetry.otlp`: where and how much to export.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The OTLP/HTTP traces URL (`.../v1/traces`); `None` takes the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// Share of new traces kept; a caller's `traceparent` decision is followed.
    pub sample_ratio: f64,
    /// Per-export timeout.
    pub timeout: Duration,
    /// `service.name` of the resource.
    pub service_name: String,
    /// More resource attributes (`deployment.environment`, ...).
    pub resource: BTreeMap<String, String>,
}

impl Default for OtlpSettings {
    fn default() -> Self {
        OtlpSettings {
            endpoint: None,
            sample_ratio: 1.0,
            timeout: Duration::from_secs(10),
            service_name: "stint".into(),
            resource: BTreeMap::new(),
        }
    }
}

/// Turns a configured endpoint into the traces URL: a bare base URL (as in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`) gets `/v1/traces`; a URL with a path is
/// used as written (as in `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("`{endpoint}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{endpoint}` must be an http:// or https:// URL (OTLP over HTTP)"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("`{endpoint}` has no host"));
    }
    if url.path() == "/" || url.path().is_empty() {
        Ok(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
    } else {
        Ok(endpoint.to_string())
    }
}

/// Set once an OTLP exporter is installed.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans go anywhere. Only the OTLP exporter reads them; without
/// it a span would still cost a registry entry, and an enter and an exit
/// on every poll of the future it wraps, for nothing (measured with
/// `cargo bench --bench load`, `STINT_BENCH_ONLY=logging`: see
/// docs/performance.md).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// `tracing::info_span!(...)` while spans are exported ([`exporting`]),
/// else `Span::none()`, which records nothing and costs nothing to enter.
#[macro_export]
macro_rules! exported_span {
    ($($arg:tt)*) => {
        if $crate::telemetry::exporting() {
            ::tracing::info_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The installed subscriber; [`Telemetry::shutdown`] flushes spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: `STINT_LOG` filter (default `info`),
    /// log lines on stderr, and the OTLP exporter when `otlp` is given.
    pub fn init(json: bool, otlp: Option<&OtlpSettings>) -> Result<Telemetry, String> {
        let provider = otlp.map(tracer_provider).transpose()?;
        let filter = tracing_subscriber::EnvFilter::try_from_env("STINT_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Colour only for a person at a terminal: escape codes in a file or
        // a log pipeline are noise, and cost bytes per line.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi);
        // Spans exist for tracing; log lines show none (the access line and
        // every line about a request carry its `request_id`), so the log
        // layer never sees a span and never formats a span's fields.
        let no_spans = tracing_subscriber::filter::filter_fn(|meta| !meta.is_span());
        let logs = if ansi && !json {
            // A person at a terminal gets the stock text format, in colour.
            logs.with_filter(no_spans).boxed()
        } else {
            // Anything else (a file, a pipe, a collector) gets the same
            // lines from a leaner formatter: see `lines`.
            logs.event_format(lines::LineFormat { json })
                .with_filter(no_spans)
                .boxed()
        };
        // Only stint's own spans are exported. The exporter's HTTP client
        // and the SDK log through `tracing` too; exporting those would feed
        // the exporter its own work. The SDK's warnings (export failed,
        // spans dropped) still reach the log lines.
        let traces = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("stint"))
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                    meta.target().starts_with("stint")
                }))
        });
        tracing_subscriber::registry()
            .with(filter)
            .with(library_pins())
            .with(logs)
            .with(traces)
            .try_init()
            .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
        if provider.is_some() {
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            EXPORTING.store(true, Ordering::Relaxed);
        }
        Ok(Telemetry { provider })
    }

    /// Exports the spans still queued; waits at most the export timeout.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "trace export did not finish at shutdown");
        }
    }
}

/// Libraries that log SQL statements, HTTP headers or signing input at
/// debug or trace: `CREATE ROLE ... PASSWORD '...'` (tokio-postgres), an
/// `Authorization` header (hyper, h2, reqwest), an AWS canonical request
/// (aws-sigv4), TLS secrets (rustls), OTLP export headers. They never log
/// below info, whatever `STINT_LOG` says.
pub const PINNED_TO_INFO: &[&str] = &[
    "tokio_postgres",
    "postgres_protocol",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "rustls",
    "tokio_rustls",
    "aws_smithy",
    "aws_sigv4",
    "aws_runtime",
    "aws_config",
    "aws_sdk",
    "sqlx",
    "opentelemetry",
    "tower",
    "axum_server",
];

/// A second, fixed filter applied beside `STINT_LOG`'s: an event passes only
/// when both let it. `STINT_LOG=tokio_postgres=trace` (or any more precise
/// directive) cannot undo it, which a directive added to the same
/// `EnvFilter` could not promise.
fn library_pins() -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::LevelFilter;
    PINNED_TO_INFO.iter().fold(
        tracing_subscriber::filter::Targets::new().with_default(LevelFilter::TRACE),
        |targets, target| targets.with_target(*target, LevelFilter::INFO),
    )
}

fn tracer_provider(settings: &OtlpSettings) -> Result<SdkTracerProvider, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(settings.timeout);
    if let Some(endpoint) = &settings.endpoint {
        exporter = exporter.with_endpoint(endpoint.clone());
    }
    let exporter = exporter
        .build()
        .map_err(|e| format!("telemetry.otlp: cannot build the exporter: {e}"))?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes(
            settings
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Continues the caller's trace when the request carries a W3C
/// `traceparent` (a no-op unless OTLP export is on).
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if span.is_none() {
        return;
    }
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&opentelemetry_http::HeaderExtractor(headers)));
    // Fails only when the span is disabled; then there is nothing to continue.
    let _ = span.set_parent(parent);
}

/// Marks a span failed (OTLP status ERROR); the reason is in its fields.
pub fn mark_error(span: &tracing::Span) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    span.set_status(opentelemetry::trace::Status::error(""));
}

/// Runs one call to an upstream service (AWS, a target database) in a client
/// span and counts it in the upstream metrics.
pub async fn upstream<T, E>(
    metrics: &Metrics,
    service: &'static str,
    operation: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = crate::exported_span!(
        "upstream",
        otel.name = operation,
        otel.kind = "client",
        rpc.service = service,
        rpc.method = operation,
    );
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    metrics.upstream(service, operation, result.is_ok(), started.elapsed().as_secs_f64());
    if result.is_err() {
        mark_error(&span);
    }
    result
}
