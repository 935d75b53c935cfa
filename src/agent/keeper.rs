//! One grant kept issued: asked for with a freshly read token, written
//! out, renewed after its share of the lifetime, retried with backoff
//! (the schedule `exec --watch` uses) while the current one is valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use super::config::GrantTarget;
use super::health::Status;
use crate::client::discovery::read_token_file;
use crate::client::env::ChildEnv;
use crate::client::schedule::{renew_after, retry_after, unit_random};
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
}

/// File name → contents last written for one grant.
pub type Written = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

impl Keeper {
    /// Runs forever (the task is aborted at shutdown).
    pub async fn run(self) {
        let mut expires: Option<tokio::time::Instant> = None;
        let mut failures = 0u32;
        loop {
            match self.fetch().await.and_then(|body| self.hand_over(&body).map(|()| body)) {
                Ok(body) => {
                    failures = 0;
                    if let Some(latest) = &self.latest {
                        *latest.write().unwrap_or_else(|p| p.into_inner()) = Some(body.clone());
                    }
                    self.status.mark_fetched(self.index, expires_at(&body));
                    let lifetime = lifetime_left(&body).unwrap_or(Duration::from_secs(300));
                    expires = Some(tokio::time::Instant::now() + lifetime);
                    let wait = renew_after(lifetime, self.grant.renew_at, unit_random() * 2.0 - 1.0);
                    eprintln!(
                        "stint agent: grant {}: issued, renewing in {}s",
                        self.grant.name,
                        wait.as_secs()
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(message) => {
                    failures = failures.saturating_add(1);
                    self.status.mark_failed(self.index);
                    let left = expires.map(|at| at.saturating_duration_since(tokio::time::Instant::now()));
                    let wait = retry_after(failures, unit_random(), left.or(Some(FIRST_FETCH_RETRY_CAP)));
                    eprintln!(
                        "stint agent: grant {}: {message}; retry {failures} in {}ms",
                        self.grant.name,
                        wait.as_millis()
                    );
                    if left == Some(Duration::ZERO) {
                        // Expired with no replacement: take the dead one away
                        // rather than leave the app a credential that fails.
                        self.remove_files();
                        self.status.mark_expired(self.index);
                        if let Some(latest) = &self.latest {
                            *latest.write().unwrap_or_else(|p| p.into_inner()) = None;
                        }
                        expires = None;
                    }
                    tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
                }
            }
        }
    }

    async fn fetch(&self) -> Result<Map<String, Value>, String> {
        let token = read_token_file(&self.token_file).map_err(|e| e.to_string())?;
        let mut options = Map::new();
        if let Some(ttl) = &self.grant.ttl {
            options.insert("ttl".into(), Value::String(ttl.clone()));
        }
        self.client
            .issue(&self.grant.name, &token, options)
            .await
            .map_err(|e| e.to_string())
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

fn expires_at(body: &Map<String, Value>) -> Option<i64> {
    let text = body.get("expires_at").and_then(Value::as_str)?;
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(at.unix_timestamp())
}

fn lifetime_left(body: &Map<String, Value>) -> Option<Duration> {
    let text = body.get("expires_at").and_then(Value::as_str)?;
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let left = (at - time::OffsetDateTime::now_utc()).as_seconds_f64();
    Some(Duration::from_secs_f64(left.max(0.0)))
}
