//! The auditor phase of the load bench: issuance p99 on a large SQLite log
//! while an auditor pages through all of it over `GET /v1/audit`, against
//! the same paced load with no auditor. Reads run on connections of their
//! own, so the ratio shows what reading costs issuance in CPU, not in
//! waiting for the writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Records in the log (STINT_BENCH_AUDIT_RECORDS, default 1,000,000).
pub fn records() -> u64 {
    std::env::var("STINT_BENCH_AUDIT_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// Writes `n` records straight into the SQLite file at `path` (tables and
/// indexes created by stint itself first): seconds instead of the hours
/// a million issuances would take. They are records from before the chain
/// (no hashes), which the broker extends as it would an upgraded log; the
/// indexes, which are what the reads use, are the same.
pub async fn fill(path: &std::path::Path, n: u64) {
    let key = stint::audit::AuditKey::from_bytes(&[9; 32]);
    let keys = stint::audit::ChainKeys {
        signer: stint::audit::CheckpointSigner::from_audit_key(&key).expect("signer"),
        key,
        checkpoint_every: 1000,
        group_commit: true,
        store_timeout: Duration::from_secs(10),
    };
    drop(
        stint::audit::open(&format!("sqlite://{}", path.display()), keys)
            .await
            .expect("create the log"),
    );
    let mut conn = rusqlite::Connection::open(path).expect("open the log");
    conn.pragma_update(None, "synchronous", "OFF").expect("pragma");
    let tx = conn.transaction().expect("begin");
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO audit_records (seq, time, request_id, outcome, reason, grant_name, kind, issuer, subject,
                    claims, token_jti_hmac, issuance_id, ttl_seconds, expires_at, client_addr, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'token', 'bench', ?7, ?8, ?9, ?10, 300, ?11, '127.0.0.1:40000', ?12)",
            )
            .expect("prepare");
        let start = stint::clock::now() - i64::try_from(n).unwrap_or(0) / 100;
        for seq in 1..=i64::try_from(n).unwrap_or(i64::MAX) {
            // 100 records a second; one in ten denied; 200 CI subjects.
            let time = stint::clock::rfc3339(start + seq / 100);
            let denied = seq % 10 == 0;
            insert
                .execute(rusqlite::params![
                    seq,
                    time,
                    uuid::Uuid::now_v7().to_string(),
                    if denied { "denied" } else { "issued" },
                    denied.then_some("claims_mismatch"),
                    format!("grant-{}", seq % 7),
                    format!("repo:acme/service-{}:ref:refs/heads/main", seq % 200),
                    r#"{"repository":"acme/api","ref":"refs/heads/main","workflow":"deploy"}"#,
                    format!(
                        "{:064x}",
                        u128::from(seq.unsigned_abs()).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
                    ),
                    (!denied).then(|| uuid::Uuid::now_v7().to_string()),
                    stint::clock::rfc3339(start + seq / 100 + 300),
                    r#"{"rule":0,"audience":"x","kid":"bench"}"#,
                ])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

/// Pages through the whole log, newest first, 1000 records a page, then
/// asks for a subject that never occurs (an index miss over the whole
/// log), until `stop`. Returns each page's latency in µs.
pub async fn audit_pages(url: String, token: String, stop: Arc<AtomicBool>) -> Vec<u32> {
    let http = reqwest::Client::new();
    let mut micros = Vec::new();
    let mut cursor: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let query = match &cursor {
            Some(cursor) => format!("limit=1000&cursor={cursor}"),
            None if micros.len() % 2 == 1 => "subject=nobody&limit=1000".to_string(),
            None => "limit=1000".to_string(),
        };
        let sent = Instant::now();
        let Ok(response) = http
            .get(format!("{url}/v1/audit?{query}"))
            .bearer_auth(&token)
            .send()
            .await
        else {
            continue;
        };
        let page: Value = response.json().await.unwrap_or(json!({}));
        micros.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        cursor = page["next_cursor"].as_str().map(str::to_string);
    }
    micros
}
