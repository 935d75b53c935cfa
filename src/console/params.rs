//! The records filter as it travels in a URL (so a view can be shared):
//! parsed from the query string, turned into an [`AuditQuery`], and
//! written back into links.

use serde::Deserialize;

use crate::audit::{AuditKey, AuditQuery, Outcome};

/// Records per page.
pub const PAGE: u32 = 50;

/// The filters of the records page, as typed into its form. Empty fields
/// mean "any".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Filters {
    /// `1h`, `7d` ago, or an RFC 3339 time.
    pub since: String,
    /// Likewise.
    pub until: String,
    /// A grant name.
    pub grant: String,
    /// A subject (`sub`).
    pub subject: String,
    /// `issued`, `denied`, `error` or `revoked`.
    pub outcome: String,
    /// A request id (`x-request-id` of the answer).
    pub request_id: String,
    /// A grant kind.
    pub kind: String,
    /// A reason code.
    pub reason: String,
    /// A token's `jti`, matched through the audit key.
    pub jti: String,
    /// Paging: records older than this seq.
    pub before: Option<i64>,
}

impl Filters {
    /// The store query, or what is wrong with a field.
    pub fn query(&self, key: Option<&AuditKey>) -> Result<AuditQuery, String> {
        let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let time = |field: &str, s: &str| -> Result<Option<String>, String> {
            text(s)
                .map(|t| crate::audit::commands::parse_time(&t).map_err(|e| format!("{field}: {e}")))
                .transpose()
        };
        let outcome = match text(&self.outcome) {
            None => None,
            Some(o) => Some(
                Outcome::parse(&o).ok_or_else(|| format!("outcome: `{o}` is not issued, denied, error or revoked"))?,
            ),
        };
        let token_jti_hmac = match (text(&self.jti), key) {
            (None, _) => None,
            (Some(jti), Some(key)) => Some(key.hash_jti(&jti)),
            (Some(_), None) => return Err("jti: finding a token by its jti needs the audit key (start the console with --config or --audit-key-file)".into()),
        };
        Ok(AuditQuery {
            grant: text(&self.grant),
            subject: text(&self.subject),
            outcome,
            request_id: text(&self.request_id),
            kind: text(&self.kind),
            reason: text(&self.reason),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            before_seq: self.before,
            token_jti_hmac,
            limit: Some(PAGE),
        })
    }

    /// The query string of these filters (without paging), for links.
    pub fn to_query(&self) -> String {
        let pairs = [
            ("since", &self.since),
            ("until", &self.until),
            ("grant", &self.grant),
            ("subject", &self.subject),
            ("outcome", &self.outcome),
            ("request_id", &self.request_id),
            ("kind", &self.kind),
            ("reason", &self.reason),
            ("jti", &self.jti),
        ];
        pairs
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| format!("{k}={}", encode(v.trim())))
            .collect::<Vec<_>>()
            .join("&")
    }
}

pub use crate::percent::encode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_through_a_link_and_refuse_nonsense() {
        let filters = Filters {
            grant: "deploy".into(),
            subject: "repo:acme/api:ref:refs/heads/main".into(),
            outcome: "denied".into(),
            ..Filters::default()
        };
        assert_eq!(
            filters.to_query(),
            "grant=deploy&subject=repo%3Aacme%2Fapi%3Aref%3Arefs%2Fheads%2Fmain&outcome=denied"
        );
        let query = filters.query(None);
        assert!(
            query
                .as_ref()
                .is_ok_and(|q| q.outcome == Some(Outcome::Denied) && q.limit == Some(PAGE))
        );
        let bad = Filters {
            outcome: "maybe".into(),
            ..Filters::default()
        };
        assert!(bad.query(None).is_err_and(|e| e.starts_with("outcome:")));
        let jti = Filters {
            jti: "abc".into(),
            ..Filters::default()
        };
        assert!(jti.query(None).is_err_and(|e| e.contains("needs the audit key")));
    }
}
