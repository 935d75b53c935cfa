//! `stint exec` with a `postgres` grant, as a CI job runs it: the real
//! binary and `psql`, the broker on a real port, the machine's PostgreSQL.
//! The role ends when COMMAND exits, whatever way it exits; `--keep` leaves
//! it; a `stint exec` killed outright leaves it to the reaper.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stint::audit::{AuditRecord, Outcome};

use crate::client::stint;
use crate::harness::{TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;
use crate::leases::{Fixture, broker_on, chain, config_parts, fixture, login, role_exists, token};
use crate::store::postgres_host_port as pg_host_port;

const SUBJECT: &str = "repo:acme/api:ref:refs/heads/main";

/// The child: a `psql` session that reads the group's table, then writes
/// what it was given (so the test can try to log in again afterwards).
fn psql_session(f: &Fixture, then: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "psql -tAc 'SELECT n FROM public.{table}' > seen && printf '%s\\n%s\\n' \"$PGUSER\" \"$PGPASSWORD\" > creds && {then}",
            table = f.table
        ),
    ]
}

struct Run {
    code: i32,
    stderr: String,
}

/// Runs `stint exec --grant app-db ARGS -- COMMAND` in `dir`.
async fn exec(broker: &TestBroker, dir: &std::path::Path, args: &[&str], command: &[String]) -> Run {
    let mut child = stint(dir);
    child
        .args([
            "exec",
            "--broker",
            &broker.url,
            "--token-file",
            "token",
            "--grant",
            "app-db",
        ])
        .args(args)
        .arg("--")
        .args(command);
    let out = tokio::time::timeout(Duration::from_secs(60), child.output())
        .await
        .expect("stint finishes")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// The credentials the child was given, as an issuance answer's `database`.
fn creds(dir: &std::path::Path) -> (String, String, Value) {
    let text = std::fs::read_to_string(dir.join("creds")).unwrap();
    let mut lines = text.lines();
    let (user, password) = (lines.next().unwrap().to_string(), lines.next().unwrap().to_string());
    let (host, port) = pg_host_port();
    let body =
        json!({"database": {"host": host, "port": port, "dbname": "test", "username": user, "password": password}});
    (user, password, body)
}

async fn setup() -> (Fixture, TestIssuer, TestBroker, tempfile::TempDir) {
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (_, port) = pg_host_port();
    let broker = broker_on("sqlite://audit.db", &issuer, &f, port, "").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), token(&issuer, "acme/api", SUBJECT)).unwrap();
    (f, issuer, broker, dir)
}

/// The audit records of the lease whose role was `username`.
async fn records_of(broker: &TestBroker, username: &str) -> Vec<AuditRecord> {
    let records = chain(&format!("sqlite://{}", broker.audit_db().display())).await;
    let lease = records
        .iter()
        .find(|r| r.outcome == Outcome::Issued && r.detail["username"] == json!(username))
        .and_then(|r| r.issuance_id.clone())
        .expect("the issuance is audited");
    records
        .into_iter()
        .filter(|r| r.issuance_id.as_deref() == Some(lease.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_revokes_its_role_when_the_command_exits_and_the_audit_names_the_holder() {
    let (f, _issuer, broker, dir) = setup().await;
    let ran = exec(&broker, dir.path(), &[], &psql_session(&f, "true")).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(std::fs::read_to_string(dir.path().join("seen")).unwrap().trim(), "42");
    let (username, password, body) = creds(dir.path());

    assert!(!role_exists(&username).await, "the role is dropped at exit");
    assert!(login(&body).await.is_err(), "the role cannot log in after exit");
    let records = records_of(&broker, &username).await;
    assert_eq!(
        records.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        [Outcome::Issued, Outcome::Revoked]
    );
    let revoked = &records[1];
    assert_eq!(revoked.reason.as_deref(), Some("revoked_by_caller"));
    assert_eq!(
        revoked.detail["revoked_by"]["subject"],
        json!(SUBJECT),
        "the holder revoked it"
    );
    assert_eq!(revoked.detail["revoked_by"]["subject"], json!(records[0].subject));
    let lease = records[0].issuance_id.clone().unwrap();
    assert!(
        ran.stderr
            .contains(&format!("stint: lease {lease} (grant app-db) revoked")),
        "one line per lease: {}",
        ran.stderr
    );
    assert!(!ran.stderr.contains(&password), "no password on stderr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_keeps_its_exit_code_and_its_role_is_still_revoked() {
    let (f, _issuer, broker, dir) = setup().await;
    let ran = exec(&broker, dir.path(), &[], &psql_session(&f, "exit 7")).await;
    assert_eq!(ran.code, 7, "the child's exit code comes back: {}", ran.stderr);
    let (username, _, body) = creds(dir.path());
    assert!(login(&body).await.is_err(), "the role cannot log in after exit");
    let records = records_of(&broker, &username).await;
    assert_eq!(records.last().map(|r| r.outcome), Some(Outcome::Revoked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_leaves_the_role_until_its_expiry() {
    let (f, _issuer, broker, dir) = setup().await;
    let ran = exec(
        &broker,
        dir.path(),
        &["--keep", "--ttl", "1m"],
        &psql_session(&f, "true"),
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let (username, _, body) = creds(dir.path());
    let session = login(&body)
        .await
        .expect("with --keep the role still logs in after exit");
    drop(session);
    let records = records_of(&broker, &username).await;
    assert_eq!(records.iter().map(|r| r.outcome).collect::<Vec<_>>(), [Outcome::Issued]);
    assert!(!ran.stderr.contains("revoked"), "{}", ran.stderr);
}

/// A broker turning the revoke away (here: the address is over
/// `limits.per_client`, 429 with `Retry-After`) is asked again within
/// `--revoke-timeout`: the role still ends when COMMAND does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_turned_away_for_a_while_is_asked_again_within_the_timeout() {
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (_, port) = pg_host_port();
    let (grants, extra) = config_parts(&f, port, "");
    // One request per two seconds: the issuance spends it, so the revoke
    // right after is refused once.
    let broker = TestBroker::start_on(
        "sqlite://audit.db",
        &format!("  key_file: {}\n", f.files.path().join("audit.key").display()),
        &issuer_yaml("ci", &issuer, "github", ""),
        &grants,
        &format!("{extra}\nlimits: {{ per_client: {{ per_second: 0.5, burst: 1 }} }}\n"),
        stint::server::StartOptions::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), token(&issuer, "acme/api", SUBJECT)).unwrap();

    let ran = exec(&broker, dir.path(), &[], &psql_session(&f, "true")).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let (username, _, _) = creds(dir.path());
    assert!(
        !role_exists(&username).await,
        "the role is dropped at exit: {}",
        ran.stderr
    );
    let records = records_of(&broker, &username).await;
    assert_eq!(
        records.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        [Outcome::Issued, Outcome::Revoked]
    );
    assert!(
        ran.stderr.contains("(grant app-db) revoked") && !ran.stderr.contains("not revoked"),
        "{}",
        ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_that_fails_is_reported_and_leaves_the_exit_code_alone() {
    let (f, _issuer, broker, dir) = setup().await;
    let TestBroker { url, server, .. } = broker;
    // The broker goes away while COMMAND runs: the child waits for `go`.
    let command = psql_session(&f, "while [ ! -f go ]; do sleep 0.1; done; exit 3");
    let path = dir.path().to_path_buf();
    let running = tokio::spawn(async move {
        let mut child = stint(&path);
        child
            .args(["exec", "--broker", &url, "--token-file", "token", "--grant", "app-db"])
            .args(["--ttl", "1m", "--revoke-timeout", "3s", "--"])
            .args(&command);
        tokio::time::timeout(Duration::from_secs(60), child.output())
            .await
            .unwrap()
            .unwrap()
    });
    let started = Instant::now();
    while !dir.path().join("creds").exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the child never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
    std::fs::write(dir.path().join("go"), "").unwrap();
    let out = running.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("(grant app-db) not revoked: cannot reach the broker")
            && stderr.contains("the broker's reaper ends it at"),
        "{stderr}"
    );
    let (username, _, _) = creds(dir.path());
    assert!(role_exists(&username).await, "left to the reaper");
    crate::store::postgres_admin()
        .await
        .batch_execute(&format!("DROP ROLE \"{username}\""))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_exec_leaves_its_role_to_the_reaper_at_expiry() {
    let (f, _issuer, broker, dir) = setup().await;
    let mut child = stint(dir.path());
    child
        .args([
            "exec",
            "--broker",
            &broker.url,
            "--token-file",
            "token",
            "--grant",
            "app-db",
        ])
        .args(["--ttl", "8s", "--"])
        .args(psql_session(&f, "echo $$ > child.pid && exec sleep 60"));
    let mut running = child.spawn().unwrap();
    let started = Instant::now();
    while !dir.path().join("child.pid").exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the child never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.kill().await.unwrap(); // SIGKILL: stint gets no chance to revoke.
    let (username, _, body) = creds(dir.path());
    assert!(
        login(&body).await.is_ok(),
        "right after the kill the lease is still active"
    );
    assert_eq!(
        records_of(&broker, &username)
            .await
            .iter()
            .map(|r| r.outcome)
            .collect::<Vec<_>>(),
        [Outcome::Issued]
    );
    let pid = std::fs::read_to_string(dir.path().join("child.pid")).unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid.trim().parse().unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    );

    // No leak: the reaper revokes it once its ttl has passed.
    while role_exists(&username).await {
        assert!(started.elapsed() < Duration::from_secs(40), "{username} was not reaped");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let records = records_of(&broker, &username).await;
    assert_eq!(
        records
            .iter()
            .map(|r| (r.outcome, r.reason.as_deref()))
            .collect::<Vec<_>>(),
        [(Outcome::Issued, None), (Outcome::Revoked, Some("expired"))]
    );
}

/// Runs exec with its token from a GitHub Actions stand-in that hands out
/// a token expiring in `exp_in` seconds; returns how often it was asked.
async fn exec_on_github(issuer: &TestIssuer, broker: &TestBroker, f: &Fixture, exp_in: i64) -> usize {
    let mut claims = issuer.github();
    claims.insert("repository".into(), json!("acme/api"));
    claims.insert("sub".into(), json!(SUBJECT));
    claims.insert("exp".into(), json!(stint::clock::now() + exp_in));
    let (endpoint, asked) = crate::client::github_endpoint(issuer.sign(&claims)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = stint(dir.path());
    child
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", &endpoint)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", crate::client::REQUEST_TOKEN)
        .args(["exec", "--broker", &broker.url, "--audience", crate::issuer::AUDIENCE])
        .args(["--grant", "app-db", "--"])
        .args(psql_session(f, "true"));
    let out = tokio::time::timeout(Duration::from_secs(60), child.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (username, _, _) = creds(dir.path());
    assert!(!role_exists(&username).await, "revoked at exit: {stderr}");
    let records = records_of(broker, &username).await;
    assert_eq!(records.last().map(|r| r.outcome), Some(Outcome::Revoked), "{stderr}");
    asked.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revoke_reuses_a_valid_token_and_asks_again_for_one_about_to_expire() {
    let (f, issuer, broker, _dir) = setup().await;
    assert_eq!(
        exec_on_github(&issuer, &broker, &f, 300).await,
        1,
        "a valid token is re-used"
    );
    assert_eq!(
        exec_on_github(&issuer, &broker, &f, 20).await,
        2,
        "a token about to expire is asked for again, as at the start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_issued_before_a_refused_grant_is_revoked_though_the_command_never_ran() {
    let (_f, _issuer, broker, dir) = setup().await;
    let mut child = stint(dir.path());
    child
        .args(["exec", "--broker", &broker.url, "--token-file", "token"])
        .args(["--grant", "app-db", "--grant", "nope", "--", "true"]);
    let out = tokio::time::timeout(Duration::from_secs(60), child.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "the refusal's exit code: {stderr}");
    let records = chain(&format!("sqlite://{}", broker.audit_db().display())).await;
    let issued = records
        .iter()
        .find(|r| r.outcome == Outcome::Issued)
        .expect("app-db was issued");
    let username = issued.detail["username"].as_str().unwrap();
    assert!(!role_exists(username).await, "its role is dropped: {stderr}");
    assert_eq!(
        records_of(&broker, username)
            .await
            .last()
            .map(|r| (r.outcome, r.reason.clone())),
        Some((Outcome::Revoked, Some("revoked_by_caller".into())))
    );
}
