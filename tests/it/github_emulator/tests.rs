//! The emulator checked on its own, through a real HTTP client and JWTs
//! made by `jsonwebtoken` as a broker would make them.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::Method;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::GitHubEmulator;

mod access_tokens;
mod app_auth;

pub(super) const APP_ID: u64 = 424_242;

pub(super) fn now() -> i64 {
    stint::clock::now()
}

/// Signs `claims` with `alg`; `key` is a PEM for RSA, a secret for HMAC.
pub(super) fn sign(key: &str, alg: Algorithm, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(key.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(key.as_bytes()).unwrap(),
    };
    encode(&Header::new(alg), claims, &key).unwrap()
}

/// `header.payload` signed RS256 with the App key whatever `header` claims.
pub(super) fn sign_raw(header: &Value, claims: &Value) -> String {
    use aws_lc_rs::signature::RSA_PKCS1_SHA256;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = super::keys::app_key();
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A JWT as GitHub's docs recommend: `iat` 60 s back, `exp` 9 minutes on.
pub(super) fn app_jwt(github: &GitHubEmulator) -> String {
    let claims = json!({"iat": now() - 60, "exp": now() + 540, "iss": APP_ID.to_string()});
    sign(&github.app_key_pem(), Algorithm::RS256, &claims)
}

pub(super) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(super) async fn call(method: Method, url: &str, authorization: Option<&str>, body: Option<Value>) -> Reply {
    let http = reqwest::Client::builder().user_agent("stint-tests").build().unwrap();
    let mut request = http
        .request(method, url)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, headers, body }
}

pub(super) async fn get(github: &GitHubEmulator, path: &str, authorization: &str) -> Reply {
    call(Method::GET, &format!("{}{path}", github.url), Some(authorization), None).await
}

/// `POST /app/installations/{id}/access_tokens` with a fresh JWT.
pub(super) async fn create_token(github: &GitHubEmulator, id: u64, body: Value) -> Reply {
    let url = format!("{}/app/installations/{id}/access_tokens", github.url);
    let auth = format!("Bearer {}", app_jwt(github));
    call(Method::POST, &url, Some(&auth), Some(body)).await
}

pub(super) fn names(reply: &Reply) -> Vec<String> {
    reply.body["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}
