//! An unauthenticated client must not take a broker out of service: not by
//! hanging up while its denial is written, not by holding connections or
//! request bodies open.

use std::time::{Duration, Instant};

use stint::audit::{AuditQuery, Outcome};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::{DEPLOY_GRANT, TestBroker};
use crate::issuer::TestIssuer;

/// `/readyz` status and its `audit` word.
async fn readiness(broker: &TestBroker) -> (u16, String) {
    let answer = broker.admin_get("/readyz").await;
    (
        answer.status.as_u16(),
        answer.body["audit"].as_str().unwrap_or("").to_string(),
    )
}

/// Denied records of `grant`.
async fn denials(broker: &TestBroker, grant: &str) -> usize {
    broker
        .server
        .broker
        .audit()
        .query(&AuditQuery {
            grant: Some(grant.to_string()),
            outcome: Some(Outcome::Denied),
            limit: Some(10_000),
            ..AuditQuery::default()
        })
        .await
        .expect("audit query")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_while_their_denial_is_written_leave_the_broker_ready_and_every_record() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start(&issuer, "github", DEPLOY_GRANT).await;
    let addr = broker.server.addr;
    const CLIENTS: usize = 300;
    // Another connection holds the store's write lock for a moment, so each
    // request surely is waiting on its audit write when its client leaves.
    let locker = rusqlite::Connection::open(broker.audit_db()).expect("open the store");
    locker.execute_batch("BEGIN IMMEDIATE").expect("lock");
    // Each sends a token-less issue request and closes its socket.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                stream
                    .write_all(b"POST /v1/issue/hangup HTTP/1.1\r\nhost: stint\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .expect("send");
                // Gone at once: an attacker hanging up before the broker
                // has even read the request must still leave its record.
                drop(stream);
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    // Gone well within the 2 s after which waiting appends count as stalled.
    locker.execute_batch("COMMIT").expect("unlock");
    drop(locker);
    // A probe every 100 ms for a second: a Kubernetes probe at any of these
    // moments must find the broker ready.
    for _ in 0..10 {
        let (status, audit) = readiness(&broker).await;
        assert_eq!(
            (status, audit.as_str()),
            (200, "ok"),
            "a hang-up counted as an audit failure"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every refused request has its record, though nobody waited for it.
    let started = Instant::now();
    loop {
        let written = denials(&broker, "hangup").await;
        if written == CLIENTS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{written} of {CLIENTS} denials were recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config `limits:` line for the connection tests.
async fn broker_with(issuer: &TestIssuer, limits: &str) -> TestBroker {
    TestBroker::start_with(
        &crate::harness::issuer_yaml("ci", issuer, "github", ""),
        DEPLOY_GRANT,
        &format!("limits: {{ {limits} }}\n"),
    )
    .await
}

/// The value of the metric line starting with `series` (0 when absent).
async fn metric(broker: &TestBroker, series: &str) -> f64 {
    let text = broker.admin_get("/metrics").await.text;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls until `series` reaches `at_least`, within 20 s.
async fn until_metric(broker: &TestBroker, series: &str, at_least: f64) {
    let started = Instant::now();
    loop {
        let value = metric(broker, series).await;
        if value >= at_least {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{series} is {value}, not {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `series` is at least `at_least` and the same three times
/// in a row, 100 ms apart, within 20 s.
async fn until_settled(broker: &TestBroker, series: &str, at_least: f64) {
    let started = Instant::now();
    let (mut last, mut same) = (-1.0, 0);
    loop {
        let value = metric(broker, series).await;
        same = if value == last { same + 1 } else { 0 };
        last = value;
        if value >= at_least && same >= 2 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{series} is {value}, not settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything the peer sends until it closes (or resets) the connection,
/// or `None` if it is still open after `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some(received)
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_and_idle_connections_leave_room_for_a_good_caller_and_are_closed() {
    let issuer = TestIssuer::start().await;
    // The default max_in_flight (512) is below the 600 stalled bodies.
    let broker = broker_with(&issuer, "max_connections: 4000, body_timeout: 8s, header_timeout: 10s").await;
    let addr = broker.server.addr;
    let (files_before, rss_before) = (open_files(), resident_kib());

    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let mut stalled = Vec::new();
    for _ in 0..600 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"POST /v1/issue/deploy HTTP/1.1\r\nhost: stint\r\ncontent-length: 100\r\n\r\n")
            .await
            .expect("send");
        stalled.push(stream);
    }
    // Every connection accepted and every stalled request waiting for its body.
    until_settled(&broker, "stint_connections_open{listener=\"public\"}", 2000.0).await;

    // A well-behaved caller, on its own connection, is served at once.
    for _ in 0..3 {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            broker.issue("deploy", &issuer.sign(&issuer.github()), None),
        )
        .await
        .expect("a good caller is answered within 2s");
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let grown_mib = resident_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 256, "2,600 held connections took {grown_mib} MiB");

    // The stalled bodies get 408 problem+json, and their connections end.
    for stream in &mut stalled {
        let received = until_closed(stream, Duration::from_secs(20))
            .await
            .expect("a stalled body's connection is closed");
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(
            text.contains("application/problem+json") && text.contains("body_timeout"),
            "{text}"
        );
    }
    // The idle ones are closed without an answer.
    for stream in &mut idle {
        let received = until_closed(stream, Duration::from_secs(20))
            .await
            .expect("an idle connection is closed");
        assert!(received.is_empty(), "{}", String::from_utf8_lossy(&received));
    }
    // The broker's ends are closed: only the test's own 2,600 remain open.
    let held = open_files().saturating_sub(files_before);
    assert!(held <= 2600 + 50, "{held} more files open than before");
    // At most the good caller's own kept-alive connection is left (the
    // gauge drops just after a socket closes, so it is polled).
    let started = Instant::now();
    while metric(&broker, "stint_connections_open{listener=\"public\"}").await > 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "connections still counted as open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_full_listener_closes_new_connections_at_once_and_counts_them() {
    let issuer = TestIssuer::start().await;
    let broker = broker_with(&issuer, "max_connections: 20, header_timeout: 60s").await;
    let addr = broker.server.addr;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    until_metric(&broker, "stint_connections_open{listener=\"public\"}", 20.0).await;
    let mut extra = TcpStream::connect(addr).await.expect("the kernel still accepts");
    // Closed long before the header timeout, without an answer.
    let received = until_closed(&mut extra, Duration::from_secs(10))
        .await
        .expect("the connection over the limit is closed at once");
    assert!(received.is_empty());
    assert!(metric(&broker, "stint_connections_refused_total{listener=\"public\"}").await >= 1.0);
    // The admin listener counts its own connections: probes still work.
    assert_eq!(broker.admin_get("/healthz").await.status, 200);
    // One connection freed makes room for a caller.
    held.pop();
    let started = Instant::now();
    loop {
        let answer = broker
            .http
            .get(format!("{}/.well-known/jwks.json", broker.url))
            .send()
            .await;
        if answer.is_ok_and(|a| a.status() == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn connections_that_send_nothing_or_trickle_a_header_are_closed_on_every_listener() {
    let issuer = TestIssuer::start().await;
    let broker = broker_with(&issuer, "header_timeout: 1s").await;
    // Idle on the public and the admin listener.
    for addr in [broker.server.addr, broker.server.admin_addr] {
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        let received = until_closed(&mut idle, Duration::from_secs(10))
            .await
            .expect("an idle connection is closed");
        assert!(received.is_empty());
    }
    // A header sent one byte every 200 ms: each byte is progress, but the
    // head as a whole is late.
    let mut trickle = TcpStream::connect(broker.server.addr).await.expect("connect");
    let sender = async {
        for byte in b"GET /.well-known/jwks.json HTTP/1.1\r\nhost: stint\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if trickle.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(12), sender).await == Ok(true),
        "a trickled header keeps its connection open"
    );
    // A kept-alive connection is closed after an idle gap, too.
    let mut kept = TcpStream::connect(broker.server.addr).await.expect("connect");
    kept.write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nhost: stint\r\n\r\n")
        .await
        .expect("send");
    let received = until_closed(&mut kept, Duration::from_secs(10))
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_tls_connection_that_never_finishes_its_handshake_is_closed() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.path().join("tls.crt"), certified.cert.pem()).expect("write");
    std::fs::write(dir.path().join("tls.key"), certified.signing_key.serialize_pem()).expect("write");
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: sqlite://audit.db, key_file: audit.key }}\n\
         signing: {{ key_file: signing.key }}\ntls: {{ cert_file: tls.crt, key_file: tls.key }}\n\
         limits: {{ header_timeout: 1s }}\nissuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
        crate::harness::issuer_yaml("ci", &issuer, "github", "")
    );
    let config = stint::config::Config::parse(&text, "test.yaml", dir.path(), &|_| None).expect("config");
    let server = stint::server::start(config).await.expect("starts");
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let received = until_closed(&mut silent, Duration::from_secs(10))
        .await
        .expect("a silent TLS connection is closed");
    assert!(received.is_empty());
    // A half-sent ClientHello (a record header promising 512 bytes) too.
    let mut partial = TcpStream::connect(server.addr).await.expect("connect");
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("send");
    assert!(until_closed(&mut partial, Duration::from_secs(10)).await.is_some());
    server.shutdown().await;
}
