//! `stint dev`: the broker on a built-in development OIDC issuer, a SQLite
//! audit log and sample grants, all under one folder (`./.stint-dev`).
//! Nothing here is used by `stint serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::keys::{SigningAlgorithm, SigningKey};

/// The built-in dev config, before placeholders are filled.
pub const DEV_CONFIG: &str = include_str!("stint-dev.yaml");
/// Default dev folder.
pub const DEFAULT_DIR: &str = ".stint-dev";
/// Audience dev tokens are minted for.
pub const DEV_AUDIENCE: &str = "stint";

/// Where `stint dev` listens and keeps its files.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Folder for keys and the audit log.
    pub dir: PathBuf,
    /// Broker listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Dev issuer listener.
    pub issuer_listen: SocketAddr,
}

fn issuer_key(dir: &Path) -> anyhow::Result<SigningKey> {
    SigningKey::load_or_create(&dir.join("dev-issuer.key"), SigningAlgorithm::ES256).map_err(|e| anyhow::anyhow!(e))
}

/// Serves discovery and JWKS of the dev issuer, as a real issuer does.
fn issuer_router(issuer: String, key: &SigningKey) -> Router {
    let discovery = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks"),
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
    });
    let jwks = json!({ "keys": [key.public_jwk()] });
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route("/.well-known/jwks", get(move || async move { axum::Json(jwks) }))
}

/// Runs the dev broker until Ctrl-C.
pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", options.dir.display()))?;
    let key = issuer_key(&options.dir)?;
    let issuer_listener = crate::http::listen(options.issuer_listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (dev issuer): {e}", options.issuer_listen))?;
    let issuer = format!("http://{}", issuer_listener.local_addr()?);
    std::fs::write(
        options.dir.join("dev-issuer.json"),
        json!({ "issuer": issuer, "audience": DEV_AUDIENCE }).to_string(),
    )?;
    let router = issuer_router(issuer.clone(), &key);
    tokio::spawn(async move { axum::serve(issuer_listener, router).await });

    let dir = options.dir.display().to_string();
    let text = DEV_CONFIG
        .replace("{listen}", &options.listen.to_string())
        .replace("{admin_listen}", &options.admin_listen.to_string())
        .replace("{dir}", &dir)
        .replace("{dev_issuer}", &issuer);
    let config = Config::parse(&text, "built-in dev config", Path::new(""), &|_| None)?;
    let server = crate::server::start(config).await?;

    // The path this binary was started as, shortened when it is under the
    // current folder (`target/release/stint`), so the lines below paste as-is.
    let exe = std::env::current_exe()
        .ok()
        .map(|p| {
            match std::env::current_dir()
                .ok()
                .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
            {
                Some(relative) => relative.display().to_string(),
                None => p.display().to_string(),
            }
        })
        .unwrap_or_else(|| "stint".to_string());
    let dir_flag = if dir == DEFAULT_DIR {
        String::new()
    } else {
        format!(" --dir {dir}")
    };
    println!("stint dev is running (Ctrl-C to stop)");
    println!("  broker:      http://{}", server.addr);
    println!(
        "  admin:       http://{} (/healthz /readyz /metrics)",
        server.admin_addr
    );
    println!("  dev issuer:  {issuer}");
    println!("  audit log:   {dir}/audit.db  ({exe} audit query{dir_flag})");
    println!("  grants:      demo-token (repository acme/*), deploy-token (acme/api, refs/heads/main, production)");
    println!();
    println!("Get a dev OIDC token and trade it for a credential:");
    println!(
        "  TOKEN=$({exe} token dev{dir_flag} --sub repo:acme/api:ref:refs/heads/main --claim repository=acme/api --claim ref=refs/heads/main)"
    );
    println!(
        "  curl -s -X POST -H \"Authorization: Bearer $TOKEN\" http://{}/v1/issue/demo-token",
        server.addr
    );
    println!();
    use std::io::Write;
    let _ = std::io::stdout().flush();

    tokio::signal::ctrl_c().await?;
    println!("stopping");
    server.shutdown().await;
    Ok(())
}

/// Mints a dev token for `stint token dev`, signed with the dev issuer's key
/// in `dir` (run `stint dev` first: it creates the key and names the issuer).
pub fn mint(
    dir: &Path,
    subject: &str,
    claims: &[(String, String)],
    audience: Option<&str>,
    ttl_secs: i64,
) -> anyhow::Result<String> {
    let info_path = dir.join("dev-issuer.json");
    let info: Value = std::fs::read_to_string(&info_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} not found: start `stint dev` first (it creates the dev issuer)",
                info_path.display()
            )
        })?;
    let issuer = info
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let key = issuer_key(dir)?;
    let now = crate::clock::now();
    let mut payload = Map::new();
    for (name, value) in claims {
        payload.insert(name.clone(), Value::String(value.clone()));
    }
    payload.insert("iss".into(), Value::String(issuer));
    payload.insert("sub".into(), Value::String(subject.to_string()));
    payload.insert(
        "aud".into(),
        Value::String(audience.unwrap_or(DEV_AUDIENCE).to_string()),
    );
    payload.insert("iat".into(), json!(now));
    payload.insert("nbf".into(), json!(now));
    payload.insert("exp".into(), json!(now + ttl_secs));
    payload.insert("jti".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    key.sign_jwt(&Value::Object(payload)).map_err(|e| anyhow::anyhow!(e))
}
