//! Discovery and JWKS for one trusted issuer: fetched over HTTP, cached,
//! refetched at most once per cooldown, concurrent refetches coalesced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::IdentityError;

/// Discovery and JWKS bodies larger than this are refused: an issuer that
/// sends megabytes is broken or hostile, and stint must not buffer it.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// How the key cache of one issuer behaves.
#[derive(Debug, Clone)]
pub struct KeyCachePolicy {
    /// Least time between two fetches triggered by an unknown `kid`.
    pub refetch_cooldown: Duration,
    /// Keys older than this are refreshed on the next lookup (old keys stay
    /// usable when the refresh fails).
    pub max_age: Duration,
    /// Timeout of one discovery or JWKS request.
    pub http_timeout: Duration,
}

impl Default for KeyCachePolicy {
    fn default() -> Self {
        KeyCachePolicy {
            refetch_cooldown: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
            http_timeout: Duration::from_secs(5),
        }
    }
}

/// A verification key from the issuer's JWKS.
pub(crate) struct VerifyKey {
    pub kid: Option<String>,
    params: KeyParams,
    /// The JWK's own `alg`, when it names one.
    alg: Option<Algorithm>,
    /// The key as the JWK gives it: RSA `n` and `e`, or the public point.
    material: Material,
    /// The key parsed for each algorithm it has verified, made on first use
    /// and kept: parsing an RSA key (its Montgomery context) on every
    /// verification cost a tenth of the verification itself. `None` when the
    /// material does not make a key for that algorithm.
    parsed: [OnceLock<Option<ParsedPublicKey>>; ALGORITHMS],
}

/// Decoded key bytes, from base64url in the JWK.
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed EC point (`04 || x || y`) or an Ed25519 key (`x`).
    Point(Vec<u8>),
}

/// The asymmetric algorithms stint verifies, as indexes of
/// [`VerifyKey::parsed`] and with aws-lc's verification for each; the same
/// parameters jsonwebtoken used (RSA keys of 2048 to 8192 bits, fixed-size
/// ECDSA signatures as JWS has them).
const ALGORITHMS: usize = 9;

fn verification(alg: Algorithm) -> Option<(usize, Verification)> {
    use Verification::{Other, Rsa};
    Some(match alg {
        Algorithm::RS256 => (0, Rsa(&signature::RSA_PKCS1_2048_8192_SHA256)),
        Algorithm::RS384 => (1, Rsa(&signature::RSA_PKCS1_2048_8192_SHA384)),
        Algorithm::RS512 => (2, Rsa(&signature::RSA_PKCS1_2048_8192_SHA512)),
        Algorithm::PS256 => (3, Rsa(&signature::RSA_PSS_2048_8192_SHA256)),
        Algorithm::PS384 => (4, Rsa(&signature::RSA_PSS_2048_8192_SHA384)),
        Algorithm::PS512 => (5, Rsa(&signature::RSA_PSS_2048_8192_SHA512)),
        Algorithm::ES256 => (6, Other(&signature::ECDSA_P256_SHA256_FIXED)),
        Algorithm::ES384 => (7, Other(&signature::ECDSA_P384_SHA384_FIXED)),
        Algorithm::EdDSA => (8, Other(&signature::ED25519)),
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum Verification {
    Rsa(&'static signature::RsaParameters),
    Other(&'static dyn VerificationAlgorithm),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyParams {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl VerifyKey {
    /// Whether this key may verify a signature made with `alg`. The key type
    /// must fit the algorithm pinned in config; the token header never
    /// chooses what kind of key is used.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        matches!(
            (self.params, alg),
            (
                KeyParams::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (KeyParams::EcP256, Algorithm::ES256)
                | (KeyParams::EcP384, Algorithm::ES384)
                | (KeyParams::Ed25519, Algorithm::EdDSA)
        )
    }

    /// Whether `signature` (base64url, as in the token) is this key's
    /// signature of `message` under `alg`. The caller has checked that the
    /// key [`fits`](Self::fits) `alg`; a key that does not is refused here too.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &str) -> bool {
        if !self.fits(alg) {
            return false;
        }
        let Some((index, verification)) = verification(alg) else {
            return false;
        };
        let Some(slot) = self.parsed.get(index) else {
            return false;
        };
        let parsed = slot.get_or_init(|| match (verification, &self.material) {
            (Verification::Rsa(params), Material::Rsa { n, e }) => {
                RsaPublicKeyComponents { n, e }.to_parsed_public_key(params).ok()
            }
            (Verification::Other(algorithm), Material::Point(point)) => ParsedPublicKey::new(algorithm, point).ok(),
            _ => None,
        });
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        parsed
            .as_ref()
            .is_some_and(|key| key.verify_sig(message, &signature).is_ok())
    }

    /// Builds a key from one JWK, or `None` for keys stint never uses:
    /// symmetric (`kty: oct`), encryption keys, unknown types and curves.
    fn from_jwk(jwk: &Jwk) -> Option<VerifyKey> {
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            return None;
        }
        let decode = |text: &str| URL_SAFE_NO_PAD.decode(text).ok();
        let (params, material) = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => (
                KeyParams::Rsa,
                Material::Rsa {
                    n: decode(&rsa.n)?,
                    e: decode(&rsa.e)?,
                },
            ),
            AlgorithmParameters::EllipticCurve(ec) => {
                let params = match ec.curve {
                    EllipticCurve::P256 => KeyParams::EcP256,
                    EllipticCurve::P384 => KeyParams::EcP384,
                    _ => return None,
                };
                let point = [vec![0x04], decode(&ec.x)?, decode(&ec.y)?].concat();
                (params, Material::Point(point))
            }
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                (KeyParams::Ed25519, Material::Point(decode(&okp.x)?))
            }
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(key_alg) => Some(key_alg.to_string().parse::<Algorithm>().ok()?),
        };
        Some(VerifyKey {
            kid: jwk.common.key_id.clone(),
            params,
            alg,
            material,
            parsed: Default::default(),
        })
    }
}

#[derive(Default)]
struct KeyState {
    keys: Vec<Arc<VerifyKey>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    /// Bumped on every fetch attempt, so a waiter can tell that another task
    /// fetched while it queued.
    generation: u64,
}

/// The key cache of one issuer.
pub(crate) struct IssuerKeys {
    issuer_url: String,
    http: reqwest::Client,
    policy: KeyCachePolicy,
    state: RwLock<KeyState>,
    fetching: Mutex<()>,
    fetches: AtomicU64,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawJwkSet {
    keys: Vec<serde_json::Value>,
}

impl IssuerKeys {
    pub fn new(issuer_url: String, http: reqwest::Client, policy: KeyCachePolicy) -> IssuerKeys {
        IssuerKeys {
            issuer_url,
            http,
            policy,
            state: RwLock::new(KeyState::default()),
            fetching: Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// Number of discovery+JWKS fetch attempts so far (for metrics and tests).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetches the keys unless they are already known (start-up warm-up).
    pub async fn warm(&self) {
        let generation = {
            let state = self.state.read().await;
            if state.fetched_at.is_some() {
                return;
            }
            state.generation
        };
        let _ = self.refresh(generation).await;
    }

    /// Whether keys have ever been fetched successfully.
    pub async fn has_keys(&self) -> bool {
        self.state.read().await.fetched_at.is_some()
    }

    /// The key for `kid` that fits `alg`. An unknown `kid` refetches the JWKS
    /// at most once per cooldown; known keys keep working when the issuer is
    /// down.
    pub async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<VerifyKey>, IdentityError> {
        let (found, generation, stale) = {
            let state = self.state.read().await;
            let stale = state.fetched_at.is_none_or(|at| at.elapsed() >= self.policy.max_age);
            (pick(&state.keys, kid, alg), state.generation, stale)
        };
        match found {
            Some(key) if !stale => return Ok(key),
            Some(key) => {
                // Old keys still verify; a failed refresh must not lock users out.
                let _ = self.refresh(generation).await;
                let state = self.state.read().await;
                return Ok(pick(&state.keys, kid, alg).unwrap_or(key));
            }
            None => {}
        }
        // A refresh skipped for the cooldown is not an answer: a broker that
        // never reached the issuer says so (503), it does not blame the token.
        let _ = self.refresh(generation).await;
        let state = self.state.read().await;
        if let Some(key) = pick(&state.keys, kid, alg) {
            return Ok(key);
        }
        if state.fetched_at.is_none() {
            return Err(IdentityError::IssuerUnavailable);
        }
        Err(IdentityError::UnknownKey)
    }

    /// Fetches discovery and JWKS unless another task already did since
    /// `seen_generation`, or the cooldown since the last attempt has not passed.
    async fn refresh(&self, seen_generation: u64) -> Result<(), IdentityError> {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let state = self.state.read().await;
            if state.generation != seen_generation {
                return Ok(()); // coalesced: someone fetched while we waited
            }
            if state
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.policy.refetch_cooldown)
            {
                return Ok(());
            }
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = self.fetch().await;
        let mut state = self.state.write().await;
        state.generation += 1;
        state.last_attempt = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                state.keys = keys;
                state.fetched_at = Some(Instant::now());
                Ok(())
            }
            Err(err) => {
                tracing::warn!(issuer = %self.issuer_url, error = %err, "JWKS refresh failed; keeping known keys");
                Err(IdentityError::IssuerUnavailable)
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Arc<VerifyKey>>, String> {
        use tracing::Instrument;
        let span = crate::exported_span!("jwks.fetch", otel.kind = "client", stint.issuer_url = %self.issuer_url);
        let fetched = self.discover_and_fetch().instrument(span.clone()).await;
        if fetched.is_err() {
            crate::telemetry::mark_error(&span);
        }
        fetched
    }

    async fn discover_and_fetch(&self) -> Result<Vec<Arc<VerifyKey>>, String> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer_url.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&discovery_url).await?;
        if discovery.issuer != self.issuer_url {
            return Err(format!(
                "discovery says issuer `{}`, config says `{}`; they must be equal",
                discovery.issuer, self.issuer_url
            ));
        }
        if !discovery.jwks_uri.starts_with("https://") && self.issuer_url.starts_with("https://") {
            return Err("jwks_uri is not https".to_string());
        }
        let set: RawJwkSet = self.get_json(&discovery.jwks_uri).await?;
        let keys: Vec<Arc<VerifyKey>> = set
            .keys
            .iter()
            .filter_map(|raw| serde_json::from_value::<Jwk>(raw.clone()).ok())
            .filter_map(|jwk| VerifyKey::from_jwk(&jwk))
            .map(Arc::new)
            .collect();
        tracing::info!(issuer = %self.issuer_url, keys = keys.len(), "fetched JWKS");
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let mut response = self
            .http
            .get(url)
            .timeout(self.policy.http_timeout)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(format!("GET {url}: body larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("GET {url}: body larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not the expected JSON: {e}"))
    }
}

/// Picks the key named by `kid`; without a `kid`, the only key that fits.
fn pick(keys: &[Arc<VerifyKey>], kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyKey>> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid) && k.fits(alg))
            .cloned(),
        None => {
            let mut fitting = keys.iter().filter(|k| k.fits(alg));
            match (fitting.next(), fitting.next()) {
                (Some(only), None) => Some(only.clone()),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a failed step is the test's report
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
        RsaEncoding,
    };
    use serde_json::json;

    use super::*;

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn key(jwk: serde_json::Value) -> VerifyKey {
        VerifyKey::from_jwk(&serde_json::from_value(jwk).unwrap()).unwrap()
    }

    /// A JWK of a new RSA key and a signer for `encoding`.
    fn rsa(bits: KeySize) -> (serde_json::Value, impl Fn(&'static dyn RsaEncoding, &[u8]) -> String) {
        let pair = KeyPair::generate(bits).unwrap();
        let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let jwk = json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)});
        let sign = move |encoding: &'static dyn RsaEncoding, message: &[u8]| {
            let mut signature = vec![0; pair.public_modulus_len()];
            pair.sign(encoding, &SystemRandom::new(), message, &mut signature)
                .unwrap();
            b64(signature)
        };
        (jwk, sign)
    }

    /// Every algorithm but `own` is refused: a key never verifies another
    /// kind's signatures, nor its own kind's under another algorithm.
    fn refuses_others(key: &VerifyKey, own: Algorithm, message: &[u8], signature: &str) {
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
            Algorithm::HS256,
        ] {
            if alg != own {
                assert!(
                    !key.verify(alg, message, signature),
                    "{own:?} signature accepted as {alg:?}"
                );
            }
        }
    }

    #[test]
    fn each_rsa_algorithm_verifies_its_own_signatures_only() {
        let (jwk, sign) = rsa(KeySize::Rsa2048);
        let verifier = key(jwk);
        let message = b"header.payload";
        for (alg, encoding) in [
            (
                Algorithm::RS256,
                &signature::RSA_PKCS1_SHA256 as &'static dyn RsaEncoding,
            ),
            (Algorithm::RS384, &signature::RSA_PKCS1_SHA384),
            (Algorithm::RS512, &signature::RSA_PKCS1_SHA512),
            (Algorithm::PS256, &signature::RSA_PSS_SHA256),
            (Algorithm::PS384, &signature::RSA_PSS_SHA384),
            (Algorithm::PS512, &signature::RSA_PSS_SHA512),
        ] {
            let signature = sign(encoding, message);
            // Twice: the second check uses the key parsed by the first.
            assert!(verifier.verify(alg, message, &signature), "{alg:?}");
            assert!(verifier.verify(alg, message, &signature), "{alg:?}, parsed key kept");
            assert!(
                !verifier.verify(alg, b"header.payloaD", &signature),
                "{alg:?}: other bytes"
            );
            refuses_others(&verifier, alg, message, &signature);
        }
        assert!(!verifier.verify(Algorithm::RS256, message, "not base64url!"));
    }

    #[test]
    fn rsa_keys_under_2048_bits_verify_nothing() {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        // The same modulus cut to 1024 bits is a different, small key: refused
        // before any signature is looked at.
        let short = &public.n[..128];
        let verifier = key(json!({"kty": "RSA", "n": b64(short), "e": b64(&public.e)}));
        assert!(!verifier.verify(Algorithm::RS256, b"m", &b64([1u8; 128])));
    }

    #[test]
    fn ecdsa_and_ed25519_keys_verify_their_own_algorithm_only() {
        let rng = SystemRandom::new();
        let message = b"header.payload";
        for (alg, signing, crv, half) in [
            (Algorithm::ES256, &ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
            (Algorithm::ES384, &ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
        ] {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref()).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let (x, y) = point[1..].split_at(half);
            let verifier = key(json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)}));
            let signature = b64(pair.sign(&rng, message).unwrap());
            assert!(verifier.verify(alg, message, &signature), "{alg:?}");
            assert!(
                !verifier.verify(alg, b"header.payloaD", &signature),
                "{alg:?}: other bytes"
            );
            refuses_others(&verifier, alg, message, &signature);
        }
        let pair = Ed25519KeyPair::generate().unwrap();
        let verifier = key(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}));
        let signature = b64(pair.sign(message).as_ref());
        assert!(verifier.verify(Algorithm::EdDSA, message, &signature));
        assert!(!verifier.verify(Algorithm::EdDSA, b"header.payloaD", &signature));
        refuses_others(&verifier, Algorithm::EdDSA, message, &signature);
    }

    #[test]
    fn a_key_whose_jwk_names_an_algorithm_verifies_that_one_only() {
        let (mut jwk, sign) = rsa(KeySize::Rsa2048);
        jwk["alg"] = json!("PS256");
        let verifier = key(jwk);
        let message = b"header.payload";
        assert!(verifier.verify(Algorithm::PS256, message, &sign(&signature::RSA_PSS_SHA256, message)));
        let pkcs1 = sign(&signature::RSA_PKCS1_SHA256, message);
        assert!(
            !verifier.verify(Algorithm::RS256, message, &pkcs1),
            "the JWK says PS256"
        );
    }

    #[test]
    fn keys_with_bytes_that_are_not_base64url_are_left_out() {
        let jwk = |n: &str| serde_json::from_value::<Jwk>(json!({"kty": "RSA", "n": n, "e": "AQAB"})).unwrap();
        assert!(VerifyKey::from_jwk(&jwk("AQAB")).is_some());
        assert!(VerifyKey::from_jwk(&jwk("no+slash/")).is_none());
    }
}
