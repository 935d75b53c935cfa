//! The `stint` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

// Allocation churn per request (JSON, records, headers) showed as ~17% of
// the broker's CPU in glibc malloc/free under load; mimalloc is made for
// many small, short-lived allocations across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use stint::audit::commands::{self as audit_commands, StoreChoice};
use stint::audit::{AuditQuery, AuditRecord, Outcome};
use stint::client::commands::{ClientOptions, CommandError};
use stint::config::Config;
use stint::{client, dev, duration, server};

#[derive(Parser)]
#[command(
    name = "stint",
    version,
    about = "Short-lived secrets broker: OIDC token in, audited, expiring credential out"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "STINT_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker with a config file.
    Serve {
        /// The YAML config (see docs/configuration.md).
        #[arg(long, short, env = "STINT_CONFIG", default_value = "stint.yaml")]
        config: PathBuf,
    },
    /// Keep grants issued and renewed for an app beside it (see docs/agent.md).
    Agent {
        /// The agent's YAML config.
        #[arg(long, short, env = "STINT_AGENT_CONFIG")]
        config: PathBuf,
        /// Fetch every grant once, write it out, keep it in state_dir and exit (an init container).
        #[arg(long, conflicts_with = "check")]
        once: bool,
        /// How long --once may try before it exits 3.
        #[arg(long, value_name = "DUR", default_value = "2m", requires = "once")]
        timeout: String,
        /// Validate the config and exit.
        #[arg(long)]
        check: bool,
    },
    /// Run the broker with a built-in dev issuer, SQLite audit and sample grants.
    Dev {
        /// Folder for dev keys and the audit log.
        #[arg(long, default_value = dev::DEFAULT_DIR)]
        dir: PathBuf,
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:8420")]
        listen: SocketAddr,
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9420")]
        admin_listen: SocketAddr,
        /// Dev issuer address.
        #[arg(long, default_value = "127.0.0.1:8421")]
        issuer_listen: SocketAddr,
    },
    /// Fetch grants, put them in the environment, and run a command.
    Exec {
        #[command(flatten)]
        client: ClientArgs,
        /// A grant to fetch (repeatable).
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// Name a variable: VARIABLE=secret-name (a secrets entry) or VARIABLE=grant (a github grant's token); repeatable.
        #[arg(long = "env", value_name = "VARIABLE=SECRET")]
        env: Vec<String>,
        /// Requested lifetime (at most the grant's max_ttl).
        #[arg(long)]
        ttl: Option<String>,
        /// Leave leases (postgres roles, GitHub tokens) to their expiry instead of revoking them when the command exits.
        #[arg(long)]
        keep: bool,
        /// How long the revokes at exit may take in all; a lease not revoked by then is left to the broker's reaper.
        #[arg(long, value_name = "DUR", default_value = "10s")]
        revoke_timeout: String,
        #[command(flatten)]
        watch: WatchArgs,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print AWS credential_process JSON for an aws grant (cached until shortly before expiry).
    CredentialProcess {
        #[command(flatten)]
        client: ClientArgs,
        /// The aws grant.
        #[arg(long)]
        grant: String,
        /// Requested lifetime.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// A git credential helper answering with the GitHub token `stint exec` set (see docs/github.md).
    GitCredential {
        /// The variable holding the token (default GH_TOKEN, then GITHUB_TOKEN).
        #[arg(long, value_name = "VAR")]
        env: Option<String>,
        /// What git asks: get, store or erase.
        operation: String,
    },
    /// Print a token: a stint-signed token of a grant, or (`token dev`) a dev OIDC token.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Token {
        #[command(subcommand)]
        command: Option<TokenCommand>,
        #[command(flatten)]
        client: ClientArgs,
        /// The token grant.
        #[arg(long)]
        grant: Option<String>,
        /// Requested lifetime.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check a config file and exit.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Database leases of `postgres` grants: list them, end one early.
    #[command(subcommand)]
    Leases(LeasesCommand),
    /// Review a policy: lint it, test it against cases, explain a decision, simulate a change.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum LeasesCommand {
    /// Print leases, newest first.
    List {
        /// The YAML config (its audit.store holds the leases).
        #[arg(long, short, env = "STINT_CONFIG", default_value = "stint.yaml")]
        config: PathBuf,
        /// Only active leases whose revocation keeps failing.
        #[arg(long)]
        failing: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// End a lease now; a running broker revokes it (drops the role, or revokes the GitHub token) and audits it.
    Revoke {
        /// The YAML config.
        #[arg(long, short, env = "STINT_CONFIG", default_value = "stint.yaml")]
        config: PathBuf,
        /// The lease id (the `lease_id` of the issuance).
        id: String,
        /// Wait this long for a broker to revoke it.
        #[arg(long, default_value = "30s")]
        wait: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Find grants that allow more than they should; exit 1 on findings at or above --fail-on.
    Lint {
        /// The YAML config.
        #[arg(long, short, env = "STINT_CONFIG", default_value = "stint.yaml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = LintFormatArg::Text)]
        format: LintFormatArg,
        /// Exit 1 when a finding is at least this severe.
        #[arg(long, value_enum, default_value_t = FailOn::Error)]
        fail_on: FailOn,
        /// List every check and exit.
        #[arg(long)]
        list: bool,
    },
    /// Run policy test cases (claims or tokens → expected allow/deny); exit 1 on a failed case.
    Test {
        /// The YAML config.
        #[arg(long, short, env = "STINT_CONFIG", default_value = "stint.yaml")]
        config: PathBuf,
        /// The cases file.
        cases: PathBuf,
    },
    /// Explain a decision rule by rule and claim by claim; exit 0 if allowed, 1 if denied.
    Explain {
        /// The YAML config.
        #[arg(long, short, env = "STINT_CONFIG", default_value = "stint.yaml")]
        config: PathBuf,
        /// The grant (with --claims or --token).
        #[arg(long, required_unless_present = "audit")]
        grant: Option<String>,
        /// A JSON or YAML file of claims.
        #[arg(long, conflicts_with_all = ["token", "audit"])]
        claims: Option<PathBuf>,
        /// A token file (decoded; its signature is not checked).
        #[arg(long, conflicts_with = "audit")]
        token: Option<PathBuf>,
        /// The issuer's config name (default: the one whose URL is the claims' `iss`).
        #[arg(long)]
        issuer: Option<String>,
        /// Explain a past request from its audit record (with --request-id).
        #[arg(long, requires = "request_id")]
        audit: bool,
        /// The request id (the `x-request-id` of the answer, or `request_id` of a 403).
        #[arg(long)]
        request_id: Option<String>,
        /// Audit store URL (default: the config's).
        #[arg(long)]
        store: Option<String>,
    },
    /// Replay the callers in the audit log against a proposed config: who would gain or lose each grant.
    Simulate {
        /// The proposed YAML config.
        #[arg(long, short)]
        config: PathBuf,
        /// How far back (7d, 24h) or an RFC 3339 time.
        #[arg(long, default_value = "7d")]
        since: String,
        /// Audit store URL (default: the proposed config's).
        #[arg(long)]
        store: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LintFormatArg {
    Text,
    Json,
    Sarif,
}

#[derive(Clone, Copy, ValueEnum)]
enum FailOn {
    Warning,
    Error,
}

/// How client commands reach the broker and find the caller's OIDC token.
#[derive(clap::Args, Clone)]
struct ClientArgs {
    /// Broker URL, e.g. https://stint.example.
    #[arg(long, env = "STINT_BROKER")]
    broker: Option<String>,
    /// Audience to request where the platform mints tokens on demand (GitHub, Buildkite).
    #[arg(long, env = "STINT_AUDIENCE", default_value = "stint")]
    audience: String,
    /// Read the OIDC token from this file and look nowhere else.
    #[arg(long, env = "STINT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// GitLab CI: the variable your `id_tokens:` sets.
    #[arg(long, default_value = client::discovery::DEFAULT_TOKEN_ENV)]
    token_env: String,
    /// Kubernetes projected service-account token.
    #[arg(long, default_value = client::discovery::DEFAULT_K8S_TOKEN_FILE)]
    k8s_token_file: PathBuf,
    /// Extra CA certificate (PEM) to trust for the broker.
    #[arg(long, env = "STINT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Client certificate (PEM) to present to a broker that requires one
    /// (`tls.client_ca_file`); needs --client-key.
    #[arg(long, env = "STINT_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, env = "STINT_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Say which token source and grants were used (never secret values).
    #[arg(short, long)]
    verbose: bool,
    /// Ask again for up to this long in all (exec: its grants together) when the broker is busy, restarting or rate limiting (honouring Retry-After); 0s: never.
    #[arg(long, env = "STINT_RETRY_FOR", value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    retry_for: std::time::Duration,
}

/// `stint exec --watch` and its settings.
#[derive(clap::Args)]
struct WatchArgs {
    /// Keep renewing the grants while the command runs, and act when their values change.
    #[arg(long)]
    watch: bool,
    /// Renew after this share of a credential's lifetime (with jitter).
    #[arg(long, value_name = "SHARE", default_value_t = 0.66, requires = "watch")]
    renew_at: f64,
    /// On a changed value: signal:NAME (e.g. signal:HUP), restart or none [default: signal:HUP with --out-dir, else restart].
    #[arg(long, value_name = "ACTION", requires = "watch")]
    on_change: Option<String>,
    /// When a grant expires without a replacement: exit (stop the command, exit 6) or keep.
    #[arg(long, value_name = "ACTION", default_value = "exit", requires = "watch")]
    on_expiry: String,
    /// How long a command stopped for a restart or an expiry may take before SIGKILL.
    #[arg(long, value_name = "DUR", default_value = "10s", requires = "watch")]
    stop_grace: String,
    /// Also write each credential as files in DIR (atomically, 0600), removed at exit.
    #[arg(long, value_name = "DIR", requires = "watch")]
    out_dir: Option<PathBuf>,
    /// How long a lease (a postgres role, a GitHub token) replaced by a renewal stays usable before it is revoked.
    #[arg(long, value_name = "DUR", default_value = "30s", requires = "watch")]
    overlap: String,
}

impl WatchArgs {
    fn settings(self) -> Result<Option<client::watch::Watch>, String> {
        if !self.watch {
            return Ok(None);
        }
        if !(self.renew_at > 0.0 && self.renew_at < 1.0) {
            return Err(format!(
                "--renew-at {}: a share of the lifetime, between 0 and 1",
                self.renew_at
            ));
        }
        let on_change = self
            .on_change
            .as_deref()
            .map(client::watch::OnChange::parse)
            .transpose()?;
        Ok(Some(client::watch::Watch {
            renew_at: self.renew_at,
            on_change,
            on_expiry: client::watch::OnExpiry::parse(&self.on_expiry)?,
            stop_grace: duration::parse(&self.stop_grace).map_err(|e| format!("--stop-grace: {e}"))?,
            out_dir: self.out_dir,
            overlap: duration::parse(&self.overlap).map_err(|e| format!("--overlap: {e}"))?,
        }))
    }
}

impl ClientArgs {
    fn options(self) -> ClientOptions {
        ClientOptions {
            broker: self.broker,
            discovery: client::Discovery {
                token_file: self.token_file,
                audience: self.audience,
                token_env: self.token_env,
                k8s_token_file: self.k8s_token_file,
            },
            tls: client::BrokerTls {
                ca_file: self.ca_file,
                client_cert: self.client_cert,
                client_key: self.client_key,
            },
            verbose: self.verbose,
            retry_for: self.retry_for,
        }
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print an OIDC token from the `stint dev` issuer.
    Dev {
        /// The `sub` claim.
        #[arg(long, default_value = "repo:acme/api:ref:refs/heads/main")]
        sub: String,
        /// A claim as name=value (repeatable).
        #[arg(long = "claim", value_parser = parse_claim)]
        claims: Vec<(String, String)>,
        /// The `aud` claim.
        #[arg(long)]
        aud: Option<String>,
        /// Lifetime.
        #[arg(long, default_value = "5m")]
        ttl: String,
        /// The `stint dev` folder.
        #[arg(long, default_value = dev::DEFAULT_DIR)]
        dir: PathBuf,
    },
}

/// Which audit log to read, and its key.
#[derive(clap::Args, Clone)]
struct StoreArgs {
    /// Read the store (and key) named in this config.
    #[arg(long, short, conflicts_with = "store")]
    config: Option<PathBuf>,
    /// Store URL (default: the `stint dev` log).
    #[arg(long)]
    store: Option<String>,
    /// The audit key, when --config is not given (also overrides the config's).
    #[arg(long)]
    audit_key_file: Option<PathBuf>,
}

impl StoreArgs {
    fn choice(self) -> StoreChoice {
        StoreChoice {
            config: self.config,
            store: self.store,
            audit_key_file: self.audit_key_file,
        }
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print audit records, newest first.
    Query {
        #[command(flatten)]
        store: StoreArgs,
        /// Only records from this long ago (1h, 7d) or this RFC 3339 time on.
        #[arg(long)]
        since: Option<String>,
        /// Only records before this (duration ago or RFC 3339 time).
        #[arg(long)]
        until: Option<String>,
        /// Only this grant.
        #[arg(long)]
        grant: Option<String>,
        /// Only this subject.
        #[arg(long)]
        subject: Option<String>,
        /// Only this outcome (issued, denied, error, revoked).
        #[arg(long, value_parser = parse_outcome)]
        outcome: Option<Outcome>,
        /// Only this request id.
        #[arg(long)]
        request_id: Option<String>,
        /// Only this kind of grant (token, aws, secrets, postgres).
        #[arg(long)]
        kind: Option<String>,
        /// Only this reason code (claims_mismatch, expired, ...).
        #[arg(long)]
        reason: Option<String>,
        /// Only records of the token with this `jti` (needs the audit key).
        #[arg(long)]
        jti: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Write records as JSON lines (oldest first) plus checkpoints, for SIEMs and offline verification.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// Only records from this long ago or this time on.
        #[arg(long)]
        since: Option<String>,
        /// Only records before this.
        #[arg(long)]
        until: Option<String>,
    },
    /// A read-only web console over the store, on loopback (see docs/audit.md).
    Console {
        #[command(flatten)]
        store: StoreArgs,
        /// Where to serve it (default: the config's console.listen, else 127.0.0.1:8430).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Check the tamper-evident chain and its signed checkpoints.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// Verify this export offline instead of the store.
        #[arg(long, requires = "pubkey")]
        export: Option<PathBuf>,
        /// Checkpoint public key (JWK or base64url, or a file holding it) for --export.
        #[arg(long)]
        pubkey: Option<String>,
        /// Only the slice of the chain from this long ago (1h, 7d) or this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only the slice before this.
        #[arg(long)]
        until: Option<String>,
        /// The export is a slice (made with --since/--until) and starts after seq 1.
        #[arg(long, requires = "export")]
        slice: bool,
    },
    /// Print the checkpoint public key (JWK) for offline verification.
    Pubkey {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Ship the log to the config's audit.ship sinks (what the broker does), in a process of its own.
    Ship {
        /// The YAML config (its audit.store and audit.ship).
        #[arg(long, short, env = "STINT_CONFIG", default_value = "stint.yaml")]
        config: PathBuf,
        /// Only this sink (default: every one, in_broker or not).
        #[arg(long)]
        sink: Option<String>,
        /// Ship what is there now and exit (for cron); exit 1 if a sink did not take it.
        #[arg(long)]
        once: bool,
        /// Only print where each sink stands (position, lag, holder); ship nothing.
        #[arg(long, conflicts_with = "once")]
        status: bool,
        /// Serve Prometheus /metrics here (lag and failures per sink) while shipping.
        #[arg(long, value_name = "ADDR", conflicts_with_all = ["once", "status"])]
        metrics_listen: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; exit 1 with the file, key and fix on error.
    Check {
        /// The YAML config.
        #[arg(long, short, env = "STINT_CONFIG", default_value = "stint.yaml")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn parse_claim(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}` is not name=value"))
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    duration::parse(text).map_err(|e| e.to_string())
}

fn parse_outcome(text: &str) -> Result<Outcome, String> {
    Outcome::parse(text).ok_or_else(|| format!("`{text}` is not issued, denied, error or revoked"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = matches!(cli.log_format, LogFormat::Json);
    // `serve` installs logging after reading its config (which may ask for
    // trace export); `dev` logs without export; other commands stay quiet.
    if matches!(
        cli.command,
        Command::Dev { .. } | Command::Audit(AuditCommand::Ship { .. })
    ) && let Err(e) = stint::telemetry::Telemetry::init(json_logs, None)
    {
        eprintln!("stint: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Exec {
            client,
            grants,
            env,
            ttl,
            keep,
            revoke_timeout,
            watch,
            command,
        } => match (duration::parse(&revoke_timeout), watch.settings()) {
            (Ok(timeout), Ok(watch)) => {
                let on_exit = client::revoke::OnExit { keep, timeout };
                let options = client.options();
                client::commands::exec(
                    &options,
                    &grants,
                    &env,
                    ttl.as_deref(),
                    &command,
                    on_exit,
                    watch.as_ref(),
                )
                .await
            }
            (Err(e), _) => Err(CommandError::Usage(format!("--revoke-timeout: {e}"))),
            (_, Err(e)) => Err(CommandError::Usage(e)),
        },
        Command::Agent {
            config,
            once,
            timeout,
            check,
        } => {
            let mode = match (once, check) {
                (_, true) => stint::agent::Mode::Check,
                (true, _) => match stint::duration::parse(&timeout) {
                    Ok(timeout) => stint::agent::Mode::Once(timeout),
                    Err(e) => {
                        eprintln!("stint agent: --timeout: {e}");
                        return ExitCode::from(stint::agent::EXIT_CONFIG);
                    }
                },
                _ => stint::agent::Mode::Keep,
            };
            return ExitCode::from(stint::agent::run(&config, mode).await);
        }
        Command::CredentialProcess { client, grant, ttl } => {
            client::commands::credential_process(&client.options(), &grant, ttl.as_deref())
                .await
                .map(|()| 0)
        }
        Command::Token {
            command: None,
            client,
            grant,
            ttl,
        } => match grant {
            Some(grant) => client::commands::token(&client.options(), &grant, ttl.as_deref())
                .await
                .map(|()| 0),
            None => Err(CommandError::Usage(
                "stint token: pass --grant NAME (or use `stint token dev`)".into(),
            )),
        },
        Command::Policy(command) => return ExitCode::from(policy(command).await),
        other => {
            return match run(other, json_logs).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("stint: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("stint: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(command: Command, json_logs: bool) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let loaded = Config::load(&config)?;
            let telemetry =
                stint::telemetry::Telemetry::init(json_logs, loaded.otlp.as_ref()).map_err(anyhow::Error::msg)?;
            let options = server::StartOptions {
                config_path: Some(config.clone()),
                ..server::StartOptions::default()
            };
            let running = server::start_with(loaded, options).await?;
            shutdown_signal().await;
            tracing::info!("shutting down");
            running.shutdown().await;
            // The exporter's blocking client must not run on a runtime thread.
            tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
            Ok(())
        }
        Command::Dev {
            dir,
            listen,
            admin_listen,
            issuer_listen,
        } => {
            dev::run(dev::DevOptions {
                dir,
                listen,
                admin_listen,
                issuer_listen,
            })
            .await
        }
        Command::Token {
            command:
                Some(TokenCommand::Dev {
                    sub,
                    claims,
                    aud,
                    ttl,
                    dir,
                }),
            ..
        } => {
            let ttl = duration::parse(&ttl)?;
            let token = dev::mint(&dir, &sub, &claims, aud.as_deref(), i64::try_from(ttl.as_secs())?)?;
            println!("{token}");
            Ok(())
        }
        Command::GitCredential { env, operation } => {
            let stdin = std::io::stdin();
            stint::client::git_credential::answer(
                &operation,
                env.as_deref(),
                stdin.lock(),
                std::io::stdout(),
                &|name| std::env::var(name).ok(),
            )
            .map_err(|e| anyhow::anyhow!("stint git-credential: {e}"))
        }
        Command::Exec { .. }
        | Command::Agent { .. }
        | Command::CredentialProcess { .. }
        | Command::Token { command: None, .. }
        | Command::Policy(_) => {
            anyhow::bail!("client and policy commands are dispatched in main")
        }
        Command::Leases(LeasesCommand::List {
            config,
            failing,
            limit,
            format,
        }) => {
            print!(
                "{}",
                stint::leases::commands::list(&config, failing, matches!(format, Format::Json), limit).await?
            );
            Ok(())
        }
        Command::Leases(LeasesCommand::Revoke { config, id, wait }) => {
            let wait = duration::parse(&wait).map_err(|e| anyhow::anyhow!("--wait: {e}"))?;
            println!("{}", stint::leases::commands::revoke(&config, &id, wait).await?);
            Ok(())
        }
        Command::Config(ConfigCommand::Check { config }) => {
            let parsed = Config::load(&config)?;
            println!(
                "{}: ok ({} issuers, {} grants)",
                config.display(),
                parsed.issuers.len(),
                parsed.policy.grants().count()
            );
            Ok(())
        }
        Command::Audit(AuditCommand::Query {
            store,
            since,
            until,
            grant,
            subject,
            outcome,
            request_id,
            kind,
            reason,
            jti,
            limit,
            format,
        }) => {
            let query = AuditQuery {
                grant,
                subject,
                outcome,
                request_id,
                kind,
                reason,
                since: since.as_deref().map(audit_commands::parse_time).transpose()?,
                until: until.as_deref().map(audit_commands::parse_time).transpose()?,
                limit: Some(limit),
                ..AuditQuery::default()
            };
            let records = audit_commands::query(&store.choice(), query, jti.as_deref()).await?;
            match format {
                Format::Json => {
                    for record in &records {
                        println!("{}", serde_json::to_string(record)?);
                    }
                }
                Format::Table => print_table(&records),
            }
            Ok(())
        }
        Command::Audit(AuditCommand::Export { store, since, until }) => {
            let since = since.as_deref().map(audit_commands::parse_time).transpose()?;
            let until = until.as_deref().map(audit_commands::parse_time).transpose()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            audit_commands::export(&store.choice(), since.as_deref(), until.as_deref(), &mut out).await?;
            use std::io::Write;
            out.flush()?;
            Ok(())
        }
        Command::Audit(AuditCommand::Console { store, listen }) => stint::console::run(store.choice(), listen).await,
        Command::Audit(AuditCommand::Verify {
            store,
            export,
            pubkey,
            since,
            until,
            slice,
        }) => {
            let since = since.as_deref().map(audit_commands::parse_time).transpose()?;
            let until = until.as_deref().map(audit_commands::parse_time).transpose()?;
            let summary = audit_commands::verify_range(
                &store.choice(),
                export.as_deref(),
                pubkey.as_deref(),
                since.as_deref(),
                until.as_deref(),
                slice,
            )
            .await?;
            println!("{summary}");
            Ok(())
        }
        Command::Audit(AuditCommand::Pubkey { store }) => {
            println!("{}", audit_commands::pubkey(&store.choice())?);
            Ok(())
        }
        Command::Audit(AuditCommand::Ship {
            config,
            sink,
            once,
            status,
            metrics_listen,
        }) => {
            let lines = if status {
                stint::ship::commands::status(&config, sink.as_deref()).await?
            } else {
                stint::ship::commands::ship(&config, sink.as_deref(), once, metrics_listen).await?
            };
            for line in lines {
                println!("{line}");
            }
            Ok(())
        }
    }
}

fn print_table(records: &[AuditRecord]) {
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            [
                r.seq.map(|s| s.to_string()).unwrap_or_default(),
                r.time.clone(),
                r.outcome.as_str().to_string(),
                r.reason.clone().unwrap_or_else(|| "-".into()),
                r.grant.clone().unwrap_or_else(|| "-".into()),
                r.subject.clone().unwrap_or_else(|| "-".into()),
                r.request_id.clone(),
            ]
        })
        .collect();
    let header = ["SEQ", "TIME", "OUTCOME", "REASON", "GRANT", "SUBJECT", "REQUEST ID"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    if rows.is_empty() {
        println!("(no records)");
    }
}

async fn policy(command: PolicyCommand) -> u8 {
    use stint::lint::Severity;
    use stint::policy_tools::{self, LintFormat};
    match command {
        PolicyCommand::Lint { list: true, .. } => {
            print!("{}", policy_tools::list_checks());
            policy_tools::EXIT_OK
        }
        PolicyCommand::Lint {
            config,
            format,
            fail_on,
            list: false,
        } => {
            let format = match format {
                LintFormatArg::Text => LintFormat::Text,
                LintFormatArg::Json => LintFormat::Json,
                LintFormatArg::Sarif => LintFormat::Sarif,
            };
            let fail_on = match fail_on {
                FailOn::Warning => Severity::Warning,
                FailOn::Error => Severity::Error,
            };
            policy_tools::lint_command(&config, format, fail_on)
        }
        PolicyCommand::Test { config, cases } => policy_tools::test_command(&config, &cases),
        PolicyCommand::Simulate {
            config,
            since,
            store,
            format,
        } => policy_tools::simulate_command(&config, &since, store, matches!(format, Format::Json)).await,
        PolicyCommand::Explain {
            config,
            audit: true,
            request_id,
            store,
            ..
        } => policy_tools::explain_audit_command(&config, store, request_id.as_deref().unwrap_or_default()).await,
        PolicyCommand::Explain {
            config,
            grant,
            claims,
            token,
            issuer,
            ..
        } => {
            let source = match (claims, token) {
                (Some(path), _) => policy_tools::ExplainSource::Claims(path),
                (None, Some(path)) => policy_tools::ExplainSource::Token(path),
                (None, None) => {
                    eprintln!("stint: policy explain needs --claims FILE, --token FILE or --audit --request-id ID");
                    return policy_tools::EXIT_UNUSABLE;
                }
            };
            policy_tools::explain_command(
                &config,
                grant.as_deref().unwrap_or_default(),
                &source,
                issuer.as_deref(),
            )
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
