//! Talking to a target database as its admin role: create a role in one
//! transaction, revoke it (idempotently), and list roles that look like
//! stint's. Only stint-made values reach SQL text: role names from
//! `[a-z0-9_]`, base64url passwords, timestamps; claims never do.

use std::sync::Arc;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config as PgConfig, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{DatabaseTarget, DbTls};

/// Why a target database could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetError {
    /// Could not connect, or the connection broke: retry later.
    #[error("database `{database}` unreachable: {message}")]
    Unreachable {
        /// `databases.NAME`.
        database: String,
        /// Why.
        message: String,
    },
    /// The database refused a statement.
    #[error("database `{database}` refused: {message}")]
    Refused {
        /// `databases.NAME`.
        database: String,
        /// Why (PostgreSQL's message; never holds a password, see `scrub`).
        message: String,
    },
    /// The admin password could not be read.
    #[error("database `{database}`: admin password: {message}")]
    Password {
        /// `databases.NAME`.
        database: String,
        /// Why.
        message: String,
    },
}

/// `name` as a quoted SQL identifier (`"` doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Reads the admin password from where the config says.
pub(crate) async fn admin_password(
    target: &DatabaseTarget,
    secrets: Option<&Arc<aws_sdk_secretsmanager::Client>>,
) -> Result<String, TargetError> {
    let fail = |message: String| TargetError::Password {
        database: target.name.clone(),
        message,
    };
    target.password.read(secrets).await.map_err(fail)
}

/// A connection as the admin role.
pub(crate) async fn connect_admin(target: &DatabaseTarget, password: &str) -> Result<Client, TargetError> {
    let mut config = PgConfig::new();
    config
        .host(&target.host)
        .port(target.port)
        .dbname(&target.dbname)
        .user(&target.admin_user)
        .password(password)
        .application_name("stint")
        .connect_timeout(target.connect_timeout);
    let unreachable = |message: String| TargetError::Unreachable {
        database: target.name.clone(),
        message,
    };
    let within = target.connect_timeout;
    let late = || unreachable(format!("no connection within {}s", within.as_secs()));
    let client = match &target.tls {
        DbTls::Disable => {
            config.ssl_mode(SslMode::Disable);
            let (client, connection) = tokio::time::timeout(within, config.connect(NoTls))
                .await
                .map_err(|_| late())?
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        DbTls::VerifyFull { ca_file } => {
            config.ssl_mode(SslMode::Require);
            let tls = MakeRustlsConnect::new(crate::pg_tls::client_config(ca_file.as_deref()).map_err(unreachable)?);
            let (client, connection) = tokio::time::timeout(within, config.connect(tls))
                .await
                .map_err(|_| late())?
                .map_err(|e| unreachable(crate::pg_tls::describe(&e)))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
    };
    Ok(client)
}

fn refused(target: &DatabaseTarget, e: &tokio_postgres::Error, secrets: &[&str]) -> TargetError {
    let message = scrub(
        &e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string()),
        secrets,
    );
    if e.is_closed() || e.as_db_error().is_none() {
        TargetError::Unreachable {
            database: target.name.clone(),
            message,
        }
    } else {
        TargetError::Refused {
            database: target.name.clone(),
            message,
        }
    }
}

/// Removes every `secret` from `text` (database errors can quote SQL).
fn scrub(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |t, s| t.replace(s, "***"))
}

/// Fills the SQL placeholders.
pub(crate) fn render_sql(sql: &str, name: &str, password: &str, expiration: &str, database: &str) -> String {
    sql.replace("{{name}}", name)
        .replace("{{password}}", password)
        .replace("{{expiration}}", expiration)
        .replace("{{database}}", database)
}

/// Runs the creation statements in one transaction.
pub(crate) async fn create_role(
    target: &DatabaseTarget,
    admin_password: &str,
    name: &str,
    statements: &str,
    password: &str,
) -> Result<(), TargetError> {
    let mut client = connect_admin(target, admin_password).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| refused(target, &e, &[password, admin_password]))?;
    tx.batch_execute(statements)
        .await
        .map_err(|e| refused(target, &e, &[password, admin_password]))?;
    // Membership lets a CREATEROLE (non-superuser) admin end the role's
    // sessions and reassign what it owns at revocation.
    tx.batch_execute(&format!("GRANT {} TO CURRENT_USER", quote_ident(name)))
        .await
        .map_err(|e| refused(target, &e, &[password, admin_password]))?;
    tx.commit()
        .await
        .map_err(|e| refused(target, &e, &[password, admin_password]))
}

/// Ends a role: no more logins, its sessions terminated, then `custom`
/// statements or stint's default (reassign and drop what it owns, drop the
/// role). A role that is already gone is done.
pub(crate) async fn revoke_role(
    target: &DatabaseTarget,
    admin_password: &str,
    username: &str,
    custom: Option<&str>,
) -> Result<(), TargetError> {
    let client = connect_admin(target, admin_password).await?;
    let fail = |e: tokio_postgres::Error| refused(target, &e, &[admin_password]);
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&username])
        .await
        .map_err(fail)?
        .is_some();
    if !exists {
        return Ok(());
    }
    let role = quote_ident(username);
    client
        .batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))
        .await
        .map_err(fail)?;
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&username],
        )
        .await
        .map_err(fail)?;
    let statements = match custom {
        Some(sql) => render_sql(sql, username, "", "", &target.dbname),
        None => format!("REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role}; DROP ROLE {role};"),
    };
    client.batch_execute(&statements).await.map_err(fail)
}

/// Roles whose name starts with one of `prefixes`.
pub(crate) async fn roles_with_prefix(
    target: &DatabaseTarget,
    admin_password: &str,
    prefixes: &[String],
) -> Result<Vec<String>, TargetError> {
    let client = connect_admin(target, admin_password).await?;
    let rows = client
        // stint never makes privileged roles, and never touches its admin.
        .query(
            "SELECT rolname FROM pg_roles WHERE NOT rolsuper AND NOT rolcreaterole AND rolname <> $1 ORDER BY rolname",
            &[&target.admin_user],
        )
        .await
        .map_err(|e| refused(target, &e, &[admin_password]))?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<_, String>(0).ok())
        .filter(|name| prefixes.iter().any(|p| name.starts_with(p.as_str())))
        .collect())
}
