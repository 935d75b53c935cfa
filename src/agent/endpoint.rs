//! The AWS container credentials endpoint on loopback: what ECS and EKS
//! Pod Identity serve, so every AWS SDK in the app container fetches and
//! refreshes its credentials by itself (`AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! and `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`), with no stint binary
//! in the app's image.

use std::path::Path;
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The newest answer for the endpoint's grant (`None` before the first).
pub type Latest = Arc<RwLock<Option<Map<String, Value>>>>;

/// The token the SDK must send in `Authorization`: the contents of
/// `path` if it holds one, else a new random one written there 0600.
pub fn authorization_token(path: &Path) -> std::io::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_string());
    }
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("the system RNG failed"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::private_file::replace(path, token.as_bytes())?;
    Ok(token)
}

/// Serves the endpoint until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, token: String, latest: Latest) {
    let token = Arc::new(token);
    let router = axum::Router::new().fallback(move |headers: HeaderMap| {
        let token = token.clone();
        let latest = latest.clone();
        async move { answer(&headers, &token, &latest) }
    });
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("stint agent: AWS credentials endpoint stopped: {e}");
    }
}

fn answer(headers: &HeaderMap, token: &str, latest: &Latest) -> Response {
    let sent = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    // Constant time: the token is what keeps other local processes (or a
    // request forged through the app) from the credentials.
    if aws_lc_rs::constant_time::verify_slices_are_equal(sent, token.as_bytes()).is_err() {
        return (StatusCode::UNAUTHORIZED, "missing or wrong Authorization\n").into_response();
    }
    let guard = latest.read().unwrap_or_else(|p| p.into_inner());
    let Some(credentials) = guard.as_ref().and_then(|body| body.get("credentials")) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no credentials yet\n").into_response();
    };
    let field = |k: &str| credentials.get(k).cloned().unwrap_or(Value::Null);
    axum::Json(json!({
        "AccessKeyId": field("AccessKeyId"),
        "SecretAccessKey": field("SecretAccessKey"),
        "Token": field("SessionToken"),
        "Expiration": field("Expiration"),
    }))
    .into_response()
}
