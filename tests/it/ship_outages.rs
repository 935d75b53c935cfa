//! Shipping under load with `stint serve` as real processes: a sink that
//! fails, hangs and comes back, a broker killed mid-stream, two brokers on
//! one PostgreSQL store, and `stint audit ship --once` from cron.
//! Afterwards every record has arrived, in order, repeats only with the same
//! `seq` and hash, and the received copy verifies with the CLI.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::harness::{DEPLOY_GRANT, issuer_yaml};
use crate::issuer::TestIssuer;
use crate::process::{free_port, serve, terminate};
use crate::receivers::{HttpReceiver, Mode, assert_in_order_without_gaps, seqs};
use crate::ship::until_metric;
use crate::store::{Backend, fresh_store};

/// A config whose store ships to `receiver` (1s timeout and backoff cap,
/// checkpoints every 10 records and every second).
fn write_config(dir: &std::path::Path, store: &str, issuer: &TestIssuer, url: &str) -> std::path::PathBuf {
    let config = dir.join("stint.yaml");
    std::fs::write(
        &config,
        format!(
            "audit:\n  store: \"{store}\"\n  key_file: audit.key\n  checkpoint_every: 10\n  checkpoint_interval: 1s\n  ship:\n    siem:\n      sink: http\n      url: \"{url}\"\n      batch_size: 20\n      timeout: 1s\n      max_backoff: 1s\n\
             signing: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
            issuer_yaml("ci", issuer, "github", "")
        ),
    )
    .unwrap();
    config
}

/// Clients issuing in a loop against the broker at `port` (which may
/// change): every third request is denied. Each answer is kept with the
/// phase it came in.
struct Load {
    port: Arc<AtomicU16>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(u8, u16, u16)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(issuer: &TestIssuer, port: u16, clients: usize) -> Load {
        let allowed = issuer.sign(&issuer.github());
        let mut claims = issuer.github();
        claims.insert("ref".into(), json!("refs/heads/feature"));
        let denied = issuer.sign(&claims);
        let mut load = Load {
            port: Arc::new(AtomicU16::new(port)),
            phase: Arc::default(),
            stop: Arc::default(),
            answers: Arc::default(),
            tasks: Vec::new(),
        };
        for _ in 0..clients {
            let (port, phase, stop, answers) = (
                load.port.clone(),
                load.phase.clone(),
                load.stop.clone(),
                load.answers.clone(),
            );
            let (allowed, denied) = (allowed.clone(), denied.clone());
            load.tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let (token, expected) = if n.is_multiple_of(3) {
                        (&denied, 403)
                    } else {
                        (&allowed, 200)
                    };
                    let port = port.load(Ordering::SeqCst);
                    let at = phase.load(Ordering::SeqCst);
                    match http
                        .post(format!("http://127.0.0.1:{port}/v1/issue/deploy"))
                        .bearer_auth(token)
                        .send()
                        .await
                    {
                        Ok(response) => answers.lock().unwrap().push((at, response.status().as_u16(), expected)),
                        // The broker being killed and started again.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
        load
    }

    async fn finish(self) -> Vec<(u8, u16, u16)> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.answers.lock().unwrap().clone()
    }
}

const TAKING: u8 = 0;
const FAILING: u8 = 1;
const HANGING: u8 = 2;
const RESTARTED: u8 = 3;

/// Waits until the store's last record is covered by a checkpoint (the
/// timer signs the head once the load stopped), and returns its seq.
async fn settled_head(store: &str) -> i64 {
    let sink = stint::audit::open_existing(store).await.unwrap();
    for _ in 0..400 {
        let head = sink
            .query(&stint::audit::AuditQuery {
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap()
            .first()
            .and_then(|r| r.seq)
            .unwrap_or(0);
        let signed = sink.checkpoints().await.unwrap().last().map_or(0, |c| c.seq);
        if head > 0 && signed == head {
            return head;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the checkpoint timer never signed the head");
}

/// `stint audit verify --export` of what the receiver kept, with the
/// public key from `stint audit pubkey`, as an auditor would run them.
async fn verify_with_the_cli(dir: &std::path::Path, lines: &[String]) -> String {
    let received = dir.join("received.jsonl");
    std::fs::write(&received, lines.join("\n") + "\n").unwrap();
    let pubkey = tokio::process::Command::new(env!("CARGO_BIN_EXE_stint"))
        .args(["audit", "pubkey", "--audit-key-file"])
        .arg(dir.join("audit.key"))
        .output()
        .await
        .unwrap();
    assert!(pubkey.status.success());
    std::fs::write(dir.join("pubkey.jwk"), &pubkey.stdout).unwrap();
    let verify = tokio::process::Command::new(env!("CARGO_BIN_EXE_stint"))
        .args(["audit", "verify", "--export"])
        .arg(&received)
        .arg("--pubkey")
        .arg(dir.join("pubkey.jwk"))
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout).to_string() + &String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{out}");
    out
}

async fn outages_and_a_killed_broker(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let issuer = TestIssuer::start().await;
    let receiver = HttpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &store, &issuer, &receiver.url);
    let (mut broker, port, admin) = start(&config).await;
    let admin_url = format!("http://127.0.0.1:{admin}");
    let load = Load::start(&issuer, port, 4);
    receiver.wait_for("the first records", |l| l.len() >= 20).await;

    load.phase.store(FAILING, Ordering::SeqCst);
    receiver.set(Mode::Fail(500));
    let unavailable = "stint_audit_ship_failures_total{sink=\"siem\",reason=\"unavailable\"}";
    until_metric(&admin_url, unavailable, |v| v >= 2.0).await;

    load.phase.store(HANGING, Ordering::SeqCst);
    receiver.set(Mode::Hang);
    let hung = receiver.requests().len();
    until_metric(&admin_url, unavailable, |v| v >= 4.0).await;
    assert!(
        receiver.requests()[hung..].iter().any(|r| r.answered.is_none()),
        "a batch hung"
    );
    let lag = until_metric(&admin_url, "stint_audit_ship_lag_records{sink=\"siem\"}", |v| v > 20.0).await;

    load.phase.store(TAKING, Ordering::SeqCst);
    receiver.set(Mode::Take);
    let before = receiver.lines().len();
    receiver.wait_for("batches again", |l| l.len() >= before + 40).await;

    // Killed mid-stream: load running, the shipper busy catching up.
    broker.start_kill().unwrap();
    let _ = broker.wait().await;
    let (restarted, port, admin) = start(&config).await;
    load.port.store(port, Ordering::SeqCst);
    load.phase.store(RESTARTED, Ordering::SeqCst);
    let before = receiver.lines().len();
    receiver
        .wait_for("records from the restarted broker", |l| l.len() >= before + 20)
        .await;
    let answers = load.finish().await;

    let head = settled_head(&store).await;
    let store_checkpoints: Vec<i64> = stint::audit::open_existing(&store)
        .await
        .unwrap()
        .checkpoints()
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    let lines = receiver
        .wait_for("every record and checkpoint", |lines| {
            let (records, checkpoints) = seqs(lines);
            records.iter().any(|(s, _)| *s == head) && checkpoints.contains(&head)
        })
        .await;
    let admin_url = format!("http://127.0.0.1:{admin}");
    until_metric(&admin_url, "stint_audit_ship_lag_records{sink=\"siem\"}", |v| v == 0.0).await;
    terminate(&restarted);

    // Issuance never noticed the sink: every answer was the policy's.
    for (phase, status, expected) in &answers {
        assert_eq!(status, expected, "{backend:?}: an answer in phase {phase} was {status}");
    }
    for phase in [FAILING, HANGING, RESTARTED] {
        assert!(
            answers.iter().filter(|(p, ..)| *p == phase).count() >= 5,
            "{backend:?}: the load ran while phase {phase} lasted"
        );
    }
    let (records, checkpoints) = seqs(&lines);
    let (last, repeats) = assert_in_order_without_gaps(&records);
    assert_eq!(last, head, "{backend:?}: every record arrived");
    assert!(repeats >= 1, "{backend:?}: the batch that hung was sent again");
    let mut received_checkpoints = checkpoints.clone();
    received_checkpoints.sort_unstable();
    received_checkpoints.dedup();
    assert_eq!(
        received_checkpoints, store_checkpoints,
        "{backend:?}: every checkpoint arrived"
    );
    let ok = verify_with_the_cli(dir.path(), &lines).await;
    assert!(ok.starts_with(&format!("ok: {head} records (seq 1..{head}), ")), "{ok}");
    assert!(
        ok.contains("repeated lines (same seq and content) counted once"),
        "{ok}"
    );
    assert!(!ok.contains("NOT covered"), "the last checkpoint signs the head: {ok}");
    eprintln!(
        "{backend:?}: {} answers, {head} records shipped, {repeats} sent again, lag while hung {lag}",
        answers.len()
    );
}

/// `stint serve` on free ports: the process, its public and admin ports.
async fn start(config: &std::path::Path) -> (tokio::process::Child, u16, u16) {
    let (port, admin) = (free_port(), free_port());
    (serve(config, port, admin).await, port, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipping_to_sqlite_survives_a_failing_hanging_sink_and_a_killed_broker() {
    outages_and_a_killed_broker(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipping_from_postgres_survives_a_failing_hanging_sink_and_a_killed_broker() {
    outages_and_a_killed_broker(Backend::Postgres).await;
}

/// Two brokers on one PostgreSQL store both have the sink: one ships it
/// (every record arrives once), and when that one is killed the other
/// takes the claim over once it expires, and ships the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_brokers_on_postgres_ship_each_record_once_and_a_killed_holder_hands_over() {
    let (store, _guard) = fresh_store(Backend::Postgres).await;
    let issuer = TestIssuer::start().await;
    let receiver = HttpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &store, &issuer, &receiver.url);
    let (mut a, port_a, _) = start(&config).await;
    let (mut b, port_b, _) = start(&config).await;
    let load = Load::start(&issuer, port_a, 2);
    receiver.wait_for("records", |l| l.len() >= 30).await;
    load.port.store(port_b, Ordering::SeqCst);
    receiver.wait_for("more records", |l| l.len() >= 60).await;
    let answers = load.finish().await;
    let head = settled_head(&store).await;
    let lines = receiver
        .wait_for("every record", |l| seqs(l).0.iter().any(|(s, _)| *s == head))
        .await;
    let (records, _) = seqs(&lines);
    assert_eq!(
        assert_in_order_without_gaps(&records),
        (head, 0),
        "two brokers, one shipper: no record twice"
    );

    let owner = position_owner(&store).await;
    let (holder, survivor, survivor_port) = if owner.contains(&format!("/{}/", a.id().unwrap())) {
        (&mut a, &mut b, port_b)
    } else {
        (&mut b, &mut a, port_a)
    };
    assert!(owner.contains(&format!("/{}/", holder.id().unwrap())), "{owner}");
    holder.start_kill().unwrap();
    let _ = holder.wait().await;
    let load = Load::start(&issuer, survivor_port, 2);
    let before = receiver.lines().len();
    receiver
        .wait_for("records after the handover", |l| l.len() >= before + 20)
        .await;
    let more = load.finish().await;
    let head = settled_head(&store).await;
    let lines = receiver
        .wait_for("every record", |l| seqs(l).0.iter().any(|(s, _)| *s == head))
        .await;
    let (records, _) = seqs(&lines);
    assert_eq!(assert_in_order_without_gaps(&records).0, head);
    let new_owner = position_owner(&store).await;
    assert!(
        new_owner.contains(&format!("/{}/", survivor.id().unwrap())),
        "{new_owner}"
    );
    terminate(survivor);
    for (_, status, expected) in answers.iter().chain(&more) {
        assert_eq!(status, expected);
    }
}

async fn position_owner(store: &str) -> String {
    let (url, _) = store.split_once("?options=").map_or((store, ""), |(u, o)| (u, o));
    let schema = store.rsplit("search_path%3D").next().unwrap();
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .query_one(
            &format!("SELECT owner FROM {schema}.audit_ship_position WHERE sink = 'siem'"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// `stint audit ship --once` (cron): ships what is there and exits; a
/// second run sends nothing again; a sink that refuses fails the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_once_from_cron_sends_each_record_once_and_fails_loudly() {
    let (store, _guard) = fresh_store(Backend::Sqlite).await;
    let issuer = TestIssuer::start().await;
    let receiver = HttpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &store, &issuer, &receiver.url);
    // A broker that does not ship: the sink is for `stint audit ship` only.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "      max_backoff: 1s\n",
            "      max_backoff: 1s\n      in_broker: false\n",
        ),
    )
    .unwrap();
    let (broker, port, _) = start(&config).await;
    let load = Load::start(&issuer, port, 1);
    let answers = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if load.answers.lock().unwrap().len() >= 30 {
            break load.finish().await;
        }
    };
    let head = settled_head(&store).await;
    terminate(&broker);
    assert!(
        receiver.lines().is_empty(),
        "in_broker: false: the broker ships nothing"
    );
    assert!(head >= answers.len() as i64);

    let ship = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_stint"))
            .args(["audit", "ship", "--once", "--config"])
            .arg(&config)
            .output()
    };
    let first = ship().await.unwrap();
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(out.starts_with(&format!("siem: shipped {head} records and ")), "{out}");
    assert!(
        out.trim_end().ends_with(&format!("it stands at seq {head} of {head}")),
        "{out}"
    );
    let (records, _) = seqs(&receiver.lines());
    assert_eq!(assert_in_order_without_gaps(&records), (head, 0));

    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_stint"))
        .args(["audit", "ship", "--status", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        said.starts_with(&format!(
            "siem: at seq {head} of {head} (0 behind), last checkpoint {head}, moved "
        )),
        "{said}"
    );
    assert!(said.contains("; last held by "), "--once gave its claim up: {said}");

    let again = ship().await.unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("siem: shipped 0 records and 0 checkpoints"));
    assert_eq!(seqs(&receiver.lines()).0.len() as i64, head, "nothing sent twice");

    // New records, and a sink that is down: the run fails and says why.
    let (broker, port, _) = start(&config).await;
    let load = Load::start(&issuer, port, 1);
    while load.answers.lock().unwrap().len() < 5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.finish().await;
    terminate(&broker);
    receiver.set(Mode::Fail(503));
    let failed = ship().await.unwrap();
    let err = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(
        err.contains("audit shipping failed") && err.contains("siem: the sink answered 503"),
        "{err}"
    );
    assert_eq!(
        seqs(&receiver.lines()).0.len() as i64,
        head,
        "nothing went while the sink was down"
    );
}

/// `stint audit ship` on its own serves its lag and failures on
/// `--metrics-listen`, so the chart's alerts watch it as they watch a
/// broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_on_its_own_serves_lag_and_failures_as_metrics() {
    let (store, _guard) = fresh_store(Backend::Sqlite).await;
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens at the sink: every batch fails.
    let config = write_config(
        dir.path(),
        &store,
        &issuer,
        &format!("http://127.0.0.1:{}/", free_port()),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "      max_backoff: 1s\n",
            "      max_backoff: 1s\n      in_broker: false\n",
        ),
    )
    .unwrap();
    let (broker, port, _) = start(&config).await;
    let load = Load::start(&issuer, port, 1);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if load.answers.lock().unwrap().len() >= 10 {
            load.finish().await;
            break;
        }
    }
    terminate(&broker);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut shipper = tokio::process::Command::new(env!("CARGO_BIN_EXE_stint"))
        .args(["audit", "ship", "--config"])
        .arg(&config)
        .args(["--metrics-listen", &listen])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://{listen}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/metrics")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lag = until_metric(&url, "stint_audit_ship_lag_records{sink=\"siem\"}", |v| v >= 10.0).await;
    assert!(lag >= 10.0, "{lag}");
    let failures = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        failures
            .lines()
            .any(|l| l.starts_with("stint_audit_ship_failures_total{sink=\"siem\"") && !l.ends_with(" 0")),
        "{failures}"
    );
    shipper.kill().await.unwrap();
}
