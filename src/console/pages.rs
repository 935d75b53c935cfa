//! The console's pages: overview, records, one record, integrity, export.
//! Every page is HTML rendered here (maud escapes every value), with
//! links and forms only: no script.

use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::Value;

use super::Console;
use super::params::{Filters, encode};
use super::signin::Person;
use crate::audit::{AuditQuery, AuditRecord, Bucket, Outcome};

const OUTCOMES: [Outcome; 4] = [Outcome::Issued, Outcome::Denied, Outcome::Error, Outcome::Revoked];

/// A verification of the whole chain, run in the background.
#[derive(Debug, Default, Clone)]
pub enum Verification {
    /// None asked for since the console started.
    #[default]
    NotRun,
    /// Running since (RFC 3339), with the records checked so far.
    Running(String, std::sync::Arc<std::sync::atomic::AtomicU64>),
    /// Done at (RFC 3339): `Ok(report)` or the first broken link.
    Done(String, Result<String, Broken>),
}

/// Where the chain breaks, in words.
#[derive(Debug, Clone)]
pub struct Broken {
    /// The first record (or checkpoint) that does not verify, if known.
    pub seq: Option<i64>,
    /// What is wrong.
    pub what: String,
}

fn page(console: &Console, person: Option<&Person>, title: &str, here: &str, body: Markup) -> Response {
    let nav = [("/", "Overview"), ("/records", "Records"), ("/integrity", "Integrity")];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · stint audit" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header {
                    span.brand { "stint audit" }
                    nav {
                        @for (href, name) in nav {
                            a href=(href) class=[(here == href).then_some("here")] { (name) }
                        }
                    }
                    span.store {
                        "read-only · " (console.store_name)
                        @if let Some(person) = person {
                            " · " (person.shown_as) " "
                            form.inline method="post" action="/auth/logout" { button.link type="submit" { "sign out" } }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page that only says `text`.
pub(super) fn message(console: &Console, title: &str, text: &str) -> Response {
    page(console, None, title, "", html! { h1 { (title) } p { (text) } })
}

pub(super) fn problem(console: &Console, status: StatusCode, what: &str) -> Response {
    let mut response = page(
        console,
        None,
        "Error",
        "",
        html! { h1 { "Something is wrong" } div.notice.error { (what) } },
    );
    *response.status_mut() = status;
    response
}

/// Unknown paths.
pub async fn not_found(State(console): State<Console>) -> Response {
    problem(&console, StatusCode::NOT_FOUND, "no such page")
}

fn outcome_badge(outcome: Outcome) -> Markup {
    html! { span class={ "outcome o-" (outcome.as_str()) } { (outcome.as_str()) } }
}

/// `?range=` of the overview.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Range {
    range: String,
    grant: String,
}

/// `/`: the log at a glance over 24 hours, 7 or 30 days.
pub async fn overview(
    State(console): State<Console>,
    person: Option<Extension<Person>>,
    Query(range): Query<Range>,
) -> Response {
    let (label, seconds, bucket) = match range.range.as_str() {
        "7d" => ("7d", 7 * 86_400, Bucket::Day),
        "30d" => ("30d", 30 * 86_400, Bucket::Day),
        _ => ("24h", 86_400, Bucket::Hour),
    };
    let now = crate::clock::now();
    // Whole buckets, so the first bar is not a sliver.
    let step = if bucket == Bucket::Hour { 3600 } else { 86_400 };
    let start = (now - seconds) / step * step + step;
    let until = now + 1;
    let since = crate::clock::rfc3339(start);
    let only = Some(range.grant.as_str()).filter(|g| !g.is_empty());
    let summary = match console
        .rollup
        .range(console.store.as_ref(), start, until, bucket, only)
        .await
    {
        Ok(summary) => summary,
        Err(e) => return problem(&console, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let buckets: Vec<String> = (0..)
        .map(|i| start + i * step)
        .take_while(|t| *t < until)
        .map(|t| crate::clock::rfc3339(t).chars().take(bucket.prefix_len()).collect())
        .collect();
    let count = |i: usize, outcome: Outcome| {
        buckets.get(i).map_or(0, |b| {
            summary
                .series
                .iter()
                .filter(|(sb, o, _)| sb == b && *o == outcome)
                .map(|(_, _, n)| *n)
                .sum()
        })
    };
    let totals: Vec<(Outcome, u64)> = OUTCOMES
        .iter()
        .map(|o| {
            (
                *o,
                summary
                    .series
                    .iter()
                    .filter(|(_, so, _)| so == o)
                    .map(|(_, _, n)| n)
                    .sum(),
            )
        })
        .collect();
    let chart = super::chart::stacked(&buckets, &count).unwrap_or_default();
    let mut grants: Vec<(String, [u64; 4])> = Vec::new();
    for (grant, outcome, n) in &summary.by_grant {
        let at = OUTCOMES.iter().position(|o| o == outcome).unwrap_or(0);
        if !grants.iter().any(|(g, _)| g == grant) {
            grants.push((grant.clone(), [0; 4]));
        }
        if let Some(slot) = grants
            .iter_mut()
            .find(|(g, _)| g == grant)
            .and_then(|(_, counts)| counts.get_mut(at))
        {
            *slot += n;
        }
    }
    // (active, failing), counted by the store.
    let leases = match &console.leases {
        None => None,
        Some(store) => Some(store.counts().await.ok().unzip()),
    };
    let since_q = encode(&since);
    let grant_q = only.map(|g| format!("&grant={}", encode(g))).unwrap_or_default();
    let mut grant_names: Vec<&str> = summary
        .by_grant
        .iter()
        .map(|(g, _, _)| g.as_str())
        .filter(|g| !g.is_empty())
        .collect();
    grant_names.sort_unstable();
    grant_names.dedup();
    let body = html! {
        h1 { "Overview" @if let Some(g) = only { " · grant " code { (g) } } }
        p {
            "Last "
            @for r in ["24h", "7d", "30d"] {
                @if r == label { strong { (r) } } @else { a href={ "/?range=" (r) (grant_q) } { (r) } }
                " "
            }
            span.muted { "· since " (since) }
        }
        p {
            "Grant: "
            @if only.is_none() { strong { "all" } } @else { a href={ "/?range=" (label) } { "all" } }
            @for g in &grant_names {
                " · "
                @if only == Some(*g) { strong { (g) } } @else { a href={ "/?range=" (label) "&grant=" (encode(g)) } { (g) } }
            }
        }
        div.cards {
            @for (outcome, n) in &totals {
                a.card href={ "/records?since=" (since_q) "&outcome=" (outcome.as_str()) (grant_q) } {
                    div.n { (n) }
                    div.what { (outcome.as_str()) }
                }
            }
        }
        div.legend {
            @for o in OUTCOMES { span { (outcome_badge(o)) } }
        }
        div.chart { (PreEscaped(chart)) }
        @if only.is_some() {
            p.muted { "The cards and the chart count this grant's records; the tables below are for every grant." }
        }
        h2 { "By grant" }
        table {
            thead { tr { th { "grant" } @for o in OUTCOMES { th.num { (o.as_str()) } } } }
            tbody {
                @for (grant, counts) in &grants {
                    tr {
                        td { a href={ "/records?since=" (since_q) "&grant=" (encode(grant)) } { (if grant.is_empty() { "(no grant)" } else { grant }) } }
                        @for n in counts { td.num { (n) } }
                    }
                }
                @if grants.is_empty() { tr { td colspan="5" .muted { "no records in this range" } } }
            }
        }
        h2 { "Denials by reason" }
        table {
            thead { tr { th { "reason" } th.num { "denials" } } }
            tbody {
                @for (reason, n) in &summary.denial_reasons {
                    tr { td { code { (reason) } } td.num { (n) } }
                }
                @if summary.denial_reasons.is_empty() { tr { td colspan="2" .muted { "no denials" } } }
            }
        }
        h2 { "Busiest subjects" }
        table {
            thead { tr { th { "subject" } th.num { "records" } } }
            tbody {
                @for (subject, n) in &summary.subjects {
                    tr {
                        td { a.mono href={ "/records?since=" (since_q) "&subject=" (encode(subject)) } { (subject) } }
                        td.num { (n) }
                    }
                }
            }
        }
        h2 { "Leases" }
        @match leases {
            None => p.muted { "no lease table in this store" },
            Some((active, failing)) => table {
                tbody {
                    tr { td { "active" } td.num { (active.map_or("?".to_string(), |n| n.to_string())) } }
                    tr { td { "failing to revoke" } td.num class=[(failing.unwrap_or(0) > 0).then_some("bad")] { (failing.map_or("?".to_string(), |n| n.to_string())) } }
                }
            },
        }
    };
    page(&console, person.as_deref(), "Overview", "/", body)
}

/// `/records`: the log, newest first, filtered, paged by seq.
pub async fn records(
    State(console): State<Console>,
    person: Option<Extension<Person>>,
    Query(filters): Query<Filters>,
) -> Response {
    let query = filters.query(console.key.as_deref());
    let found = match &query {
        Ok(query) => console.store.query(query).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    let link = filters.to_query();
    let body = html! {
        h1 { "Records" }
        form.filters method="get" action="/records" {
            label { "since (1h, 7d or a time)" input name="since" value=(filters.since); }
            label { "until" input name="until" value=(filters.until); }
            label { "grant" input name="grant" value=(filters.grant); }
            label { "outcome"
                select name="outcome" {
                    option value="" { "any" }
                    @for o in OUTCOMES { option value=(o.as_str()) selected[filters.outcome == o.as_str()] { (o.as_str()) } }
                }
            }
            label { "kind"
                select name="kind" {
                    option value="" { "any" }
                    @for k in ["token", "aws", "secrets", "postgres", "github"] { option value=(k) selected[filters.kind == k] { (k) } }
                }
            }
            label { "reason" input name="reason" value=(filters.reason) placeholder="claims_mismatch"; }
            label { "subject" input name="subject" value=(filters.subject); }
            label { "request id" input name="request_id" value=(filters.request_id); }
            label { "token jti" input name="jti" value=(filters.jti); }
            div.actions {
                button type="submit" { "Apply" }
                a.button.quiet href="/records" { "Clear" }
                a href={ "/export?format=jsonl&" (link) } { "Export JSON lines" }
                a href={ "/export?format=csv&" (link) } { "Export CSV" }
                a href={ "/export?format=ocsf&" (link) } { "Export OCSF" }
            }
        }
        @match &found {
            Err(e) => div.notice.error { (e) },
            Ok(records) => {
                table {
                    thead { tr { th.num { "seq" } th { "time" } th { "outcome" } th { "reason" } th { "grant" } th { "subject" } th { "request id" } } }
                    tbody {
                        @for r in records {
                            tr {
                                td.num { a href={ "/records/" (r.seq.unwrap_or(0)) } { (r.seq.unwrap_or(0)) } }
                                td.mono { (r.time) }
                                td { (outcome_badge(r.outcome)) }
                                td { code { (r.reason.as_deref().unwrap_or("")) } }
                                td { (r.grant.as_deref().unwrap_or("")) }
                                td.mono { (r.subject.as_deref().unwrap_or("")) }
                                td.mono { (r.request_id) }
                            }
                        }
                        @if records.is_empty() { tr { td colspan="7" .muted { "no record matches" } } }
                    }
                }
                div.pager {
                    @if filters.before.is_some() { a href={ "/records?" (link) } { "← newest" } }
                    @if records.len() >= super::params::PAGE as usize {
                        @if let Some(last) = records.last().and_then(|r| r.seq) {
                            a href={ "/records?" (link) (if link.is_empty() { "" } else { "&" }) "before=" (last) } { "older →" }
                        }
                    }
                }
            }
        }
    };
    page(&console, person.as_deref(), "Records", "/records", body)
}

async fn one(console: &Console, seq: i64) -> Result<Option<AuditRecord>, String> {
    let found = console.store.chain(seq - 1, 1).await.map_err(|e| e.to_string())?;
    Ok(found.into_iter().next().filter(|r| r.seq == Some(seq)))
}

/// `/records/{seq}`: every field of one record, its place in the chain,
/// and where to look next.
pub async fn record(
    State(console): State<Console>,
    person: Option<Extension<Person>>,
    Path(seq): Path<String>,
) -> Response {
    let Ok(seq) = seq.parse::<i64>() else {
        return problem(
            &console,
            StatusCode::NOT_FOUND,
            "a record is named by its seq, a number",
        );
    };
    let record = match one(&console, seq).await {
        Ok(Some(record)) => record,
        Ok(None) => return problem(&console, StatusCode::NOT_FOUND, &format!("no record {seq}")),
        Err(e) => return problem(&console, StatusCode::SERVICE_UNAVAILABLE, &e),
    };
    let next = one(&console, seq + 1).await.ok().flatten().is_some();
    let detail = |k: &str| record.detail.get(k).and_then(Value::as_str).map(str::to_string);
    let explained = explanation(&console, &record);
    let json = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let body = html! {
        h1 { "Record " (seq) " " (outcome_badge(record.outcome)) }
        div.pager {
            @if seq > 1 { a href={ "/records/" (seq - 1) } { "← previous (" (seq - 1) ")" } }
            @if next { a href={ "/records/" (seq + 1) } { "next (" (seq + 1) ") →" } }
            a href={ "/records?request_id=" (encode(&record.request_id)) } { "all records of this request" }
        }
        dl.record {
            dt { "time" } dd.mono { (record.time) }
            dt { "outcome" } dd { (record.outcome.as_str()) }
            dt { "reason" } dd { code { (record.reason.as_deref().unwrap_or("—")) } }
            dt { "grant" } dd { (record.grant.as_deref().unwrap_or("—")) " " span.muted { (record.kind.as_deref().unwrap_or("")) } }
            dt { "issuer" } dd { (record.issuer.as_deref().unwrap_or("—")) }
            dt { "subject" } dd.mono { (record.subject.as_deref().unwrap_or("—")) }
            dt { "request id" } dd.mono { (record.request_id) }
            dt { "issuance id" } dd.mono { (record.issuance_id.as_deref().unwrap_or("—")) }
            dt { "ttl" } dd { (record.ttl_seconds.map_or("—".to_string(), |s| format!("{s}s"))) }
            dt { "expires at" } dd.mono { (record.expires_at.as_deref().unwrap_or("—")) }
            dt { "client address" } dd.mono { (record.client_addr.as_deref().unwrap_or("—")) }
            dt { "token jti (HMAC)" } dd.mono { (record.token_jti_hmac.as_deref().unwrap_or("—")) }
            dt { "claims" } dd { pre.mono { (json(&Value::Object(record.claims.clone()))) } }
            dt { "detail" } dd { pre.mono { (json(&Value::Object(record.detail.clone()))) } }
            dt { "prev hash" } dd.mono { (record.prev_hash.as_deref().unwrap_or("—")) }
            dt { "record hash" } dd.mono { (record.record_hash.as_deref().unwrap_or("—")) }
        }
        h2 { "Why" }
        @if let Some(explanation) = &explained {
            p.muted { "Explained under the current config, from the claims the record kept:" }
            table {
                thead { tr { th { "rule" } th { "claim" } th { "expected" } th { "the caller's" } th { "" } } }
                tbody {
                    @for rule in &explanation.rules {
                        @if !rule.issuer_matched {
                            tr { td { "allow[" (rule.index) "]" } td { "issuer" } td { (rule.issuer) } td { (explanation.issuer) } td.bad { "✗" } }
                        }
                        @for c in &rule.claims {
                            tr {
                                td { "allow[" (rule.index) "]" }
                                td { code { (c.claim) } }
                                td { code { (c.expected) } }
                                td { code { (c.actual.as_deref().unwrap_or("(absent)")) } }
                                td class=(if c.matched { "ok" } else { "bad" }) { (if c.matched { "✓" } else { "✗" }) }
                            }
                        }
                    }
                }
            }
            p {
                @match explanation.allowed_by {
                    Some(i) => { "Decision now: allowed by " code { "allow[" (i) "]" } "." }
                    None => { "Decision now: denied (" code { (explanation.outcome) } ")." }
                }
            }
        }
        @if explained.is_none() {
            @match (record.outcome, record.detail.get("rule")) {
                (Outcome::Issued, Some(rule)) => p { "Allowed by rule " code { "allow[" (rule) "]" } " of grant " code { (record.grant.as_deref().unwrap_or("")) } "." },
                (Outcome::Denied, _) => p { "Denied: " code { (record.reason.as_deref().unwrap_or("")) } ". The claims the caller presented are above; "
                    "run " code { "stint policy explain" } " with them against the config to see each rule's verdict." },
                _ => p.muted { "No policy decision is recorded for this outcome." },
            }
        }
        h2 { "Where to look next" }
        ul {
            @if record.kind.as_deref() == Some("aws") {
                @if let Some(id) = &record.issuance_id {
                    li { "CloudTrail: the session carries this issuance id as its " code { "stint:issuance" } " tag and SourceIdentity; search CloudTrail for " code { (id) } "." }
                }
            }
            @if let Some(hash) = detail("token_sha256") {
                li { "GitHub's audit log: search " code { "hashed_token:\"" (hash) "\"" } " for every action this token took." }
            }
            @if let Some(lease) = detail("lease_id") {
                li { "The lease: " a href={ "/records?request_id=" (encode(&record.request_id)) } { "records of this request" } " · " code { "stint leases list" } " shows lease " code { (lease) } "." }
            }
            @if let Some(subject) = &record.subject {
                li { a href={ "/records?subject=" (encode(subject)) } { "every record of this subject" } }
            }
        }
    };
    page(&console, person.as_deref(), &format!("Record {seq}"), "/records", body)
}

/// The record's decision explained under the console's policy, when it
/// has one and the record went as far as policy (an issuer and a grant).
fn explanation(console: &Console, record: &AuditRecord) -> Option<crate::policy::Explanation> {
    let policy = console.policy.as_ref()?;
    let (issuer, grant) = (record.issuer.as_deref()?, record.grant.as_deref()?);
    let claims = crate::identity::Claims::from_record(&record.claims).ok()?;
    Some(policy.explain(grant, issuer, &claims))
}

/// `/integrity`: the newest checkpoint, and the result of the last
/// verification of the whole chain (run with the button).
pub async fn integrity(State(console): State<Console>, person: Option<Extension<Person>>) -> Response {
    let checkpoints = console.store.checkpoints().await;
    let head = console
        .store
        .query(&AuditQuery {
            limit: Some(1),
            ..AuditQuery::default()
        })
        .await;
    let state = console.verification.lock().map(|v| v.clone()).unwrap_or_default();
    let running = matches!(state, Verification::Running(..));
    let body = html! {
        h1 { "Integrity" }
        @if running {
            // Not script: the browser reloads the page until the run ends.
            meta http-equiv="refresh" content="1";
        }
        table {
            tbody {
                tr { td { "newest record" } td.mono {
                    @match &head { Ok(h) => (h.first().and_then(|r| r.seq).map_or("none".to_string(), |s| s.to_string())), Err(e) => (e.to_string()) }
                } }
                @match &checkpoints {
                    Ok(list) => @match list.last() {
                        Some(c) => {
                            tr { td { "newest signed checkpoint" } td.mono { "seq " (c.seq) " at " (c.time) } }
                            tr { td { "its key id" } td.mono { (c.kid) } }
                            tr { td { "checkpoints" } td { (list.len()) } }
                        }
                        None => tr { td { "newest signed checkpoint" } td.muted { "none yet" } },
                    },
                    Err(e) => tr { td { "checkpoints" } td.bad { (e.to_string()) } },
                }
                tr { td { "audit key" } td { (if console.key.is_some() { "given: the chain, each record's MAC and the checkpoint signatures are checked" } else { "not given" }) } }
            }
        }
        @if console.key.is_some() {
            form method="post" action="/integrity/verify" {
                button type="submit" disabled[running] { "Verify the whole chain" }
            }
        } @else {
            div.notice { "Verifying needs the audit key (its checkpoint key is derived from it): start the console with "
                code { "--config" } " or " code { "--audit-key-file" } ", or verify an export offline with "
                code { "stint audit verify --export FILE --pubkey KEY" } "." }
        }
        @match &state {
            Verification::NotRun => p.muted { "Not verified since the console started." },
            Verification::Running(since, checked) => div.notice {
                "Verifying… " (checked.load(std::sync::atomic::Ordering::Relaxed)) " records checked (started " (since) ")"
            },
            Verification::Done(at, Ok(report)) => div.notice { span.ok { "Intact. " } (report) br; span.muted { "checked at " (at) } },
            Verification::Done(at, Err(broken)) => div.notice.bad {
                span.bad { "Broken. " }
                @if let Some(seq) = broken.seq {
                    "The first broken link is at " a href={ "/records/" (seq) } { "record " (seq) } ": "
                }
                (broken.what) br;
                span.muted { "checked at " (at) }
            },
        }
    };
    page(&console, person.as_deref(), "Integrity", "/integrity", body)
}

/// `POST /integrity/verify`: starts a verification (one at a time) and
/// goes back to the integrity page. It only reads.
pub async fn verify(State(console): State<Console>) -> Response {
    {
        let Ok(mut state) = console.verification.lock() else {
            return Redirect::to("/integrity").into_response();
        };
        if matches!(*state, Verification::Running(..)) {
            return Redirect::to("/integrity").into_response();
        }
        *state = Verification::Running(crate::clock::now_rfc3339(), std::sync::Arc::default());
    }
    let checked = match console.verification.lock().map(|s| s.clone()) {
        Ok(Verification::Running(_, checked)) => checked,
        _ => std::sync::Arc::default(),
    };
    let choice = console.choice.clone();
    let slot = console.verification.clone();
    tokio::spawn(async move {
        // Page by page: a long log never sits in memory, and the page
        // shows how far it got.
        let result = crate::audit::commands::verify_store(&choice, &move |n| {
            checked.store(n, std::sync::atomic::Ordering::Relaxed);
        })
        .await;
        let outcome = result.map_err(|e| Broken {
            seq: e.downcast_ref::<crate::audit::chain::ChainError>().map(|c| c.seq),
            what: e
                .downcast_ref::<crate::audit::chain::ChainError>()
                .map_or_else(|| e.to_string(), |c| c.what.clone()),
        });
        if let Ok(mut state) = slot.lock() {
            *state = Verification::Done(crate::clock::now_rfc3339(), outcome);
        }
    });
    Redirect::to("/integrity").into_response()
}

/// `?format=` of an export, with the records filters.
#[derive(Debug, Default, Deserialize)]
pub struct ExportParams {
    #[serde(default)]
    format: String,
    #[serde(flatten)]
    filters: Filters,
}

/// Most records in one export; a larger one is cut, and says so.
const EXPORT_LIMIT: usize = 100_000;

/// `/export`: the current filter as JSON lines, CSV or OCSF events (JSON
/// lines, each keeping the record's export line in `raw_data`), newest first.
pub async fn export(State(console): State<Console>, Query(params): Query<ExportParams>) -> Response {
    let mut query = match params.filters.query(console.key.as_deref()) {
        Ok(query) => query,
        Err(e) => return problem(&console, StatusCode::BAD_REQUEST, &e),
    };
    query.limit = Some(1000);
    let mut records = Vec::new();
    loop {
        let page = match console.store.query(&query).await {
            Ok(page) => page,
            Err(e) => return problem(&console, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
        let last = page.last().and_then(|r| r.seq);
        let full = page.len() == 1000;
        records.extend(page);
        match last {
            Some(last) if full && records.len() < EXPORT_LIMIT => query.before_seq = Some(last),
            _ => break,
        }
    }
    records.truncate(EXPORT_LIMIT);
    let (body, kind, name) = match params.format.as_str() {
        "csv" => (csv(&records), "text/csv; charset=utf-8", "stint-audit.csv"),
        "ocsf" => (
            records
                .iter()
                .map(|r| crate::ship::ocsf::record(r).to_string() + "\n")
                .collect(),
            "application/x-ndjson",
            "stint-audit-ocsf.jsonl",
        ),
        "jsonl" | "" => (
            records
                .iter()
                .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
                .collect(),
            "application/x-ndjson",
            "stint-audit.jsonl",
        ),
        other => {
            return problem(
                &console,
                StatusCode::BAD_REQUEST,
                &format!("format `{other}` is not jsonl, csv or ocsf"),
            );
        }
    };
    (
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        body,
    )
        .into_response()
}

/// CSV of the fields an auditor sorts by; the full record is in JSON lines.
fn csv(records: &[AuditRecord]) -> String {
    let field = |text: &str| {
        // Quoted, quotes doubled; a leading =, +, - or @ is defused so a
        // spreadsheet never runs a claim value as a formula.
        let text = if text.starts_with(['=', '+', '-', '@']) {
            format!("'{text}")
        } else {
            text.to_string()
        };
        format!("\"{}\"", text.replace('"', "\"\""))
    };
    let mut out = String::from(
        "seq,time,outcome,reason,grant,kind,issuer,subject,request_id,issuance_id,expires_at,client_addr,record_hash\n",
    );
    for r in records {
        let cells = [
            r.seq.map(|s| s.to_string()).unwrap_or_default(),
            r.time.clone(),
            r.outcome.as_str().to_string(),
            r.reason.clone().unwrap_or_default(),
            r.grant.clone().unwrap_or_default(),
            r.kind.clone().unwrap_or_default(),
            r.issuer.clone().unwrap_or_default(),
            r.subject.clone().unwrap_or_default(),
            r.request_id.clone(),
            r.issuance_id.clone().unwrap_or_default(),
            r.expires_at.clone().unwrap_or_default(),
            r.client_addr.clone().unwrap_or_default(),
            r.record_hash.clone().unwrap_or_default(),
        ];
        out.push_str(&cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}
