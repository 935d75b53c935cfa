//! `stint exec --watch` as a long-running service runs it: the real
//! binary, a `sh` child, the broker on a real port with a `secrets` grant
//! of a few seconds from moto's Secrets Manager, so renewals happen within
//! the test. A `secrets` grant changes only when a value changed, so it is
//! the kind that shows "one signal per real change, none without one".

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stint::server::StartOptions;
use tokio::io::AsyncBufReadExt;

use crate::client::stint;
use crate::harness::{TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;
use crate::moto::{Moto, stint_identity};

const SECRET: &str = "prod/api/stripe";

fn grant_yaml(ttl: &str) -> String {
    format!(
        r#"
  api-secrets:
    kind: secrets
    ttl: {ttl}
    secrets: [{SECRET}]
    cache_ttl: 1s
    allow:
      - issuer: ci
        claims: {{ repository: acme/api }}
"#
    )
}

struct Setup {
    moto: Moto,
    issuer: TestIssuer,
    broker: TestBroker,
    admin: aws_sdk_secretsmanager::Client,
    dir: tempfile::TempDir,
}

async fn broker_at(listen: &str, moto: &Moto, issuer: &TestIssuer, ttl: &str) -> TestBroker {
    TestBroker::start_at(
        listen,
        "sqlite://audit.db",
        "",
        &issuer_yaml("ci", issuer, "github", ""),
        &grant_yaml(ttl),
        &Moto::aws_yaml(&moto.url, ""),
        StartOptions {
            aws_credentials: Some(stint_identity()),
            ..StartOptions::default()
        },
    )
    .await
}

async fn setup(ttl: &str) -> Setup {
    let moto = Moto::start().await;
    let admin = aws_sdk_secretsmanager::Client::new(&moto.sdk("AKIAADMIN", "admin", None).await);
    admin
        .create_secret()
        .name(SECRET)
        .secret_string("value-1")
        .send()
        .await
        .unwrap();
    let issuer = TestIssuer::start().await;
    let broker = broker_at("127.0.0.1:0", &moto, &issuer, ttl).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), issuer.sign(&issuer.github())).unwrap();
    Setup {
        moto,
        issuer,
        broker,
        admin,
        dir,
    }
}

async fn rotate(admin: &aws_sdk_secretsmanager::Client, value: &str) {
    admin
        .put_secret_value()
        .secret_id(SECRET)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

/// A running `stint exec -v --watch`, its stderr collected line by line.
struct Watched {
    process: tokio::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    fn start(broker_url: &str, dir: &Path, args: &[&str], script: &str) -> Watched {
        Watched::start_grant(broker_url, dir, "api-secrets", args, script)
    }

    fn start_grant(broker_url: &str, dir: &Path, grant: &str, args: &[&str], script: &str) -> Watched {
        let mut command = stint(dir);
        command
            .args([
                "exec",
                "-v",
                "--watch",
                "--broker",
                broker_url,
                "--token-file",
                "token",
                "--grant",
                grant,
            ])
            .args(args)
            .args(["--", "sh", "-c", script]);
        let mut process = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = process.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
        Watched { process, stderr }
    }

    fn lines(&self, part: &str) -> usize {
        self.stderr.lock().unwrap().iter().filter(|l| l.contains(part)).count()
    }

    fn all(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits (generously) until stderr has `count` lines containing `part`.
    async fn wait_for(&self, part: &str, count: usize) {
        for _ in 0..600 {
            if self.lines(part) >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {count} lines with `{part}` on stderr:\n{}", self.all());
    }

    /// SIGTERM to stint (passed on to the child); its exit code.
    async fn stop(mut self) -> (i32, String) {
        if let Some(pid) = self.process.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        self.finish().await
    }

    async fn finish(&mut self) -> (i32, String) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.process.wait())
            .await
            .expect("stint finishes")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status.code().unwrap_or(-1), self.all())
    }
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

async fn wait_for_file(path: &Path, lines: usize) {
    for _ in 0..600 {
        if path.exists() && count_lines(path) >= lines {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never had {lines} lines", path.display());
}

/// The child counts the SIGHUPs it receives.
const COUNT_HUPS: &str = "trap 'echo HUP >> hups' HUP; touch started; while :; do sleep 0.1; done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_gets_one_sighup_per_real_change_and_none_without_one() {
    let s = setup("3s").await;
    let hups = s.dir.path().join("hups");
    let watched = Watched::start(
        &s.broker.url,
        s.dir.path(),
        &["--on-change", "signal:HUP", "--renew-at", "0.5"],
        COUNT_HUPS,
    );
    wait_for_file(&s.dir.path().join("started"), 0).await;

    // Renewals with the same value: no signal.
    watched.wait_for("grant api-secrets: renewed", 3).await;
    assert_eq!(count_lines(&hups), 0, "no change, no SIGHUP:\n{}", watched.all());

    for (n, value) in [(1, "value-2"), (2, "value-3")] {
        rotate(&s.admin, value).await;
        wait_for_file(&hups, n).await;
        // More renewals of the same new value: no further signal.
        let renewed = watched.lines("grant api-secrets: renewed");
        watched.wait_for("grant api-secrets: renewed", renewed + 3).await;
        assert_eq!(count_lines(&hups), n, "one SIGHUP per change:\n{}", watched.all());
    }

    let (code, stderr) = watched.stop().await;
    assert_eq!(code, 143, "the child's code (SIGTERM) comes back: {stderr}");
    for value in ["value-1", "value-2", "value-3"] {
        assert!(!stderr.contains(value), "secret value on stderr: {stderr}");
    }
    drop(s.moto);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_consumer_is_restarted_with_the_new_value() {
    let s = setup("3s").await;
    let seen = s.dir.path().join("seen");
    let script = "echo \"$PROD_API_STRIPE\" >> seen; trap 'exit 0' TERM; while :; do sleep 0.1; done";
    let watched = Watched::start(&s.broker.url, s.dir.path(), &["--renew-at", "0.5"], script);
    wait_for_file(&seen, 1).await;
    watched.wait_for("grant api-secrets: renewed", 2).await;
    assert_eq!(count_lines(&seen), 1, "not restarted without a change");

    rotate(&s.admin, "value-2").await;
    wait_for_file(&seen, 2).await;
    let (_, stderr) = watched.stop().await;
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "value-1\nvalue-2\n",
        "restarted once, with the new value: {stderr}"
    );
    assert!(stderr.contains("values changed: restarting the command"), "{stderr}");
}

/// The Unix time in an RFC 3339 stamp.
fn unix(stamp: &str) -> i64 {
    time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_stopped_the_credential_is_kept_until_expiry_then_exec_exits_6_naming_the_grant() {
    let s = setup("4s").await;
    let script = "touch started; while :; do date +%s > alive; sleep 0.1; done";
    let mut watched = Watched::start(&s.broker.url, s.dir.path(), &["--renew-at", "0.5"], script);
    wait_for_file(&s.dir.path().join("started"), 0).await;
    s.broker.server.shutdown().await;

    let (code, stderr) = watched.finish().await;
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains("stint: renewing grant api-secrets failed: cannot reach the broker"),
        "{stderr}"
    );
    assert!(stderr.contains("retrying in"), "{stderr}");
    assert!(
        stderr.contains("grant `api-secrets` expired without a replacement"),
        "the exit names the grant: {stderr}"
    );
    // The child ran until the credential it had expired, not before.
    let expiry = stderr
        .lines()
        .filter_map(|l| l.split("expires ").nth(1))
        .map(|rest| unix(rest.split([',', ' ']).next().unwrap_or(rest)))
        .max()
        .expect("-v names the expiry");
    let alive: i64 = std::fs::read_to_string(s.dir.path().join("alive"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        alive >= expiry - 1,
        "the child was stopped at {alive}, before the expiry {expiry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_back_before_expiry_renewal_resumes() {
    let s = setup("8s").await;
    let mut watched = Watched::start(&s.broker.url, s.dir.path(), &["--renew-at", "0.2"], COUNT_HUPS);
    wait_for_file(&s.dir.path().join("started"), 0).await;
    let listen = s.broker.url.trim_start_matches("http://").to_string();
    s.broker.server.shutdown().await;
    watched.wait_for("renewing grant api-secrets failed", 1).await;

    let _back = broker_at(&listen, &s.moto, &s.issuer, "8s").await;
    let before = watched.lines("grant api-secrets: renewed");
    watched.wait_for("grant api-secrets: renewed", before + 2).await;
    assert!(
        watched.process.try_wait().unwrap().is_none(),
        "still running: {}",
        watched.all()
    );
    let (code, stderr) = watched.stop().await;
    assert_eq!(code, 143, "{stderr}");
    assert!(!stderr.contains("expired"), "{stderr}");
    assert_eq!(count_lines(&s.dir.path().join("hups")), 0, "the same value: no signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_dir_files_are_never_torn_and_the_child_is_signalled_once_they_are_in_place() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = setup("3s").await;
    let big_a = format!("big-a-{}", "A".repeat(40_000));
    let big_b = format!("big-b-{}", "B".repeat(40_000));
    // On SIGHUP the child notes the start of the value it reads then.
    let script =
        "trap 'head -c 8 creds/PROD_API_STRIPE >> hups; echo >> hups' HUP; touch started; while :; do sleep 0.1; done";
    let watched = Watched::start(
        &s.broker.url,
        s.dir.path(),
        &["--out-dir", "creds", "--renew-at", "0.5"],
        script,
    );
    wait_for_file(&s.dir.path().join("started"), 0).await;
    let file = s.dir.path().join("creds/PROD_API_STRIPE");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "value-1");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    let known = ["value-1".to_string(), big_a.clone(), big_b.clone()];
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, file) = (stop.clone(), file.clone());
        std::thread::spawn(move || {
            let (mut reads, mut torn) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read_to_string(&file) {
                    Ok(text) if known.contains(&text) => reads += 1,
                    Ok(text) => torn.push(text.len()),
                    Err(e) => torn.push(usize::MAX - e.raw_os_error().unwrap_or(0) as usize),
                }
            }
            (reads, torn)
        })
    };
    let hups = s.dir.path().join("hups");
    rotate(&s.admin, &big_a).await;
    wait_for_file(&hups, 1).await;
    rotate(&s.admin, &big_b).await;
    wait_for_file(&hups, 2).await;
    let renewed = watched.lines("grant api-secrets: renewed");
    watched.wait_for("grant api-secrets: renewed", renewed + 2).await;
    stop.store(true, Ordering::Relaxed);
    let (reads, torn) = reader.join().unwrap();
    assert!(reads > 0);
    assert!(torn.is_empty(), "a reader saw a partial or missing file: {torn:?}");
    assert_eq!(
        std::fs::read_to_string(&hups).unwrap(),
        "big-a-AA\nbig-b-BB\n",
        "one SIGHUP per change (the default with --out-dir), sent once the new file is in place"
    );

    let (code, stderr) = watched.stop().await;
    assert_eq!(code, 143, "{stderr}");
    assert!(!file.exists(), "no credential left on disk after exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_postgres_role_overlaps_the_old_one_which_is_revoked_after_the_grace() {
    use crate::leases::{broker_on, fixture, role_exists, token};
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (_, port) = crate::store::postgres_host_port();
    let broker = broker_on("sqlite://audit.db", &issuer, &f, port, "").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("token"),
        token(&issuer, "acme/api", "repo:acme/api:ref:refs/heads/main"),
    )
    .unwrap();
    // The child notes the role it starts with, and the one the files hold on SIGHUP.
    let script = "printf '%s\\n' \"$PGUSER\" >> users; trap 'cat creds/PGUSER >> users; echo >> users' HUP; while :; do sleep 0.1; done";
    let watched = Watched::start_grant(
        &broker.url,
        dir.path(),
        "app-db",
        &[
            "--ttl",
            "20s",
            "--renew-at",
            "0.2",
            "--overlap",
            "4s",
            "--out-dir",
            "creds",
        ],
        script,
    );
    let users = dir.path().join("users");
    wait_for_file(&users, 2).await;
    let text = std::fs::read_to_string(&users).unwrap();
    let (old, new) = {
        let mut lines = text.lines();
        (lines.next().unwrap().to_string(), lines.next().unwrap().to_string())
    };
    assert_ne!(old, new, "a new role after the renewal");
    // When the child is told, both roles exist: it reconnects without a gap.
    assert!(role_exists(&new).await, "the new role exists before the old one goes");
    assert!(
        role_exists(&old).await,
        "the old role outlives the renewal by --overlap"
    );

    // Then the old lease is revoked through the revoke path, while the run goes on.
    watched.wait_for("(grant app-db) revoked", 1).await;
    assert!(
        !role_exists(&old).await,
        "the replaced role is dropped after the overlap"
    );
    assert!(role_exists(&new).await, "the current role stays");
    assert!(
        watched.lines("(grant app-db) replaced; revoked in") >= 1,
        "{}",
        watched.all()
    );

    let (code, stderr) = watched.stop().await;
    assert_eq!(code, 143, "{stderr}");
    let current = std::fs::read_to_string(&users)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(
        !role_exists(&current).await,
        "revoke on exit ends the lease held last: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_renewal_reads_the_token_afresh() {
    let s = setup("3s").await;
    let watched = Watched::start(&s.broker.url, s.dir.path(), &["--renew-at", "0.5"], COUNT_HUPS);
    watched.wait_for("grant api-secrets: renewed", 1).await;
    // A projected token rotated by the kubelet: here, one the policy refuses.
    let mut claims = s.issuer.github();
    claims.insert("repository".into(), serde_json::json!("acme/other"));
    std::fs::write(s.dir.path().join("token"), s.issuer.sign(&claims)).unwrap();
    watched
        .wait_for("renewing grant api-secrets failed: broker refused", 1)
        .await;
    let (_, stderr) = watched.stop().await;
    assert!(stderr.contains("403"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_expiry_keep_leaves_the_command_running_past_the_expiry() {
    let s = setup("2s").await;
    let watched = Watched::start(
        &s.broker.url,
        s.dir.path(),
        &["--renew-at", "0.5", "--on-expiry", "keep"],
        COUNT_HUPS,
    );
    wait_for_file(&s.dir.path().join("started"), 0).await;
    s.broker.server.shutdown().await;
    watched
        .wait_for(
            "grant api-secrets expired without a replacement; the command keeps running",
            1,
        )
        .await;
    let (code, stderr) = watched.stop().await;
    assert_eq!(code, 143, "still running until stopped: {stderr}");
    assert!(!stderr.contains("stopping the command"), "{stderr}");
}
