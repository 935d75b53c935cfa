//! Tamper evidence: every kind of edit to the log is found, with a message
//! that says where and what.

use std::path::{Path, PathBuf};

use serde_json::json;
use stint::audit::chain;
use stint::audit::commands::{self, StoreChoice};

use crate::harness::{DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;

/// A broker with checkpoints every 3 records and 7 records written.
async fn logged_broker() -> (TestIssuer, TestBroker) {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_with(&issuer_yaml("ci", &issuer, "github", ""), DEPLOY_GRANT, "").await;
    (issuer, broker)
}

async fn write_records(issuer: &TestIssuer, broker: &TestBroker, n: usize) {
    for i in 0..n {
        let mut claims = issuer.github();
        if i % 3 == 2 {
            claims.insert("ref".into(), json!("refs/heads/feature"));
        }
        broker.issue("deploy", &issuer.sign(&claims), None).await;
    }
}

/// A consistent copy of the live log, to tamper with.
fn copy_log(broker: &TestBroker, name: &str) -> PathBuf {
    let copy = broker.dir.path().join(name);
    let conn = rusqlite::Connection::open(broker.audit_db()).unwrap();
    conn.execute("VACUUM INTO ?1", [copy.display().to_string()]).unwrap();
    copy
}

fn choice(broker: &TestBroker, db: &Path) -> StoreChoice {
    StoreChoice {
        config: None,
        store: Some(format!("sqlite://{}", db.display())),
        audit_key_file: Some(broker.dir.path().join("audit.key")),
    }
}

async fn verify(broker: &TestBroker, db: &Path) -> Result<String, String> {
    commands::verify(&choice(broker, db), None, None)
        .await
        .map_err(|e| e.to_string())
}

fn tamper(db: &Path, sql: &str) {
    rusqlite::Connection::open(db).unwrap().execute_batch(sql).unwrap();
}

#[tokio::test]
async fn an_untouched_log_verifies_and_each_kind_of_edit_is_found() {
    let (issuer, broker) = logged_broker().await;
    write_records(&issuer, &broker, 7).await;
    broker.server.broker.audit().checkpoint().await.unwrap(); // as the timer would

    let clean = copy_log(&broker, "clean.db");
    let ok = verify(&broker, &clean).await.unwrap();
    assert!(ok.starts_with("ok: 7 records (seq 1..7)"), "{ok}");

    let changed = copy_log(&broker, "changed.db");
    tamper(
        &changed,
        "UPDATE audit_records SET subject = 'repo:evil/x' WHERE seq = 2",
    );
    assert_eq!(
        verify(&broker, &changed).await.unwrap_err(),
        "audit chain broken at seq 2: its content does not match its record_hash (the record was changed)"
    );

    let deleted = copy_log(&broker, "deleted.db");
    tamper(&deleted, "DELETE FROM audit_records WHERE seq = 4");
    assert_eq!(
        verify(&broker, &deleted).await.unwrap_err(),
        "audit chain broken at seq 5: records 4..4 are missing (deleted?)"
    );

    let reordered = copy_log(&broker, "reordered.db");
    tamper(
        &reordered,
        "UPDATE audit_records SET seq = 100 WHERE seq = 2; UPDATE audit_records SET seq = 2 WHERE seq = 3; UPDATE audit_records SET seq = 3 WHERE seq = 100;",
    );
    let err = verify(&broker, &reordered).await.unwrap_err();
    assert!(
        err.starts_with("audit chain broken at seq 2: prev_hash does not match"),
        "{err}"
    );

    let truncated = copy_log(&broker, "truncated.db");
    tamper(&truncated, "DELETE FROM audit_records WHERE seq >= 6");
    let err = verify(&broker, &truncated).await.unwrap_err();
    assert!(
        err.contains("covers seq 6 but the log ends at 5 (the tail was truncated)"),
        "{err}"
    );

    // A forger who rewrites a record and recomputes the public hash chain
    // still lacks the audit key: the MAC gives it away.
    let forged = copy_log(&broker, "forged.db");
    let conn = rusqlite::Connection::open(&forged).unwrap();
    let choice = choice(&broker, &forged);
    let mut records = stint::audit::open_existing(&choice.resolve().unwrap().0)
        .await
        .unwrap()
        .chain(0, 100)
        .await
        .unwrap();
    let last = records.last_mut().unwrap();
    last.subject = Some("repo:evil/x".into());
    let hash = chain::record_hash(last);
    conn.execute(
        "UPDATE audit_records SET subject = 'repo:evil/x', record_hash = ?1 WHERE seq = 7",
        [&hash],
    )
    .unwrap();
    conn.execute("DELETE FROM audit_checkpoints WHERE seq = 7", []).unwrap();
    let err = verify(&broker, &forged).await.unwrap_err();
    assert_eq!(
        err,
        "audit chain broken at seq 7: its MAC is wrong (forged without the audit key)"
    );
}

#[tokio::test]
async fn exports_verify_offline_with_the_public_key_alone() {
    let (issuer, broker) = logged_broker().await;
    write_records(&issuer, &broker, 5).await;
    broker.server.broker.audit().checkpoint().await.unwrap();

    let db = copy_log(&broker, "log.db");
    let choice = choice(&broker, &db);
    let mut export = Vec::new();
    assert_eq!(commands::export(&choice, None, None, &mut export).await.unwrap(), 5);
    let export_path = broker.dir.path().join("export.jsonl");
    std::fs::write(&export_path, &export).unwrap();
    let pubkey = commands::pubkey(&choice).unwrap();

    // The broker publishes the same key, apart from the token JWKS (a
    // service trusting jwks.json must never accept an audit-derived key).
    let audit_keys = broker.get("/.well-known/stint-audit-keys.json").await.body;
    let kid = serde_json::from_str::<serde_json::Value>(&pubkey).unwrap()["kid"].clone();
    assert!(
        audit_keys["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid),
        "{audit_keys}"
    );
    let jwks = broker.get("/.well-known/jwks.json").await.body;
    assert!(
        jwks["keys"].as_array().unwrap().iter().all(|k| k["kid"] != kid),
        "{jwks}"
    );

    let no_key = StoreChoice::default();
    let ok = commands::verify(&no_key, Some(&export_path), Some(&pubkey))
        .await
        .unwrap();
    assert!(ok.contains("5 records") && ok.contains("checked offline"), "{ok}");

    // Edit one exported line: found offline.
    let text = String::from_utf8(export)
        .unwrap()
        .replacen("repo:acme/api:environment:production", "repo:acme/evil", 1);
    std::fs::write(&export_path, text).unwrap();
    let err = commands::verify(&no_key, Some(&export_path), Some(&pubkey))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("audit chain broken at seq 1:"), "{err}");

    // A key that did not sign the checkpoints is refused.
    let other = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    std::fs::write(
        &export_path,
        String::from_utf8_lossy(&{
            let mut e = Vec::new();
            commands::export(&choice, None, None, &mut e).await.unwrap();
            e
        })
        .to_string(),
    )
    .unwrap();
    let err = commands::verify(&no_key, Some(&export_path), Some(other))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("checkpoint signature does not verify"), "{err}");
}

/// A SIEM's copy comes back in any order and, delivered at-least-once,
/// with repeats: it still verifies, each repeat counted once. A repeated
/// `seq` whose content differs is an edit, not a repeat.
#[tokio::test]
async fn an_export_out_of_order_and_with_repeats_verifies_and_a_changed_repeat_does_not() {
    let (issuer, broker) = logged_broker().await;
    write_records(&issuer, &broker, 7).await;
    broker.server.broker.audit().checkpoint().await.unwrap();
    let choice = choice(&broker, &copy_log(&broker, "log.db"));
    let mut export = Vec::new();
    commands::export(&choice, None, None, &mut export).await.unwrap();
    let pubkey = commands::pubkey(&choice).unwrap();
    let lines: Vec<&str> = std::str::from_utf8(&export).unwrap().lines().collect();
    let mut shuffled: Vec<&str> = lines.iter().rev().copied().collect();
    shuffled.extend([lines[2], lines[3], lines[7]]);
    let path = broker.dir.path().join("siem.jsonl");
    std::fs::write(&path, shuffled.join("\n")).unwrap();
    let ok = commands::verify(&StoreChoice::default(), Some(&path), Some(&pubkey))
        .await
        .unwrap();
    assert!(ok.starts_with("ok: 7 records (seq 1..7), 3 checkpoints"), "{ok}");
    assert!(
        ok.contains("; 3 repeated lines (same seq and content) counted once"),
        "{ok}"
    );

    let changed = lines[3].replacen("\"request_id\":\"", "\"request_id\":\"x", 1);
    shuffled.push(&changed);
    std::fs::write(&path, shuffled.join("\n")).unwrap();
    let err = commands::verify(&StoreChoice::default(), Some(&path), Some(&pubkey))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "audit chain broken at seq 4: the export holds two different records with this seq (one was changed)"
    );
}

#[tokio::test]
async fn cli_verify_and_export_on_the_live_log() {
    let (issuer, broker) = logged_broker().await;
    write_records(&issuer, &broker, 4).await;
    let stint = env!("CARGO_BIN_EXE_stint");
    let store = format!("sqlite://{}", broker.audit_db().display());
    let key = broker.dir.path().join("audit.key");
    let out = std::process::Command::new(stint)
        .args([
            "audit",
            "verify",
            "--store",
            &store,
            "--audit-key-file",
            key.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("ok: 4 records"), "{stdout}");
    let out = std::process::Command::new(stint)
        .args(["audit", "export", "--store", &store, "--since", "1h"])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().filter(|l| l.get("seq").is_some()).count(), 4);
    assert_eq!(lines.first().unwrap()["seq"], 1, "oldest first");
    assert!(lines.first().unwrap()["record_hash"].as_str().unwrap().len() == 64);
}

#[tokio::test]
async fn a_slice_of_the_chain_verifies_on_its_own_and_exports_with_its_checkpoints() {
    let (issuer, broker) = logged_broker().await;
    write_records(&issuer, &broker, 7).await;
    let db = copy_log(&broker, "slice.db");
    let choice = choice(&broker, &db);
    let records = stint::audit::open_existing(&choice.resolve().unwrap().0)
        .await
        .unwrap()
        .chain(0, 100)
        .await
        .unwrap();
    let (since, until) = (records[2].time.clone(), records[5].time.clone()); // seq 3 .. before seq 6

    let ok = commands::verify_range(&choice, None, None, Some(&since), Some(&until), false)
        .await
        .unwrap();
    assert!(ok.starts_with("ok: 3 records (seq 3..5)"), "{ok}");
    assert!(ok.contains("a slice of the chain"), "{ok}");

    let mut export = Vec::new();
    assert_eq!(
        commands::export(&choice, Some(&since), Some(&until), &mut export)
            .await
            .unwrap(),
        3
    );
    let text = String::from_utf8(export).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("{\"checkpoint\"")).count(),
        1,
        "only the checkpoint at seq 3"
    );
    let path = broker.dir.path().join("slice.jsonl");
    std::fs::write(&path, &text).unwrap();
    let pubkey = commands::pubkey(&choice).unwrap();
    let no_key = StoreChoice::default();
    // Without saying it is a slice, an export that starts past seq 1 fails:
    // otherwise cutting the head of a log would pass.
    let err = commands::verify(&no_key, Some(&path), Some(&pubkey))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("records 1..2 are missing"), "{err}");
    let ok = commands::verify_range(&no_key, Some(&path), Some(&pubkey), None, None, true)
        .await
        .unwrap();
    assert!(ok.starts_with("ok: 3 records (seq 3..5)"), "{ok}");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3])).unwrap();
    let err = commands::verify_range(&no_key, Some(&path), Some(&pubkey), None, None, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("records 4..4 are missing"), "{err}");
}

#[tokio::test]
async fn the_broker_refuses_to_extend_a_chain_edited_without_the_key() {
    let (issuer, broker) = logged_broker().await;
    write_records(&issuer, &broker, 2).await;
    // Someone with write access to the store but not the key edits the head.
    let conn = rusqlite::Connection::open(broker.audit_db()).unwrap();
    conn.execute("UPDATE audit_records SET subject = 'repo:evil/x' WHERE seq = 2", [])
        .unwrap();
    let answer = broker.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (503, "audit_unavailable"),
        "{}",
        answer.text
    );
    assert!(
        answer.body.get("token").is_none(),
        "fail closed: nothing issued on a tampered log"
    );
    assert!(
        broker.server.broker.audit().checkpoint().await.is_err(),
        "and never signs the edited head"
    );
}

/// Someone with write access but not the key edits the last record and
/// sets its `record_hash` to NULL (as if it were from before the chain):
/// the next issuance is refused with no credential, and `/readyz` is 503
/// and says `tampered`, naming nothing of the store. Once the edit is
/// undone, the broker issues again and is ready.
async fn a_head_without_its_hash_is_refused(backend: crate::store::Backend) {
    let (store, _guard) = crate::store::fresh_store(backend).await;
    let store = match backend {
        // Inside the broker's own folder, so `audit_db()` names it.
        crate::store::Backend::Sqlite => "sqlite://audit.db".to_string(),
        crate::store::Backend::Postgres => store,
    };
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_on(
        &store,
        "",
        &issuer_yaml("ci", &issuer, "github", ""),
        DEPLOY_GRANT,
        "",
        Default::default(),
    )
    .await;
    write_records(&issuer, &broker, 2).await;
    assert_eq!(broker.admin_get("/readyz").await.status, 200);
    let head = broker.server.broker.audit().query(&Default::default()).await.unwrap();
    let (subject, hash) = (head[0].subject.clone().unwrap(), head[0].record_hash.clone().unwrap());
    let edit = |sql: String| {
        let (store, db) = (store.clone(), broker.audit_db());
        async move {
            match backend {
                crate::store::Backend::Sqlite => tamper(&db, &sql),
                crate::store::Backend::Postgres => {
                    let schema = store.rsplit("search_path%3D").next().unwrap();
                    let sql = sql.replace("audit_records", &format!("{schema}.audit_records"));
                    crate::store::postgres_admin().await.batch_execute(&sql).await.unwrap();
                }
            }
        }
    };
    edit("UPDATE audit_records SET subject = 'repo:evil/x', record_hash = NULL WHERE seq = 2".into()).await;
    // Found by /readyz alone, before any request meets it.
    let ready = broker.admin_get("/readyz").await;
    assert_eq!(
        (ready.status.as_u16(), &ready.body["audit"]),
        (503, &serde_json::json!("tampered")),
        "{backend:?}: {}",
        ready.text
    );

    let answer = broker.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (503, "audit_unavailable"),
        "{backend:?}: {}",
        answer.text
    );
    assert!(answer.body.get("token").is_none(), "fail closed: nothing issued");
    let ready = broker.admin_get("/readyz").await;
    assert_eq!(ready.status, 503, "{backend:?}: {}", ready.text);
    assert_eq!(ready.body["audit"], "tampered", "{}", ready.text);
    assert!(
        !ready.text.contains("seq") && !ready.text.contains("hash") && !ready.text.contains("evil"),
        "the reason only: {}",
        ready.text
    );

    edit(format!(
        "UPDATE audit_records SET subject = '{subject}', record_hash = '{hash}' WHERE seq = 2"
    ))
    .await;
    let answer = broker.issue("deploy", &issuer.sign(&issuer.github()), None).await;
    assert_eq!(
        answer.status, 200,
        "put right, the log is extended again: {}",
        answer.text
    );
    assert_eq!(broker.admin_get("/readyz").await.status, 200);
}

mod head_without_hash {
    #[tokio::test]
    async fn sqlite() {
        super::a_head_without_its_hash_is_refused(crate::store::Backend::Sqlite).await
    }
    #[tokio::test]
    async fn postgres() {
        super::a_head_without_its_hash_is_refused(crate::store::Backend::Postgres).await
    }
}
