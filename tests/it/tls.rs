//! TLS on the public listener: served with the configured certificate,
//! reloaded in place, and client certificates required when configured.

use crate::harness::{DEPLOY_GRANT, issuer_yaml};
use crate::issuer::TestIssuer;

fn self_signed(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    std::fs::write(dir.join(format!("{name}.crt")), &cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), certified.signing_key.serialize_pem()).unwrap();
    (dir.join(format!("{name}.crt")), cert_pem)
}

async fn start(dir: &std::path::Path, issuer: &TestIssuer, tls: &str) -> stint::server::RunningServer {
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: sqlite://audit.db, key_file: audit.key }}\n\
         signing: {{ key_file: signing.key }}\n{tls}\nissuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
        issuer_yaml("ci", issuer, "github", "")
    );
    let config = stint::config::Config::parse(&text, "test.yaml", dir, &|_| None).unwrap();
    stint::server::start(config).await.unwrap()
}

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn serves_https_and_reloads_the_certificate_in_place() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, first) = self_signed(dir.path(), "tls");
    let server = start(dir.path(), &issuer, "tls: { cert_file: tls.crt, key_file: tls.key }").await;
    let url = format!("https://localhost:{}/v1/issue/deploy", server.addr.port());

    let ok = client(&first)
        .post(&url)
        .bearer_auth(issuer.sign(&issuer.github()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let plain = reqwest::Client::new()
        .post(url.replace("https://", "http://"))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "no plain HTTP on a TLS listener"
    );

    // Renew: a new certificate on disk, reloaded without a restart.
    let (_, second) = self_signed(dir.path(), "tls");
    server.reload_tls().unwrap();
    let renewed = client(&second)
        .post(&url)
        .bearer_auth(issuer.sign(&issuer.github()))
        .send()
        .await
        .unwrap();
    assert_eq!(renewed.status(), 200, "the new certificate is served");
    assert!(client(&first).post(&url).send().await.is_err(), "the old one is gone");
    server.shutdown().await;
}

#[tokio::test]
async fn clients_without_a_certificate_are_refused_when_client_auth_is_on() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, cert) = self_signed(dir.path(), "tls");
    self_signed(dir.path(), "clients");
    let server = start(
        dir.path(),
        &issuer,
        "tls: { cert_file: tls.crt, key_file: tls.key, client_ca_file: clients.crt }",
    )
    .await;
    let url = format!("https://localhost:{}/v1/grants", server.addr.port());
    assert!(
        client(&cert).get(&url).send().await.is_err(),
        "the handshake needs a client certificate"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_certificate_file_stops_start_up_with_its_name() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: sqlite://audit.db, key_file: audit.key }}\n\
         signing: {{ key_file: signing.key }}\ntls: {{ cert_file: tls.crt, key_file: tls.key }}\nissuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
        issuer_yaml("ci", &issuer, "github", "")
    );
    let config = stint::config::Config::parse(&text, "test.yaml", dir.path(), &|_| None).unwrap();
    let err = stint::server::start(config).await.err().unwrap().to_string();
    assert!(err.contains("tls.cert_file") && err.contains("tls.crt"), "{err}");
}
