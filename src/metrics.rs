//! Prometheus metrics, served on the admin listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuanceLabels {
    grant: String,
    outcome: &'static str,
    reason: &'static str,
}

// Labels on per-request paths hold fixed names (a route's registered path,
// not the caller's): no allocation per observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    service: &'static str,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    service: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkFailureLabels {
    sink: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

/// The broker's metrics.
pub struct Metrics {
    registry: Registry,
    issuances: Family<IssuanceLabels, Counter>,
    requests: Family<RequestLabels, Histogram>,
    jwks_fetches: Family<IssuerLabels, Gauge>,
    config_reloads: Family<OutcomeLabels, Counter>,
    config_loaded: Gauge,
    lease_revocations: Family<OutcomeLabels, Counter>,
    leases_failing: Gauge,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_errors: Family<OperationLabels, Counter>,
    upstream_latency: Family<OperationLabels, Histogram>,
    cache_requests: Family<CacheLabels, Counter>,
    audit_appends: Family<OutcomeLabels, Counter>,
    audit_append_failures: Counter,
    audit_latency: Histogram,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    ship_lag: Family<SinkLabels, Gauge>,
    ship_failures: Family<SinkFailureLabels, Counter>,
    ship_records: Family<SinkLabels, Counter>,
    ship_checkpoints: Family<SinkLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("stint");
        let issuances = Family::<IssuanceLabels, Counter>::default();
        registry.register(
            "issuances",
            "Issue requests by grant, outcome (issued, denied, error) and reason code",
            issuances.clone(),
        );
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            requests.clone(),
        );
        let jwks_fetches = Family::<IssuerLabels, Gauge>::default();
        registry.register(
            "jwks_fetch_attempts",
            "Discovery + JWKS fetch attempts per issuer since start",
            jwks_fetches.clone(),
        );
        let config_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP or file watch) by outcome: success, or failure (the old config keeps serving)",
            config_reloads.clone(),
        );
        let config_loaded = Gauge::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded (start or last successful reload), Unix seconds",
            config_loaded.clone(),
        );
        config_loaded.set(crate::clock::now());
        let lease_revocations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "lease_revocations",
            "Attempts to drop the database role of a lease, by outcome (success, failure)",
            lease_revocations.clone(),
        );
        let leases_failing = Gauge::default();
        registry.register(
            "leases_failing",
            "Active leases whose revocation failed 3 times or more (stint leases list --failing)",
            leases_failing.clone(),
        );
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Calls stint made to AWS and target databases, by service, operation and outcome (ok, error)",
            upstream_requests.clone(),
        );
        let upstream_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failed calls to AWS and target databases, by service and operation",
            upstream_errors.clone(),
        );
        let upstream_latency =
            Family::<OperationLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "upstream_request_duration_seconds",
            "Latency of calls to AWS and target databases",
            upstream_latency.clone(),
        );
        let cache_requests = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_requests",
            "Credential cache lookups by cache (sts, secrets) and result: hit, miss (this request fetched), coalesced (waited for another request's fetch)",
            cache_requests.clone(),
        );
        let audit_appends = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "audit_appends",
            "Audit record appends by outcome (success, failure)",
            audit_appends.clone(),
        );
        let audit_append_failures = Counter::default();
        registry.register(
            "audit_append_failures",
            "Audit appends the store refused or failed: each withheld a credential or an answer",
            audit_append_failures.clone(),
        );
        let audit_latency = latency_histogram();
        registry.register(
            "audit_append_duration_seconds",
            "Time from queuing an audit record to its durable commit",
            audit_latency.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Open connections by listener (public, admin)",
            connections_open.clone(),
        );
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because the listener had limits.max_connections open",
            connections_refused.clone(),
        );
        let ship_lag = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "audit_ship_lag_records",
            "Records in the audit store that a sink (audit.ship) has not acknowledged yet",
            ship_lag.clone(),
        );
        let ship_failures = Family::<SinkFailureLabels, Counter>::default();
        registry.register(
            "audit_ship_failures",
            "Failed shipping rounds by sink and reason: unavailable (down, timeout, 5xx), rejected (4xx such as 401), too_large (413), chain (a record does not continue the chain), store",
            ship_failures.clone(),
        );
        let ship_records = Family::<SinkLabels, Counter>::default();
        registry.register(
            "audit_ship_records",
            "Audit records a sink acknowledged (a batch sent again after a restart counts again)",
            ship_records.clone(),
        );
        let ship_checkpoints = Family::<SinkLabels, Counter>::default();
        registry.register(
            "audit_ship_checkpoints",
            "Signed checkpoints a sink acknowledged",
            ship_checkpoints.clone(),
        );
        Metrics {
            ship_lag,
            ship_failures,
            ship_records,
            ship_checkpoints,
            registry,
            issuances,
            requests,
            jwks_fetches,
            config_reloads,
            config_loaded,
            lease_revocations,
            leases_failing,
            upstream_requests,
            upstream_errors,
            upstream_latency,
            cache_requests,
            audit_appends,
            audit_append_failures,
            audit_latency,
            connections_open,
            connections_refused,
        }
    }

    /// Counts one issue request. Unknown grant names are folded into one
    /// label value so that callers cannot grow the label set without bound.
    pub fn issuance(&self, grant: Option<&str>, outcome: &'static str, reason: &'static str) {
        self.issuances
            .get_or_create(&IssuanceLabels {
                grant: grant.unwrap_or("(unknown)").to_string(),
                outcome,
                reason,
            })
            .inc();
    }

    /// Records one HTTP request's latency.
    pub fn request(&self, route: &'static str, method: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { route, method, status })
            .observe(seconds);
    }

    /// Sets the JWKS fetch count of an issuer.
    pub fn jwks_fetches(&self, issuer: &str, count: u64) {
        self.jwks_fetches
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_string(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts a config reload; a success also stamps the load time.
    pub fn config_reload(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.config_reloads.get_or_create(&OutcomeLabels { outcome }).inc();
        if success {
            self.config_loaded.set(crate::clock::now());
        }
    }

    /// Counts one attempt to drop a lease's role.
    pub fn lease_revocation(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.lease_revocations.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Sets how many leases keep failing to be revoked.
    pub fn leases_failing(&self, count: usize) {
        self.leases_failing.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Records one call to an upstream (`aws-sts`, `aws-secretsmanager`, `postgres`).
    pub fn upstream(&self, service: &'static str, operation: &'static str, ok: bool, seconds: f64) {
        let outcome = if ok { "ok" } else { "error" };
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                service,
                operation,
                outcome,
            })
            .inc();
        let labels = OperationLabels { service, operation };
        if !ok {
            self.upstream_errors.get_or_create(&labels).inc();
        }
        self.upstream_latency.get_or_create(&labels).observe(seconds);
    }

    /// Counts one cache lookup: `hit`, `miss` or `coalesced`.
    pub fn cache(&self, cache: &'static str, result: &'static str) {
        self.cache_requests.get_or_create(&CacheLabels { cache, result }).inc();
    }

    /// Records one audit append.
    pub fn audit_append(&self, ok: bool, seconds: f64) {
        let outcome = if ok { "success" } else { "failure" };
        self.audit_appends.get_or_create(&OutcomeLabels { outcome }).inc();
        if ok {
            self.audit_latency.observe(seconds);
        } else {
            self.audit_append_failures.inc();
        }
    }

    /// A connection on `listener` opened (`true`) or closed (`false`).
    pub fn connection(&self, listener: &'static str, open: bool) {
        let gauge = self.connections_open.get_or_create(&ListenerLabels { listener });
        if open {
            gauge.inc();
        } else {
            gauge.dec();
        }
    }

    /// A connection on `listener` closed at once: the listener was full.
    pub fn connection_refused(&self, listener: &'static str) {
        self.connections_refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// Sets how many records `sink` has not acknowledged yet.
    pub fn ship_lag(&self, sink: &str, records: i64) {
        self.ship_lag
            .get_or_create(&SinkLabels { sink: sink.to_string() })
            .set(records.max(0));
    }

    /// Counts one failed shipping round of `sink`.
    pub fn ship_failure(&self, sink: &str, reason: &'static str) {
        self.ship_failures
            .get_or_create(&SinkFailureLabels {
                sink: sink.to_string(),
                reason,
            })
            .inc();
    }

    /// Counts what `sink` acknowledged in one batch.
    pub fn ship_delivered(&self, sink: &str, records: u64, checkpoints: u64) {
        let labels = SinkLabels { sink: sink.to_string() };
        self.ship_records.get_or_create(&labels).inc_by(records);
        self.ship_checkpoints.get_or_create(&labels).inc_by(checkpoints);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
