//! `stint exec`, `stint credential-process` and `stint token --grant`:
//! shared set-up (broker, token discovery) and what each prints.

use std::io::Write;

use serde_json::{Map, Value, json};

use super::broker::{BrokerClient, BrokerTls, ClientError};
use super::discovery::{Discovery, DiscoveryError, ProcessEnv};
use super::env::ChildEnv;
use super::revoke::{self, Lease, OnExit};
use super::watch::{self, Renewal, Watch};
use super::{credential_process, exec, retry};

/// Options every client command takes.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Broker base URL (`--broker` / `STINT_BROKER`).
    pub broker: Option<String>,
    /// Token discovery settings.
    pub discovery: Discovery,
    /// How to reach the broker over TLS (extra CA, client certificate).
    pub tls: BrokerTls,
    /// `-v`: say what happens on stderr (never a secret).
    pub verbose: bool,
    /// `--retry-for`: how long an issuance may be retried when the broker
    /// is busy or unreachable (see [`super::retry`]); zero turns it off.
    pub retry_for: std::time::Duration,
}

/// Why a client command failed, with its documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Wrong arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    /// No OIDC token could be found (exit 3).
    #[error(transparent)]
    NoToken(#[from] DiscoveryError),
    /// The broker said no (exit 4) or was unavailable (exit 5).
    #[error(transparent)]
    Broker(#[from] Box<ClientError>),
    /// Anything else (exit 1).
    #[error("{0}")]
    Other(String),
    /// Under `--watch`, this grant expired without a replacement and
    /// `--on-expiry exit` (exit 6).
    #[error("grant `{0}` expired without a replacement: the broker could not renew it (--on-expiry exit)")]
    Expired(String),
}

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> Self {
        CommandError::Broker(Box::new(e))
    }
}

impl CommandError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Usage(_) => 2,
            CommandError::NoToken(_) => 3,
            CommandError::Broker(e) => e.as_ref().exit_code(),
            CommandError::Other(_) => 1,
            CommandError::Expired(_) => 6,
        }
    }
}

fn say(options: &ClientOptions, message: &str) {
    if options.verbose {
        eprintln!("stint: {message}");
    }
}

async fn connect(options: &ClientOptions) -> Result<(BrokerClient, String), CommandError> {
    let broker = options
        .broker
        .as_deref()
        .ok_or_else(|| CommandError::Usage("no broker: pass --broker URL or set STINT_BROKER".into()))?;
    let client = BrokerClient::new(broker, &options.tls)?;
    let (token, source) = options.discovery.token(&ProcessEnv, client.http()).await?;
    say(options, &format!("OIDC token from {source}"));
    Ok((client, token))
}

fn request_options(ttl: Option<&str>) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(ttl) = ttl {
        body.insert("ttl".into(), json!(ttl));
    }
    body
}

fn describe(grant: &str, body: &Map<String, Value>) -> String {
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("?");
    format!(
        "grant {grant}: kind {}, expires {}, issuance {}",
        field("kind"),
        field("expires_at"),
        field("issuance_id")
    )
}

/// `stint exec`: returns the child's exit code. Once the child has exited
/// (or a later step failed), every lease issued is revoked unless
/// `on_exit.keep`; what the revokes do never changes the exit code. With
/// `watch`, the grants are renewed while the child runs.
pub async fn exec(
    options: &ClientOptions,
    grants: &[String],
    env_pairs: &[String],
    ttl: Option<&str>,
    command: &[String],
    on_exit: OnExit,
    watch: Option<&Watch>,
) -> Result<u8, CommandError> {
    if command.is_empty() {
        return Err(CommandError::Usage(
            "no command: stint exec --grant NAME -- COMMAND [ARGS]".into(),
        ));
    }
    let renames = exec::renames(env_pairs).map_err(CommandError::Usage)?;
    let (client, mut token) = connect(options).await?;
    let mut leases = Vec::new();
    let outcome = match issue_all(options, &client, &mut token, grants, &renames, ttl, &mut leases).await {
        Ok((env, issued)) => match watch {
            Some(watch) => {
                let renewal = Renewal {
                    client: &client,
                    options,
                    renames: &renames,
                    request: request_options(ttl),
                    on_exit,
                };
                mask(&env)?;
                announce(options, &env, command);
                watch::run(&renewal, watch, issued, command, &mut leases, &mut token).await
            }
            None => run_child(options, &env, command).await,
        },
        Err(e) => Err(e),
    };
    if on_exit.keep {
        for lease in &leases {
            say(
                options,
                &format!(
                    "--keep: lease {} (grant {}) lives until {}",
                    lease.id, lease.grant, lease.expires_at
                ),
            );
        }
    } else {
        revoke::revoke_all(&client, &options.discovery, &token, &leases, on_exit.timeout).await;
    }
    outcome
}

/// Issues each grant into the child's environment, noting its lease in
/// `leases` as soon as it exists, so a later failure still revokes it.
async fn issue_all(
    options: &ClientOptions,
    client: &BrokerClient,
    token: &mut String,
    grants: &[String],
    renames: &std::collections::BTreeMap<String, String>,
    ttl: Option<&str>,
    leases: &mut Vec<Lease>,
) -> Result<(ChildEnv, Vec<(String, Map<String, Value>)>), CommandError> {
    let mut env = ChildEnv::default();
    let mut issued = Vec::new();
    let deadline = retry::deadline(options);
    for grant in grants {
        let body = issue(options, client, grant, token, ttl, deadline).await?;
        leases.extend(Lease::of(grant, &body));
        env.add(grant, &body, renames)?;
        issued.push((grant.clone(), body));
    }
    if let Some((secret, _)) = renames.iter().find(|(_, var)| !env.vars.contains_key(*var)) {
        return Err(CommandError::Usage(format!(
            "--env names `{secret}`, which none of the grants returned"
        )));
    }
    Ok((env, issued))
}

/// Issues `grant` (asking again within `deadline`, see [`retry::issue`]) and,
/// with `-v`, says what came back.
async fn issue(
    options: &ClientOptions,
    client: &BrokerClient,
    grant: &str,
    token: &mut String,
    ttl: Option<&str>,
    deadline: tokio::time::Instant,
) -> Result<Map<String, Value>, ClientError> {
    let body = retry::issue(options, client, grant, token, &request_options(ttl), deadline).await?;
    say(options, &describe(grant, &body));
    Ok(body)
}

/// `-v`: the program and the names (never the values) of its variables.
fn announce(options: &ClientOptions, env: &ChildEnv, command: &[String]) {
    let names: Vec<&str> = env.vars.keys().map(String::as_str).collect();
    say(
        options,
        &format!(
            "running {} with {}",
            command.first().map_or("", String::as_str),
            names.join(", ")
        ),
    );
}

/// GitHub Actions hides masked values in every later log line.
fn mask(env: &ChildEnv) -> Result<(), CommandError> {
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        exec::mask_for_github(&env.secrets, &mut std::io::stdout()).map_err(|e| CommandError::Other(e.to_string()))?;
    }
    Ok(())
}

/// Runs the child with `env`; returns its exit code.
async fn run_child(options: &ClientOptions, env: &ChildEnv, command: &[String]) -> Result<u8, CommandError> {
    mask(env)?;
    announce(options, env, command);
    exec::run(command, env).await.map_err(CommandError::Other)
}

/// The cache key for the caller: SHA-256 of the whole token. Keying by
/// claims read without verifying them (`iss` + `sub`) would hand a second
/// job with the same subject, but claims the policy denies (another
/// `workflow_ref`, `event_name`), the first job's credentials without the
/// broker deciding or auditing. Only the holder of the very token the
/// broker accepted finds its entry.
fn token_identity(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `stint credential-process`: prints the AWS credential_process JSON.
pub async fn credential_process(options: &ClientOptions, grant: &str, ttl: Option<&str>) -> Result<(), CommandError> {
    let (client, mut token) = connect(options).await?;
    let broker = options.broker.clone().unwrap_or_default();
    let cache = credential_process::cache_path(&broker, grant, &options.discovery.audience, &token_identity(&token));
    let now = crate::clock::now();
    if let Some(cached) = cache.as_deref().and_then(|p| credential_process::read_cached(p, now)) {
        say(options, "credentials from the local cache");
        return print_json(&cached);
    }
    let body = issue(options, &client, grant, &mut token, ttl, retry::deadline(options)).await?;
    let credentials = body.get("credentials").cloned().ok_or_else(|| {
        CommandError::Usage(format!(
            "grant `{grant}` is not an aws grant: credential-process needs `kind: aws`"
        ))
    })?;
    if let Some(path) = &cache
        && let Err(e) = credential_process::write_cached(path, &credentials)
    {
        say(
            options,
            &format!("could not cache credentials at {}: {e}", path.display()),
        );
    }
    print_json(&credentials)
}

/// `stint token --grant`: prints a `kind: token` credential.
pub async fn token(options: &ClientOptions, grant: &str, ttl: Option<&str>) -> Result<(), CommandError> {
    let (client, mut token) = connect(options).await?;
    let body = issue(options, &client, grant, &mut token, ttl, retry::deadline(options)).await?;
    let issued = body
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| CommandError::Usage(format!("grant `{grant}` is not a token grant")))?;
    println!("{issued}");
    Ok(())
}

fn print_json(value: &Value) -> Result<(), CommandError> {
    let mut out = std::io::stdout();
    writeln!(out, "{value}")
        .and_then(|()| out.flush())
        .map_err(|e| CommandError::Other(e.to_string()))
}
