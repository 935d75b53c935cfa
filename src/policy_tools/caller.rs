//! Who is asking, for the review tools: claims from a file, from a token
//! (decoded, not verified) or from an audit record, and the issuer they
//! belong to.

use std::path::Path;

use serde_json::{Map, Value};

use crate::config::Config;
use crate::identity::{self, Claims, IssuerConfig};

/// A caller as policy sees one.
#[derive(Debug)]
pub struct Caller {
    /// Config name of the issuer.
    pub issuer: String,
    /// Claims, flattened.
    pub claims: Claims,
    /// What the platform's shape check said, when it objected.
    pub shape_warning: Option<String>,
}

/// Reads a JSON or YAML map of claims.
pub fn read_claims(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(format!("{}: expected a map of claims", path.display())),
    }
}

/// Reads a token (JWT) from a file and decodes its payload. The signature is
/// not checked: this only says what policy would do with these claims.
pub fn read_token(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    identity::unverified_payload(&text).map_err(|e| format!("{}: not a token: {e}", path.display()))
}

fn issuer_named<'a>(config: &'a Config, name: &str) -> Result<&'a IssuerConfig, String> {
    config.issuers.iter().find(|i| i.name == name).ok_or_else(|| {
        let known: Vec<&str> = config.issuers.iter().map(|i| i.name.as_str()).collect();
        format!("no issuer is called `{name}` (known: {})", known.join(", "))
    })
}

/// The caller of `claims`: its issuer is `issuer` when given, else the one
/// whose URL is the claims' `iss`.
pub fn caller(config: &Config, claims: &Map<String, Value>, issuer: Option<&str>) -> Result<Caller, String> {
    let config_issuer = match issuer {
        Some(name) => issuer_named(config, name)?,
        None => {
            let iss = claims
                .get("iss")
                .and_then(Value::as_str)
                .ok_or("the claims have no `iss`: name the issuer (--issuer NAME, or `issuer:` in a case)")?;
            // Exactly as the broker compares it: no trailing-slash leniency.
            config
                .issuers
                .iter()
                .find(|i| i.url == iss)
                .ok_or_else(|| format!("`iss` {iss} is not a configured issuer"))?
        }
    };
    let (claims, shape_warning) = identity::review_claims(config_issuer.platform, claims)?;
    Ok(Caller {
        issuer: config_issuer.name.clone(),
        claims,
        shape_warning,
    })
}
