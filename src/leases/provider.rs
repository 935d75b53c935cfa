//! `kind: postgres`: the lease first, then the role, then the answer. A
//! failure after the lease is written makes the lease due at once, so the
//! reaper drops whatever part of the role exists.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::target::{self, TargetError};
use super::{DatabaseTarget, Lease, LeaseKind, LeaseStore, new_password, role_name};
use crate::policy::{Grant, GrantKind};
use crate::provider::{Credential, CredentialProvider, IssueContext, ProviderError};
use crate::template::{Context, Template};

/// Issues PostgreSQL roles.
pub struct PostgresProvider {
    store: Arc<dyn LeaseStore>,
    targets: BTreeMap<String, DatabaseTarget>,
    secrets: Option<Arc<aws_sdk_secretsmanager::Client>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl PostgresProvider {
    /// A provider for `targets`, keeping leases in `store`.
    pub fn new(
        store: Arc<dyn LeaseStore>,
        targets: BTreeMap<String, DatabaseTarget>,
        secrets: Option<Arc<aws_sdk_secretsmanager::Client>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> PostgresProvider {
        PostgresProvider {
            store,
            targets,
            secrets,
            metrics,
        }
    }
}

fn target_error(e: TargetError, grant: &str) -> ProviderError {
    match e {
        TargetError::Refused { .. } => ProviderError::Refused {
            detail: format!("the database of grant `{grant}` refused to create the role"),
            log: e.to_string(),
        },
        TargetError::Unreachable { .. } | TargetError::Password { .. } => ProviderError::Unavailable {
            detail: format!("the database of grant `{grant}` cannot be reached"),
            log: e.to_string(),
        },
    }
}

/// Renders a username template for the caller; `{id}` is the issuance's
/// own suffix. Claims are welcome here: the result is reduced to [a-z0-9_].
fn username(template: &str, grant: &Grant<'_>, suffix: &str) -> Result<String, ProviderError> {
    let ctx = Context {
        token: grant.token(),
        grant: &grant.spec().name,
    };
    let mut rendered = Vec::new();
    for part in template.split("{id}") {
        let part = Template::parse(part).map_err(ProviderError::Internal)?;
        rendered.push(part.render(&ctx, &|_, _| Ok(())).map_err(|e| ProviderError::Denied {
            code: "claim_not_usable",
            detail: format!("username_template of grant `{}`: {e}", grant.spec().name),
        })?);
    }
    Ok(role_name(&rendered.join(suffix), suffix))
}

#[async_trait::async_trait]
impl CredentialProvider for PostgresProvider {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn issue(&self, grant: &Grant<'_>, ctx: &IssueContext) -> Result<Credential, ProviderError> {
        let spec = grant.spec();
        let GrantKind::Postgres(settings) = &spec.kind else {
            return Err(ProviderError::Internal(format!(
                "grant `{}` is not a postgres grant",
                spec.name
            )));
        };
        let target = self
            .targets
            .get(&settings.database)
            .ok_or_else(|| ProviderError::Internal(format!("no database `{}`", settings.database)))?;
        let compact = ctx.issuance_id.replace('-', "");
        // 12 hex digits of the uuid's random part; a collision with an active
        // lease is refused by the store's unique index, never shared.
        let suffix = compact.get(compact.len().saturating_sub(12)..).unwrap_or(&compact);
        let name = username(&settings.username_template, grant, suffix)?;
        let password = new_password().map_err(ProviderError::Internal)?;
        let expires_at = ctx.expires_at();
        let expiration = crate::clock::rfc3339(expires_at);

        let lease = Lease::active(LeaseKind::Postgres, grant, ctx, &target.name, &name, expires_at, None);
        // The lease before the role: no role without a record of when it ends.
        self.store
            .create(&lease)
            .await
            .map_err(|e| ProviderError::Unavailable {
                detail: "the lease store is unavailable".into(),
                log: e.to_string(),
            })?;
        let created = crate::telemetry::upstream(&self.metrics, "postgres", "create_role", async {
            let admin = target::admin_password(target, self.secrets.as_ref()).await?;
            let sql = target::render_sql(
                &settings.creation_statements,
                &name,
                &password,
                &expiration,
                &target.dbname,
            );
            target::create_role(target, &admin, &name, &sql, &password).await
        })
        .await;
        if let Err(e) = created {
            let _ = self.store.expire_now(&lease.id, ctx.now, "issuance_failed", None).await;
            return Err(target_error(e, &spec.name));
        }

        let mut response = Map::new();
        response.insert("lease_id".into(), json!(lease.id));
        response.insert(
            "database".into(),
            json!({
                "username": name,
                "password": password,
                "host": target.host,
                "port": target.port,
                "dbname": target.dbname,
            }),
        );
        let mut audit = Map::new();
        audit.insert("lease_id".into(), Value::String(lease.id.clone()));
        audit.insert("username".into(), Value::String(name));
        audit.insert("database".into(), Value::String(target.name.clone()));
        Ok(Credential {
            expires_at,
            response,
            audit,
        })
    }

    async fn withdraw(&self, issuance_id: &str, now: i64, reason: &str) {
        super::withdraw(self.store.as_ref(), issuance_id, now, reason).await;
    }
}
