//! The store suite, run once per backend: SQLite and the machine's
//! PostgreSQL (`STINT_TEST_POSTGRES`, default postgres://postgres@127.0.0.1:5432/test).
//! Two sinks on one store stand for two broker replicas.

use std::sync::Arc;

use serde_json::Map;
use stint::audit::chain;
use stint::audit::{AuditKey, AuditQuery, AuditRecord, AuditSink, ChainKeys, CheckpointSigner, Outcome};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

const KEY: [u8; 32] = [7; 32];

fn keys() -> ChainKeys {
    let key = AuditKey::from_bytes(&KEY);
    let signer = CheckpointSigner::from_audit_key(&key).unwrap();
    ChainKeys {
        key: AuditKey::from_bytes(&KEY),
        signer,
        checkpoint_every: 10,
        group_commit: true,
        store_timeout: std::time::Duration::from_secs(10),
    }
}

/// The test PostgreSQL (`STINT_TEST_POSTGRES`).
pub(crate) fn postgres_url() -> String {
    std::env::var("STINT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Its host and port.
pub(crate) fn postgres_host_port() -> (String, u16) {
    let parsed = reqwest::Url::parse(&postgres_url()).unwrap();
    (
        parsed.host_str().unwrap_or("127.0.0.1").to_string(),
        parsed.port().unwrap_or(5432),
    )
}

/// A connection to it as the test's admin.
pub(crate) async fn postgres_admin() -> tokio_postgres::Client {
    let base = postgres_url();
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is needed for these tests and is not reachable at {base}: {e}\n\
                Start it (pg_ctlcluster 15 main start) or set STINT_TEST_POSTGRES"
            )
        });
    tokio::spawn(connection);
    client
}

/// A fresh, empty store and its URL; the guard keeps it alive.
pub(crate) async fn fresh_store(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (format!("sqlite://{}", dir.path().join("audit.db").display()), Some(dir))
        }
        Backend::Postgres => {
            let base = postgres_url();
            let client = postgres_admin().await;
            let schema = format!("stint_test_{}", uuid::Uuid::new_v4().simple());
            client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            (format!("{base}{sep}options=-c%20search_path%3D{schema}"), None)
        }
    }
}

fn record(n: usize, grant: &str, outcome: Outcome) -> AuditRecord {
    AuditRecord {
        seq: None,
        time: format!("2026-11-28T10:00:{:02}Z", n % 60),
        request_id: format!("req-{n}"),
        outcome,
        reason: (outcome != Outcome::Issued).then(|| "claims_mismatch".to_string()),
        grant: Some(grant.to_string()),
        kind: Some("token".into()),
        issuer: Some("ci".into()),
        subject: Some(format!("repo:acme/api:{}", n % 3)),
        claims: Map::new(),
        token_jti_hmac: None,
        issuance_id: None,
        ttl_seconds: Some(300),
        expires_at: None,
        client_addr: Some("127.0.0.1:1".into()),
        detail: Map::new(),
        prev_hash: None,
        record_hash: None,
        record_mac: None,
    }
}

async fn open(store: &str) -> Arc<dyn AuditSink> {
    stint::audit::open(store, keys()).await.unwrap()
}

fn public_key() -> Vec<u8> {
    let signer = CheckpointSigner::from_audit_key(&AuditKey::from_bytes(&KEY)).unwrap();
    chain::parse_public_key(&signer.public_jwk().to_string()).unwrap()
}

async fn replicas_append_concurrently_into_one_gap_free_chain(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let (a, b) = (open(&store).await, open(&store).await);
    let mut tasks = Vec::new();
    for n in 0..60 {
        let sink = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            sink.append(record(n, "deploy", Outcome::Issued)).await.unwrap()
        }));
    }
    let mut seqs: Vec<i64> = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().seq.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=60).collect::<Vec<_>>(),
        "{backend:?}: every append got its own seq, no gaps"
    );
    let records = a.chain(0, 1000).await.unwrap();
    let checkpoints = b.checkpoints().await.unwrap();
    assert_eq!(
        checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [10, 20, 30, 40, 50, 60]
    );
    let verified = chain::verify(&records, &checkpoints, Some(&AuditKey::from_bytes(&KEY)), &public_key()).unwrap();
    assert_eq!(verified.last_seq, 60);
}

async fn used_tokens_are_shared_and_forgotten_after_expiry(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let (a, b) = (open(&store).await, open(&store).await);
    let later = stint::clock::now() + 600;
    assert!(a.first_use("grant/jti-1", later).await.unwrap());
    assert!(
        !b.first_use("grant/jti-1", later).await.unwrap(),
        "{backend:?}: the other replica sees the use"
    );
    assert!(b.first_use("grant/jti-2", later).await.unwrap());
    let past = stint::clock::now() - 1;
    assert!(a.first_use("grant/old", past).await.unwrap());
    assert!(
        b.first_use("grant/old", later).await.unwrap(),
        "expired entries are forgotten"
    );
}

/// Single-use tokens go through the writer with the appends: many callers
/// presenting one token at once, among appends, find it new exactly once;
/// another token is new too; every append is stored in one gap-free
/// chain; and another broker on the store sees the token used.
async fn a_token_is_new_once_among_concurrent_uses_and_appends(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let sink = open(&store).await;
    let later = stint::clock::now() + 600;
    let (mut uses, mut appends) = (Vec::new(), Vec::new());
    for n in 0..40 {
        let (using, appending) = (sink.clone(), sink.clone());
        uses.push(tokio::spawn(async move {
            using.first_use("grant/jti-a", later).await.unwrap()
        }));
        appends.push(tokio::spawn(async move {
            appending.append(record(n, "deploy", Outcome::Issued)).await.unwrap()
        }));
    }
    let mut new = 0;
    for used in uses {
        new += usize::from(used.await.unwrap());
    }
    assert_eq!(new, 1, "{backend:?}: one of 40 concurrent uses finds the token new");
    let mut seqs = Vec::new();
    for appended in appends {
        seqs.push(appended.await.unwrap().seq.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<i64>>(), "{backend:?}");
    assert!(sink.first_use("grant/jti-b", later).await.unwrap());
    let other = open(&store).await;
    assert!(!other.first_use("grant/jti-a", later).await.unwrap(), "{backend:?}");
    let records = other.chain(0, 1000).await.unwrap();
    let checkpoints = other.checkpoints().await.unwrap();
    let verified = chain::verify(&records, &checkpoints, Some(&AuditKey::from_bytes(&KEY)), &public_key()).unwrap();
    assert_eq!(verified.last_seq, 40, "{backend:?}");
}

async fn queries_filter_and_page(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let sink = open(&store).await;
    for n in 0..12 {
        let (grant, outcome) = if n % 4 == 0 {
            ("other", Outcome::Denied)
        } else {
            ("deploy", Outcome::Issued)
        };
        let mut r = record(n, grant, outcome);
        r.token_jti_hmac = Some(format!("jti-{}", n % 5));
        if n % 6 == 0 {
            r.kind = Some("aws".into());
        }
        sink.append(r.clone()).await.unwrap();
    }
    // Each filter, and filters together (the SQLite query names only the
    // filters given, one of them leading through its index).
    let seqs = |records: Vec<AuditRecord>| records.iter().map(|r| r.seq.unwrap()).collect::<Vec<_>>();
    let text = |s: &str| Some(s.to_string());
    for (query, expected) in [
        (
            AuditQuery {
                token_jti_hmac: text("jti-2"),
                ..Default::default()
            },
            vec![8, 3],
        ),
        // Kind and reason narrow without an index of their own.
        (
            AuditQuery {
                kind: text("aws"),
                ..Default::default()
            },
            vec![7, 1],
        ),
        (
            AuditQuery {
                kind: text("aws"),
                reason: text("claims_mismatch"),
                ..Default::default()
            },
            vec![1],
        ),
        (
            AuditQuery {
                subject: text("repo:acme/api:1"),
                outcome: Some(Outcome::Issued),
                ..Default::default()
            },
            vec![11, 8, 2],
        ),
        (
            AuditQuery {
                subject: text("repo:acme/api:1"),
                outcome: Some(Outcome::Denied),
                ..Default::default()
            },
            vec![5],
        ),
        (
            AuditQuery {
                since: text("2026-11-28T10:00:03Z"),
                until: text("2026-11-28T10:00:07Z"),
                ..Default::default()
            },
            vec![7, 6, 5, 4],
        ),
        (
            AuditQuery {
                since: text("2026-11-28T10:00:03Z"),
                before_seq: Some(6),
                limit: Some(1),
                ..Default::default()
            },
            vec![5],
        ),
        (
            AuditQuery {
                grant: text("deploy"),
                subject: text("repo:acme/api:0"),
                until: text("2026-11-28T10:00:10Z"),
                ..Default::default()
            },
            vec![10, 7, 4],
        ),
        (
            AuditQuery {
                subject: text("nobody"),
                ..Default::default()
            },
            vec![],
        ),
    ] {
        assert_eq!(
            seqs(sink.query(&query).await.unwrap()),
            expected,
            "{backend:?} {query:?}"
        );
    }
    let denied = sink
        .query(&AuditQuery {
            outcome: Some(Outcome::Denied),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        denied.iter().map(|r| r.seq.unwrap()).collect::<Vec<_>>(),
        [9, 5, 1],
        "{backend:?}"
    );
    let page = sink
        .query(&AuditQuery {
            grant: Some("deploy".into()),
            before_seq: Some(8),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.seq.unwrap()).collect::<Vec<_>>(), [7, 6]);
    let by_request = sink
        .query(&AuditQuery {
            request_id: Some("req-3".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_request.len(), 1);
    assert!(
        sink.checkpoint().await.unwrap().is_some(),
        "the timer signs a moved head"
    );
    assert!(
        sink.checkpoint().await.unwrap().is_none(),
        "and nothing when it has not moved"
    );
    sink.check().await.unwrap();
}

macro_rules! per_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::Postgres).await })*
        }
    };
}

/// The console's overview: counts by hour and outcome, per grant, denials
/// by reason, busiest subjects, all within the range and from SQL.
async fn summaries_count_by_bucket_grant_reason_and_subject(backend: Backend) {
    use stint::audit::{Bucket, SummaryQuery};
    let (store, _guard) = fresh_store(backend).await;
    let sink = open(&store).await;
    let at = |hour: u32, n: usize, grant: &str, outcome: Outcome| {
        let mut r = record(n, grant, outcome);
        r.time = format!("2026-11-28T{hour:02}:{:02}:00Z", n % 60);
        r
    };
    let mut records = Vec::new();
    for n in 0..4 {
        records.push(at(9, n, "deploy", Outcome::Issued));
    }
    records.push(at(9, 4, "deploy", Outcome::Denied));
    for n in 5..8 {
        records.push(at(10, n, "db", Outcome::Denied));
    }
    records.push(at(11, 8, "deploy", Outcome::Issued));
    for r in &records {
        sink.append(r.clone()).await.unwrap();
    }
    let summary = sink
        .summary(&SummaryQuery {
            since: "2026-11-28T09:00:00Z".into(),
            until: "2026-11-28T11:00:00Z".into(),
            bucket: Bucket::Hour,
            top: true,
        })
        .await
        .unwrap();
    assert_eq!(
        summary.series,
        vec![
            ("2026-11-28T09".to_string(), Outcome::Denied, 1),
            ("2026-11-28T09".to_string(), Outcome::Issued, 4),
            ("2026-11-28T10".to_string(), Outcome::Denied, 3),
        ],
        "{backend:?}"
    );
    assert_eq!(
        summary.by_grant,
        vec![
            ("deploy".to_string(), Outcome::Issued, 4),
            ("db".to_string(), Outcome::Denied, 3),
            ("deploy".to_string(), Outcome::Denied, 1),
        ],
        "{backend:?}"
    );
    assert_eq!(summary.denial_reasons, vec![("claims_mismatch".to_string(), 4)]);
    // n % 3 names the subject: 0,3,6 → 3; 1,4,7 → 3; 2,5 → 2 (8 is out of range).
    assert_eq!(summary.subjects.iter().map(|(_, n)| n).sum::<u64>(), 8, "{summary:?}");
    assert_eq!(summary.subjects.first().map(|(_, n)| *n), Some(3));
}

/// The console's overview sums closed hours it keeps; the sum must be
/// what one query over the whole range says.
async fn hourly_rollups_add_up_to_the_range(backend: Backend) {
    use stint::audit::{Bucket, SummaryQuery};
    let (store, _guard) = fresh_store(backend).await;
    let sink = open(&store).await;
    for (n, (hour, grant, outcome)) in [
        (9, "deploy", Outcome::Issued),
        (9, "deploy", Outcome::Issued),
        (9, "db", Outcome::Denied),
        (10, "db", Outcome::Denied),
        (10, "deploy", Outcome::Issued),
        (11, "db", Outcome::Denied),
        (13, "deploy", Outcome::Issued),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = record(n, grant, outcome);
        r.time = format!("2026-11-28T{hour:02}:{:02}:00Z", n * 7 % 60);
        sink.append(r.clone()).await.unwrap();
    }
    let (since, until) = ("2026-11-28T08:00:00Z", "2026-11-28T14:00:00Z");
    let direct = sink
        .summary(&SummaryQuery {
            since: since.into(),
            until: until.into(),
            bucket: Bucket::Day,
            top: true,
        })
        .await
        .unwrap();
    let epoch = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    };
    let rollup = stint::console::rollup::Rollup::default();
    for _ in 0..2 {
        // Twice: the second time from the kept hours.
        let summed = rollup
            .range(sink.as_ref(), epoch(since), epoch(until), Bucket::Day, None)
            .await
            .unwrap();
        assert_eq!(summed.series, direct.series, "{backend:?}");
        assert_eq!(summed.by_grant, direct.by_grant, "{backend:?}");
        assert_eq!(summed.denial_reasons, direct.denial_reasons, "{backend:?}");
        assert_eq!(summed.subjects, direct.subjects, "{backend:?}");
    }
    // One grant's time series: the db grant's three denials, by hour.
    let db = rollup
        .range(sink.as_ref(), epoch(since), epoch(until), Bucket::Hour, Some("db"))
        .await
        .unwrap();
    assert_eq!(
        db.series,
        vec![
            ("2026-11-28T09".to_string(), Outcome::Denied, 1),
            ("2026-11-28T10".to_string(), Outcome::Denied, 1),
            ("2026-11-28T11".to_string(), Outcome::Denied, 1),
        ],
        "{backend:?}"
    );
}

per_backend!(
    hourly_rollups_add_up_to_the_range,
    replicas_append_concurrently_into_one_gap_free_chain,
    used_tokens_are_shared_and_forgotten_after_expiry,
    a_token_is_new_once_among_concurrent_uses_and_appends,
    queries_filter_and_page,
    summaries_count_by_bucket_grant_reason_and_subject,
);

/// The PostgreSQL writer checks the head before each group (it reads the
/// head's record in a statement of its own, after taking the row lock): an
/// edit without the key, or a head row naming a deleted record, stops
/// appends, and they resume once the store is put right.
#[tokio::test]
async fn a_postgres_head_changed_without_the_key_stops_appends() {
    let (store, _) = fresh_store(Backend::Postgres).await;
    let schema = store.rsplit("search_path%3D").next().unwrap().to_string();
    let sink = open(&store).await;
    for n in 0..3 {
        sink.append(record(n, "deploy", Outcome::Issued)).await.unwrap();
    }
    let admin = postgres_admin().await;
    // Someone with write access to the tables, but not the key.
    let edit = |statement: &str| {
        let statement = statement.replace("T.", &format!("{schema}."));
        let admin = &admin;
        async move { admin.batch_execute(&statement).await.unwrap() }
    };
    let refusal = |n: usize| {
        let sink = &sink;
        async move {
            sink.append(record(n, "deploy", Outcome::Issued))
                .await
                .unwrap_err()
                .to_string()
        }
    };

    edit("UPDATE T.audit_records SET subject = 'repo:evil/x' WHERE seq = 3").await;
    let err = refusal(3).await;
    assert!(err.contains("(seq 3) does not verify"), "{err}");

    edit("UPDATE T.audit_records SET subject = 'repo:acme/api:2' WHERE seq = 3").await;
    let stored = sink.append(record(3, "deploy", Outcome::Denied)).await.unwrap();
    assert_eq!(stored.seq, Some(4), "appends resume once the head verifies again");

    edit("DELETE FROM T.audit_records WHERE seq = 4").await;
    let err = refusal(4).await;
    assert!(err.contains("names record 4, which is not in the store"), "{err}");
}

/// The PostgreSQL writer keeps its insert statement prepared on its
/// connection. When the server drops the connection between groups (a
/// restart, a failover, an idle timeout), the next group opens a new one
/// and prepares the statement there again: no append fails for it.
#[tokio::test]
async fn a_postgres_connection_dropped_between_groups_fails_no_append() {
    let (store, _) = fresh_store(Backend::Postgres).await;
    let name = format!("stint_test_{}", uuid::Uuid::new_v4().simple());
    let store = format!("{store}&application_name={name}");
    let sink = open(&store).await;
    for n in 0..3 {
        sink.append(record(n, "deploy", Outcome::Issued)).await.unwrap();
    }
    let admin = postgres_admin().await;
    let ended: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE application_name = $1) AS ended",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ended, 2, "the sink's connections: one for reads, one for the writer");
    // Time for the client to read the server's goodbye and mark the
    // connection closed (as it would be long before the next group after
    // a restart).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    for n in 3..6 {
        let stored = sink.append(record(n, "deploy", Outcome::Issued)).await.unwrap();
        assert_eq!(stored.seq, Some(i64::try_from(n).unwrap() + 1));
    }
    let records = sink.chain(0, 100).await.unwrap();
    let checkpoints = sink.checkpoints().await.unwrap();
    let verified = chain::verify(&records, &checkpoints, Some(&AuditKey::from_bytes(&KEY)), &public_key()).unwrap();
    assert_eq!(verified.last_seq, 6);
}

/// Two brokers on one PostgreSQL store: single-use tokens hold across them
/// and their records form one chain that `stint audit verify` accepts.
#[tokio::test]
async fn two_brokers_share_one_postgres_store() {
    let (store, _) = fresh_store(Backend::Postgres).await;
    let issuer = crate::issuer::TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naudit: {{ store: \"{store}\", key_file: audit.key }}\n\
         signing: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{}",
        crate::harness::issuer_yaml("ci", &issuer, "github", ""),
        crate::harness::DEPLOY_GRANT.replace("    ttl: 5m\n", "    ttl: 5m\n    single_use_token: true\n")
    );
    let start = || async {
        let config = stint::config::Config::parse(&text, "test.yaml", dir.path(), &|_| None).unwrap();
        stint::server::start(config).await.unwrap()
    };
    let (a, b) = (start().await, start().await);
    let client = reqwest::Client::new();
    let issue = |addr: std::net::SocketAddr, token: String| {
        let request = client.post(format!("http://{addr}/v1/issue/deploy")).bearer_auth(token);
        async move { crate::harness::answer(request.send().await.unwrap()).await }
    };
    let token = issuer.sign(&issuer.github());
    assert_eq!(issue(a.addr, token.clone()).await.status, 200);
    assert_eq!(issue(b.addr, token).await.code(), "token_replayed");
    for n in 0..6 {
        let addr = if n % 2 == 0 { a.addr } else { b.addr };
        assert_eq!(issue(addr, issuer.sign(&issuer.github())).await.status, 200);
    }
    a.shutdown().await;
    b.shutdown().await;
    let choice = stint::audit::commands::StoreChoice {
        config: None,
        store: Some(store),
        audit_key_file: Some(dir.path().join("audit.key")),
    };
    let ok = stint::audit::commands::verify(&choice, None, None).await.unwrap();
    assert!(ok.starts_with("ok: 8 records (seq 1..8)"), "{ok}");
}

/// The PostgreSQL store over TLS: the local server's certificate (Debian's
/// snakeoil, CN=localhost) verifies under its name and is refused under
/// another, so the connection is TLS and checked, never a silent downgrade.
#[tokio::test]
async fn the_postgres_store_verifies_the_server_certificate() {
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    assert!(
        std::path::Path::new(snakeoil).exists(),
        "this test needs the local PostgreSQL with ssl = on and Debian's snakeoil certificate ({snakeoil})"
    );
    let (store, _) = fresh_store(Backend::Postgres).await;
    let tls = format!("&sslmode=verify-full&sslrootcert={snakeoil}");
    let by_name = format!("{}{tls}", store.replacen("@127.0.0.1:", "@localhost:", 1));
    let sink = stint::audit::open(&by_name, keys())
        .await
        .unwrap_or_else(|e| panic!("TLS to localhost: {e}"));
    let stored = sink.append(record(1, "deploy", Outcome::Issued)).await.unwrap();
    assert_eq!(stored.seq, Some(1));
    let by_address = format!("{store}{tls}");
    let refused = stint::audit::open(&by_address, keys())
        .await
        .err()
        .expect("wrong name refused");
    assert!(refused.to_string().to_lowercase().contains("certificate"), "{refused}");
    let unsupported = stint::audit::open(&format!("{store}&sslmode=verify-ca"), keys())
        .await
        .err()
        .expect("verify-ca refused");
    assert!(unsupported.to_string().contains("use verify-full"), "{unsupported}");
}

/// The whole store is verified a page at a time, reporting progress, and a
/// changed record past the first page is still found.
#[tokio::test]
async fn a_store_is_verified_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("audit.key");
    let key = AuditKey::load_or_create(&key_file).unwrap();
    let store = format!("sqlite://{}", dir.path().join("audit.db").display());
    let sink = stint::audit::open(
        &store,
        ChainKeys {
            signer: CheckpointSigner::from_audit_key(&key).unwrap(),
            key,
            checkpoint_every: 500,
            group_commit: true,
            store_timeout: std::time::Duration::from_secs(10),
        },
    )
    .await
    .unwrap();
    let mut appends = Vec::new();
    for n in 0..2500 {
        let sink = sink.clone();
        appends.push(tokio::spawn(async move {
            sink.append(record(n, "deploy", Outcome::Issued)).await.unwrap()
        }));
    }
    for a in appends {
        a.await.unwrap();
    }
    let choice = stint::audit::commands::StoreChoice {
        store: Some(store.clone()),
        audit_key_file: Some(key_file),
        ..Default::default()
    };
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let heard = seen.clone();
    let report = stint::audit::commands::verify_store(&choice, &move |n| heard.lock().unwrap().push(n))
        .await
        .unwrap();
    assert!(report.starts_with("ok: 2500 records (seq 1..2500)"), "{report}");
    assert_eq!(*seen.lock().unwrap(), vec![1000, 2000, 2500]);

    let db = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    db.execute("UPDATE audit_records SET subject = 'someone-else' WHERE seq = 1700", [])
        .unwrap();
    let broken = stint::audit::commands::verify_store(&choice, &|_| {})
        .await
        .unwrap_err();
    let chain_error = broken.downcast_ref::<chain::ChainError>().expect("a chain error");
    assert_eq!(chain_error.seq, 1700, "{broken}");
}
