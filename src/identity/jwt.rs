//! Taking a compact JWS apart without trusting any of it yet.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::IdentityError;
use super::strict_json::parse_object;

/// The parts of a compact JWS, header and payload parsed strictly.
pub(crate) struct Jws<'a> {
    pub header: Header,
    pub payload: Map<String, Value>,
    /// `base64(header) "." base64(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The third segment, still base64url.
    pub signature: &'a str,
}

/// The protected header fields stint looks at.
pub(crate) struct Header {
    pub alg: String,
    pub kid: Option<String>,
}

impl<'a> Jws<'a> {
    /// Splits and decodes `token`. Checks here are structural; nothing is
    /// trusted until the signature is verified with the issuer's key.
    pub fn parse(token: &'a str) -> Result<Jws<'a>, IdentityError> {
        let malformed = |why: &str| IdentityError::Malformed(why.to_string());
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("a JWT has three dot-separated parts"));
        };
        if s.is_empty() {
            // alg=none tokens end in an empty signature.
            return Err(malformed("the token is not signed"));
        }
        let signing_input = token
            .get(..h.len() + 1 + p.len())
            .ok_or_else(|| malformed("a JWT has three dot-separated parts"))?;
        let header_json = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| malformed("the header is not base64url"))?;
        let payload_json = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| malformed("the payload is not base64url"))?;
        let header = parse_object(&header_json).map_err(|e| {
            if e.contains("duplicate key") {
                IdentityError::DuplicateClaim
            } else {
                malformed("the header is not a JSON object")
            }
        })?;
        let payload = parse_object(&payload_json).map_err(|e| {
            if e.contains("duplicate key") {
                IdentityError::DuplicateClaim
            } else {
                malformed("the payload is not a JSON object")
            }
        })?;
        Ok(Jws {
            header: Header::check(&header)?,
            payload,
            signing_input,
            signature: s,
        })
    }
}

impl Header {
    fn check(header: &Map<String, Value>) -> Result<Header, IdentityError> {
        // No extension stint understands, so any critical one must be refused
        // (RFC 7515 §4.1.11).
        if header.contains_key("crit") {
            return Err(IdentityError::CriticalHeader);
        }
        match header.get("typ") {
            None => {}
            Some(Value::String(typ)) if typ.eq_ignore_ascii_case("JWT") => {}
            Some(_) => return Err(IdentityError::TokenType),
        }
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            _ => return Err(IdentityError::Malformed("the header has no `alg`".to_string())),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(IdentityError::Malformed("the header `kid` is not a string".to_string())),
        };
        Ok(Header { alg, kid })
    }
}
