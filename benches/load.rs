//! Where the time goes, in one run on one machine: `cargo bench --bench load`.
//!
//! 1. The ceiling: a minimal axum endpoint that only verifies the RS256
//!    token (jsonwebtoken with aws-lc-rs, as stint does), run by this
//!    binary as a separate process, so it meets the load on the same terms
//!    as stint: its own process and runtime, loopback TCP in between.
//! 2. stint end to end (the release binary, a separate process) for a
//!    `token` grant, a `secrets` grant and an `aws` grant (cache hits), with
//!    durable audit on SQLite; the same with the log on tmpfs (no fsync
//!    cost: "audit in memory"); the same on PostgreSQL.
//! 3. The cache-miss path against moto_server, and coalescing: 100
//!    concurrent identical misses and the AssumeRole calls they caused
//!    (read from stint's own metrics).
//! 4. p99 at half of the measured maximum (paced load), the broker's peak
//!    RSS, and start-to-ready time of the binary.
//! 5. An auditor on a large log: issuance p99 at half rate on a SQLite log
//!    of STINT_BENCH_AUDIT_RECORDS records (default 1,000,000, written
//!    straight into the file), alone and while an auditor pages through
//!    the whole log over `GET /v1/audit` (see `auditor/mod.rs`).
//!
//! Caller tokens are shaped like GitHub Actions ID tokens (about 1.7 KB,
//! 31 claims), 2,000 of them with a `jti` each, used in turn.
//!
//! Figures are printed as a table with ratios to the ceiling (absolute
//! numbers vary with the machine), including the server's CPU time per
//! request (all its threads, from /proc) and its ratio to the ceiling's:
//! steadier than throughput on a machine the load generator shares, where
//! throughput also depends on what the generator takes; and, of that, the
//! SQLite audit writer thread's CPU and bytes written per record; and the
//! CPU the machine's PostgreSQL processes spent per request (`pg µs`: the
//! store shares the cores; counted from processes alive through the whole
//! phase, so only where PostgreSQL runs on this machine). Written
//! as JSON to `$CARGO_TARGET_DIR/stint-bench/load-<unix time>.json` (and
//! `latest.json`) for comparison between commits. STINT_BENCH_SECONDS sets
//! each phase's length (default 5), STINT_BENCH_CONNECTIONS the client
//! connections (default 32). Needs moto_server (STINT_MOTO_SERVER, or the
//! venv scripts/test makes) and PostgreSQL (STINT_TEST_POSTGRES).
//! STINT_BENCH_STINT runs another stint binary (an earlier commit's) under
//! the same load; STINT_BENCH_CEILING_WRAP runs the ceiling under a command
//! (a profiler, say). STINT_BENCH_ONLY runs a part alone:
//! - `token`: the ceiling and the `token` path on SQLite and PostgreSQL
//!   (no moto needed);
//! - `logging`: the ceiling and the `token` path with logging as shipped
//!   (an access line per request, text and JSON) against `STINT_LOG=warn`,
//!   STINT_BENCH_ROUNDS times (default 3): what the access log costs;
//! - `auditor`: the ceiling and phase 5 (no moto or PostgreSQL needed);
//! - `rss`: `token` issuances until STINT_BENCH_RSS_REQUESTS (default 1M),
//!   with the broker's memory along the way;
//! - `single_use`: the ceiling, and the `token` path on SQLite and
//!   PostgreSQL with and without `single_use_token` (each caller token
//!   used once).

use std::io::Write as _;
use std::net::TcpListener as StdListener;
mod auditor;
mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use common::Process;

/// A number from the environment, or `default` when unset or unreadable.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn seconds() -> u64 {
    env_number("STINT_BENCH_SECONDS", 5)
}

fn connections() -> usize {
    env_number("STINT_BENCH_CONNECTIONS", 32)
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The OIDC issuer every caller token comes from.
struct Issuer {
    url: String,
    key: KeyPair,
    n: String,
    e: String,
}

impl Issuer {
    async fn start() -> Issuer {
        let key = KeyPair::generate(KeySize::Rsa2048).expect("rsa keygen");
        let public = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
        let (n, e) = (b64(&public.n), b64(&public.e));
        let jwks = json!({"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig", "n": n, "e": e}]});
        let url = common::serve_issuer(jwks).await;
        Issuer { url, key, n, e }
    }

    /// A caller token shaped like a GitHub Actions ID token (the claims of
    /// `fixtures/oidc/github-actions-push.json`, about 1.7 KB signed): a
    /// realistic size to verify, and a dozen claims the audit record keeps.
    /// Each token has its own `jti` and run, as each CI job's does, so the
    /// audit log's token index sees the spread it sees in production.
    fn token(&self, sub: &str) -> String {
        let now = stint::clock::now();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": "bench"});
        let run = u64::from(uuid::Uuid::new_v4().as_fields().0);
        let sha = uuid::Uuid::new_v4().simple().to_string() + "0123abcd";
        let claims = json!({
            "iss": self.url, "aud": "stint", "sub": sub, "iat": now, "nbf": now - 5, "exp": now + 3000,
            "jti": uuid::Uuid::new_v4().to_string(),
            "ref": "refs/heads/main", "ref_type": "branch", "ref_protected": "true", "sha": sha,
            "repository": "acme/api", "repository_owner": "acme", "repository_id": "812345678",
            "repository_owner_id": "91234567", "repository_visibility": "private",
            "actor": "acme-dev", "actor_id": "1234567", "runner_environment": "github-hosted",
            "environment": "production", "run_id": run.to_string(), "run_number": "43", "run_attempt": "1",
            "check_run_id": (run + 27_000_000_000).to_string(), "workflow": "Deploy",
            "workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main", "workflow_sha": sha,
            "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
            "job_workflow_sha": sha, "event_name": "push", "enterprise": "acme-corp", "enterprise_id": "4711",
        });
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("sign");
        format!("{input}.{}", b64(sig))
    }

    /// `n` distinct caller tokens (see [`Issuer::token`]) with
    /// [`CALLER_SUBJECTS`] subjects `sub:0`, `sub:1`, ... in turn, as the
    /// jobs of a repository's branches and environments have.
    fn tokens(&self, sub: &str, n: usize) -> Arc<Vec<String>> {
        Arc::new(
            (0..n)
                .map(|i| self.token(&format!("{sub}:{}", i % CALLER_SUBJECTS)))
                .collect(),
        )
    }
}

/// How many distinct caller tokens a phase rotates through.
const CALLER_TOKENS: usize = 2000;
/// How many subjects those tokens have: enough that each commit's records
/// have different subjects, as in a busy organisation.
const CALLER_SUBJECTS: usize = 50;

/// Set in the ceiling's process: "ISSUER_URL N E".
const CEILING_ENV: &str = "STINT_BENCH_CEILING_FOR";

/// The ceiling server's process (this binary again).
struct Ceiling {
    process: Process,
    url: String,
}

/// Starts the ceiling in its own process; its first stdout line is its URL.
fn ceiling(issuer: &Issuer) -> Ceiling {
    use std::io::BufRead as _;
    // STINT_BENCH_CEILING_WRAP: a command to run the ceiling under (say, a
    // script that starts it under callgrind), as STINT_BENCH_STINT does for
    // stint, so both can be counted the same way.
    let own = std::env::current_exe().expect("own path");
    let mut command = match std::env::var_os("STINT_BENCH_CEILING_WRAP") {
        Some(wrap) => {
            let mut command = Command::new(wrap);
            command.arg(own);
            command
        }
        None => Command::new(own),
    };
    let mut child = command
        .env(CEILING_ENV, format!("{} {} {}", issuer.url, issuer.n, issuer.e))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the ceiling process");
    let mut url = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut url)
        .expect("the ceiling's URL");
    Ceiling {
        process: Process(child),
        url: url.trim().to_string(),
    }
}

/// The ceiling: verify the token (same library, same backend), answer 200.
async fn serve_ceiling(spec: &str) {
    let mut parts = spec.split(' ');
    let (url, n, e) = (
        parts.next().expect("url"),
        parts.next().expect("n"),
        parts.next().expect("e"),
    );
    let key = Arc::new(jsonwebtoken::DecodingKey::from_rsa_components(n, e).expect("key"));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["stint"]);
    validation.set_issuer(&[url]);
    let validation = Arc::new(validation);
    let handler = move |headers: axum::http::HeaderMap| {
        let (key, validation) = (key.clone(), validation.clone());
        async move {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            match jsonwebtoken::decode::<Value>(token, &key, &validation) {
                Ok(_) => (axum::http::StatusCode::OK, axum::Json(json!({"ok": true}))),
                Err(_) => (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"ok": false}))),
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/verify", listener.local_addr().expect("addr"));
    let router = axum::Router::new().route("/verify", axum::routing::post(handler));
    println!("{url}");
    let _ = std::io::stdout().flush();
    let _ = axum::serve(listener, router).await;
}

/// Latency figures of one phase.
#[derive(Debug, Clone, serde::Serialize)]
struct Figures {
    name: String,
    requests: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: usize,
    /// CPU time the server process spent per answered request (all its
    /// threads), µs: what the machine pays per request, whatever the load
    /// generator takes.
    server_cpu_us: f64,
    /// Of which the SQLite audit writer thread, per record (one record per
    /// request); 0 where the store has no writer thread (PostgreSQL).
    writer_cpu_us: f64,
    /// Of `writer_cpu_us`, the writer's time in the kernel: WAL writes,
    /// file locks, the sync (on a VM's disk, most of the writer's time).
    writer_sys_us: f64,
    /// Bytes the writer thread handed to `write(2)` per record: the WAL
    /// frames of the table and its indexes.
    writer_bytes: f64,
    /// CPU time the local PostgreSQL server's processes spent per answered
    /// request, µs (about 0 where the store is SQLite).
    postgres_cpu_us: f64,
    /// Of `server_cpu_us`, the time in the kernel (system time): syscalls,
    /// wake-ups, TCP.
    server_sys_us: f64,
    /// Context switches of the server's threads per answered request
    /// (voluntary and not): each wake-up of a parked thread is one.
    server_switches: f64,
}

/// The SQLite audit writer thread's name, as `/proc` shows it (15 bytes).
const WRITER_THREAD: &str = "stint-audit-wri";

/// CPU time (µs) and bytes written so far by the thread of `pid` named
/// `name`, from `/proc/PID/task/TID/{stat,io}`.
fn thread_usage(pid: u32, name: &str) -> (f64, f64, f64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0.0, 0.0, 0.0);
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let comm = stat.split_once('(').and_then(|(_, rest)| rest.rsplit_once(')'));
        if comm.is_some_and(|(comm, _)| comm == name) {
            let io = std::fs::read_to_string(task.path().join("io")).unwrap_or_default();
            let wchar = io
                .lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            return (stat_cpu_micros(&stat), stat_field(&stat, 12) * 10_000.0, wchar);
        }
    }
    (0.0, 0.0, 0.0)
}

/// User + system CPU time so far of every process named `postgres` (the
/// server, its backends and its background workers), in µs. A process
/// that ends between two readings takes its time with it; the brokers keep
/// their connections through a phase.
fn postgres_cpu_micros() -> f64 {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    processes
        .flatten()
        .filter(|p| p.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|p| std::fs::read_to_string(p.path().join("stat")).ok())
        .filter(|stat| stat.contains(" (postgres) "))
        .map(|stat| stat_cpu_micros(&stat))
        .sum()
}

/// User + system CPU time of process `pid` so far, in µs.
fn cpu_micros(pid: u32) -> f64 {
    stat_cpu_micros(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// System CPU time of process `pid` so far, in µs.
fn sys_micros(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_field(&stat, 12) * 10_000.0
}

/// Context switches so far of every thread of `pid` (threads that ended
/// take theirs with them; the broker's threads live through a phase).
fn context_switches(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_once(':').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Field `n` (0: the state) after the command name of a `/proc/.../stat` line.
fn stat_field(stat: &str, n: usize) -> f64 {
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .nth(n)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// User + system time of a `/proc/.../stat` line, µs (`/proc`'s clock
/// ticks are 1/100 s on Linux).
fn stat_cpu_micros(stat: &str) -> f64 {
    (stat_field(stat, 11) + stat_field(stat, 12)) * 10_000.0
}

fn figures(name: &str, mut micros: Vec<u32>, errors: usize, elapsed: Duration, cpu_us: f64) -> Figures {
    micros.sort_unstable();
    let at = |q: f64| {
        let index = ((micros.len() as f64 - 1.0) * q).round() as usize;
        micros.get(index).copied().unwrap_or(0) as f64 / 1000.0
    };
    Figures {
        name: name.to_string(),
        requests: micros.len(),
        per_second: micros.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        errors,
        server_cpu_us: cpu_us / micros.len().max(1) as f64,
        writer_cpu_us: 0.0,
        writer_sys_us: 0.0,
        writer_bytes: 0.0,
        postgres_cpu_us: 0.0,
        server_sys_us: 0.0,
        server_switches: 0.0,
    }
}

/// Closed-loop load from `connections()` clients, each with its own
/// keep-alive connection; `pace`: open-loop at this many requests/s in all.
async fn load(
    name: &str,
    server: u32,
    url: &str,
    tokens: Arc<Vec<String>>,
    body: Option<Value>,
    pace: Option<f64>,
) -> Figures {
    load_tokens(name, server, url, tokens, body, pace, false).await
}

/// [`load`]; with `once`, each token is sent once and the phase ends when
/// they are all spent (a `single_use_token` grant refuses a token again).
async fn load_tokens(
    name: &str,
    server: u32,
    url: &str,
    tokens: Arc<Vec<String>>,
    body: Option<Value>,
    pace: Option<f64>,
    once: bool,
) -> Figures {
    let clients = connections();
    let cpu_before = cpu_micros(server);
    let (sys_before, switches_before) = (sys_micros(server), context_switches(server));
    let writer_before = thread_usage(server, WRITER_THREAD);
    let postgres_before = postgres_cpu_micros();
    let deadline = Instant::now() + Duration::from_secs(seconds());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (url, tokens, body) = (url.to_string(), tokens.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let interval = pace.map(|rate| Duration::from_secs_f64(clients as f64 / rate));
            let mut next = Instant::now();
            let (mut micros, mut errors) = (Vec::new(), 0usize);
            let mut n = client;
            while Instant::now() < deadline && !(once && n >= tokens.len()) {
                if let Some(interval) = interval {
                    next += interval;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                let token = &tokens[n % tokens.len()];
                n += clients;
                let mut request = http.post(&url).bearer_auth(token);
                if let Some(body) = &body {
                    request = request.json(body);
                }
                let sent = Instant::now();
                match request.send().await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        micros.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    _ => errors += 1,
                }
            }
            (micros, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (micros, e) = task.await.expect("client task");
        all.extend(micros);
        errors += e;
    }
    let elapsed = started.elapsed();
    let writer_after = thread_usage(server, WRITER_THREAD);
    let postgres_after = postgres_cpu_micros();
    let mut figures = figures(name, all, errors, elapsed, cpu_micros(server) - cpu_before);
    let records = figures.requests.max(1) as f64;
    figures.writer_cpu_us = (writer_after.0 - writer_before.0) / records;
    figures.writer_sys_us = (writer_after.1 - writer_before.1) / records;
    figures.writer_bytes = (writer_after.2 - writer_before.2) / records;
    figures.postgres_cpu_us = (postgres_after - postgres_before) / records;
    figures.server_sys_us = (sys_micros(server) - sys_before) / records;
    figures.server_switches = (context_switches(server) - switches_before) / records;
    figures
}

/// The stint binary under test: this build's, or STINT_BENCH_STINT (say,
/// the binary of an earlier commit, to compare two builds on one machine).
fn stint_binary() -> String {
    std::env::var("STINT_BENCH_STINT").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stint").to_string())
}

/// A `stint serve` process of the release binary.
struct Broker {
    process: Process,
    url: String,
    admin: String,
    ready_after: Duration,
    _dir: tempfile::TempDir,
}

impl Broker {
    async fn start(store: &str, issuer: &Issuer, aws_url: &str) -> Broker {
        Broker::start_logging(store, issuer, aws_url, &[("STINT_LOG", "warn")]).await
    }

    /// As [`Broker::start`], with `log` as the broker's logging
    /// environment (`STINT_LOG`, `STINT_LOG_FORMAT`).
    async fn start_logging(store: &str, issuer: &Issuer, aws_url: &str, log: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, admin) = (free_port(), free_port());
        let config = format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\n\
             audit: {{ store: \"{store}\", key_file: audit.key }}\nsigning: {{ key_file: signing.key }}\n\
             limits: {{ max_in_flight: 4096 }}\n\
             auditors: [ {{ issuer: bench, claims: {{ sub: auditor }} }} ]\n\
             aws: {{ region: us-east-1, endpoint_url: \"{aws_url}\", sts_rate_limit: {{ per_second: 600, burst: 600 }} }}\n\
             issuers: {{ bench: {{ issuer: \"{iss}\", audience: stint, algorithms: [RS256], platform: github }} }}\n\
             grants:\n\
             \x20 tok: {{ kind: token, ttl: 5m, audience: x, allow: [ {{ issuer: bench, claims: {{ repository: acme/api }} }} ] }}\n\
             \x20 once: {{ kind: token, ttl: 5m, audience: x, single_use_token: true, allow: [ {{ issuer: bench, claims: {{ repository: acme/api }} }} ] }}\n\
             \x20 sec: {{ kind: secrets, ttl: 5m, secrets: [bench/db], cache_ttl: 5m, allow: [ {{ issuer: bench, claims: {{ repository: acme/api }} }} ] }}\n\
             \x20 aws: {{ kind: aws, ttl: 15m, role_arn: \"arn:aws:iam::123456789012:role/bench\", allow: [ {{ issuer: bench, claims: {{ repository: acme/api }} }} ] }}\n",
            iss = issuer.url
        );
        std::fs::write(dir.path().join("stint.yaml"), config).expect("config");
        let started = Instant::now();
        let child = Command::new(stint_binary())
            .args(["serve", "--config", "stint.yaml"])
            .current_dir(dir.path())
            .env("AWS_ACCESS_KEY_ID", "AKIABENCH")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(log.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stint.log")).expect("log"),
            ))
            .spawn()
            .expect("stint serve");
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{admin}/readyz");
        loop {
            if http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "stint did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Broker {
            process: Process(child),
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            ready_after: started.elapsed(),
            _dir: dir,
        }
    }

    /// Peak resident memory (VmHWM), MiB.
    fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// Resident memory now (VmRSS), MiB.
    fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// A `kB` line of `/proc/PID/status`, in MiB.
    fn status_mib(&self, key: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    async fn metric(&self, prefix: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        // Every series of the metric whose name and labels start with
        // `prefix`, summed: the value is the line's last field.
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.split_whitespace().last())
            .filter_map(|v| v.parse::<f64>().ok())
            .sum()
    }
}

struct Moto {
    _process: Process,
    url: String,
}

async fn moto() -> Moto {
    let program = std::env::var("STINT_MOTO_SERVER").unwrap_or_else(|_| {
        format!(
            "{}/.cache/stint-venv/bin/moto_server",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let port = free_port();
    let child = Command::new(&program)
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("moto_server ({program}): {e}; run scripts/test once, or set STINT_MOTO_SERVER"));
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..300 {
        if reqwest::get(format!("{url}/moto-api/")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&url)
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIABENCH",
            "bench",
            None,
            None,
            "bench",
        ))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name("bench/db")
        .secret_string("s3cret")
        .send()
        .await
        .expect("create secret");
    Moto {
        _process: Process(child),
        url,
    }
}

fn postgres_base() -> String {
    std::env::var("STINT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Runs `sql` on the bench's PostgreSQL database.
async fn postgres_execute(sql: &str) {
    let base = postgres_base();
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base}: {e}"));
    tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A fresh schema for this run's PostgreSQL store: (store URL, schema).
async fn postgres_store() -> (String, String) {
    let base = postgres_base();
    let schema = format!("stint_bench_{}", uuid::Uuid::new_v4().simple());
    postgres_execute(&format!("CREATE SCHEMA {schema}")).await;
    let sep = if base.contains('?') { '&' } else { '?' };
    (format!("{base}{sep}options=-c%20search_path%3D{schema}"), schema)
}

/// The three cache-hit paths of one broker, and their paced p99.
async fn stint_paths(label: &str, broker: &Broker, tokens: &Arc<Vec<String>>, out: &mut Vec<Figures>) {
    // A cached AWS session serves one caller with identical rendered inputs
    // (session name and tags come from the caller's claims, the run id
    // among them), so each distinct token is a miss: the `aws` phase
    // measures hits with one caller; misses have their own phase.
    let one_caller = Arc::new(vec![tokens[0].clone()]);
    for grant in ["tok", "sec", "aws"] {
        let tokens = if grant == "aws" { &one_caller } else { tokens };
        // Warm the caches (JWKS, session, secret) first.
        let http = reqwest::Client::new();
        for _ in 0..5 {
            let _ = http
                .post(format!("{}/v1/issue/{grant}", broker.url))
                .bearer_auth(&tokens[0])
                .send()
                .await;
        }
        let name = format!("stint {grant} ({label})");
        let url = format!("{}/v1/issue/{grant}", broker.url);
        let pid = broker.process.0.id();
        let max = load(&name, pid, &url, tokens.clone(), None, None).await;
        let half = load(
            &format!("{name} at half rate"),
            pid,
            &url,
            tokens.clone(),
            None,
            Some(max.per_second / 2.0),
        )
        .await;
        out.push(max);
        out.push(half);
    }
}

/// The `token` path alone (no moto needed), at its maximum rate and at
/// half of it, on SQLite and on PostgreSQL: the quick loop for work on the
/// issuance path and the audit writer.
async fn token_phase(tokens: &Arc<Vec<String>>, issuer: &Issuer, rows: &mut Vec<Figures>) {
    let sqlite = Broker::start("sqlite://audit.db", issuer, "http://127.0.0.1:9").await;
    let (pg_store, pg_schema) = postgres_store().await;
    let pg = Broker::start(&pg_store, issuer, "http://127.0.0.1:9").await;
    for (label, broker) in [("SQLite", &sqlite), ("PostgreSQL", &pg)] {
        let (pid, url) = (broker.process.0.id(), format!("{}/v1/issue/tok", broker.url));
        let name = format!("stint tok ({label})");
        let max = load(&name, pid, &url, tokens.clone(), None, None).await;
        let rate = Some(max.per_second / 2.0);
        let half = load(&format!("{name} at half rate"), pid, &url, tokens.clone(), None, rate).await;
        rows.extend([max, half]);
    }
    drop(pg);
    postgres_execute(&format!("DROP SCHEMA {pg_schema} CASCADE")).await;
}

/// A `single_use_token` grant against the same grant without it, on
/// SQLite and PostgreSQL: each caller token is recorded as used (a write of its own)
/// before the credential is issued. Every request needs a token of its
/// own, so STINT_BENCH_SINGLE_USE_TOKENS (default 30,000) are signed first
/// and the phase ends when they are spent.
async fn single_use_phase(tokens: &Arc<Vec<String>>, issuer: &Issuer, rows: &mut Vec<Figures>) {
    let count: usize = env_number("STINT_BENCH_SINGLE_USE_TOKENS", 30_000);
    let fresh: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    (0..count / 2)
                        .map(|i| issuer.token(&format!("bench:{}", i % CALLER_SUBJECTS)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("signer")).collect()
    });
    let fresh = Arc::new(fresh);
    let (pg_store, pg_schema) = postgres_store().await;
    // Each store keeps its own used tokens: the same tokens serve both.
    for (label, store) in [("SQLite", "sqlite://audit.db"), ("PostgreSQL", pg_store.as_str())] {
        let broker = Broker::start(store, issuer, "http://127.0.0.1:9").await;
        let pid = broker.process.0.id();
        let url = |grant: &str| format!("{}/v1/issue/{grant}", broker.url);
        rows.push(
            load(
                &format!("stint tok ({label})"),
                pid,
                &url("tok"),
                tokens.clone(),
                None,
                None,
            )
            .await,
        );
        let name = format!("stint tok, single_use_token ({label})");
        rows.push(load_tokens(&name, pid, &url("once"), fresh.clone(), None, None, true).await);
    }
    postgres_execute(&format!("DROP SCHEMA {pg_schema} CASCADE")).await;
}

/// Memory after many requests: the `token` path on SQLite in phases of
/// STINT_BENCH_SECONDS until STINT_BENCH_RSS_REQUESTS (default 1,000,000)
/// have been answered; the broker's resident memory after each phase goes
/// into the notes, so growth shows as a series, not one figure.
async fn rss_phase(
    tokens: &Arc<Vec<String>>,
    issuer: &Issuer,
    rows: &mut Vec<Figures>,
    notes: &mut Vec<(String, Value)>,
) {
    let target: usize = env_number("STINT_BENCH_RSS_REQUESTS", 1_000_000);
    let broker = Broker::start("sqlite://audit.db", issuer, "http://127.0.0.1:9").await;
    let (pid, url) = (broker.process.0.id(), format!("{}/v1/issue/tok", broker.url));
    let (mut served, mut series) = (0, Vec::new());
    while served < target {
        let figures = load(
            "stint tok, toward the RSS target",
            pid,
            &url,
            tokens.clone(),
            None,
            None,
        )
        .await;
        served += figures.requests;
        series.push(json!({"requests": served, "rss_mib": broker.rss_mib()}));
        rows.push(figures);
    }
    notes.push(("rss_mib_series".into(), Value::Array(series)));
    notes.push(("rss_mib_after_requests".into(), json!([served, broker.rss_mib()])));
    notes.push(("peak_rss_mib".into(), json!(broker.peak_rss_mib())));
}

/// Phase 5: issuance p99 at half rate on a large log, with and without an
/// auditor paging through it; the ratio goes into the notes.
async fn auditor_phase(
    issuer: &Issuer,
    tokens: &Arc<Vec<String>>,
    aws_url: &str,
    rows: &mut Vec<Figures>,
    notes: &mut Vec<(String, Value)>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let n = auditor::records();
    let filled = Instant::now();
    auditor::fill(&path, n).await;
    notes.push(("audit_log_records".into(), json!(n)));
    notes.push(("audit_log_fill_seconds".into(), json!(filled.elapsed().as_secs_f64())));
    let broker = Broker::start(&format!("sqlite://{}", path.display()), issuer, aws_url).await;
    let (pid, url) = (broker.process.0.id(), format!("{}/v1/issue/tok", broker.url));
    let label = format!("stint tok, {}k log", n / 1000);
    let max = load(&label, pid, &url, tokens.clone(), None, None).await;
    let rate = Some(max.per_second / 2.0);
    let alone = load(&format!("{label} at half rate"), pid, &url, tokens.clone(), None, rate).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn(auditor::audit_pages(
        broker.url.clone(),
        issuer.token("auditor"),
        stop.clone(),
    ));
    let read = load(&format!("{label}, auditor"), pid, &url, tokens.clone(), None, rate).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let pages = figures(
        "auditor pages",
        reader.await.unwrap_or_default(),
        0,
        Duration::from_secs(seconds()),
        0.0,
    );
    notes.push(("auditor_pages".into(), json!(pages.requests)));
    notes.push(("auditor_page_p50_ms".into(), json!(pages.p50_ms)));
    notes.push(("auditor_page_p99_ms".into(), json!(pages.p99_ms)));
    notes.push((
        "issuance_p99_with_auditor_over_alone".into(),
        json!(read.p99_ms / alone.p99_ms.max(f64::MIN_POSITIVE)),
    ));
    rows.extend([max, alone, read]);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Ok(spec) = std::env::var(CEILING_ENV) {
        serve_ceiling(&spec).await;
        return;
    }
    let issuer = Issuer::start().await;
    let only = std::env::var("STINT_BENCH_ONLY").ok();
    let mut rows: Vec<Figures> = Vec::new();
    let mut notes: Vec<(String, Value)> = Vec::new();

    // 1. The ceiling.
    let verify = ceiling(&issuer);
    let tokens = issuer.tokens("bench", CALLER_TOKENS);
    let ceiling_pid = verify.process.0.id();
    let ceiling_max = load(
        "ceiling: verify only",
        ceiling_pid,
        &verify.url,
        tokens.clone(),
        None,
        None,
    )
    .await;
    let ceiling_half = load(
        "ceiling at half rate",
        ceiling_pid,
        &verify.url,
        tokens.clone(),
        None,
        Some(ceiling_max.per_second / 2.0),
    )
    .await;
    rows.push(ceiling_max.clone());
    rows.push(ceiling_half);
    drop(verify);
    match only.as_deref() {
        Some("logging") => logging_phase(&issuer, &tokens, &mut rows, &mut notes).await,
        Some("token") => token_phase(&tokens, &issuer, &mut rows).await,
        Some("single_use") => single_use_phase(&tokens, &issuer, &mut rows).await,
        Some("rss") => rss_phase(&tokens, &issuer, &mut rows, &mut notes).await,
        // No aws grant is asked for: the endpoint is never called.
        Some("auditor") => auditor_phase(&issuer, &tokens, "http://127.0.0.1:9", &mut rows, &mut notes).await,
        _ => all_phases(&issuer, &tokens, &mut rows, &mut notes).await,
    }
    report(&rows, &notes, &ceiling_max);
}

/// Phases 2 to 5 (the ceiling is phase 1).
async fn all_phases(
    issuer: &Issuer,
    tokens: &Arc<Vec<String>>,
    rows: &mut Vec<Figures>,
    notes: &mut Vec<(String, Value)>,
) {
    let moto = moto().await;

    // 2. stint, SQLite on disk (FULL sync) and on tmpfs; 3. PostgreSQL.
    let disk = Broker::start("sqlite://audit.db", issuer, &moto.url).await;
    notes.push((
        "start_to_ready_ms".into(),
        json!(disk.ready_after.as_secs_f64() * 1000.0),
    ));
    stint_paths("SQLite", &disk, tokens, rows).await;
    let shm = format!("sqlite:///dev/shm/stint-bench-{}.db", uuid::Uuid::new_v4().simple());
    let memory = Broker::start(&shm, issuer, &moto.url).await;
    let tok_memory = load(
        "stint tok (audit on tmpfs)",
        memory.process.0.id(),
        &format!("{}/v1/issue/tok", memory.url),
        tokens.clone(),
        None,
        None,
    )
    .await;
    rows.push(tok_memory);
    drop(memory);
    let (pg_store, pg_schema) = postgres_store().await;
    let pg = Broker::start(&pg_store, issuer, &moto.url).await;
    stint_paths("PostgreSQL", &pg, tokens, rows).await;

    // 4. Misses against moto, one new caller per request; then coalescing.
    let unique: Vec<String> = (0..5000).map(|n| issuer.token(&format!("miss-{n}"))).collect();
    let misses = load(
        "stint aws cache miss (moto)",
        disk.process.0.id(),
        &format!("{}/v1/issue/aws", disk.url),
        Arc::new(unique),
        None,
        None,
    )
    .await;
    rows.push(misses);
    let before = disk
        .metric("stint_upstream_requests_total{service=\"aws-sts\",operation=\"AssumeRole\"")
        .await;
    let same = issuer.token("coalesce-me");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (url, token) = (format!("{}/v1/issue/aws", disk.url), same.clone());
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += usize::from(task.await.unwrap_or(false));
    }
    let after = disk
        .metric("stint_upstream_requests_total{service=\"aws-sts\",operation=\"AssumeRole\"")
        .await;
    notes.push(("coalescing_requests_ok".into(), json!(ok)));
    notes.push(("coalescing_assume_role_calls".into(), json!(after - before)));
    notes.push(("peak_rss_mib_sqlite_broker".into(), json!(disk.peak_rss_mib())));
    notes.push(("peak_rss_mib_postgres_broker".into(), json!(pg.peak_rss_mib())));
    drop(pg);
    postgres_execute(&format!("DROP SCHEMA {pg_schema} CASCADE")).await;
    let served = disk.metric("stint_issuances_total").await;
    notes.push(("requests_served_by_sqlite_broker".into(), json!(served)));
    let _ = std::fs::remove_file(shm.trim_start_matches("sqlite://"));
    drop(disk);
    auditor_phase(issuer, tokens, &moto.url, rows, notes).await;
}

/// Prints the table and writes the JSON report.
fn report(rows: &[Figures], notes: &[(String, Value)], ceiling_max: &Figures) {
    println!(
        "\n{:<40} {:>10} {:>9} {:>9} {:>9} {:>10} {:>8} {:>9} {:>7} {:>6} {:>9} {:>7} {:>8} {:>7} {:>7}",
        "phase",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "× ceiling",
        "cpu µs",
        "cpu × c.",
        "sys µs",
        "cs/req",
        "writer µs",
        "wr sys",
        "wr B/rec",
        "pg µs",
        "errors"
    );
    for row in rows {
        println!(
            "{:<40} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>8.1} {:>9.2} {:>7.1} {:>6.2} {:>9.1} {:>7.1} {:>8.0} {:>7.1} {:>7}",
            row.name,
            row.per_second,
            row.p50_ms,
            row.p99_ms,
            row.p999_ms,
            row.per_second / ceiling_max.per_second,
            row.server_cpu_us,
            row.server_cpu_us / ceiling_max.server_cpu_us.max(f64::MIN_POSITIVE),
            row.server_sys_us,
            row.server_switches,
            row.writer_cpu_us,
            row.writer_sys_us,
            row.writer_bytes,
            row.postgres_cpu_us,
            row.errors
        );
    }
    for (key, value) in notes {
        println!("{key}: {value}");
    }
    let report = json!({
        "when": stint::clock::rfc3339(stint::clock::now()),
        "seconds_per_phase": seconds(),
        "connections": connections(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "phases": rows,
        "notes": notes.iter().cloned().collect::<serde_json::Map<String, Value>>(),
    });
    let dir = std::path::PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("stint-bench");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("load-{}.json", stint::clock::now()));
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    let _ = std::fs::File::create(&file).and_then(|mut f| f.write_all(text.as_bytes()));
    let _ = std::fs::write(dir.join("latest.json"), &text);
    println!("written to {}", file.display());
}

/// What the access log costs: the `token` path on SQLite with no log
/// line per request (`STINT_LOG=warn`, as every other phase runs), then
/// as shipped (`info`, text), then as the container image runs it (JSON).
/// The three run in turn STINT_BENCH_ROUNDS times (default 3); each
/// round's cost is measured against its own quiet phase, and the notes
/// give the median: a few µs in a ~100 µs request is within one phase's
/// noise on a shared machine.
async fn logging_phase(
    issuer: &Issuer,
    tokens: &Arc<Vec<String>>,
    rows: &mut Vec<Figures>,
    notes: &mut Vec<(String, Value)>,
) {
    let rounds: usize = env_number("STINT_BENCH_ROUNDS", 3);
    let configs = [
        ("stint tok, STINT_LOG=warn", vec![("STINT_LOG", "warn")]),
        ("stint tok, access log (text)", vec![]),
        ("stint tok, access log (json)", vec![("STINT_LOG_FORMAT", "json")]),
    ];
    let mut costs = vec![Vec::new(); configs.len()];
    for _ in 0..rounds.max(1) {
        let mut quiet_cpu = 0.0;
        for (n, (label, log)) in configs.iter().enumerate() {
            let broker = Broker::start_logging("sqlite://audit.db", issuer, "http://127.0.0.1:9", log).await;
            let figures = load(
                label,
                broker.process.0.id(),
                &format!("{}/v1/issue/tok", broker.url),
                tokens.clone(),
                None,
                None,
            )
            .await;
            if n == 0 {
                quiet_cpu = figures.server_cpu_us;
            }
            costs[n].push(figures.server_cpu_us - quiet_cpu);
            rows.push(figures);
        }
    }
    for ((label, _), mut cost) in configs.iter().zip(costs).skip(1) {
        cost.sort_by(f64::total_cmp);
        notes.push((
            format!("access_log_cpu_us_per_request ({label}), median of {}", cost.len()),
            json!(cost[cost.len() / 2]),
        ));
    }
}
