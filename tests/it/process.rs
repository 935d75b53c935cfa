//! `stint serve` as a real process, and checks of what it left in a store.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use stint::audit::{AuditQuery, Outcome};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `stint serve` and waits until its admin listener answers.
pub async fn serve(config: &std::path::Path, port: u16, admin: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stint"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("STINT_LISTEN", format!("127.0.0.1:{port}"))
        .env("STINT_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if reqwest::get(format!("http://127.0.0.1:{admin}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stint serve did not come up on {port}");
}

/// Sends SIGTERM to `child`.
pub fn terminate(child: &tokio::process::Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
}

/// Every request id answered 200 has exactly one `issued` record in `store`.
pub async fn assert_every_issuance_recorded(store: &str, issued: &[String]) {
    let sink = stint::audit::open_existing(store).await.unwrap();
    for id in issued {
        let found = sink
            .query(&AuditQuery {
                request_id: Some(id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "request {id} was answered 200 but has no audit record");
        assert_eq!(found[0].outcome, Outcome::Issued, "request {id}");
    }
}

/// `stint audit verify` on `store` says ok.
pub async fn assert_chain_verifies(store: &str, audit_key: &std::path::Path) {
    let choice = stint::audit::commands::StoreChoice {
        config: None,
        store: Some(store.to_string()),
        audit_key_file: Some(audit_key.to_path_buf()),
    };
    let ok = stint::audit::commands::verify(&choice, None, None).await.unwrap();
    assert!(ok.starts_with("ok: "), "{ok}");
}
