//! `stint policy simulate`: the callers the audit log saw, decided again
//! under a proposed config. "Is this change safe?" becomes a list of who
//! would gain and who would lose each grant.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::audit::{AuditRecord, AuditSink, Outcome};
use crate::config::Config;
use crate::identity::Claims;

/// Reason codes that are the policy's own decision.
const POLICY_DENIALS: &[&str] = &["claims_mismatch", "issuer_not_bound", "unknown_grant"];
/// Records read per page.
const PAGE: u32 = 1000;

/// What the proposed config would do to one identity on one grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Was refused by policy, would be allowed.
    Gains,
    /// Was allowed, would be refused.
    Loses,
    /// The new rules look at a claim the records did not keep.
    Unknown,
}

/// One identity's change on one grant.
#[derive(Debug, Clone)]
pub struct Shift {
    /// Issuer config name and `sub`.
    pub issuer: String,
    /// The caller's `sub`.
    pub subject: String,
    /// Gain, loss, or cannot tell.
    pub change: Change,
    /// Requests of this identity in the window.
    pub requests: usize,
    /// For `Unknown`: the claims the records lack.
    pub missing: Vec<String>,
    /// Some of its requests would gain and others lose (e.g. other refs).
    pub mixed: bool,
}

/// The whole simulation.
#[derive(Debug, Default)]
pub struct Simulation {
    /// Records in the window.
    pub records: usize,
    /// Records decided by policy (and so replayed).
    pub replayed: usize,
    /// Grant → shifted identities.
    pub grants: BTreeMap<String, Vec<Shift>>,
}

/// Reads the records at or after `since` (RFC 3339), in chain order.
pub async fn records_since(sink: &dyn AuditSink, since: &str) -> Result<Vec<AuditRecord>, String> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = sink.chain(after, PAGE).await.map_err(|e| e.to_string())?;
        let Some(last) = page.last().and_then(|r| r.seq) else {
            break;
        };
        after = last;
        out.extend(page.into_iter().filter(|r| r.time.as_str() >= since));
    }
    Ok(out)
}

/// Decides every policy-decided record again under `proposed`.
pub fn simulate(proposed: &Config, records: &[AuditRecord]) -> Simulation {
    let mut simulation = Simulation {
        records: records.len(),
        ..Simulation::default()
    };
    // (grant, issuer, subject) → (change, requests, missing claims)
    let mut seen: BTreeMap<(String, String, String), Shift> = BTreeMap::new();
    for record in records {
        let (Some(grant), Some(issuer), Some(subject)) = (&record.grant, &record.issuer, &record.subject) else {
            continue; // refused before policy: the token itself was bad
        };
        let was_allowed = match (record.outcome, record.reason.as_deref()) {
            (Outcome::Issued, _) => true,
            (Outcome::Denied, Some(reason)) if POLICY_DENIALS.contains(&reason) => false,
            _ => continue, // rate limits, bad requests, upstream errors: not policy's call
        };
        simulation.replayed += 1;
        let Ok(claims) = Claims::from_record(&record.claims) else {
            continue;
        };
        let explanation = proposed.policy.explain(grant, issuer, &claims);
        let allowed = explanation.allowed_by.is_some();
        // A rule that fails only on claims the record did not keep might
        // allow the real token: that is "cannot tell", not a change.
        let undecided: Vec<&crate::policy::RuleCheck> = explanation
            .rules
            .iter()
            .filter(|r| {
                r.issuer_matched
                    && r.claims.iter().any(|c| c.actual.is_none())
                    && r.claims.iter().all(|c| c.matched || c.actual.is_none())
            })
            .collect();
        let missing: Vec<String> = undecided
            .iter()
            .flat_map(|r| r.claims.iter())
            .filter(|c| c.actual.is_none())
            .map(|c| c.claim.clone())
            .collect();
        let change = match (was_allowed, allowed, undecided.is_empty()) {
            (false, true, _) => Change::Gains,
            (_, false, false) => Change::Unknown,
            (true, false, true) => Change::Loses,
            _ => continue,
        };
        let key = (grant.clone(), issuer.clone(), subject.clone());
        let shift = seen.entry(key).or_insert_with(|| Shift {
            issuer: issuer.clone(),
            subject: subject.clone(),
            change,
            requests: 0,
            missing: Vec::new(),
            mixed: false,
        });
        shift.requests += 1;
        if shift.change != change {
            // Different requests of one caller go different ways: say so.
            shift.mixed = true;
            shift.change = Change::Unknown;
        }
        for claim in missing {
            if !shift.missing.contains(&claim) {
                shift.missing.push(claim);
            }
        }
    }
    for ((grant, _, _), shift) in seen {
        simulation.grants.entry(grant).or_default().push(shift);
    }
    simulation
}

impl Simulation {
    /// For people: one block per grant that changes.
    pub fn render(&self, since: &str) -> String {
        let mut out = format!(
            "{} records since {since}; {} decided by policy were replayed\n",
            self.records, self.replayed
        );
        if self.grants.is_empty() {
            out.push_str("no caller would gain or lose a grant\n");
        }
        for (grant, shifts) in &self.grants {
            let count = |c: Change| shifts.iter().filter(|s| s.change == c).count();
            out.push_str(&format!(
                "grant `{grant}`: {} would gain, {} would lose, {} cannot tell\n",
                count(Change::Gains),
                count(Change::Loses),
                count(Change::Unknown)
            ));
            for s in shifts {
                let line = match s.change {
                    Change::Gains => format!(
                        "  + {} {} ({} requests refused before)",
                        s.issuer, s.subject, s.requests
                    ),
                    Change::Loses => format!(
                        "  - {} {} ({} requests allowed before)",
                        s.issuer, s.subject, s.requests
                    ),
                    Change::Unknown if s.mixed => format!(
                        "  ? {} {} ({} requests): some of its requests would gain the grant and others lose it",
                        s.issuer, s.subject, s.requests
                    ),
                    Change::Unknown => format!(
                        "  ? {} {} ({} requests): the records do not keep {}",
                        s.issuer,
                        s.subject,
                        s.requests,
                        s.missing.join(", ")
                    ),
                };
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// For scripts.
    pub fn json(&self) -> Value {
        let grants: serde_json::Map<String, Value> = self
            .grants
            .iter()
            .map(|(grant, shifts)| {
                let list: Vec<Value> = shifts
                    .iter()
                    .map(|s| {
                        json!({
                            "issuer": s.issuer,
                            "subject": s.subject,
                            "change": match s.change {
                                Change::Gains => "gains",
                                Change::Loses => "loses",
                                Change::Unknown => "unknown",
                            },
                            "requests": s.requests,
                            "missing_claims": s.missing,
                            "mixed": s.mixed,
                        })
                    })
                    .collect();
                (grant.clone(), Value::from(list))
            })
            .collect();
        json!({ "records": self.records, "replayed": self.replayed, "grants": grants })
    }
}
