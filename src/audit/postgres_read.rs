//! The PostgreSQL query of `GET /v1/audit` and `stint audit query`, built
//! from only the filters given. A fixed statement with `($n IS NULL OR
//! column = $n)` terms gives the planner nothing to pick an index with once
//! PostgreSQL switches to a generic plan (after five runs of a prepared
//! statement), and a filter for one subject then walks the whole log.

use tokio_postgres::types::ToSql;

use super::AuditQuery;

/// One bound value of a built query.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Text(String),
    Integer(i64),
}

impl Param {
    /// The value as the driver takes it.
    pub(super) fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Text(text) => text,
            Param::Integer(n) => n,
        }
    }
}

/// The statement and its values for `q`, newest first. Each filter that is
/// set becomes one term; one that is not set is not in the text at all.
pub(super) fn query_sql(q: &AuditQuery) -> (String, Vec<Param>) {
    let texts = [
        ("request_id", q.request_id.clone()),
        ("token_jti_hmac", q.token_jti_hmac.clone()),
        ("subject", q.subject.clone()),
        ("grant_name", q.grant.clone()),
        ("outcome", q.outcome.map(|o| o.as_str().to_string())),
        ("kind", q.kind.clone()),
        ("reason", q.reason.clone()),
    ];
    let mut terms = Vec::new();
    let mut values = Vec::new();
    for (column, value) in texts {
        if let Some(value) = value {
            values.push(Param::Text(value));
            terms.push(format!("{column} = ${}", values.len()));
        }
    }
    for (op, bound) in [(">=", &q.since), ("<", &q.until)] {
        if let Some(bound) = bound {
            values.push(Param::Text(bound.clone()));
            terms.push(format!("time {op} ${}", values.len()));
        }
    }
    if let Some(before) = q.before_seq {
        values.push(Param::Integer(before));
        terms.push(format!("seq < ${}", values.len()));
    }
    values.push(Param::Integer(i64::from(q.limit.unwrap_or(50))));
    let filter = if terms.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", terms.join(" AND "))
    };
    (
        format!(
            "SELECT * FROM audit_records{filter} ORDER BY seq DESC LIMIT ${}",
            values.len()
        ),
        values,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a failed step is the test's report
mod tests {
    use super::*;
    use crate::audit::Outcome;

    /// A connection to the test PostgreSQL, in a schema of its own that
    /// has the broker's tables and then ran `setup`; drop the schema after.
    async fn schema_with(setup: &str) -> (tokio_postgres::Client, String) {
        let url = std::env::var("STINT_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("this test needs PostgreSQL at {url} (STINT_TEST_POSTGRES; scripts/test starts one): {e}")
            });
        tokio::spawn(connection);
        let schema = format!("stint_plan_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path = {schema}; {} {setup}",
                super::super::postgres::MIGRATIONS
            ))
            .await
            .unwrap();
        (client, schema)
    }

    /// The lines of `EXPLAIN statement`.
    async fn explain(client: &tokio_postgres::Client, statement: &str) -> Vec<String> {
        client
            .simple_query(&format!("EXPLAIN {statement}"))
            .await
            .unwrap()
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .collect()
    }

    /// Against the test PostgreSQL, with the broker's schema, 50,000
    /// records and the statement planned generically (as a prepared
    /// statement after five runs, or `plan_cache_mode = force_generic_plan`,
    /// plans it): every filter that has an index is still answered from it.
    /// (`($1 IS NULL OR subject = $1)` terms walk the primary key here.)
    #[tokio::test]
    async fn every_indexed_filter_uses_its_index_even_under_a_generic_plan() {
        let (client, schema) = schema_with(
            "INSERT INTO audit_records (seq, time, request_id, outcome, grant_name, subject, claims, detail)
             SELECT g, '2026-12-04T00:00:00Z', 'r-' || g, 'issued', 'grant-' || (g % 2000),
                    'subject-' || (g % 2000), '{}', '{}'
             FROM generate_series(1, 50000) AS g;
             ANALYZE audit_records;
             SET plan_cache_mode = force_generic_plan;",
        )
        .await;
        let text = |s: &str| Some(s.to_string());
        let cases = [
            (
                AuditQuery {
                    subject: text("nobody"),
                    ..Default::default()
                },
                "audit_records_subject",
            ),
            (
                AuditQuery {
                    grant: text("deploy"),
                    ..Default::default()
                },
                "audit_records_grant",
            ),
            (
                AuditQuery {
                    request_id: text("r-1"),
                    ..Default::default()
                },
                "audit_records_request",
            ),
            (
                AuditQuery {
                    subject: text("nobody"),
                    outcome: Some(Outcome::Denied),
                    before_seq: Some(10),
                    ..Default::default()
                },
                "audit_records_subject",
            ),
        ];
        let mut failures = Vec::new();
        for (query, index) in cases {
            let (sql, values) = query_sql(&query);
            // PREPARE/EXECUTE on the server, so the plan is the generic one
            // (bound values over the wire would be planned as constants).
            let (types, args): (Vec<&str>, Vec<String>) = values
                .iter()
                .map(|v| match v {
                    Param::Text(t) => ("text", format!("'{t}'")),
                    Param::Integer(n) => ("bigint", n.to_string()),
                })
                .unzip();
            client.batch_execute("DEALLOCATE ALL").await.unwrap();
            client
                .batch_execute(&format!("PREPARE q ({}) AS {sql}", types.join(", ")))
                .await
                .unwrap();
            let plan = explain(&client, &format!("EXECUTE q ({})", args.join(", "))).await;
            if !plan.join("\n").contains(index) {
                failures.push(format!("{sql}: {}", plan.join(" / ")));
            }
        }
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
        assert!(
            failures.is_empty(),
            "not answered from their index:\n{}",
            failures.join("\n")
        );
    }

    /// Forgetting expired single-use tokens, as the broker plans it (a
    /// statement prepared per call, planned for its value), seeks the
    /// expiry index of a table of 50,000 tokens none of which expired.
    #[tokio::test]
    async fn forgetting_expired_tokens_seeks_the_expiry_index() {
        let (client, schema) = schema_with(
            "INSERT INTO used_tokens (key, expires_at)
             SELECT md5(g::text), 2000000000 + g FROM generate_series(1, 50000) AS g;
             ANALYZE used_tokens;",
        )
        .await;
        let sql = super::super::postgres::FORGET_EXPIRED.replace("$1", "1796500000");
        let plan = explain(&client, &sql).await;
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
        assert!(plan.join("\n").contains("used_tokens_expiry"), "{}", plan.join("\n"));
    }

    #[test]
    fn only_the_filters_given_are_in_the_statement() {
        let (sql, values) = query_sql(&AuditQuery::default());
        assert_eq!(sql, "SELECT * FROM audit_records ORDER BY seq DESC LIMIT $1");
        assert_eq!(values, vec![Param::Integer(50)]);

        let (sql, values) = query_sql(&AuditQuery {
            subject: Some("repo:acme/api".into()),
            outcome: Some(Outcome::Denied),
            since: Some("2026-12-01T00:00:00Z".into()),
            before_seq: Some(900),
            limit: Some(10),
            ..Default::default()
        });
        assert_eq!(
            sql,
            "SELECT * FROM audit_records WHERE subject = $1 AND outcome = $2 AND time >= $3 AND seq < $4 \
             ORDER BY seq DESC LIMIT $5"
        );
        assert_eq!(
            values,
            vec![
                Param::Text("repo:acme/api".into()),
                Param::Text("denied".into()),
                Param::Text("2026-12-01T00:00:00Z".into()),
                Param::Integer(900),
                Param::Integer(10),
            ]
        );
    }
}
