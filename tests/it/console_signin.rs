//! Signing in to `stint audit console` over HTTPS: the console as its own
//! process, a test IdP that does the OIDC authorization code flow with
//! PKCE for real (discovery, JWKS, /authorize, /token, RS256 ID tokens),
//! and a client that follows the redirects as a browser would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

use crate::client::stint;
use crate::issuer::{Signer, keys, now, rsa_jwk, sign_raw};

const CLIENT_ID: &str = "stint-console";

/// What a code was issued for: client_id, redirect_uri, code_challenge, nonce.
type Grant = (String, String, String, String);

/// An IdP that signs in whoever `person` is, once they "approve".
#[derive(Clone)]
struct Idp {
    url: String,
    person: Arc<Mutex<Value>>,
    codes: Arc<Mutex<HashMap<String, Grant>>>,
}

impl Idp {
    async fn start() -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let idp = Idp {
            url,
            person: Arc::new(Mutex::new(json!({}))),
            codes: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route(
                "/jwks",
                get(|| async { axum::Json(json!({"keys": [rsa_jwk(&keys().rsa, "idp-key")]})) }),
            )
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(idp.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        idp
    }

    fn sign_in_as(&self, person: Value) {
        *self.person.lock().unwrap() = person;
    }
}

async fn discovery(State(idp): State<Idp>) -> Response {
    axum::Json(json!({
        "issuer": idp.url,
        "authorization_endpoint": format!("{}/authorize", idp.url),
        "token_endpoint": format!("{}/token", idp.url),
        "jwks_uri": format!("{}/jwks", idp.url),
    }))
    .into_response()
}

async fn authorize(State(idp): State<Idp>, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    assert_eq!(get("response_type"), "code");
    assert_eq!(get("code_challenge_method"), "S256", "PKCE with S256");
    assert!(!get("state").is_empty() && !get("nonce").is_empty() && !get("code_challenge").is_empty());
    let code = uuid::Uuid::new_v4().simple().to_string();
    idp.codes.lock().unwrap().insert(
        code.clone(),
        (
            get("client_id"),
            get("redirect_uri"),
            get("code_challenge"),
            get("nonce"),
        ),
    );
    Redirect::to(&format!("{}?code={code}&state={}", get("redirect_uri"), get("state"))).into_response()
}

async fn token(State(idp): State<Idp>, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let refuse = |e: &str| (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({"error": e}))).into_response();
    let Some((client_id, redirect_uri, challenge, nonce)) = idp.codes.lock().unwrap().remove(&get("code")) else {
        return refuse("invalid_grant");
    };
    let verifier_hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        get("code_verifier").as_bytes(),
    ));
    if get("grant_type") != "authorization_code"
        || get("client_id") != client_id
        || get("redirect_uri") != redirect_uri
        || verifier_hash != challenge
    {
        return refuse("invalid_grant");
    }
    let mut claims = idp.person.lock().unwrap().clone();
    let now = now();
    for (k, v) in [
        ("iss", json!(idp.url)),
        ("aud", json!(client_id)),
        ("iat", json!(now)),
        ("exp", json!(now + 300)),
        ("nonce", json!(nonce)),
    ] {
        claims[k] = v;
    }
    let id_token = sign_raw(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "idp-key"}).to_string(),
        &claims.to_string(),
        Signer::Rsa,
    );
    axum::Json(json!({"access_token": "unused", "token_type": "Bearer", "id_token": id_token})).into_response()
}

struct Running {
    process: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A store with a record, and the console on HTTPS with sign-in against `idp`.
async fn console(idp: &Idp) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("console.crt"), certified.cert.pem()).unwrap();
    std::fs::write(dir.path().join("console.key"), certified.signing_key.serialize_pem()).unwrap();
    let port = crate::process::free_port();
    let config = format!(
        "audit: {{ store: sqlite://audit.db, key_file: audit.key }}\nsigning: {{ key_file: signing.key }}\n\
         issuers:\n  corp: {{ issuer: \"{idp}\", audience: {CLIENT_ID}, algorithms: [RS256], platform: generic }}\n\
         grants:\n  g: {{ kind: token, ttl: 5m, audience: x, allow: [{{ issuer: corp, claims: {{ email: nobody@example.com }} }}] }}\n\
         auditors:\n  - issuer: corp\n    claims: {{ email: alice@example.com }}\n\
         console:\n  listen: 127.0.0.1:{port}\n  public_url: https://localhost:{port}\n  tls: {{ cert_file: console.crt, key_file: console.key }}\n  sign_in: {{ issuer: corp }}\n  session: 30m\n",
        idp = idp.url
    );
    std::fs::write(dir.path().join("stint.yaml"), config).unwrap();
    // A store to look at: the audit key and an empty log, as a broker leaves them.
    let key = stint::audit::AuditKey::load_or_create(&dir.path().join("audit.key")).unwrap();
    let chain = stint::audit::ChainKeys {
        signer: stint::audit::CheckpointSigner::from_audit_key(&key).unwrap(),
        key,
        checkpoint_every: 100,
        group_commit: false,
        store_timeout: Duration::from_secs(5),
    };
    drop(
        stint::audit::open(&format!("sqlite://{}", dir.path().join("audit.db").display()), chain)
            .await
            .unwrap(),
    );
    let process = stint(dir.path())
        .args(["audit", "console", "--config", "stint.yaml"])
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    for _ in 0..100 {
        if http.get(format!("{base}/static/console.css")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Running {
        process,
        base,
        http,
        _dir: dir,
    }
}

fn location(answer: &reqwest::Response) -> String {
    answer.headers()["location"].to_str().unwrap().to_string()
}

/// Follows a sign-in from `path` to its end: the console's answer to the
/// IdP's callback.
async fn sign_in(c: &Running, path: &str) -> reqwest::Response {
    let login = if path.starts_with("/auth/login") {
        path.to_string()
    } else {
        let first = c.http.get(format!("{}{path}", c.base)).send().await.unwrap();
        assert_eq!(first.status(), 303, "not signed in: sent to sign in");
        location(&first)
    };
    assert!(login.starts_with("/auth/login?next="), "{login}");
    let to_idp = c.http.get(format!("{}{login}", c.base)).send().await.unwrap();
    assert_eq!(to_idp.status(), 303);
    let state_cookie = to_idp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        state_cookie.contains("HttpOnly") && state_cookie.contains("Secure"),
        "{state_cookie}"
    );
    let state_cookie = state_cookie.split(';').next().unwrap().to_string();
    let authorize = location(&to_idp);
    assert!(authorize.contains("code_challenge_method=S256") && authorize.contains(&format!("client_id={CLIENT_ID}")));
    let back = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&authorize)
        .send()
        .await
        .unwrap();
    let callback = location(&back);
    assert!(
        callback.starts_with(&format!("{}/auth/callback?code=", c.base)),
        "{callback}"
    );
    // Another browser cannot finish this sign-in (a login forged for someone else).
    let elsewhere = c.http.get(&callback).send().await.unwrap();
    assert_eq!(elsewhere.status(), 400);
    c.http
        .get(callback)
        .header("cookie", state_cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_signs_in_and_sees_the_pages_others_do_not() {
    let idp = Idp::start().await;
    let mut c = console(&idp).await;

    // Alice matches the `auditors` rule.
    idp.sign_in_as(json!({"sub": "alice-1", "email": "alice@example.com"}));
    let done = sign_in(&c, "/records?outcome=denied").await;
    assert_eq!(done.status(), 303, "{}", done.text().await.unwrap_or_default());
    assert_eq!(location(&done), "/records?outcome=denied", "back where she was going");
    let cookie = done.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Max-Age=1800"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let page = c
        .http
        .get(format!("{}/records?outcome=denied", c.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    assert!(
        text.contains("<h1>Records</h1>") && text.contains("alice@example.com"),
        "{text}"
    );

    // A return path that a browser would read as another host is not
    // followed: the sign-in ends on the console's own front page.
    let elsewhere = sign_in(&c, "/auth/login?next=/%5Cevil.example").await;
    assert_eq!(elsewhere.status(), 303);
    assert_eq!(location(&elsewhere), "/", "an open redirect");

    // A made-up session id is not a session.
    let forged = c
        .http
        .get(format!("{}/", c.base))
        .header("cookie", "stint_console_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 303);

    // Mallory signs in fine at the IdP, but no auditor rule admits her.
    idp.sign_in_as(json!({"sub": "mallory-1", "email": "mallory@example.com"}));
    let refused = sign_in(&c, "/").await;
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get("set-cookie").is_none(), "no session for her");
    let text = refused.text().await.unwrap();
    assert!(text.contains("no `auditors` rule admits you"), "{text}");

    // Signing out ends Alice's session.
    let out = c
        .http
        .post(format!("{}/auth/logout", c.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let after = c
        .http
        .get(format!("{}/", c.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303, "signed out");

    // A callback this console did not start is refused.
    let stray = c
        .http
        .get(format!("{}/auth/callback?code=x&state=never-issued", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 400);
    c.process.kill().await.unwrap();
}

#[tokio::test]
async fn beyond_loopback_without_sign_in_the_console_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = stint(dir.path())
        .args([
            "audit",
            "console",
            "--store",
            "sqlite://missing.db",
            "--listen",
            "0.0.0.0:8430",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("needs `console.tls` and `console.sign_in`"), "{stderr}");
}
