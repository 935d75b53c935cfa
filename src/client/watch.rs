//! `stint exec --watch`: keeps a long-running COMMAND supplied. Each grant
//! is asked for again before it expires (with a fresh OIDC token each
//! time); when what the child sees changed, the child is told (a signal),
//! restarted, or left alone. A renewal that fails is retried with backoff
//! while the current credential is valid; one that expires without a
//! replacement ends the run (`--on-expiry exit`) or is left to the child.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::broker::BrokerClient;
use super::child::{Child, Signals};
use super::commands::{ClientOptions, CommandError};
use super::discovery::ProcessEnv;
use super::env::ChildEnv;
use super::files;
use super::revoke::{self, Lease, OnExit};
use super::schedule::{Failed, honouring, renew_after, retry_after, unit_random};

/// What to do when a renewal changed what the child sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Send the child this signal (`signal:HUP`).
    Signal(Signal),
    /// Stop the child (SIGTERM, `--stop-grace`, SIGKILL) and start it
    /// again with the new environment.
    Restart,
    /// Nothing (the child reads the files itself).
    Nothing,
}

impl OnChange {
    /// Parses `signal:HUP`, `signal:SIGUSR1`, `restart` or `none`.
    pub fn parse(text: &str) -> Result<OnChange, String> {
        match text {
            "restart" => Ok(OnChange::Restart),
            "none" => Ok(OnChange::Nothing),
            _ => {
                let name = text.strip_prefix("signal:").ok_or_else(|| {
                    format!("--on-change `{text}`: write signal:NAME (e.g. signal:HUP), restart or none")
                })?;
                let full = if name.starts_with("SIG") {
                    name.to_string()
                } else {
                    format!("SIG{name}")
                };
                full.parse::<Signal>()
                    .map(OnChange::Signal)
                    .map_err(|_| format!("--on-change `{text}`: `{name}` is not a signal name"))
            }
        }
    }
}

/// What to do when a grant expires without a replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExpiry {
    /// Stop the child and exit 6, naming the grant.
    Exit,
    /// Leave the child running and keep trying.
    Keep,
}

impl OnExpiry {
    /// Parses `exit` or `keep`.
    pub fn parse(text: &str) -> Result<OnExpiry, String> {
        match text {
            "exit" => Ok(OnExpiry::Exit),
            "keep" => Ok(OnExpiry::Keep),
            _ => Err(format!("--on-expiry `{text}`: write exit or keep")),
        }
    }
}

/// The `--watch` settings.
#[derive(Debug, Clone)]
pub struct Watch {
    /// `--renew-at`: the share of a lifetime after which to renew.
    pub renew_at: f64,
    /// `--on-change`, or its default: `signal:HUP` with `--out-dir`,
    /// else `restart` (a running process's environment cannot change).
    pub on_change: Option<OnChange>,
    /// `--on-expiry`.
    pub on_expiry: OnExpiry,
    /// `--stop-grace`: how long a stopped child may take before SIGKILL.
    pub stop_grace: Duration,
    /// `--out-dir`: also write the credentials as files here.
    pub out_dir: Option<PathBuf>,
    /// `--overlap`: how long a lease (a `postgres` role) replaced by a
    /// renewal stays usable, so COMMAND can reconnect as the new role
    /// without a gap, before it is revoked.
    pub overlap: Duration,
}

/// One grant as currently held.
struct Held {
    grant: String,
    body: Map<String, Value>,
    expires: Option<Instant>,
    next: Option<Instant>,
    failures: u32,
    last_error: String,
    expiry_told: bool,
}

impl Held {
    fn new(grant: &str, body: Map<String, Value>, renew_at: f64) -> Held {
        let now = Instant::now();
        let lifetime = lifetime_left(&body);
        Held {
            grant: grant.to_string(),
            body,
            expires: lifetime.map(|l| now + l),
            next: lifetime.map(|l| now + renew_after(l, renew_at, unit_random() * 2.0 - 1.0)),
            failures: 0,
            last_error: String::new(),
            expiry_told: false,
        }
    }
}

/// How long an answer's `expires_at` is away (`None` when it has none:
/// then it is never renewed).
fn lifetime_left(body: &Map<String, Value>) -> Option<Duration> {
    let text = body.get("expires_at").and_then(Value::as_str)?;
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let left = (at - time::OffsetDateTime::now_utc()).as_seconds_f64();
    Some(Duration::from_secs_f64(left.max(0.0)))
}

/// The broker side of the loop: who to ask, with what.
pub struct Renewal<'a> {
    /// The broker.
    pub client: &'a BrokerClient,
    /// Client options (token discovery, `-v`).
    pub options: &'a ClientOptions,
    /// `--env` renames.
    pub renames: &'a BTreeMap<String, String>,
    /// The issue request's options (`ttl`).
    pub request: Map<String, Value>,
    /// What happens to leases at exit (the revoke timeout).
    pub on_exit: OnExit,
}

/// Runs COMMAND and keeps its grants renewed until it exits; returns its
/// exit code. `issued` are the first answers, in grant order; `leases`
/// and `token` are kept current, so the revoke at exit ends every lease
/// still held, with the newest token. Files written to `--out-dir` are
/// removed at the end, whatever ended it.
pub async fn run(
    renewal: &Renewal<'_>,
    watch: &Watch,
    issued: Vec<(String, Map<String, Value>)>,
    command: &[String],
    leases: &mut Vec<Lease>,
    token: &mut String,
) -> Result<u8, CommandError> {
    let mut written = BTreeMap::new();
    let outcome = supply(renewal, watch, issued, command, leases, token, &mut written).await;
    if let Some(dir) = &watch.out_dir {
        files::remove(dir, &written);
    }
    outcome
}

async fn supply(
    renewal: &Renewal<'_>,
    watch: &Watch,
    issued: Vec<(String, Map<String, Value>)>,
    command: &[String],
    leases: &mut Vec<Lease>,
    token: &mut String,
    written: &mut BTreeMap<String, Vec<u8>>,
) -> Result<u8, CommandError> {
    let mut held: Vec<Held> = issued
        .into_iter()
        .map(|(grant, body)| Held::new(&grant, body, watch.renew_at))
        .collect();
    let on_change = watch.on_change.unwrap_or(match watch.out_dir {
        Some(_) => OnChange::Signal(Signal::SIGHUP),
        None => OnChange::Restart,
    });
    let mut env = render(&held, renewal.renames)?;
    write_files(watch, &held, &env, written)?;
    let mut child = Child::spawn(command, &env)?;
    let mut signals = Signals::new()?;
    // Leases replaced by a renewal, and when each is revoked.
    let mut retiring: Vec<(Instant, Lease)> = Vec::new();
    loop {
        let wake = held
            .iter()
            .filter_map(|h| h.next)
            .chain(retiring.iter().map(|(at, _)| *at))
            .min();
        tokio::select! {
            status = child.wait() => return status,
            signal = signals.recv() => { child.signal(signal); continue; }
            () = sleep_until(wake) => {}
        }
        retire_due(renewal, &mut retiring, leases, token).await;
        let mut renewed = false;
        for h in held.iter_mut().filter(|h| h.next.is_some_and(|n| n <= Instant::now())) {
            // A renewal may take up to the client's timeout: signals to
            // stint still reach the child meanwhile.
            let answer = {
                let asked = renew(renewal, h, token);
                tokio::pin!(asked);
                loop {
                    tokio::select! {
                        answer = &mut asked => break answer,
                        signal = signals.recv() => child.signal(signal),
                    }
                }
            };
            match answer {
                Ok(body) => {
                    // The new lease exists now; the old one stays usable a while.
                    if let Some(old) = Lease::of(&h.grant, &h.body) {
                        let at = (Instant::now() + watch.overlap).min(h.expires.unwrap_or_else(Instant::now));
                        say(
                            renewal.options,
                            &format!(
                                "lease {} (grant {}) replaced; revoked in {:.0}s",
                                old.id,
                                old.grant,
                                at.saturating_duration_since(Instant::now()).as_secs_f64()
                            ),
                        );
                        retiring.push((at, old));
                    }
                    let expires = body.get("expires_at").and_then(Value::as_str).unwrap_or("?");
                    say(
                        renewal.options,
                        &format!("grant {}: renewed, expires {expires}", h.grant),
                    );
                    if let Some(lease) = Lease::of(&h.grant, &body) {
                        leases.push(lease);
                    }
                    *h = Held::new(&h.grant, body, watch.renew_at);
                    renewed = true;
                }
                Err(e) => {
                    if let Some(code) = failed(renewal, watch, h, e) {
                        child.stop(watch.stop_grace).await;
                        return Err(code);
                    }
                }
            }
        }
        if !renewed {
            continue;
        }
        // What cannot be handed over ends the run, and COMMAND with it.
        let fresh = match render(&held, renewal.renames) {
            Ok(fresh) => fresh,
            Err(e) => {
                child.stop(watch.stop_grace).await;
                return Err(e);
            }
        };
        if fresh.vars == env.vars {
            say(renewal.options, "values unchanged: the child is left alone");
            continue;
        }
        env = fresh;
        // The files are in place before the child is told to read them.
        if let Err(e) = write_files(watch, &held, &env, written) {
            child.stop(watch.stop_grace).await;
            return Err(e);
        }
        match on_change {
            OnChange::Signal(signal) => {
                say(
                    renewal.options,
                    &format!("values changed: sending {signal} to the child"),
                );
                child.signal(signal);
            }
            OnChange::Restart => {
                eprintln!("stint: values changed: restarting the command");
                if let Some(code) = child.stop(watch.stop_grace).await {
                    say(renewal.options, &format!("the command exited {code} on the way"));
                }
                child = Child::spawn(command, &env)?;
            }
            OnChange::Nothing => say(renewal.options, "values changed (--on-change none)"),
        }
    }
}

/// Revokes the replaced leases whose overlap is over, through the same
/// path as the revoke at exit (one stderr line each), and forgets them.
async fn retire_due(renewal: &Renewal<'_>, retiring: &mut Vec<(Instant, Lease)>, leases: &mut Vec<Lease>, token: &str) {
    let now = Instant::now();
    let due: Vec<Lease> = retiring
        .iter()
        .filter(|(at, _)| *at <= now)
        .map(|(_, l)| l.clone())
        .collect();
    if due.is_empty() {
        return;
    }
    retiring.retain(|(at, _)| *at > now);
    revoke::revoke_all(
        renewal.client,
        &renewal.options.discovery,
        token,
        &due,
        renewal.on_exit.timeout,
    )
    .await;
    leases.retain(|l| !due.iter().any(|d| d.id == l.id));
}

/// Asks for `held`'s grant again, with a token found afresh (a projected
/// token is re-read, a CI platform asked again).
async fn renew(renewal: &Renewal<'_>, held: &Held, token: &mut String) -> Result<Map<String, Value>, Failed> {
    let (fresh, _) = renewal
        .options
        .discovery
        .token(&ProcessEnv, renewal.client.http())
        .await
        .map_err(|e| Failed::from(e.to_string()))?;
    *token = fresh;
    Ok(renewal
        .client
        .issue(&held.grant, token, renewal.request.clone())
        .await?)
}

/// Notes a failed renewal on stderr and schedules the next try; returns
/// the error to end with when the grant expired and `--on-expiry exit`.
fn failed(renewal: &Renewal<'_>, watch: &Watch, held: &mut Held, failure: Failed) -> Option<CommandError> {
    let Failed { message: error, asked } = failure;
    let now = Instant::now();
    held.failures += 1;
    let left = held.expires.map(|e| e.saturating_duration_since(now));
    let expired = left.is_some_and(|l| l.is_zero());
    if expired && watch.on_expiry == OnExpiry::Exit {
        eprintln!(
            "stint: grant {} expired without a replacement (last error: {error}); stopping the command (--on-expiry exit)",
            held.grant
        );
        return Some(CommandError::Expired(held.grant.clone()));
    }
    if expired && !held.expiry_told {
        eprintln!(
            "stint: grant {} expired without a replacement; the command keeps running (--on-expiry keep) and stint keeps trying",
            held.grant
        );
        held.expiry_told = true;
    }
    let valid = left.filter(|l| !l.is_zero());
    let jitter = unit_random();
    let wait = honouring(retry_after(held.failures, jitter, valid), asked, jitter, valid);
    // One line per new error, not per try: a long outage stays readable.
    if error != held.last_error || held.failures == 1 {
        let still = valid
            .map(|l| format!(" (the current credential is valid {:.0}s more)", l.as_secs_f64()))
            .unwrap_or_default();
        eprintln!(
            "stint: renewing grant {} failed: {error}; retrying in {:.1}s{still}",
            held.grant,
            wait.as_secs_f64()
        );
    } else {
        say(
            renewal.options,
            &format!("retrying grant {} in {:.1}s", held.grant, wait.as_secs_f64()),
        );
    }
    held.last_error = error;
    held.next = Some(now + wait);
    None
}

fn say(options: &ClientOptions, message: &str) {
    if options.verbose {
        eprintln!("stint: {message}");
    }
}

/// The child's environment from every held answer.
fn render(held: &[Held], renames: &BTreeMap<String, String>) -> Result<ChildEnv, CommandError> {
    let mut env = ChildEnv::default();
    for h in held {
        env.add(&h.grant, &h.body, renames)?;
    }
    Ok(env)
}

/// Writes the files of `--out-dir`, if asked, changing only those whose
/// contents changed; `written` is what is on disk.
fn write_files(
    watch: &Watch,
    held: &[Held],
    env: &ChildEnv,
    written: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), CommandError> {
    let Some(dir) = &watch.out_dir else {
        return Ok(());
    };
    let issued: Vec<(&str, &Map<String, Value>)> = held.iter().map(|h| (h.grant.as_str(), &h.body)).collect();
    let fresh = files::render(&issued, env);
    files::write(dir, &fresh, written).map_err(|e| CommandError::Other(format!("--out-dir {}: {e}", dir.display())))?;
    *written = fresh;
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_change_and_on_expiry_parse() {
        assert_eq!(OnChange::parse("signal:HUP"), Ok(OnChange::Signal(Signal::SIGHUP)));
        assert_eq!(OnChange::parse("signal:SIGUSR1"), Ok(OnChange::Signal(Signal::SIGUSR1)));
        assert_eq!(OnChange::parse("restart"), Ok(OnChange::Restart));
        assert_eq!(OnChange::parse("none"), Ok(OnChange::Nothing));
        assert!(OnChange::parse("signal:NOPE").is_err());
        assert!(OnChange::parse("HUP").is_err());
        assert_eq!(OnExpiry::parse("keep"), Ok(OnExpiry::Keep));
        assert!(OnExpiry::parse("later").is_err());
    }

    #[test]
    fn lifetime_is_read_from_expires_at() {
        let mut body = Map::new();
        assert_eq!(lifetime_left(&body), None);
        body.insert(
            "expires_at".into(),
            Value::String(crate::clock::rfc3339(crate::clock::now() + 100)),
        );
        let left = lifetime_left(&body).unwrap_or_default();
        assert!(left > Duration::from_secs(90) && left <= Duration::from_secs(100));
        body.insert("expires_at".into(), Value::String("1970-01-01T00:00:00Z".into()));
        assert_eq!(lifetime_left(&body), Some(Duration::ZERO));
    }
}
