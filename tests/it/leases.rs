//! `kind: postgres` against the real PostgreSQL on 127.0.0.1:5432: roles
//! that work and then do not, sessions ended at revocation, the reaper in
//! two brokers revoking each lease once, hostile claims, and a target
//! database that goes away and comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stint::audit::{AuditRecord, Outcome};
use stint::server::StartOptions;
use tokio_postgres::NoTls;

use crate::harness::{Answer, TestBroker, answer, issuer_yaml};
use crate::issuer::TestIssuer;
use crate::store::{Backend, fresh_store, postgres_admin as admin, postgres_host_port as pg_host_port};
use crate::tcp_fault::{FaultProxy, Mode};

/// A group role and a table it may read, made once per test (names
/// unique), and files every broker of the test shares.
pub(crate) struct Fixture {
    tag: String,
    group: String,
    pub(crate) table: String,
    pub(crate) files: tempfile::TempDir,
}

pub(crate) async fn fixture() -> Fixture {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let group = format!("stint_it_app_{tag}");
    let table = format!("stint_it_probe_{tag}");
    let db = admin().await;
    db.batch_execute(&format!(
        "CREATE ROLE {group} NOLOGIN; CREATE TABLE public.{table} (n int); INSERT INTO public.{table} VALUES (42);
         GRANT SELECT ON public.{table} TO {group};"
    ))
    .await
    .unwrap();
    let files = tempfile::tempdir().unwrap();
    // Read by stint at issuance; trust auth on this server ignores it.
    std::fs::write(files.path().join("admin.pw"), "not-used-with-trust-auth\n").unwrap();
    stint::audit::AuditKey::load_or_create(&files.path().join("audit.key")).unwrap();
    Fixture {
        tag,
        group,
        table,
        files,
    }
}

/// The test's roles (the ones stint issued and left to expire, an admin
/// role of its own, the group) and its table go with it, so a machine
/// that runs the suite again and again does not collect them.
impl Drop for Fixture {
    fn drop(&mut self) {
        let (tag, table, group) = (&self.tag, &self.table, &self.group);
        // One role at a time, each allowed to fail (one still logged in):
        // the rest still go.
        let sql = format!(
            "DO $$ DECLARE r text; BEGIN
               FOR r IN SELECT rolname FROM pg_roles
                        WHERE starts_with(rolname, 'stint_it{tag}_') OR rolname = 'stint_it_admin_{tag}' LOOP
                 BEGIN EXECUTE format('DROP ROLE %I', r); EXCEPTION WHEN OTHERS THEN NULL; END;
               END LOOP;
             END $$;
             DROP TABLE IF EXISTS public.{table}; DROP ROLE IF EXISTS {group};"
        );
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // the statements run on a thread and a runtime of their own. A
        // cleanup that fails (the server gone) leaves them, as before.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async { admin().await.batch_execute(&sql).await })
        })
        .join();
    }
}

pub(crate) fn config_parts(f: &Fixture, port: u16, extra_db: &str) -> (String, String) {
    let (host, _) = pg_host_port();
    let grants = format!(
        r#"
  app-db:
    kind: postgres
    database: app
    ttl: 5m
    max_ttl: 10m
    username_template: "stint_it{tag}_{{claims.repository}}_{{id}}"
    creation_statements: |
      CREATE ROLE "{{{{name}}}}" LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}';
      GRANT {group} TO "{{{{name}}}}";
    allow:
      - issuer: ci
        claims:
          repository_owner: acme
"#,
        tag = f.tag,
        group = f.group
    );
    let extra = format!(
        "databases:\n  app:\n    host: {host}\n    port: {port}\n    dbname: test\n    admin_user: postgres\n    admin_password_file: {pw}\n    connect_timeout: 2s\n{extra_db}leases: {{ reap_interval: 1s }}\n",
        pw = f.files.path().join("admin.pw").display()
    );
    (grants, extra)
}

pub(crate) async fn broker_on(store: &str, issuer: &TestIssuer, f: &Fixture, port: u16, extra_db: &str) -> TestBroker {
    let (grants, extra) = config_parts(f, port, extra_db);
    TestBroker::start_on(
        store,
        &format!("  key_file: {}\n", f.files.path().join("audit.key").display()),
        &issuer_yaml("ci", issuer, "github", ""),
        &grants,
        &extra,
        StartOptions::default(),
    )
    .await
}

pub(crate) fn token(issuer: &TestIssuer, repository: &str, sub: &str) -> String {
    let mut claims = issuer.github();
    claims.insert("repository".into(), json!(repository));
    claims.insert("sub".into(), json!(sub));
    issuer.sign(&claims)
}

/// Connects as an issued role.
pub(crate) async fn login(body: &Value) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let db = &body["database"];
    let mut config = tokio_postgres::Config::new();
    config
        .host(db["host"].as_str().unwrap())
        .port(u16::try_from(db["port"].as_u64().unwrap()).unwrap())
        .dbname(db["dbname"].as_str().unwrap())
        .user(db["username"].as_str().unwrap())
        .password(db["password"].as_str().unwrap());
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

pub(crate) async fn role_exists(name: &str) -> bool {
    admin()
        .await
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

async fn revoke(broker: &TestBroker, lease: &str, token: &str) -> Answer {
    answer(
        broker
            .http
            .post(format!("{}/v1/leases/{lease}/revoke", broker.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

pub(crate) async fn chain(store: &str) -> Vec<AuditRecord> {
    stint::audit::open_existing(store)
        .await
        .unwrap()
        .chain(0, 10_000)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_role_works_until_revoked_and_its_sessions_end_with_it() {
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (_, port) = pg_host_port();
    let broker = broker_on("sqlite://audit.db", &issuer, &f, port, "").await;
    let caller = token(&issuer, "acme/api", "repo:acme/api:ref:refs/heads/main");

    let issued = broker.issue("app-db", &caller, None).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    let username = issued.body["database"]["username"].as_str().unwrap().to_string();
    let password = issued.body["database"]["password"].as_str().unwrap().to_string();
    let lease = issued.body["lease_id"].as_str().unwrap().to_string();
    assert!(
        username.starts_with(&format!("stint_it{}_acme_api_", f.tag)),
        "{username}"
    );
    assert!(username.len() <= 63);
    assert!(password.len() >= 32, "{password}");
    assert_eq!(lease, issued.body["issuance_id"].as_str().unwrap());

    // It logs in and uses what its group role may use.
    let session = login(&issued.body).await.expect("the issued role logs in");
    let row = session
        .query_one(&format!("SELECT n FROM public.{}", f.table), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    // Another caller cannot end it, and learns nothing about it.
    let stranger = token(&issuer, "acme/web", "repo:acme/web:ref:refs/heads/main");
    let refused = revoke(&broker, &lease, &stranger).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code()),
        (404, "lease_not_found"),
        "{}",
        refused.text
    );
    assert!(role_exists(&username).await);

    // Its caller ends it early: the role is gone, the open session too.
    let ended = revoke(&broker, &lease, &caller).await;
    assert_eq!(ended.status, 200, "{}", ended.text);
    assert_eq!(ended.body["state"], "revoked");
    assert!(!role_exists(&username).await, "the role is dropped");
    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "the session opened before revocation is terminated"
    );
    assert!(login(&issued.body).await.is_err(), "it cannot log in again");
    let again = revoke(&broker, &lease, &caller).await;
    assert_eq!(
        again.body["state"], "revoked",
        "revoking twice is harmless: {}",
        again.text
    );

    // Audited: the issuance and the revocation, never the password.
    let records = chain(&format!("sqlite://{}", broker.audit_db().display())).await;
    let mine: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.issuance_id.as_deref() == Some(lease.as_str()))
        .collect();
    assert_eq!(
        mine.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        vec![Outcome::Issued, Outcome::Revoked]
    );
    assert_eq!(mine[1].reason.as_deref(), Some("revoked_by_caller"));
    assert_eq!(
        mine[1].detail["revoked_by"]["subject"],
        json!("repo:acme/api:ref:refs/heads/main")
    );
    assert_eq!(mine[1].detail["username"], json!(username));
    let refusal = records
        .iter()
        .find(|r| r.request_id == refused.request_id())
        .expect("the refused revocation is audited");
    assert_eq!(refusal.reason.as_deref(), Some("lease_not_found"));
    let everything = serde_json::to_string(&records).unwrap();
    assert!(!everything.contains(&password), "no password in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_brokers_reap_expired_leases_each_exactly_once() {
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (store, _) = fresh_store(Backend::Postgres).await;
    let (_, port) = pg_host_port();
    let a = broker_on(&store, &issuer, &f, port, "").await;
    let b = broker_on(&store, &issuer, &f, port, "").await;
    let caller = token(&issuer, "acme/api", "repo:acme/api:ref:refs/heads/main");
    let mut leases = Vec::new();
    for n in 0..8 {
        let broker = if n % 2 == 0 { &a } else { &b };
        let issued = broker.issue("app-db", &caller, Some(json!({"ttl": "1s"}))).await;
        assert_eq!(issued.status, 200, "{}", issued.text);
        leases.push((
            issued.body["lease_id"].as_str().unwrap().to_string(),
            issued.body["database"]["username"].as_str().unwrap().to_string(),
        ));
    }
    let started = Instant::now();
    for (_, username) in &leases {
        while role_exists(username).await {
            assert!(started.elapsed() < Duration::from_secs(20), "{username} was not reaped");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Let a few more ticks of both reapers pass: nothing is revoked twice.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let records = chain(&store).await;
    for (lease, _) in &leases {
        let revocations = records
            .iter()
            .filter(|r| r.outcome == Outcome::Revoked && r.issuance_id.as_deref() == Some(lease.as_str()))
            .count();
        assert_eq!(revocations, 1, "lease {lease} revoked {revocations} times");
    }
    let expired = records
        .iter()
        .filter(|r| r.outcome == Outcome::Revoked)
        .all(|r| r.reason.as_deref() == Some("expired"));
    assert!(expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_claim_values_never_reach_sql() {
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (_, port) = pg_host_port();
    let broker = broker_on("sqlite://audit.db", &issuer, &f, port, "").await;
    for hostile in [
        format!(r#"acme/x"; DROP ROLE {}; --"#, f.group),
        "acme/x'; DROP TABLE pg_roles; --".to_string(),
        "acme/\u{0}\u{7f}\\\"$$ DO".to_string(),
    ] {
        let issued = broker
            .issue(
                "app-db",
                &token(&issuer, &hostile, "repo:acme/x:ref:refs/heads/main"),
                None,
            )
            .await;
        assert_eq!(issued.status, 200, "{hostile}: {}", issued.text);
        let username = issued.body["database"]["username"].as_str().unwrap();
        assert!(
            username
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{username}"
        );
        assert!(role_exists(username).await, "{username}");
    }
    assert!(role_exists(&f.group).await, "the group role survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_database_going_away_and_coming_back_is_survived() {
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (host, port) = pg_host_port();
    let proxy = FaultProxy::start(&format!("{host}:{port}")).await;
    let broker = broker_on("sqlite://audit.db", &issuer, &f, proxy.addr.port(), "").await;
    let caller = token(&issuer, "acme/api", "repo:acme/api:ref:refs/heads/main");

    let issued = broker.issue("app-db", &caller, Some(json!({"ttl": "1s"}))).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    let username = issued.body["database"]["username"].as_str().unwrap().to_string();

    proxy.set(Mode::Down);
    // New issuances wait for the database: 503 with Retry-After, not 500.
    let refused = broker.issue("app-db", &caller, None).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    // The expired lease cannot be revoked; it becomes "failing".
    let config = broker.dir.path().join("stint.yaml");
    std::fs::write(
        &config,
        format!(
            "audit: {{ store: sqlite://audit.db, key_file: {} }}\nsigning: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{}\n{}",
            f.files.path().join("audit.key").display(),
            issuer_yaml("ci", &issuer, "github", ""),
            config_parts(&f, proxy.addr.port(), "").0,
            config_parts(&f, proxy.addr.port(), "").1
        ),
    )
    .unwrap();
    let started = Instant::now();
    loop {
        let dir = broker.dir.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_stint"))
                .args(["leases", "list", "--failing", "-c", "stint.yaml"])
                .current_dir(dir)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains(&username) && text.contains("failing") {
            assert!(text.contains("unreachable"), "{text}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never listed as failing: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = broker.admin_get("/metrics").await.text;
    let failing: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stint_leases_failing "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // This lease, and the one of the refused issuance (its role may exist in part).
    assert!(failing >= 1, "{metrics}");
    assert!(role_exists(&username).await);

    // Back: the reaper gets it within its backoff.
    proxy.set(Mode::Pass);
    let started = Instant::now();
    while role_exists(&username).await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not revoked after the database returned"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(broker.issue("app-db", &caller, None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_expired_leases_are_revoked_and_orphans_dropped_when_configured() {
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (_, port) = pg_host_port();
    let (store, _) = fresh_store(Backend::Postgres).await;
    let first = broker_on(&store, &issuer, &f, port, "").await;
    let caller = token(&issuer, "acme/api", "repo:acme/api:ref:refs/heads/main");
    let issued = first.issue("app-db", &caller, Some(json!({"ttl": "2s"}))).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    let username = issued.body["database"]["username"].as_str().unwrap().to_string();
    // The broker goes away before the lease expires.
    let TestBroker { server, dir: _keep, .. } = first;
    server.shutdown().await;
    let orphan = format!("stint_it{}_orphan", f.tag);
    admin()
        .await
        .batch_execute(&format!("CREATE ROLE {orphan} LOGIN"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(role_exists(&username).await, "nobody reaped while no broker ran");

    let second = broker_on(&store, &issuer, &f, port, "    drop_orphans: true\n").await;
    let started = Instant::now();
    while role_exists(&username).await || role_exists(&orphan).await {
        assert!(started.elapsed() < Duration::from_secs(20), "start-up did not clean up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Arc::new(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_password_can_come_from_secrets_manager() {
    use crate::moto::{CountingProxy, Moto, stint_identity};
    let moto = Moto::start().await;
    let proxy = CountingProxy::start(&moto.url).await;
    let admin_sm = aws_sdk_secretsmanager::Client::new(&moto.sdk("AKIAADMIN", "admin", None).await);
    admin_sm
        .create_secret()
        .name("db/app-admin")
        .secret_string(json!({"username": "postgres", "password": "from-secrets-manager"}).to_string())
        .send()
        .await
        .unwrap();
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (_, port) = pg_host_port();
    let (grants, extra) = config_parts(&f, port, "");
    let pw_line = format!("admin_password_file: {}", f.files.path().join("admin.pw").display());
    let extra = extra.replace(&pw_line, "admin_password_secret: \"db/app-admin#password\"");
    let broker = TestBroker::start_on(
        "sqlite://audit.db",
        "",
        &issuer_yaml("ci", &issuer, "github", ""),
        &grants,
        &format!("{extra}{}", Moto::aws_yaml(&proxy.url, "")),
        StartOptions {
            aws_credentials: Some(stint_identity()),
            ..StartOptions::default()
        },
    )
    .await;
    let issued = broker
        .issue(
            "app-db",
            &token(&issuer, "acme/api", "repo:acme/api:ref:refs/heads/main"),
            None,
        )
        .await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    assert!(
        proxy.get_secret_calls() >= 1,
        "the admin password was read from Secrets Manager"
    );
}

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_connection_verifies_the_database_certificate() {
    let ssl = admin()
        .await
        .query_one("SHOW ssl", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    assert!(
        ssl == "on" && std::path::Path::new(SNAKEOIL).exists(),
        "this test needs the local PostgreSQL with ssl = on and Debian's snakeoil certificate \
         ({SNAKEOIL}, CN=localhost): install ssl-cert and set ssl = on in postgresql.conf"
    );
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (host, port) = pg_host_port();
    let caller = token(&issuer, "acme/api", "repo:acme/api:ref:refs/heads/main");
    let (grants, extra) = config_parts(&f, port, "");
    let start = |host_block: String| {
        let extra = extra.replace(&format!("host: {host}\n"), &host_block);
        let grants = grants.clone();
        let issuer_block = issuer_yaml("ci", &issuer, "github", "");
        async move {
            TestBroker::start_on(
                "sqlite://audit.db",
                "",
                &issuer_block,
                &grants,
                &extra,
                StartOptions::default(),
            )
            .await
        }
    };
    // The certificate's name and issuer check out: TLS, verified.
    let verified = start(format!(
        "host: localhost\n    tls: verify-full\n    ca_file: {SNAKEOIL}\n"
    ))
    .await;
    let issued = verified.issue("app-db", &caller, None).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    // The same server by another name: refused, never a silent downgrade.
    let wrong_name = start(format!(
        "host: 127.0.0.1\n    tls: verify-full\n    ca_file: {SNAKEOIL}\n"
    ))
    .await;
    let got = wrong_name.issue("app-db", &caller, None).await;
    assert_eq!(got.status, 503, "{}", got.text);
    // Not signed by the root it is told to trust.
    let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other = f.files.path().join("other-ca.pem");
    std::fs::write(&other, other_ca.cert.pem()).unwrap();
    let untrusted = start(format!(
        "host: localhost\n    tls: verify-full\n    ca_file: {}\n",
        other.display()
    ))
    .await;
    assert_eq!(untrusted.issue("app-db", &caller, None).await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_admin_creates_and_revokes_roles() {
    let f = fixture().await;
    // CREATEROLE, not superuser; it may hand out the group role.
    let admin_role = format!("stint_it_admin_{}", f.tag);
    admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {admin_role} LOGIN CREATEROLE; GRANT {} TO {admin_role} WITH ADMIN OPTION;",
            f.group
        ))
        .await
        .unwrap();
    let issuer = TestIssuer::start().await;
    let (_, port) = pg_host_port();
    let (grants, extra) = config_parts(&f, port, "");
    let extra = extra.replace("admin_user: postgres", &format!("admin_user: {admin_role}"));
    let broker = TestBroker::start_on(
        "sqlite://audit.db",
        "",
        &issuer_yaml("ci", &issuer, "github", ""),
        &grants,
        &extra,
        StartOptions::default(),
    )
    .await;
    let caller = token(&issuer, "acme/api", "repo:acme/api:ref:refs/heads/main");
    let issued = broker.issue("app-db", &caller, None).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    let username = issued.body["database"]["username"].as_str().unwrap().to_string();
    let session = login(&issued.body).await.expect("login");
    let ended = revoke(&broker, issued.body["lease_id"].as_str().unwrap(), &caller).await;
    assert_eq!(
        (ended.status.as_u16(), ended.body["state"].as_str()),
        (200, Some("revoked")),
        "{}",
        ended.text
    );
    assert!(!role_exists(&username).await);
    assert!(session.simple_query("SELECT 1").await.is_err(), "its session was ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_revoke_the_reaper_finishes_names_who_asked_for_it() {
    let f = fixture().await;
    let issuer = TestIssuer::start().await;
    let (host, port) = pg_host_port();
    let proxy = FaultProxy::start(&format!("{host}:{port}")).await;
    let broker = broker_on("sqlite://audit.db", &issuer, &f, proxy.addr.port(), "").await;
    let subject = "repo:acme/api:ref:refs/heads/main";
    let caller = token(&issuer, "acme/api", subject);
    let issued = broker.issue("app-db", &caller, None).await;
    assert_eq!(issued.status, 200, "{}", issued.text);
    let lease = issued.body["lease_id"].as_str().unwrap().to_string();
    let username = issued.body["database"]["username"].as_str().unwrap().to_string();

    // The database cannot be reached: the role cannot be dropped at once.
    proxy.set(Mode::Down);
    let asked = revoke(&broker, &lease, &caller).await;
    assert_eq!(asked.status, 202, "{}", asked.text);
    assert_eq!(asked.body["state"], "revoking");
    assert!(role_exists(&username).await);

    // Back: the reaper drops the role, and its record names the caller.
    proxy.set(Mode::Pass);
    let store = format!("sqlite://{}", broker.audit_db().display());
    let started = Instant::now();
    let record = loop {
        let revoked = chain(&store)
            .await
            .into_iter()
            .find(|r| r.outcome == Outcome::Revoked && r.issuance_id.as_deref() == Some(lease.as_str()));
        if let Some(record) = revoked {
            break record;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reaper never finished the revocation"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(!role_exists(&username).await, "the role is dropped");
    assert_eq!(record.reason.as_deref(), Some("revoked_by_caller"));
    assert_eq!(
        record.detail.get("revoked_by"),
        Some(&json!({"issuer": "ci", "subject": subject})),
        "the reaper's record names who asked: {:?}",
        record.detail
    );
    assert_eq!(
        record.request_id,
        asked.request_id(),
        "the 202's request id finds the record of the revocation it asked for"
    );
    assert_eq!(record.subject.as_deref(), Some(subject), "the holder");
}
