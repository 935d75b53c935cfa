//! Two `stint serve` processes on one store (PostgreSQL, or one SQLite
//! file); one is killed with SIGKILL in the middle of a load.
//! Every credential that was handed out has its audit record, and the
//! shared chain still verifies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{DEPLOY_GRANT, issuer_yaml};
use crate::issuer::TestIssuer;
use crate::process::{assert_chain_verifies, assert_every_issuance_recorded, free_port, serve, terminate};
use crate::store::{Backend, fresh_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_loses_no_record_and_the_chain_verifies() {
    killed_mid_load(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_mid_load_on_a_shared_sqlite_file_loses_no_record() {
    killed_mid_load(Backend::Sqlite).await;
}

async fn killed_mid_load(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stint.yaml");
    std::fs::write(
        &config,
        format!(
            "audit: {{ store: \"{store}\", key_file: audit.key }}\nsigning: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
            issuer_yaml("ci", &issuer, "github", "")
        ),
    )
    .unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = serve(&config, port_a, free_port()).await;
    let mut b = serve(&config, port_b, free_port()).await;

    let token = issuer.sign(&issuer.github());
    let issued: Arc<Mutex<Vec<String>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (token, issued) = (token.clone(), issued.clone());
        let port = if n % 2 == 0 { port_a } else { port_b };
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while Instant::now() < deadline {
                let Ok(response) = http
                    .post(format!("http://127.0.0.1:{port}/v1/issue/deploy"))
                    .bearer_auth(&token)
                    .send()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue; // the killed replica
                };
                let id = response
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if response.status() == 200 && response.bytes().await.is_ok_and(|b| b.starts_with(b"{")) {
                    issued.lock().unwrap().push(id.unwrap());
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.start_kill().unwrap(); // SIGKILL: no graceful anything
    for task in tasks {
        task.await.unwrap();
    }
    let _ = b.wait().await;
    terminate(&a);
    let status = tokio::time::timeout(Duration::from_secs(20), a.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM ends the survivor cleanly: {status}");

    let issued = issued.lock().unwrap().clone();
    assert!(
        issued.len() > 20,
        "{backend:?}: the load ran: {} issuances",
        issued.len()
    );
    assert_every_issuance_recorded(&store, &issued).await;
    assert_chain_verifies(&store, &dir.path().join("audit.key")).await;
}
