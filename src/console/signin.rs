//! Signing people in to the console: OIDC authorization code flow with
//! PKCE against an issuer of the config, whose `audience` is the
//! console's client id. The ID token is verified like any caller token
//! (issuer allowlist, pinned algorithms, the issuer's keys), its `nonce`
//! must be the one sent, and the person must match an `auditors:` rule,
//! as for `GET /v1/audit`. A session is a random id in a cookie (Secure,
//! HttpOnly, SameSite=Strict) that lasts `console.session` (1h at most);
//! the console keeps sessions in memory, so a restart signs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::identity::{ClaimValue, Verifier};
use crate::percent::encode;
use crate::policy::Policy;

/// The session cookie.
pub const COOKIE: &str = "stint_console_session";

/// The cookie that holds a sign-in's `state` until the IdP sends the
/// browser back: a callback from another browser (a login forged for
/// someone else) does not match it.
pub const STATE_COOKIE: &str = "stint_console_state";

/// How long a sign-in may take at the IdP.
const PENDING_FOR: Duration = Duration::from_secs(600);

/// Most sign-ins waiting, and most sessions, at once: neither map grows
/// without bound however many people (or scripts) start one.
const MAX_ENTRIES: usize = 10_000;

/// A sign-in sent to the IdP, waiting for it to come back.
struct Pending {
    verifier: String,
    nonce: String,
    next: String,
    at: Instant,
}

/// Who is signed in.
#[derive(Debug, Clone)]
pub struct Person {
    /// Issuer config name.
    pub issuer: String,
    /// Their `sub`.
    pub subject: String,
    /// Their `email` or `name`, if the ID token had one, for the header.
    pub shown_as: String,
    until: Instant,
}

/// The sign-in flow and the sessions.
pub struct SignIn {
    issuer: String,
    issuer_url: String,
    client_id: String,
    client_secret: Option<String>,
    redirect_uri: String,
    session: Duration,
    verifier: Verifier,
    policy: Policy,
    http: reqwest::Client,
    endpoints: tokio::sync::OnceCell<(String, String)>,
    pending: Mutex<HashMap<String, Pending>>,
    sessions: Mutex<HashMap<String, Person>>,
}

/// Why a sign-in did not end in a session.
#[derive(Debug)]
pub enum Refusal {
    /// The request is not a sign-in this console started (400).
    BadRequest(String),
    /// The IdP or its token could not be used (502).
    Upstream(String),
    /// Signed in, but no `auditors` rule admits this person (403).
    NotAnAuditor(String),
}

fn random() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    // A failing system RNG leaves zeros; the state check then fails closed
    // (all-zero values collide with nothing issued).
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SignIn {
    /// The flow for `config`'s `console.sign_in`.
    pub fn new(config: &crate::config::Config) -> Result<Option<SignIn>, String> {
        let Some(console) = &config.console else {
            return Ok(None);
        };
        let Some(sign_in) = &console.sign_in else {
            return Ok(None);
        };
        let issuer = config
            .issuers
            .iter()
            .find(|i| i.name == sign_in.issuer)
            .ok_or_else(|| format!("console.sign_in.issuer: `{}` is not under issuers", sign_in.issuer))?;
        let client_secret = sign_in
            .client_secret_file
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| format!("console.sign_in.client_secret_file {}: {e}", p.display()))
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Some(SignIn {
            issuer: issuer.name.clone(),
            issuer_url: issuer.url.trim_end_matches('/').to_string(),
            client_id: issuer.audience.clone(),
            client_secret,
            redirect_uri: format!("{}/auth/callback", console.public_url),
            session: console.session,
            verifier: Verifier::new(config.issuers.clone(), config.key_cache.clone())?,
            policy: config.policy.clone(),
            http,
            endpoints: tokio::sync::OnceCell::new(),
            pending: Mutex::default(),
            sessions: Mutex::default(),
        }))
    }

    /// The IdP's authorization and token endpoints, from its discovery
    /// document (fetched once).
    async fn endpoints(&self) -> Result<&(String, String), Refusal> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.issuer_url);
                let doc: Value = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| Refusal::Upstream(format!("the sign-in issuer's discovery {url}: {e}")))?
                    .json()
                    .await
                    .map_err(|e| Refusal::Upstream(format!("the sign-in issuer's discovery {url}: {e}")))?;
                let field = |k: &str| {
                    doc.get(k)
                        .and_then(Value::as_str)
                        .filter(|u| crate::config::check_url(u).is_ok())
                        .map(str::to_string)
                        .ok_or_else(|| Refusal::Upstream(format!("the sign-in issuer's discovery has no usable {k}")))
                };
                Ok((field("authorization_endpoint")?, field("token_endpoint")?))
            })
            .await
    }

    /// Where to send a person who wants `next`: the IdP's authorization
    /// endpoint with a fresh state, nonce and PKCE challenge; and the
    /// state, which the browser must bring back in [`STATE_COOKIE`].
    pub async fn start(&self, next: &str) -> Result<(String, String), Refusal> {
        let (authorize, _) = self.endpoints().await?;
        let (state, nonce, verifier) = (random(), random(), random());
        let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            verifier.as_bytes(),
        ));
        // Only a path of this console: never an open redirect (`//host`
        // and `/\host` are other hosts to a browser).
        let next = if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
            next
        } else {
            "/"
        };
        {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| Refusal::Upstream("sign-in state poisoned".into()))?;
            pending.retain(|_, p| p.at.elapsed() < PENDING_FOR);
            if pending.len() >= MAX_ENTRIES {
                return Err(Refusal::Upstream(
                    "too many sign-ins in progress; try again in a few minutes".into(),
                ));
            }
            pending.insert(
                state.clone(),
                Pending {
                    verifier,
                    nonce: nonce.clone(),
                    next: next.to_string(),
                    at: Instant::now(),
                },
            );
        }
        let sep = if authorize.contains('?') { '&' } else { '?' };
        let url = format!(
            "{authorize}{sep}response_type=code&client_id={}&redirect_uri={}&scope=openid%20email%20profile&state={state}&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
            encode(&self.client_id),
            encode(&self.redirect_uri),
        );
        Ok((url, state))
    }

    /// The `Set-Cookie` that ties a sign-in to the browser that started it
    /// (`SameSite=Lax`: the IdP's redirect back is a top-level navigation).
    pub fn state_cookie(state: &str) -> String {
        format!("{STATE_COOKIE}={state}; Path=/auth/; Secure; HttpOnly; SameSite=Lax; Max-Age=600")
    }

    /// The IdP sent the person back with `code` for `state`: the code is
    /// exchanged, the ID token verified and matched against `auditors`.
    /// Returns the new session's id and where to go.
    pub async fn finish(&self, code: &str, state: &str, headers: &HeaderMap) -> Result<(String, String), Refusal> {
        if cookie(headers, STATE_COOKIE).as_deref() != Some(state) {
            return Err(Refusal::BadRequest(
                "this sign-in was not started in this browser: start again".into(),
            ));
        }
        let pending = self
            .pending
            .lock()
            .map_err(|_| Refusal::Upstream("sign-in state poisoned".into()))?
            .remove(state)
            .filter(|p| p.at.elapsed() < PENDING_FOR)
            .ok_or_else(|| Refusal::BadRequest("this sign-in is unknown or expired: start again".into()))?;
        let (_, token_endpoint) = self.endpoints().await?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("client_id", self.client_id.clone()),
            ("code_verifier", pending.verifier.clone()),
        ];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret.clone()));
        }
        let answer = self
            .http
            .post(token_endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(
                form.iter()
                    .map(|(k, v)| format!("{k}={}", encode(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            )
            .send()
            .await
            .map_err(|e| Refusal::Upstream(format!("the sign-in issuer's token endpoint: {e}")))?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Refusal::Upstream(format!(
                "the sign-in issuer refused the code ({status}: {})",
                body.get("error").and_then(Value::as_str).unwrap_or("no error code")
            )));
        }
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| Refusal::Upstream("the sign-in issuer's answer has no id_token".into()))?;
        let person = self
            .verifier
            .verify(id_token)
            .await
            .map_err(|e| Refusal::Upstream(format!("the ID token does not verify: {e}")))?;
        if person.issuer() != self.issuer {
            return Err(Refusal::Upstream("the ID token is from another issuer".into()));
        }
        let text = |name: &str| match person.claims().get(name) {
            Some(ClaimValue::Text(t)) => Some(t.into_owned()),
            _ => None,
        };
        if text("nonce").as_deref() != Some(pending.nonce.as_str()) {
            return Err(Refusal::BadRequest(
                "the ID token's nonce is not this sign-in's: start again".into(),
            ));
        }
        let shown_as = text("email")
            .or_else(|| text("name"))
            .unwrap_or_else(|| person.subject().to_string());
        if !self.policy.is_auditor(&person) {
            return Err(Refusal::NotAnAuditor(format!(
                "signed in as {shown_as} ({} of issuer `{}`), but no `auditors` rule admits you: ask whoever runs stint to add one",
                person.subject(),
                self.issuer
            )));
        }
        let id = random();
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| Refusal::Upstream("sessions poisoned".into()))?;
        sessions.retain(|_, p| p.until > Instant::now());
        if sessions.len() >= MAX_ENTRIES {
            return Err(Refusal::Upstream("too many sessions; try again later".into()));
        }
        sessions.insert(
            id.clone(),
            Person {
                issuer: self.issuer.clone(),
                subject: person.subject().to_string(),
                shown_as,
                until: Instant::now() + self.session,
            },
        );
        Ok((id, pending.next))
    }

    /// The session cookie's `Set-Cookie` value.
    pub fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
            self.session.as_secs()
        )
    }

    /// Who the request's cookie names, if the session is live.
    pub fn person(&self, headers: &HeaderMap) -> Option<Person> {
        let id = session_id(headers)?;
        let sessions = self.sessions.lock().ok()?;
        sessions.get(&id).filter(|p| p.until > Instant::now()).cloned()
    }

    /// Ends the request's session.
    pub fn sign_out(&self, headers: &HeaderMap) {
        if let (Some(id), Ok(mut sessions)) = (session_id(headers), self.sessions.lock()) {
            sessions.remove(&id);
        }
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
}
