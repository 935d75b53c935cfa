//! Asymmetric signing keys that stint holds: the key that signs issued
//! tokens, and the development issuer's key. Stored as PKCS#8 PEM, 0600.

use std::fs;
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// Signature algorithms stint signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// Ed25519 (the default: small, fast, deterministic).
    EdDSA,
    /// ECDSA P-256 / SHA-256, for verifiers without Ed25519.
    ES256,
}

impl SigningAlgorithm {
    /// Parses the JOSE name.
    pub fn from_name(name: &str) -> Option<SigningAlgorithm> {
        match name {
            "EdDSA" => Some(SigningAlgorithm::EdDSA),
            "ES256" => Some(SigningAlgorithm::ES256),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDSA => "EdDSA",
            SigningAlgorithm::ES256 => "ES256",
        }
    }
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
}

/// A private signing key with its public JWK and key id.
pub struct SigningKey {
    alg: SigningAlgorithm,
    pair: Pair,
    kid: String,
    /// The JWS header every token carries, base64url: the same for each.
    header_b64: String,
}

/// Why a key could not be loaded or created. Never contains key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a PKCS#8 key of the configured algorithm.
    #[error(
        "{path}: not a PKCS#8 {alg} private key in PEM (delete it to let stint create a new one, or fix `algorithm`)"
    )]
    Invalid {
        /// The key file.
        path: String,
        /// The expected algorithm.
        alg: &'static str,
    },
    /// The file is readable by other users: the message names the fix.
    #[error("{0}")]
    Exposed(String),
    /// Key generation failed in the crypto library.
    #[error("key generation failed")]
    Generate,
}

impl SigningKey {
    /// Creates a fresh key.
    pub fn generate(alg: SigningAlgorithm) -> Result<SigningKey, KeyError> {
        let pkcs8 = generate_pkcs8(alg)?;
        SigningKey::from_pkcs8(alg, &pkcs8).ok_or(KeyError::Generate)
    }

    /// Loads the key at `path`, creating it (mode 0600) when the file does
    /// not exist. A key file other users can read is refused with the fix.
    pub fn load_or_create(path: &Path, alg: SigningAlgorithm) -> Result<SigningKey, KeyError> {
        let shown = path.display().to_string();
        match fs::read_to_string(path) {
            Ok(pem) => {
                crate::private_file::check_key_mode(path).map_err(KeyError::Exposed)?;
                let der = pem_decode(&pem).ok_or(KeyError::Invalid {
                    path: shown.clone(),
                    alg: alg.name(),
                })?;
                SigningKey::from_pkcs8(alg, &der).ok_or(KeyError::Invalid {
                    path: shown,
                    alg: alg.name(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = generate_pkcs8(alg)?;
                match write_private(path, pem_encode("PRIVATE KEY", &der).as_bytes()) {
                    Ok(()) => {}
                    // Another replica created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return SigningKey::load_or_create(path, alg);
                    }
                    Err(source) => return Err(KeyError::Io { path: shown, source }),
                }
                tracing::info!(path = %shown, alg = alg.name(), "created a new signing key");
                SigningKey::from_pkcs8(alg, &der).ok_or(KeyError::Invalid {
                    path: shown,
                    alg: alg.name(),
                })
            }
            Err(source) => Err(KeyError::Io { path: shown, source }),
        }
    }

    fn from_pkcs8(alg: SigningAlgorithm, der: &[u8]) -> Option<SigningKey> {
        let pair = match alg {
            SigningAlgorithm::EdDSA => Pair::Ed(Ed25519KeyPair::from_pkcs8(der).ok()?),
            SigningAlgorithm::ES256 => {
                Pair::Ec(EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der).ok()?)
            }
        };
        let mut key = SigningKey {
            alg,
            pair,
            kid: String::new(),
            header_b64: String::new(),
        };
        key.kid = key.thumbprint();
        let header = json!({"alg": alg.name(), "kid": key.kid, "typ": "JWT"});
        key.header_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).ok()?);
        Some(key)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    /// Key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.public_members();
        if let Value::Object(map) = &mut jwk {
            map.insert("kid".into(), Value::String(self.kid.clone()));
            map.insert("alg".into(), Value::String(self.alg.name().into()));
            map.insert("use".into(), Value::String("sig".into()));
        }
        jwk
    }

    /// The required members only, in the order RFC 7638 hashes them.
    fn public_members(&self) -> Value {
        match &self.pair {
            Pair::Ed(pair) => json!({
                "crv": "Ed25519",
                "kty": "OKP",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
            Pair::Ec(pair) => {
                // Uncompressed point: 0x04 || X (32) || Y (32).
                let point = pair.public_key().as_ref();
                let x = point.get(1..33).unwrap_or_default();
                let y = point.get(33..65).unwrap_or_default();
                json!({"crv": "P-256", "kty": "EC", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
            }
        }
    }

    fn thumbprint(&self) -> String {
        // serde_json's map is ordered by key, which is what RFC 7638 requires.
        let canonical = self.public_members().to_string();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    /// Signs `claims` as a compact JWS with `typ: JWT` and this key's `kid`.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Generate)?;
        // One buffer for the whole token: header, payload, then signature.
        let mut token = String::with_capacity(self.header_b64.len() + payload.len().div_ceil(3) * 4 + 100);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = match &self.pair {
            Pair::Ed(pair) => pair.sign(token.as_bytes()),
            Pair::Ec(pair) => pair
                .sign(&SystemRandom::new(), token.as_bytes())
                .map_err(|_| KeyError::Generate)?,
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

fn generate_pkcs8(alg: SigningAlgorithm) -> Result<Vec<u8>, KeyError> {
    let rng = SystemRandom::new();
    let doc = match alg {
        SigningAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?,
        SigningAlgorithm::ES256 => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Generate)?,
    };
    Ok(doc.as_ref().to_vec())
}

/// Writes a secret file readable by its owner only; see
/// [`crate::private_file::write_new`].
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::private_file::write_new(path, bytes)
}

/// PEM with 64-column lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first PEM block.
pub fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "))
        .collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_verify_with_the_published_jwk() {
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let key = SigningKey::generate(alg).map_err(|e| e.to_string());
            let Ok(key) = key else { unreachable!("keygen failed") };
            let token = key.sign_jwt(&json!({"sub": "x"})).unwrap_or_default();
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(key.public_jwk()).unwrap_or_else(|_| unreachable!());
            let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap_or_else(|_| unreachable!());
            let mut validation = jsonwebtoken::Validation::new(alg.name().parse().unwrap_or_default());
            validation.required_spec_claims.clear();
            validation.validate_exp = false;
            assert!(
                jsonwebtoken::decode::<Value>(&token, &decoding, &validation).is_ok(),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn pem_round_trips() {
        let der = vec![1u8, 2, 3, 250, 251, 252];
        assert_eq!(pem_decode(&pem_encode("PRIVATE KEY", &der)), Some(der));
    }
}
