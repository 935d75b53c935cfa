//! Configuration: the YAML file (plus `STINT_*` environment overrides) is
//! parsed once at start-up into a validated [`Config`]. Every error names the
//! file, the key and what to do.

pub mod console;
pub mod github;
mod grants;
mod lint;
mod locate;
mod raw;
mod ship;
pub use console::{ConsoleSettings, SignIn};
pub use lint::{LintSettings, Suppression, Thresholds};
pub use locate::{Location, Locations};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::duration;
use crate::identity::{IssuerConfig, KeyCachePolicy, Platform, asymmetric_alg};
use crate::keys::SigningAlgorithm;
use crate::policy::Policy;
use crate::provider::aws::AwsSettings;

use raw::{RawAws, RawConfig, RawIssuer};

/// Default public listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8420";
/// Default admin listener (health, readiness, metrics).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9420";
/// No credential of any kind may be asked to live longer than this.
pub const MAX_GRANT_TTL: Duration = Duration::from_secs(24 * 3600);

/// A config error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {key}: {message}")]
pub struct ConfigError {
    /// The file (or `environment`) the bad value came from.
    pub source_name: String,
    /// Dotted path of the key, e.g. `grants.deploy.allow[0].issuer`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Audit settings.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Store URL, e.g. `sqlite:///var/lib/stint/audit.db`.
    pub store: String,
    /// HMAC key for token id hashes, record MACs and (derived) checkpoint signatures.
    pub key_file: PathBuf,
    /// Sign a checkpoint every this many records.
    pub checkpoint_every: u64,
    /// ...and at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// Concurrent appends share commits (default true).
    pub group_commit: bool,
    /// Longest one PostgreSQL operation may take before its connection is reopened.
    pub timeout: Duration,
    /// Also write every record as a JSON line here: `stdout` or `file:PATH`.
    pub mirror: Option<String>,
    /// `audit.ship`: SIEM sinks the log is shipped to, by name.
    pub ship: Vec<crate::ship::SinkSettings>,
}

/// Settings of the key that signs stint-issued tokens.
#[derive(Debug, Clone)]
pub struct SigningSettings {
    /// `iss` of issued tokens; default `http://<listen>`.
    pub issuer: Option<String>,
    /// PKCS#8 PEM private key; created when missing.
    pub key_file: PathBuf,
    /// EdDSA (default) or ES256.
    pub algorithm: SigningAlgorithm,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from, for messages.
    pub source_name: String,
    /// Public API listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Audit log.
    pub audit: AuditSettings,
    /// Token signing.
    pub signing: SigningSettings,
    /// Trusted issuers.
    pub issuers: Vec<IssuerConfig>,
    /// Grants and their rules.
    pub policy: Policy,
    /// JWKS cache behaviour.
    pub key_cache: KeyCachePolicy,
    /// AWS client settings (used when an `aws` or `secrets` grant exists).
    pub aws: AwsSettings,
    /// Load limits.
    pub limits: LimitSettings,
    /// TLS on the public listener; plain HTTP when `None`.
    pub tls: Option<TlsSettings>,
    /// `lint:`: thresholds and suppressions of `stint policy lint`.
    pub lint: LintSettings,
    /// `reload.watch`: poll the file this often and reload on change.
    pub reload_watch: Option<Duration>,
    /// `databases:`: targets of `postgres` grants, by name.
    pub databases: BTreeMap<String, crate::leases::DatabaseTarget>,
    /// `github_apps:`: the GitHub Apps of `github` grants, by name.
    pub github_apps: BTreeMap<String, crate::provider::github::AppSettings>,
    /// `leases.reap_interval`: how often each broker looks for leases to revoke.
    pub reap_interval: Duration,
    /// `telemetry.otlp`: trace export; off when `None`.
    pub otlp: Option<crate::telemetry::OtlpSettings>,
    /// `console:`: how `stint audit console` serves and signs people in.
    pub console: Option<ConsoleSettings>,
}

/// `tls:` from config: where the public listener's certificate and key are
/// (`crate::http::tls` builds the server's TLS config from it).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsSettings {
    /// A `tls:` block as written, its paths taken from the config's folder.
    fn resolved(raw: &raw::RawTls, resolve: &dyn Fn(&str) -> PathBuf) -> TlsSettings {
        TlsSettings {
            cert_file: resolve(&raw.cert_file),
            key_file: resolve(&raw.key_file),
            client_ca_file: raw.client_ca_file.as_deref().map(resolve),
        }
    }
}

/// `limits:` from config.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Requests in flight before new ones are shed with 503.
    pub max_in_flight: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Largest header section of a request, in bytes.
    pub max_header_bytes: usize,
    /// Longest wait for a request body to arrive in full (408 past it).
    pub body_timeout: Duration,
    /// Longest a connection may go without a complete request head: bounds
    /// a slow header section, an idle keep-alive connection and the TLS
    /// handshake, on both listeners.
    pub header_timeout: Duration,
    /// Open connections per listener; more are closed at once.
    pub max_connections: usize,
    /// Requests per second (and burst) for the whole public listener; off when `None`.
    pub global: Option<(f64, u32)>,
    /// Requests per second (and burst) per client address; off when `None`.
    pub per_client: Option<(f64, u32)>,
    /// Requests per second (and burst) per verified subject; off when `None`.
    pub per_subject: Option<(f64, u32)>,
}

/// Environment variables that override config keys.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("STINT_LISTEN", "listen"),
    ("STINT_ADMIN_LISTEN", "admin_listen"),
    ("STINT_AUDIT_STORE", "audit.store"),
    ("STINT_AUDIT_KEY_FILE", "audit.key_file"),
    ("STINT_SIGNING_ISSUER", "signing.issuer"),
    ("STINT_SIGNING_KEY_FILE", "signing.key_file"),
];

impl Config {
    /// Reads and validates the file at `path`, applying `STINT_*` overrides
    /// from the process environment. Relative paths inside the file are
    /// resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: source_name.clone(),
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &source_name, &base, &|name| std::env::var(name).ok())
    }

    /// Validates config `text`; `env` looks up overrides (tests pass none).
    pub fn parse(
        text: &str,
        source_name: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            source_name: source_name.to_string(),
            key: key.to_string(),
            message,
        };
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let mut raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let (key, message) = yaml_error(e);
            err(&key, message)
        })?;
        let applied = apply_env(&mut raw, env);
        Config::validate(raw, source_name, base_dir).map_err(|mut e| {
            // A bad value that came from the environment is reported there.
            if let Some((var, _)) = applied.iter().find(|(_, key)| e.key == *key) {
                e.source_name = format!("environment variable {var}");
            }
            e
        })
    }

    fn validate(raw: RawConfig, source_name: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            source_name: source_name.to_string(),
            key: key.to_string(),
            message,
        };
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };

        let listen = socket_addr(raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN)).map_err(|m| err("listen", m))?;
        let admin_listen = socket_addr(raw.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN))
            .map_err(|m| err("admin_listen", m))?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(err(
                "admin_listen",
                "must differ from `listen`: the admin port is not public".into(),
            ));
        }

        let audit = raw
            .audit
            .ok_or_else(|| err("audit", "missing: set `audit.store` and `audit.key_file`".into()))?;
        let store = audit
            .store
            .ok_or_else(|| err("audit.store", "missing: e.g. `sqlite://./stint-audit.db`".into()))?;
        let postgres = store.starts_with("postgres://") || store.starts_with("postgresql://");
        // stint's own TLS settings (sslmode=verify-full, sslrootcert) come off
        // the URL before tokio-postgres judges the rest.
        let postgres_url = if postgres {
            Some(crate::audit::postgres::split_tls(&store).map_err(|e| err("audit.store", e))?)
        } else {
            None
        };
        let store = match store.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => format!("sqlite://{}", resolve(path).display()),
            _ if postgres_url
                .as_ref()
                .is_some_and(|(plain, _)| plain.parse::<tokio_postgres::Config>().is_ok()) =>
            {
                store
            }
            _ => {
                return Err(err(
                    "audit.store",
                    "not supported: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE".to_string(),
                ));
            }
        };
        let checkpoint_every = audit.checkpoint_every.unwrap_or(100);
        if checkpoint_every == 0 {
            return Err(err("audit.checkpoint_every", "must be at least 1".into()));
        }
        let checkpoint_interval = match &audit.checkpoint_interval {
            Some(t) => duration::parse(t).map_err(|e| err("audit.checkpoint_interval", e.to_string()))?,
            None => Duration::from_secs(60),
        };
        if checkpoint_interval.is_zero() {
            return Err(err("audit.checkpoint_interval", "must be more than 0s".into()));
        }
        let group_commit = audit.group_commit.unwrap_or(true);
        let timeout = match &audit.timeout {
            Some(t) => duration::parse(t).map_err(|e| err("audit.timeout", e.to_string()))?,
            None => Duration::from_secs(10),
        };
        if timeout.is_zero() {
            return Err(err("audit.timeout", "must be more than 0s".into()));
        }
        if let Some(mirror) = &audit.mirror
            && mirror != "stdout"
            && !mirror.starts_with("file:")
        {
            return Err(err("audit.mirror", format!("`{mirror}`: use stdout or file:PATH")));
        }
        let mut ship = Vec::new();
        for (name, raw_sink) in audit.ship.map(|m| m.0).unwrap_or_default() {
            let key = format!("audit.ship.{name}");
            ship.push(
                ship::sink_settings(&name, raw_sink, &resolve).map_err(|(sub, m)| err(&format!("{key}{sub}"), m))?,
            );
        }
        let audit = AuditSettings {
            ship,
            mirror: audit.mirror.clone(),
            group_commit,
            timeout,
            checkpoint_every,
            checkpoint_interval,
            store,
            key_file: resolve(&audit.key_file.ok_or_else(|| {
                err(
                    "audit.key_file",
                    "missing: a file for the audit HMAC key (created if absent)".into(),
                )
            })?),
        };

        let signing = raw
            .signing
            .ok_or_else(|| err("signing", "missing: set `signing.key_file`".into()))?;
        let algorithm = match signing.algorithm.as_deref() {
            None => SigningAlgorithm::EdDSA,
            Some(name) => SigningAlgorithm::from_name(name).ok_or_else(|| {
                err(
                    "signing.algorithm",
                    format!("`{name}` is not supported: use EdDSA or ES256"),
                )
            })?,
        };
        if let Some(iss) = &signing.issuer {
            check_url(iss).map_err(|m| err("signing.issuer", m))?;
        }
        let signing = SigningSettings {
            issuer: signing.issuer.map(|s| s.trim_end_matches('/').to_string()),
            key_file: resolve(&signing.key_file.ok_or_else(|| {
                err(
                    "signing.key_file",
                    "missing: a file for the token signing key (created if absent)".into(),
                )
            })?),
            algorithm,
        };

        let raw_issuers = raw.issuers.map(|m| m.0).unwrap_or_default();
        if raw_issuers.is_empty() {
            return Err(err(
                "issuers",
                "no issuer is configured: add at least one (see docs/configuration.md)".into(),
            ));
        }
        let mut issuers = Vec::new();
        let mut urls = BTreeSet::new();
        for (name, issuer) in raw_issuers {
            let key = format!("issuers.{name}");
            let issuer = validate_issuer(&name, issuer).map_err(|(sub, m)| err(&format!("{key}{sub}"), m))?;
            if !urls.insert(issuer.url.clone()) {
                return Err(err(
                    &format!("{key}.issuer"),
                    format!("`{}` is configured twice", issuer.url),
                ));
            }
            issuers.push(issuer);
        }

        let raw_grants = raw.grants.map(|m| m.0).unwrap_or_default();
        if raw_grants.is_empty() {
            return Err(err("grants", "no grant is configured: add at least one".into()));
        }
        let issuer_names: BTreeSet<&str> = issuers.iter().map(|i| i.name.as_str()).collect();
        let mut databases = BTreeMap::new();
        for (name, raw_db) in raw.databases.map(|m| m.0).unwrap_or_default() {
            let key = format!("databases.{name}");
            let target = database_target(&name, raw_db, &resolve).map_err(|(sub, m)| err(&format!("{key}{sub}"), m))?;
            databases.insert(name, target);
        }
        let database_names: BTreeSet<&str> = databases.keys().map(String::as_str).collect();
        let mut github_apps = BTreeMap::new();
        for (name, raw_app) in raw.github_apps.map(|m| m.0).unwrap_or_default() {
            let key = format!("github_apps.{name}");
            let app =
                github::github_app(&name, raw_app, &resolve).map_err(|(sub, m)| err(&format!("{key}{sub}"), m))?;
            github_apps.insert(name, app);
        }
        let app_names: BTreeSet<&str> = github_apps.keys().map(String::as_str).collect();
        let reap_interval = match raw.leases.as_ref().and_then(|l| l.reap_interval.as_ref()) {
            None => Duration::from_secs(10),
            Some(text) => {
                let every = duration::parse(text).map_err(|e| err("leases.reap_interval", e.to_string()))?;
                if every.is_zero() {
                    return Err(err("leases.reap_interval", "must be more than 0s".into()));
                }
                every
            }
        };
        let mut grants = Vec::new();
        for (name, grant) in raw_grants {
            let key = format!("grants.{name}");
            grants.push(
                grants::validate_grant(&name, grant, &issuer_names, &database_names, &app_names)
                    .map_err(|(sub, m)| err(&format!("{key}{sub}"), m))?,
            );
        }

        // Who may read the audit log over HTTP (`GET /v1/audit`); nobody by default.
        let auditors = grants::compile_rules(raw.auditors.unwrap_or_default(), "", &issuer_names)
            .map_err(|(sub, m)| err(&format!("auditors{sub}"), m))?;

        let mut key_cache = KeyCachePolicy::default();
        if let Some(jwks) = &raw.jwks {
            let at = |sub: &str, text: &Option<String>, default: Duration| match text {
                Some(t) => duration::parse(t).map_err(|e| err(&format!("jwks.{sub}"), e.to_string())),
                None => Ok(default),
            };
            key_cache.refetch_cooldown = at("refetch_cooldown", &jwks.refetch_cooldown, key_cache.refetch_cooldown)?;
            key_cache.max_age = at("max_age", &jwks.max_age, key_cache.max_age)?;
            key_cache.http_timeout = at("timeout", &jwks.timeout, key_cache.http_timeout)?;
            if key_cache.http_timeout.is_zero() || key_cache.http_timeout > Duration::from_secs(60) {
                return Err(err("jwks.timeout", "must be between 1s and 60s".into()));
            }
        }

        let aws = aws_settings(raw.aws.as_ref()).map_err(|(key, m)| err(&format!("aws{key}"), m))?;

        let limits = limit_settings(raw.limits.as_ref()).map_err(|(key, m)| err(&format!("limits{key}"), m))?;

        let tls = raw.tls.as_ref().map(|t| TlsSettings::resolved(t, &resolve));

        let console = raw
            .console
            .map(|c| console::settings(c, &issuer_names, &resolve))
            .transpose()
            .map_err(|(key, m)| err(&format!("console{key}"), m))?;
        let lint = lint::settings(raw.lint, &grants).map_err(|(key, m)| err(&format!("lint{key}"), m))?;
        let reload_watch = match raw.reload.as_ref().and_then(|r| r.watch.as_ref()) {
            None => None,
            Some(text) => {
                let every = duration::parse(text).map_err(|e| err("reload.watch", e.to_string()))?;
                if every.is_zero() {
                    return Err(err("reload.watch", "must be more than 0s".into()));
                }
                Some(every)
            }
        };

        let otlp = match raw.telemetry.as_ref().and_then(|t| t.otlp.as_ref()) {
            None => None,
            Some(raw) => Some(otlp_settings(raw).map_err(|(key, m)| err(&format!("telemetry.otlp{key}"), m))?),
        };

        Ok(Config {
            source_name: source_name.to_string(),
            listen,
            admin_listen,
            audit,
            signing,
            issuers,
            policy: Policy::new(grants).with_auditors(auditors),
            key_cache,
            aws,
            limits,
            tls,
            lint,
            reload_watch,
            databases,
            github_apps,
            reap_interval,
            otlp,
            console,
        })
    }
}

/// Applies `STINT_*` overrides; returns which were applied (variable, key).
fn apply_env(raw: &mut RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Vec<(&'static str, &'static str)> {
    let mut applied = Vec::new();
    for (var, key) in ENV_OVERRIDES {
        let Some(value) = env(var) else { continue };
        let audit = || raw::RawAudit {
            store: None,
            key_file: None,
            checkpoint_every: None,
            checkpoint_interval: None,
            group_commit: None,
            timeout: None,
            mirror: None,
            ship: None,
        };
        let signing = || raw::RawSigning {
            issuer: None,
            key_file: None,
            algorithm: None,
        };
        let slot = match *key {
            "listen" => &mut raw.listen,
            "admin_listen" => &mut raw.admin_listen,
            "audit.store" => &mut raw.audit.get_or_insert_with(audit).store,
            "audit.key_file" => &mut raw.audit.get_or_insert_with(audit).key_file,
            "signing.issuer" => &mut raw.signing.get_or_insert_with(signing).issuer,
            "signing.key_file" => &mut raw.signing.get_or_insert_with(signing).key_file,
            _ => continue,
        };
        *slot = Some(value);
        applied.push((*var, *key));
    }
    applied
}

/// The key and message of a YAML error, without the path the YAML parser
/// already put into its own message, and with the line when it has one.
pub(crate) fn yaml_error(e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> (String, String) {
    let mut key = e.path().to_string();
    let inner = e.into_inner();
    let mut message = inner.to_string();
    // "grants.d: unknown field ..." -> "unknown field ..."
    let mut prefix = key.clone();
    while !prefix.is_empty() && prefix != "." {
        if let Some(rest) = message.strip_prefix(&format!("{prefix}: ")) {
            message = rest.to_string();
            break;
        }
        prefix = match prefix.rfind(['.', '[']) {
            Some(cut) => prefix.get(..cut).unwrap_or_default().to_string(),
            None => String::new(),
        };
    }
    // serde names a repeated struct key only in its message.
    if let Some(field) = message
        .strip_prefix("duplicate field `")
        .and_then(|m| m.split('`').next())
    {
        let field = field.to_string();
        key = if key == "." {
            field.clone()
        } else {
            format!("{key}.{field}")
        };
        message = format!("`{field}` is written twice");
    }
    if key == "." {
        key = "(document)".to_string();
    }
    if let Some(at) = inner.location()
        && !message.contains(" at line ")
    {
        message = format!("{message} at line {} column {}", at.line(), at.column());
    }
    (key, message)
}

fn otlp_settings(raw: &raw::RawOtlp) -> Result<crate::telemetry::OtlpSettings, FieldError> {
    let mut otlp = crate::telemetry::OtlpSettings::default();
    if let Some(endpoint) = &raw.endpoint {
        otlp.endpoint = Some(crate::telemetry::traces_url(endpoint).map_err(|m| (".endpoint".to_string(), m))?);
    }
    if let Some(ratio) = raw.sample_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            return Err((
                ".sample_ratio".into(),
                format!("{ratio} is not between 0 and 1 (1 keeps every trace, 0.1 one in ten)"),
            ));
        }
        otlp.sample_ratio = ratio;
    }
    if let Some(text) = &raw.timeout {
        let timeout = duration::parse(text).map_err(|e| (".timeout".to_string(), e.to_string()))?;
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err((".timeout".into(), "must be between 1s and 60s".into()));
        }
        otlp.timeout = timeout;
    }
    if let Some(name) = &raw.service_name {
        if name.trim().is_empty() {
            return Err((".service_name".into(), "must not be empty".into()));
        }
        otlp.service_name = name.clone();
    }
    if let Some(resource) = &raw.resource {
        otlp.resource = resource.0.clone();
    }
    Ok(otlp)
}

fn aws_settings(raw: Option<&RawAws>) -> Result<AwsSettings, FieldError> {
    let mut aws = AwsSettings::default();
    let Some(raw) = raw else { return Ok(aws) };
    aws.region = raw.region.clone();
    if let Some(url) = &raw.endpoint_url {
        // Credentials and secret values travel over this connection.
        check_url(url).map_err(|m| field(".endpoint_url", m))?;
        aws.endpoint_url = Some(url.clone());
    }
    if let Some(t) = &raw.connect_timeout {
        aws.connect_timeout = duration_at(".connect_timeout", t)?;
    }
    if let Some(t) = &raw.operation_timeout {
        aws.operation_timeout = duration_at(".operation_timeout", t)?;
    }
    for (key, value) in [
        (".connect_timeout", aws.connect_timeout),
        (".operation_timeout", aws.operation_timeout),
    ] {
        if value.is_zero() || value > Duration::from_secs(120) {
            return Err(field(key, "must be between 1s and 2m"));
        }
    }
    if let Some(n) = raw.max_attempts {
        if !(1..=10).contains(&n) {
            return Err(field(".max_attempts", "must be 1-10"));
        }
        aws.max_attempts = n;
    }
    if let Some(limit) = &raw.sts_rate_limit {
        if !(limit.per_second > 0.0 && limit.per_second <= 600.0) {
            return Err(field(
                ".sts_rate_limit.per_second",
                "must be more than 0 and at most 600 (the AWS account quota)",
            ));
        }
        aws.sts_per_second = limit.per_second;
        aws.sts_burst = limit
            .burst
            .unwrap_or_else(|| (limit.per_second * 2.0).ceil().max(1.0) as u32);
        if aws.sts_burst == 0 {
            return Err(field(".sts_rate_limit.burst", "must be at least 1"));
        }
    }
    Ok(aws)
}

fn rate(at: &str, raw: &raw::RawRateLimit) -> Result<(f64, u32), FieldError> {
    if !(raw.per_second > 0.0 && raw.per_second.is_finite()) {
        return Err(field(&format!("{at}.per_second"), "must be more than 0"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a small positive rate
    let burst = raw
        .burst
        .unwrap_or_else(|| (raw.per_second * 2.0).ceil().clamp(1.0, 1e6) as u32)
        .max(1);
    Ok((raw.per_second, burst))
}

/// One `databases.NAME` entry: where it is, and where its admin password
/// comes from (never the config file itself).
fn database_target(
    name: &str,
    raw: raw::RawDatabase,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<crate::leases::DatabaseTarget, FieldError> {
    use crate::leases::{DatabaseTarget, DbTls, PasswordSource};
    check_name(name)?;
    if raw.host.trim().is_empty() {
        return Err(field(".host", "must not be empty"));
    }
    let sources = [
        raw.admin_password_file
            .as_ref()
            .map(|f| PasswordSource::File(resolve(f))),
        raw.admin_password_env.as_ref().map(|v| PasswordSource::Env(v.clone())),
        raw.admin_password_secret
            .as_ref()
            .map(|s| PasswordSource::Secret(s.clone())),
    ];
    let mut given = sources.into_iter().flatten();
    let password = given.next().ok_or_else(|| {
        field(
            "",
            "set one of admin_password_file, admin_password_env or admin_password_secret (never the password itself)",
        )
    })?;
    if given.next().is_some() {
        return Err(field(
            "",
            "set only one of admin_password_file, admin_password_env and admin_password_secret",
        ));
    }
    let connect_timeout = match &raw.connect_timeout {
        Some(text) => duration_at(".connect_timeout", text)?,
        None => Duration::from_secs(5),
    };
    if connect_timeout.is_zero() {
        return Err(field(".connect_timeout", "must be more than 0s"));
    }
    // Encrypted and verified unless the database is on this host.
    let loopback = raw.host == "localhost" || raw.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let tls = match raw.tls.as_deref() {
        None if loopback => DbTls::Disable,
        None | Some("verify-full") => DbTls::VerifyFull {
            ca_file: raw.ca_file.as_deref().map(resolve),
        },
        Some("disable") => DbTls::Disable,
        Some(other) => {
            return Err(field(
                ".tls",
                format!("`{other}` is unknown: use verify-full (the default off loopback) or disable"),
            ));
        }
    };
    if raw.ca_file.is_some() && tls == DbTls::Disable {
        return Err(field(".ca_file", "only with `tls: verify-full`"));
    }
    Ok(DatabaseTarget {
        tls,
        name: name.to_string(),
        host: raw.host,
        port: raw.port.unwrap_or(5432),
        dbname: raw.dbname,
        admin_user: raw.admin_user,
        password,
        connect_timeout,
        drop_orphans: raw.drop_orphans.unwrap_or(false),
    })
}

/// Default `limits.max_header_bytes`: a 16 KiB token and ordinary headers fit.
const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Below this a valid token could not be sent.
const MIN_MAX_HEADER_BYTES: usize = 20 * 1024;

fn limit_settings(raw: Option<&raw::RawLimits>) -> Result<LimitSettings, FieldError> {
    let mut limits = LimitSettings {
        max_in_flight: 512,
        request_timeout: Duration::from_secs(30),
        max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        body_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_secs(10),
        max_connections: 4096,
        global: None,
        per_client: None,
        per_subject: None,
    };
    let Some(raw) = raw else { return Ok(limits) };
    if let Some(n) = raw.max_in_flight {
        if n == 0 {
            return Err(field(".max_in_flight", "must be at least 1"));
        }
        limits.max_in_flight = n;
    }
    if let Some(t) = &raw.request_timeout {
        limits.request_timeout = duration_at(".request_timeout", t)?;
        if limits.request_timeout.is_zero() {
            return Err(field(".request_timeout", "must be more than 0s"));
        }
    }
    if let Some(n) = raw.max_header_bytes {
        if n < MIN_MAX_HEADER_BYTES {
            return Err(field(
                ".max_header_bytes",
                format!("must be at least {MIN_MAX_HEADER_BYTES} (a token alone may take 16384)"),
            ));
        }
        limits.max_header_bytes = n;
    }
    let positive = |sub: &str, text: &Option<String>, into: &mut Duration| -> Result<(), FieldError> {
        if let Some(t) = text {
            *into = duration_at(sub, t)?;
            if into.is_zero() {
                return Err(field(sub, "must be more than 0s"));
            }
        }
        Ok(())
    };
    positive(".body_timeout", &raw.body_timeout, &mut limits.body_timeout)?;
    positive(".header_timeout", &raw.header_timeout, &mut limits.header_timeout)?;
    if let Some(n) = raw.max_connections {
        if n == 0 {
            return Err(field(".max_connections", "must be at least 1"));
        }
        limits.max_connections = n;
    }
    limits.global = raw.global.as_ref().map(|r| rate(".global", r)).transpose()?;
    limits.per_client = raw.per_client.as_ref().map(|r| rate(".per_client", r)).transpose()?;
    limits.per_subject = raw.per_subject.as_ref().map(|r| rate(".per_subject", r)).transpose()?;
    Ok(limits)
}

pub(super) type FieldError = (String, String);

pub(super) fn field(sub: &str, message: impl Into<String>) -> FieldError {
    (sub.to_string(), message.into())
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an address:port such as 127.0.0.1:8420"))
}

pub(super) fn duration_at(sub: &str, text: &str) -> Result<Duration, FieldError> {
    duration::parse(text).map_err(|e| field(sub, e.to_string()))
}

/// https, or http on a loopback host (development and tests only). Parsed
/// as a URL, so `http://localhost:@evil.example` is seen for what it is.
/// An https:// URL, or http:// to a loopback host (a test or local IdP).
pub fn check_url(url: &str) -> Result<(), String> {
    let refuse = || format!("`{url}` must be an https:// URL (http:// only on a loopback host)");
    let parsed = reqwest::Url::parse(url).map_err(|_| refuse())?;
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.host_str().is_none() {
        return Err(refuse());
    }
    let loopback = match parsed.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(refuse()),
    }
}

/// Whether `name` can name an issuer or a grant: 1-64 of A-Z a-z 0-9 - _ .
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) fn check_name(name: &str) -> Result<(), FieldError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(field(
            "",
            format!("`{name}` is not a valid name: use 1-64 of A-Z a-z 0-9 - _ ."),
        ))
    }
}

fn validate_issuer(name: &str, raw: RawIssuer) -> Result<IssuerConfig, FieldError> {
    check_name(name)?;
    check_url(&raw.issuer).map_err(|m| field(".issuer", m))?;
    if raw.audience.trim().is_empty() {
        return Err(field(
            ".audience",
            "must not be empty: the `aud` tokens must be minted for",
        ));
    }
    if raw.algorithms.is_empty() {
        return Err(field(".algorithms", "list at least one algorithm, e.g. [RS256]"));
    }
    let mut algorithms = Vec::new();
    for (i, name) in raw.algorithms.iter().enumerate() {
        let alg = asymmetric_alg(name).ok_or_else(|| {
            field(
                &format!(".algorithms[{i}]"),
                format!("`{name}` is not accepted: use an asymmetric algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"),
            )
        })?;
        algorithms.push(alg);
    }
    let max_token_lifetime = match &raw.max_token_lifetime {
        Some(text) => duration_at(".max_token_lifetime", text)?,
        None => Duration::from_secs(3600),
    };
    if max_token_lifetime.is_zero() {
        return Err(field(".max_token_lifetime", "must be more than 0s"));
    }
    let leeway = match &raw.leeway {
        Some(text) => duration_at(".leeway", text)?,
        None => Duration::from_secs(60),
    };
    if leeway > Duration::from_secs(300) {
        return Err(field(
            ".leeway",
            "at most 5m: a larger leeway keeps expired tokens alive",
        ));
    }
    let platform = match raw.platform.as_deref() {
        None => Platform::infer(&raw.issuer),
        Some(p) => Platform::from_name(p).ok_or_else(|| {
            field(
                ".platform",
                format!("`{p}` is unknown: use github, gitlab, kubernetes, buildkite, circleci or generic"),
            )
        })?,
    };
    Ok(IssuerConfig {
        name: name.to_string(),
        url: raw.issuer,
        audience: raw.audience,
        exclusive_audience: raw.exclusive_audience.unwrap_or(true),
        algorithms,
        max_token_lifetime,
        leeway,
        platform,
    })
}

#[cfg(test)]
mod tests;
