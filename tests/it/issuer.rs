//! A real OIDC issuer for tests: discovery and JWKS over HTTP on a free
//! port, RSA (RS256) and P-256 (ES256) keys, tokens shaped from the fixtures.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

/// Audience the test broker expects.
pub const AUDIENCE: &str = "https://stint.test";

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    stint::clock::now()
}

/// Signing keys, made once per test process (RSA generation is slow).
pub struct Keys {
    pub rsa: aws_lc_rs::rsa::KeyPair,
    pub rsa_other: aws_lc_rs::rsa::KeyPair,
    pub ec: EcdsaKeyPair,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("rsa keygen"),
        rsa_other: aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("rsa keygen"),
        ec: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec keygen"),
    })
}

pub fn rsa_jwk(pair: &aws_lc_rs::rsa::KeyPair, kid: &str) -> Value {
    let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&public.n), "e": b64(&public.e)})
}

pub fn ec_jwk(kid: &str) -> Value {
    let point = keys().ec.public_key().as_ref().to_vec();
    json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
}

/// Which key signs a token.
#[derive(Clone, Copy)]
pub enum Signer {
    Rsa,
    RsaOther,
    Ec,
}

pub const RSA_KID: &str = "rsa-1";
pub const RSA_OTHER_KID: &str = "rsa-2";
pub const EC_KID: &str = "ec-1";

/// Signs `header.payload` exactly as given (tests shape bad tokens too).
pub fn sign_raw(header_json: &str, payload_json: &str, signer: Signer) -> String {
    let input = format!("{}.{}", b64(header_json), b64(payload_json));
    let rng = SystemRandom::new();
    let sig = match signer {
        Signer::Rsa | Signer::RsaOther => {
            let pair = if matches!(signer, Signer::Rsa) {
                &keys().rsa
            } else {
                &keys().rsa_other
            };
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                .expect("rsa sign");
            sig
        }
        Signer::Ec => keys()
            .ec
            .sign(&rng, input.as_bytes())
            .expect("ec sign")
            .as_ref()
            .to_vec(),
    };
    format!("{input}.{}", b64(sig))
}

/// Loads a fixture payload from tests/fixtures/oidc.
pub fn fixture(name: &str) -> Map<String, Value> {
    let path = format!("{}/tests/fixtures/oidc/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let value: Value = serde_json::from_str(&text).expect("fixture json");
    value["payload"].as_object().cloned().expect("fixture payload")
}

/// What the issuer serves right now; tests change it on the fly.
struct Served {
    jwks: Value,
    discovery_issuer: Option<String>,
    delay: Duration,
}

#[derive(Clone)]
struct IssuerState {
    url: Arc<OnceLock<String>>,
    served: Arc<Mutex<Served>>,
    down: Arc<AtomicBool>,
    jwks_fetches: Arc<AtomicUsize>,
}

/// A running test issuer.
pub struct TestIssuer {
    pub url: String,
    state: IssuerState,
    jti: AtomicU64,
}

async fn discovery(State(state): State<IssuerState>) -> Response {
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let url = state.url.get().cloned().unwrap_or_default();
    let issuer = state
        .served
        .lock()
        .unwrap()
        .discovery_issuer
        .clone()
        .unwrap_or_else(|| url.clone());
    axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{url}/.well-known/jwks"),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"]}))
    .into_response()
}

async fn jwks(State(state): State<IssuerState>) -> Response {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let delay = state.served.lock().unwrap().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = state.served.lock().unwrap().jwks.clone();
    axum::Json(body).into_response()
}

impl TestIssuer {
    /// Starts an issuer serving the RSA and EC keys.
    pub async fn start() -> TestIssuer {
        let served = Served {
            jwks: json!({"keys": [rsa_jwk(&keys().rsa, RSA_KID), ec_jwk(EC_KID)]}),
            discovery_issuer: None,
            delay: Duration::ZERO,
        };
        let state = IssuerState {
            url: Arc::new(OnceLock::new()),
            served: Arc::new(Mutex::new(served)),
            down: Arc::new(AtomicBool::new(false)),
            jwks_fetches: Arc::new(AtomicUsize::new(0)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind issuer");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        state.url.set(url.clone()).expect("set url once");
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks", get(jwks))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        TestIssuer {
            url,
            state,
            jti: AtomicU64::new(0),
        }
    }

    /// JWKS requests served so far.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Replaces the served key set.
    pub fn set_jwks(&self, jwks: Value) {
        self.state.served.lock().unwrap().jwks = jwks;
    }

    /// Makes discovery claim a different issuer string.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        self.state.served.lock().unwrap().discovery_issuer = Some(issuer.to_string());
    }

    /// Answers 503 to everything while `down`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Slows JWKS responses (to overlap concurrent refetches).
    pub fn set_jwks_delay(&self, delay: Duration) {
        self.state.served.lock().unwrap().delay = delay;
    }

    /// Registered claims for this issuer with fresh times and a new jti.
    pub fn base_claims(&self) -> Map<String, Value> {
        let now = now();
        let n = self.jti.fetch_add(1, Ordering::SeqCst);
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.url));
        claims.insert("aud".into(), json!(AUDIENCE));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now - 5));
        claims.insert("exp".into(), json!(now + 300));
        claims.insert("jti".into(), json!(format!("jti-{n}-{}", now)));
        claims
    }

    /// A fixture payload re-issued by this issuer.
    pub fn fixture_claims(&self, fixture_name: &str) -> Map<String, Value> {
        let mut claims = fixture(fixture_name);
        let base = self.base_claims();
        let had_array_aud = claims.get("aud").is_some_and(Value::is_array);
        claims.extend(base);
        if had_array_aud {
            claims.insert("aud".into(), json!([AUDIENCE]));
        }
        claims
    }

    /// GitHub Actions push token claims (fixture, fresh times).
    pub fn github(&self) -> Map<String, Value> {
        self.fixture_claims("github-actions-push")
    }

    /// Signs claims with RS256 and the default RSA key.
    pub fn sign(&self, claims: &Map<String, Value>) -> String {
        self.sign_with(
            &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID}),
            claims,
            Signer::Rsa,
        )
    }

    /// Signs claims with a given header and key.
    pub fn sign_with(&self, header: &Value, claims: &Map<String, Value>, signer: Signer) -> String {
        sign_raw(&header.to_string(), &Value::Object(claims.clone()).to_string(), signer)
    }
}
