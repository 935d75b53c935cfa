//! One grant kept issued: asked for with a freshly read token, written
//! out, renewed after its share of the lifetime, retried with backoff
//! (the schedule `exec --watch` uses) while the current one is valid. A
//! replaced lease (a `postgres` role) stays usable for `overlap`, so the
//! app reconnects with the new one, and is then revoked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::GrantTarget;
use super::health::Status;
use super::state::{self, expires_at};
use crate::client::discovery::read_token_file;
use crate::client::env::ChildEnv;
use crate::client::revoke::Lease;
use crate::client::schedule::{Failed, honouring, renew_after, retry_after, unit_random};
use crate::client::{BrokerClient, files};

/// A failed first fetch is retried at least this often (no credential
/// yet, so no expiry bounds the wait).
const FIRST_FETCH_RETRY_CAP: Duration = Duration::from_secs(30);

/// The loop for one grant.
pub struct Keeper {
    /// The broker.
    pub client: Arc<BrokerClient>,
    /// The OIDC token file, read afresh on each request.
    pub token_file: PathBuf,
    /// The grant and its destination.
    pub grant: GrantTarget,
    /// Readiness, shared with `/readyz`.
    pub status: Status,
    /// This grant's place in `status`.
    pub index: usize,
    /// The files last written, shared so they can be removed at shutdown
    /// after this loop is stopped.
    pub written: Written,
    /// Where the newest answer goes for the AWS endpoint, if it serves
    /// this grant.
    pub latest: Option<super::endpoint::Latest>,
    /// Where the current answer is kept for an agent that takes over.
    pub state_dir: Option<PathBuf>,
    /// How long a replaced lease stays usable before it is revoked.
    pub overlap: Duration,
    /// Notified on SIGHUP: renew now rather than at the renewal point.
    pub renew_now: Arc<Notify>,
}

/// File name → contents last written for one grant.
pub type Written = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// The credential held now.
struct Held {
    body: Map<String, Value>,
    /// When to ask for the next one.
    renew_at: Instant,
    /// When this one stops working.
    expires: Instant,
}

impl Keeper {
    /// Runs forever (the task is aborted at shutdown).
    pub async fn run(self) {
        let mut held = self.take_over();
        let mut failures = 0u32;
        loop {
            if let Some(h) = &held {
                let wait = h.renew_at.saturating_duration_since(Instant::now());
                eprintln!(
                    "stint agent: grant {}: renewing in {}s",
                    self.grant.name,
                    wait.as_secs()
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.renew_now.notified() => {
                        eprintln!("stint agent: grant {}: renewing now (SIGHUP)", self.grant.name);
                    }
                }
            }
            let body = loop {
                match self.try_once().await {
                    Ok(body) => break body,
                    Err(Failed { message, asked }) => {
                        failures = failures.saturating_add(1);
                        self.status.mark_failed(self.index);
                        let left = held
                            .as_ref()
                            .map(|h| h.expires.saturating_duration_since(Instant::now()));
                        let cap = left.or(Some(FIRST_FETCH_RETRY_CAP));
                        let valid = left.filter(|l| !l.is_zero());
                        let jitter = unit_random();
                        let wait = honouring(retry_after(failures, jitter, cap), asked, jitter, valid);
                        eprintln!(
                            "stint agent: grant {}: {message}; retry {failures} in {}ms",
                            self.grant.name,
                            wait.as_millis()
                        );
                        if left == Some(Duration::ZERO) {
                            // Expired with no replacement: take the dead one
                            // away rather than leave the app a credential
                            // that fails.
                            eprintln!(
                                "stint agent: grant {}: expired with no replacement; its files are removed until one is issued",
                                self.grant.name
                            );
                            self.forget();
                            held = None;
                        }
                        tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
                    }
                }
            };
            failures = 0;
            if let Some(old) = held.take() {
                self.retire(&old);
            }
            let h = self.keep(body, crate::clock::now());
            self.status.mark_fetched(self.index, expires_at(&h.body));
            held = Some(h);
        }
    }

    /// `stint agent --once`: makes sure the grant is held and written (a
    /// kept credential is taken over, else one is issued), retrying until
    /// `deadline`.
    pub async fn first(&self, deadline: Instant) -> Result<(), String> {
        if self.take_over().is_some() {
            return Ok(());
        }
        let mut failures = 0u32;
        loop {
            match self.try_once().await {
                Ok(body) => {
                    self.keep(body, crate::clock::now());
                    return Ok(());
                }
                Err(Failed { message, asked }) => {
                    failures = failures.saturating_add(1);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(message);
                    }
                    let jitter = unit_random();
                    let wait = honouring(retry_after(failures, jitter, Some(left)), asked, jitter, Some(left));
                    eprintln!(
                        "stint agent: grant {}: {message}; retry {failures} in {}ms",
                        self.grant.name,
                        wait.as_millis()
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Takes over the credential kept in `state_dir`, if one is there and
    /// still valid: written out again, served, renewed at the point its
    /// own lifetime gives.
    fn take_over(&self) -> Option<Held> {
        let dir = self.state_dir.as_deref()?;
        let now = crate::clock::now();
        let saved = state::load(dir, &self.grant.name, now)?;
        if let Err(e) = self.hand_over(&saved.body) {
            eprintln!("stint agent: grant {}: {e}; issuing afresh", self.grant.name);
            return None;
        }
        let held = self.held(saved.body, saved.received_at, now)?;
        self.serve(&held.body);
        self.status.mark_taken_over(self.index, expires_at(&held.body));
        eprintln!(
            "stint agent: grant {}: taken over from {}",
            self.grant.name,
            dir.display()
        );
        Some(held)
    }

    /// Makes `body` (received at `received_at`) the one held: served, kept
    /// in `state_dir`.
    fn keep(&self, body: Map<String, Value>, received_at: i64) -> Held {
        if let Some(dir) = &self.state_dir
            && let Err(e) = state::save(dir, &self.grant.name, received_at, &body)
        {
            // Only a later take-over is lost: the credential still works.
            eprintln!(
                "stint agent: grant {}: cannot keep it in {}: {e}",
                self.grant.name,
                dir.display()
            );
        }
        self.serve(&body);
        let expires = body
            .get("expires_at")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        eprintln!("stint agent: grant {}: issued, expires {expires}", self.grant.name);
        let now = crate::clock::now();
        self.held(body.clone(), received_at, now).unwrap_or(Held {
            body,
            renew_at: Instant::now() + Duration::from_secs(300),
            expires: Instant::now() + Duration::from_secs(300),
        })
    }

    /// When to renew and when it expires, from the answer's `expires_at`
    /// and when it was received (`None` if the answer has no expiry or it
    /// has passed).
    fn held(&self, body: Map<String, Value>, received_at: i64, now: i64) -> Option<Held> {
        let expires_at = expires_at(&body)?;
        let lifetime = Duration::from_secs(u64::try_from(expires_at - received_at).ok()?);
        let after = renew_after(lifetime, self.grant.renew_at, unit_random() * 2.0 - 1.0);
        let since = Duration::from_secs(u64::try_from(now - received_at).unwrap_or(0));
        let left = Duration::from_secs(u64::try_from(expires_at - now).ok().filter(|s| *s > 0)?);
        Some(Held {
            body,
            renew_at: Instant::now() + after.saturating_sub(since),
            expires: Instant::now() + left,
        })
    }

    fn serve(&self, body: &Map<String, Value>) {
        if let Some(latest) = &self.latest {
            *latest.write().unwrap_or_else(|p| p.into_inner()) = Some(body.clone());
        }
    }

    /// The held credential expired with no replacement: its files, its
    /// kept state and what the AWS endpoint serves are removed.
    fn forget(&self) {
        self.remove_files();
        if let Some(dir) = &self.state_dir {
            state::remove(dir, &self.grant.name);
        }
        self.status.mark_expired(self.index);
        if let Some(latest) = &self.latest {
            *latest.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// A replaced lease is revoked once `overlap` has passed (or at its
    /// expiry, if that comes first), in a task of its own so renewals go
    /// on meanwhile. One not revoked is ended by the broker's reaper.
    fn retire(&self, old: &Held) {
        let Some(lease) = Lease::of(&self.grant.name, &old.body) else {
            return;
        };
        let until = (Instant::now() + self.overlap).min(old.expires);
        eprintln!(
            "stint agent: lease {} (grant {}) replaced; revoked in {}s",
            lease.id,
            lease.grant,
            until.saturating_duration_since(Instant::now()).as_secs()
        );
        let client = self.client.clone();
        let token_file = self.token_file.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            let line = match read_token_file(&token_file) {
                Err(e) => format!("no OIDC token to revoke with: {e}"),
                Ok(token) => match client.revoke(&lease.id, &token).await {
                    Ok(_) => String::new(),
                    Err(e) => e.to_string(),
                },
            };
            if line.is_empty() {
                eprintln!("stint agent: lease {} (grant {}) revoked", lease.id, lease.grant);
            } else {
                eprintln!(
                    "stint agent: lease {} (grant {}) not revoked: {line}; the broker's reaper ends it at {}",
                    lease.id, lease.grant, lease.expires_at
                );
            }
        });
    }

    /// One issuance, written out: the answer, or why not.
    async fn try_once(&self) -> Result<Map<String, Value>, Failed> {
        let body = self.fetch().await?;
        self.hand_over(&body)?;
        Ok(body)
    }

    async fn fetch(&self) -> Result<Map<String, Value>, Failed> {
        let token = read_token_file(&self.token_file).map_err(|e| Failed::from(e.to_string()))?;
        let mut options = Map::new();
        if let Some(ttl) = &self.grant.ttl {
            options.insert("ttl".into(), Value::String(ttl.clone()));
        }
        Ok(self.client.issue(&self.grant.name, &token, options).await?)
    }

    /// Removes the files this grant wrote (a credential past its expiry,
    /// or the agent stopping: none is left on the shared volume).
    pub fn remove_files(&self) {
        remove_files(self.grant.files.as_deref(), &self.written);
    }

    fn hand_over(&self, body: &Map<String, Value>) -> Result<(), String> {
        let Some(dir) = &self.grant.files else { return Ok(()) };
        let mut env = ChildEnv::default();
        env.add(&self.grant.name, body, &BTreeMap::new())
            .map_err(|e| e.to_string())?;
        let rendered = files::render(&[(self.grant.name.as_str(), body)], &env);
        // A poisoned lock only means another thread panicked mid-write;
        // the map is still a valid record of what is on disk.
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        files::write(dir, &rendered, &written).map_err(|e| format!("cannot write files in {}: {e}", dir.display()))?;
        *written = rendered;
        Ok(())
    }
}

/// Removes the files recorded in `written` from `dir`.
pub fn remove_files(dir: Option<&Path>, written: &Written) {
    let mut written = written.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = dir {
        files::remove(dir, &written);
    }
    written.clear();
}
