//! Records as OCSF 1.3 events, for SIEMs that normalise on it.
//!
//! An issue request is an **Authentication** (class 3002): a workload
//! presents its OIDC token (`auth_protocol_id` 4, OpenID) to log on to a
//! grant (`service.name`), and on success gets a session (`session.uid` =
//! the issuance id, `session.expiration_time`). A lease ended is a Logoff
//! of that session. A checkpoint has no class of its own: it is a Base
//! Event (class 0) whose `unmapped.checkpoint` is the signed statement.
//!
//! Every event keeps its export line in `raw_data`, so the SIEM's copy
//! still verifies offline (`jq -r .raw_data | stint audit verify --export`);
//! `metadata.uid` (the `record_hash`) and `metadata.sequence` (the `seq`)
//! let a receiver drop a batch it got twice. docs/audit.md has the table of
//! which field goes where.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::event::Event;
use crate::audit::chain::Checkpoint;
use crate::audit::{AuditRecord, Outcome};

/// The OCSF version these events follow.
pub const OCSF_VERSION: &str = "1.3.0";
/// Authentication.
pub const AUTHENTICATION: u32 = 3002;
/// Identity & Access Management.
const IAM: u32 = 3;
const LOGON: u32 = 1;
const LOGOFF: u32 = 2;
/// `auth_protocol_id` of OpenID (Connect).
const OPENID: u32 = 4;

/// The event as OCSF JSON.
pub fn event(event: &Event<'_>) -> Value {
    match event {
        Event::Record(record) => authentication(record, event.export_line()),
        Event::Checkpoint(checkpoint) => checkpoint_event(checkpoint, event.export_line()),
    }
}

/// One record as OCSF JSON (the console's OCSF export).
pub fn record(record: &AuditRecord) -> Value {
    authentication(record, crate::audit::record_line(record))
}

/// Milliseconds since the epoch of an RFC 3339 time (OCSF `timestamp_t`).
pub(super) fn epoch_millis(time: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(time, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

fn product() -> Value {
    json!({ "name": "stint", "vendor_name": "stint", "version": env!("CARGO_PKG_VERSION") })
}

/// Puts `value` under `key` unless it is null.
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    if !value.is_null() {
        map.insert(key.to_string(), value);
    }
}

fn authentication(r: &AuditRecord, raw: String) -> Value {
    // A lease dropped, or a refused request to drop one, ends a session;
    // every other record is a request to start one.
    let logoff = r.outcome == Outcome::Revoked || r.reason.as_deref() == Some("lease_not_found");
    let activity_id = if logoff { LOGOFF } else { LOGON };
    let success = matches!(r.outcome, Outcome::Issued | Outcome::Revoked);
    let (severity_id, severity) = match r.outcome {
        Outcome::Issued | Outcome::Revoked => (1, "Informational"),
        Outcome::Error => (2, "Low"),
        Outcome::Denied => (3, "Medium"),
    };
    let mut out = Map::new();
    put(&mut out, "class_uid", json!(AUTHENTICATION));
    put(&mut out, "class_name", json!("Authentication"));
    put(&mut out, "category_uid", json!(IAM));
    put(&mut out, "category_name", json!("Identity & Access Management"));
    put(&mut out, "activity_id", json!(activity_id));
    put(
        &mut out,
        "activity_name",
        json!(if logoff { "Logoff" } else { "Logon" }),
    );
    put(&mut out, "type_uid", json!(AUTHENTICATION * 100 + activity_id));
    put(
        &mut out,
        "type_name",
        json!(format!("Authentication: {}", if logoff { "Logoff" } else { "Logon" })),
    );
    put(&mut out, "time", json!(epoch_millis(&r.time)));
    put(&mut out, "severity_id", json!(severity_id));
    put(&mut out, "severity", json!(severity));
    put(&mut out, "status_id", json!(if success { 1 } else { 2 }));
    put(&mut out, "status", json!(if success { "Success" } else { "Failure" }));
    put(&mut out, "status_code", json!(r.reason));
    put(
        &mut out,
        "status_detail",
        json!(
            r.reason
                .as_ref()
                .map(|reason| format!("{}: {reason}", r.outcome.as_str()))
        ),
    );
    put(&mut out, "message", json!(message(r)));
    let user = user(r.issuer.as_deref(), r.subject.as_deref());
    put(&mut out, "user", user.clone());
    // Who asked: the caller itself, or for a lease ended by someone else
    // (an auditor, the reaper) that one.
    let actor = match r.detail.get("revoked_by") {
        Some(by) => json!({
            "user": user_of(by.get("issuer").and_then(Value::as_str), by.get("subject").and_then(Value::as_str)),
            "idp": { "name": by.get("issuer") },
        }),
        None if r.outcome == Outcome::Revoked => json!({ "app_name": "stint lease reaper" }),
        None => {
            let mut actor = Map::new();
            put(&mut actor, "user", user);
            put(
                &mut actor,
                "idp",
                r.issuer.as_ref().map_or(Value::Null, |i| json!({ "name": i })),
            );
            Value::Object(actor)
        }
    };
    put(&mut out, "actor", actor);
    if !logoff {
        put(&mut out, "auth_protocol_id", json!(OPENID));
        put(&mut out, "auth_protocol", json!("OpenID"));
    }
    put(
        &mut out,
        "service",
        json!({ "name": r.grant.as_deref().unwrap_or("stint") }),
    );
    let mut session = Map::new();
    put(&mut session, "uid", json!(r.issuance_id));
    put(
        &mut session,
        "expiration_time",
        json!(r.expires_at.as_deref().and_then(epoch_millis)),
    );
    put(
        &mut session,
        "credential_uid",
        r.detail.get("access_key_id").cloned().unwrap_or(Value::Null),
    );
    if !session.is_empty() {
        put(&mut out, "session", Value::Object(session));
    }
    put(&mut out, "src_endpoint", endpoint(r.client_addr.as_deref()));
    put(
        &mut out,
        "metadata",
        json!({
            "version": OCSF_VERSION,
            "product": product(),
            "uid": r.record_hash,
            "sequence": r.seq,
            "correlation_uid": r.request_id,
            "original_time": r.time,
            "log_name": "audit",
            "log_provider": "stint",
        }),
    );
    put(
        &mut out,
        "unmapped",
        json!({
            "outcome": r.outcome.as_str(),
            "kind": r.kind,
            "issuer": r.issuer,
            "claims": r.claims,
            "detail": r.detail,
            "ttl_seconds": r.ttl_seconds,
            "token_jti_hmac": r.token_jti_hmac,
            "prev_hash": r.prev_hash,
            "record_mac": r.record_mac,
        }),
    );
    put(&mut out, "raw_data", json!(raw));
    Value::Object(out)
}

/// The OCSF user for a verified caller; an unknown one for a token that
/// failed verification (the record has no subject then).
fn user(issuer: Option<&str>, subject: Option<&str>) -> Value {
    match subject {
        Some(_) => user_of(issuer, subject),
        None => json!({ "type_id": 0, "type": "Unknown" }),
    }
}

fn user_of(issuer: Option<&str>, subject: Option<&str>) -> Value {
    let mut user = Map::new();
    put(&mut user, "uid", json!(subject));
    put(&mut user, "name", json!(subject));
    // The issuer's config name is where the subject is defined.
    put(&mut user, "domain", json!(issuer));
    Value::Object(user)
}

fn endpoint(client_addr: Option<&str>) -> Value {
    match client_addr.and_then(|a| a.parse::<std::net::SocketAddr>().ok()) {
        Some(addr) => json!({ "ip": addr.ip().to_string(), "port": addr.port() }),
        None => client_addr.map_or(Value::Null, |a| json!({ "hostname": a })),
    }
}

fn message(r: &AuditRecord) -> String {
    let grant = r.grant.as_deref().unwrap_or("-");
    let who = r.subject.as_deref().unwrap_or("an unverified caller");
    match (r.outcome, r.reason.as_deref()) {
        (Outcome::Issued, _) => format!("stint issued grant {grant} to {who}"),
        (Outcome::Revoked, reason) => format!(
            "stint ended lease {} of grant {grant} ({})",
            r.issuance_id.as_deref().unwrap_or("-"),
            reason.unwrap_or("-")
        ),
        (outcome, reason) => format!(
            "stint refused grant {grant} to {who}: {} {}",
            outcome.as_str(),
            reason.unwrap_or("-")
        ),
    }
}

fn checkpoint_event(c: &Checkpoint, raw: String) -> Value {
    json!({
        "class_uid": 0,
        "class_name": "Base Event",
        "category_uid": 0,
        "category_name": "Uncategorized",
        "activity_id": 99,
        "activity_name": "Checkpoint",
        "type_uid": 99,
        "type_name": "Base Event: Other",
        "time": epoch_millis(&c.time),
        "severity_id": 1,
        "severity": "Informational",
        "status_id": 1,
        "status": "Success",
        "message": format!("stint audit checkpoint: the chain up to seq {} ends in {}, signed by {}", c.seq, c.record_hash, c.kid),
        "metadata": {
            "version": OCSF_VERSION,
            "product": product(),
            "uid": format!("checkpoint-{}", c.seq),
            "sequence": c.seq,
            "original_time": c.time,
            "log_name": "audit",
            "log_provider": "stint",
        },
        "unmapped": { "checkpoint": c },
        "raw_data": raw,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // a failed step is the test's report
mod tests {
    use super::*;

    fn record(outcome: Outcome, reason: Option<&str>) -> AuditRecord {
        let mut detail = Map::new();
        detail.insert("access_key_id".into(), json!("ASIAEXAMPLE"));
        AuditRecord {
            seq: Some(7),
            time: "2026-12-01T10:00:00.123456789Z".into(),
            request_id: "req-1".into(),
            outcome,
            reason: reason.map(str::to_string),
            grant: Some("deploy".into()),
            kind: Some("aws".into()),
            issuer: Some("github".into()),
            subject: Some("repo:acme/api:environment:production".into()),
            claims: Map::new(),
            token_jti_hmac: None,
            issuance_id: Some("iss-1".into()),
            ttl_seconds: Some(900),
            expires_at: Some("2026-12-01T10:15:00Z".into()),
            client_addr: Some("[2001:db8::1]:4431".into()),
            detail,
            prev_hash: Some("p".into()),
            record_hash: Some("h".into()),
            record_mac: Some("m".into()),
        }
    }

    #[test]
    fn an_issuance_is_a_successful_logon_and_a_denial_a_failed_one() {
        let issued = record(Outcome::Issued, None);
        let e = event(&Event::Record(&issued));
        assert_eq!(
            (
                e["class_uid"].as_u64(),
                e["activity_id"].as_u64(),
                e["type_uid"].as_u64()
            ),
            (Some(3002), Some(1), Some(300201))
        );
        assert_eq!(e["status_id"], 1);
        assert_eq!(e["time"], 1_796_119_200_123_i64);
        assert_eq!(e["user"]["uid"], "repo:acme/api:environment:production");
        assert_eq!(e["actor"]["idp"]["name"], "github");
        assert_eq!(e["src_endpoint"], json!({"ip": "2001:db8::1", "port": 4431}));
        assert_eq!(e["session"]["credential_uid"], "ASIAEXAMPLE");
        assert_eq!(e["metadata"]["uid"], "h");
        assert_eq!(e["metadata"]["sequence"], 7);
        assert_eq!(e["raw_data"].as_str().unwrap(), crate::audit::record_line(&issued));

        let denied = event(&Event::Record(&record(Outcome::Denied, Some("claims_mismatch"))));
        assert_eq!(
            (denied["status_id"].as_u64(), denied["status_code"].as_str()),
            (Some(2), Some("claims_mismatch"))
        );
        let revoked = event(&Event::Record(&record(Outcome::Revoked, Some("expired"))));
        assert_eq!(
            (revoked["activity_id"].as_u64(), revoked["status_id"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(revoked["actor"]["app_name"], "stint lease reaper");
    }
}
