//! The lease table seen from outside a broker. `stint leases list` reads
//! only: it works on a SQLite file nobody may write and with a PostgreSQL
//! role that may only SELECT, and a store without a lease table stays
//! without one. A table an older broker made is brought up to date.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use stint::leases::{Lease, LeaseState, Requester, open_store};

use crate::store::{Backend, fresh_store, postgres_admin, postgres_url};

fn lease(id: &str) -> Lease {
    Lease {
        id: id.to_string(),
        grant: "app-db".into(),
        database: "app".into(),
        username: format!("stint_app_{id}"),
        issuer: "ci".into(),
        subject: "repo:acme/api:ref:refs/heads/main".into(),
        created_at: 1_700_000_000,
        expires_at: 1_700_000_300,
        state: LeaseState::Active,
        revoke_reason: None,
        attempts: 0,
        last_error: None,
        next_attempt_at: 0,
        revoked_at: None,
        revoke_requested_by: None,
        kind: stint::leases::LeaseKind::Postgres,
        sealed_secret: None,
    }
}

/// A config whose audit store is `store`; nothing else in it is used.
fn config(dir: &Path, name: &str, store: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "audit: {{ store: \"{store}\", key_file: audit.key }}\nsigning: {{ key_file: signing.key }}\n\
             issuers:\n  ci:\n    issuer: https://token.actions.githubusercontent.com\n    audience: stint\n    \
             algorithms: [RS256]\n    platform: github\ngrants:\n  deploy:\n    kind: token\n    ttl: 5m\n    \
             audience: api\n    allow:\n      - issuer: ci\n        claims: {{ repository: acme/api }}\n"
        ),
    )
    .unwrap();
    path
}

/// `stint leases list -c CONFIG`, as a user who is not root when the test
/// is (root writes files whatever their mode says): `nobody`, running a
/// copy of the binary it may execute.
fn list(bin: &Path, config: &Path) -> Output {
    let mut command = Command::new(bin);
    command.args(["leases", "list", "-c"]).arg(config);
    if running_as_root() {
        command.uid(65534).gid(65534);
    }
    command.output().unwrap()
}

/// Whether this process is root: the files it makes are root's.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::tempfile().unwrap();
    probe.metadata().unwrap().uid() == 0
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A directory `nobody` may read, holding a binary it may run.
fn shared_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("stint");
    std::fs::copy(env!("CARGO_BIN_EXE_stint"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

/// Everything in `dir`: names and contents.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_list_reads_a_sqlite_store_nobody_may_write_and_creates_nothing() {
    let (shared, bin) = shared_dir();
    // A broker's store with a lease, and an audit-only store (no lease table).
    let with = shared.path().join("with");
    let without = shared.path().join("without");
    std::fs::create_dir(&with).unwrap();
    std::fs::create_dir(&without).unwrap();
    let with_url = format!("sqlite://{}", with.join("audit.db").display());
    let store = open_store(&with_url, std::time::Duration::from_secs(5)).await.unwrap();
    store.create(&lease("lease-one")).await.unwrap();
    drop(store);
    {
        let db = rusqlite::Connection::open(without.join("audit.db")).unwrap();
        db.pragma_update(None, "journal_mode", "WAL").unwrap();
        db.execute_batch("CREATE TABLE audit_records (seq INTEGER PRIMARY KEY)")
            .unwrap();
    }
    for dir in [&with, &without] {
        std::fs::set_permissions(dir.join("audit.db"), std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let before = (snapshot(&with), snapshot(&without));

    let listed = list(&bin, &config(shared.path(), "with.yaml", &with_url));
    let empty = list(
        &bin,
        &config(
            shared.path(),
            "without.yaml",
            &format!("sqlite://{}", without.join("audit.db").display()),
        ),
    );

    assert!(listed.status.success(), "{}", text(&listed));
    assert!(text(&listed).contains("lease-one"), "{}", text(&listed));
    assert!(empty.status.success(), "{}", text(&empty));
    assert!(text(&empty).contains("no leases"), "{}", text(&empty));
    assert_eq!(
        (snapshot(&with), snapshot(&without)),
        before,
        "listing wrote nothing: no table, no journal, no byte changed"
    );
    for dir in [&with, &without] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_list_works_with_a_postgres_role_that_may_only_select() {
    let (shared, bin) = shared_dir();
    let (with_url, _) = fresh_store(Backend::Postgres).await;
    let (without_url, _) = fresh_store(Backend::Postgres).await;
    let schema_of = |url: &str| url.rsplit("search_path%3D").next().unwrap().to_string();
    let (with_schema, without_schema) = (schema_of(&with_url), schema_of(&without_url));
    let store = open_store(&with_url, std::time::Duration::from_secs(5)).await.unwrap();
    store.create(&lease("lease-pg")).await.unwrap();
    drop(store);

    let admin = postgres_admin().await;
    let role = format!("stint_it_reader_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN;
             GRANT USAGE ON SCHEMA {with_schema}, {without_schema} TO {role};
             GRANT SELECT ON {with_schema}.leases TO {role};"
        ))
        .await
        .unwrap();
    let as_reader = |url: &str| {
        let mut parsed = reqwest::Url::parse(url).unwrap();
        parsed.set_username(&role).unwrap();
        parsed.to_string()
    };
    assert!(postgres_url().starts_with("postgres://"));

    let listed = list(&bin, &config(shared.path(), "with.yaml", &as_reader(&with_url)));
    let empty = list(&bin, &config(shared.path(), "without.yaml", &as_reader(&without_url)));
    let tables = admin
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = $1",
            &[&without_schema],
        )
        .await
        .unwrap();

    admin
        .batch_execute(&format!(
            "DROP SCHEMA {with_schema} CASCADE; DROP SCHEMA {without_schema} CASCADE;
             DROP OWNED BY {role}; DROP ROLE {role};"
        ))
        .await
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(text(&listed).contains("lease-pg"), "{}", text(&listed));
    assert!(empty.status.success(), "{}", text(&empty));
    assert!(text(&empty).contains("no leases"), "{}", text(&empty));
    assert!(tables.is_empty(), "listing created nothing in the empty store");
}

/// The `leases` table as the first release made it, with one lease.
const OLD_TABLE: &str = "
CREATE TABLE leases (
    id TEXT PRIMARY KEY, grant_name TEXT NOT NULL, database_name TEXT NOT NULL, username TEXT NOT NULL,
    issuer TEXT NOT NULL, subject TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
    state TEXT NOT NULL, revoke_reason TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    next_attempt_at BIGINT NOT NULL DEFAULT 0, revoked_at BIGINT, claimed_by TEXT,
    claimed_until BIGINT NOT NULL DEFAULT 0
);
INSERT INTO leases (id, grant_name, database_name, username, issuer, subject, created_at, expires_at, state)
    VALUES ('old-lease', 'app-db', 'app', 'stint_app_old', 'ci', 'repo:acme/api', 1, 4102444800, 'active');
";

async fn an_older_lease_table_is_brought_up_to_date(backend: Backend) {
    let (url, _guard) = fresh_store(backend).await;
    match backend {
        Backend::Sqlite => {
            let path = url.strip_prefix("sqlite://").unwrap();
            rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(OLD_TABLE)
                .unwrap();
        }
        Backend::Postgres => {
            let schema = url.rsplit("search_path%3D").next().unwrap();
            postgres_admin()
                .await
                .batch_execute(&format!("SET search_path TO {schema}; {OLD_TABLE}"))
                .await
                .unwrap();
        }
    }
    let store = open_store(&url, std::time::Duration::from_secs(5)).await.unwrap();
    let old = store.get("old-lease").await.unwrap().expect("the old lease is kept");
    assert_eq!(
        (old.username.as_str(), old.revoke_requested_by),
        ("stint_app_old", None)
    );
    let asked = Requester {
        issuer: "ci".into(),
        subject: "repo:acme/api".into(),
        request_id: "req-1".into(),
    };
    assert!(
        store
            .expire_now("old-lease", 100, "revoked_by_caller", Some(&asked))
            .await
            .unwrap()
    );
    let ended = store.get("old-lease").await.unwrap().unwrap();
    assert_eq!(ended.revoke_requested_by, Some(asked));
    assert_eq!(store.list(false, 10).await.unwrap().len(), 1);
    drop(store);
    // A second broker on the same store finds nothing left to add.
    open_store(&url, std::time::Duration::from_secs(5)).await.unwrap();
    if let Backend::Postgres = backend {
        let schema = url.rsplit("search_path%3D").next().unwrap();
        postgres_admin()
            .await
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_older_lease_table_is_brought_up_to_date_on_sqlite() {
    an_older_lease_table_is_brought_up_to_date(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_older_lease_table_is_brought_up_to_date_on_postgres() {
    an_older_lease_table_is_brought_up_to_date(Backend::Postgres).await;
}
