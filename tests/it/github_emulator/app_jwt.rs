//! Verifies an App JWT as GitHub does ("Generating a JSON Web Token (JWT)
//! for a GitHub App"), refusing with GitHub's own messages.

use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::GitHub;

/// The most `exp` may lie ahead of GitHub's clock.
const MAX_LIFETIME_SECS: i64 = 600;

/// Why GitHub refused a JWT; each is a 401.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum JwtRefusal {
    /// Not a JWT, not RS256, not signed by this App's key, or another `iss`.
    Undecodable,
    /// `iat` missing, not an integer, or in the future.
    IssuedAt,
    /// `exp` missing, not a number, or past.
    Expiration,
    /// `exp` more than 10 minutes ahead.
    TooFarInFuture,
}

impl JwtRefusal {
    pub(super) fn message(&self) -> &'static str {
        match self {
            JwtRefusal::Undecodable => "A JSON web token could not be decoded",
            JwtRefusal::IssuedAt => {
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
            }
            JwtRefusal::Expiration => {
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
            }
            JwtRefusal::TooFarInFuture => "'Expiration time' claim ('exp') is too far in the future",
        }
    }
}

/// Checks `Authorization: Bearer <JWT>` for `github`'s App at `now`.
pub(super) fn verify(github: &GitHub, authorization: Option<&str>, now: i64) -> Result<(), JwtRefusal> {
    // A JWT is only ever taken as Bearer ("if you are passing a JWT, you
    // must use Authorization: Bearer").
    let jwt = authorization
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, jwt)| jwt.trim())
        .ok_or(JwtRefusal::Undecodable)?;
    let mut parts = jwt.split('.');
    let (Some(header), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtRefusal::Undecodable);
    };
    let header_json = json_object(header)?;
    if header_json.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(JwtRefusal::Undecodable);
    }
    let claims = json_object(payload)?;
    // `iss` picks the App whose public key checks the signature.
    if !issued_by(github, claims.get("iss")) {
        return Err(JwtRefusal::Undecodable);
    }
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| JwtRefusal::Undecodable)?;
    let public_key = super::keys::app_key().public_key();
    UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key.as_ref())
        .verify(format!("{header}.{payload}").as_bytes(), &sig)
        .map_err(|_| JwtRefusal::Undecodable)?;
    // GitHub allows next to no skew on `iat`: a runner 10 s ahead of it, with
    // `iat` back-dated 10 s, was refused (microsoft/AL-Go#2289).
    match claims.get("iat").and_then(Value::as_i64) {
        Some(iat) if iat <= now => {}
        _ => return Err(JwtRefusal::IssuedAt),
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(JwtRefusal::Expiration)?;
    if exp <= now as f64 {
        return Err(JwtRefusal::Expiration);
    }
    if exp > (now + MAX_LIFETIME_SECS) as f64 {
        return Err(JwtRefusal::TooFarInFuture);
    }
    Ok(())
}

/// `iss` may be the App id as a number or a string, or the client id.
fn issued_by(github: &GitHub, iss: Option<&Value>) -> bool {
    match iss {
        Some(Value::Number(n)) => n.as_u64() == Some(github.app_id),
        Some(Value::String(s)) => *s == github.app_id.to_string() || *s == github.client_id,
        _ => false,
    }
}

fn json_object(segment: &str) -> Result<Map<String, Value>, JwtRefusal> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| JwtRefusal::Undecodable)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtRefusal::Undecodable),
    }
}
