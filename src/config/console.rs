//! `console:`: how `stint audit console` serves beyond loopback. Off
//! loopback it must have TLS and sign each person in (OIDC authorization
//! code flow with PKCE against an issuer of `issuers:`, whose `audience`
//! is the console's client id); who may look is what `auditors:` admits.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawConsole;
use super::{FieldError, TlsSettings, duration_at, field};

/// `console:` as validated.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The URL people open (the sign-in redirect comes back to
    /// `public_url` + `/auth/callback`).
    pub public_url: String,
    /// TLS of the console's listener.
    pub tls: Option<TlsSettings>,
    /// Sign-in, if set.
    pub sign_in: Option<SignIn>,
    /// How long a signed-in session lasts.
    pub session: Duration,
}

/// `console.sign_in`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    /// The issuer (config name) people sign in with; its `audience` is the
    /// console's OAuth client id.
    pub issuer: String,
    /// The client secret, for an IdP that wants one beside PKCE.
    pub client_secret_file: Option<PathBuf>,
}

/// Where the console listens by default: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8430";

/// Longest session: an hour, as the issue of record asks; shorter is fine.
const MAX_SESSION: Duration = Duration::from_secs(3600);

pub(super) fn settings(
    raw: RawConsole,
    issuers: &BTreeSet<&str>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<ConsoleSettings, FieldError> {
    let listen: SocketAddr = raw
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_LISTEN)
        .parse()
        .map_err(|_| field(".listen", "not an address: write e.g. 0.0.0.0:8443"))?;
    let tls = raw.tls.as_ref().map(|t| TlsSettings::resolved(t, resolve));
    let sign_in = raw.sign_in.map(|s| SignIn {
        issuer: s.issuer,
        client_secret_file: s.client_secret_file.as_deref().map(resolve),
    });
    if let Some(s) = &sign_in
        && !issuers.contains(s.issuer.as_str())
    {
        return Err(field(
            ".sign_in.issuer",
            format!(
                "`{}` is not under `issuers:`: add your IdP there, with the console's client id as its audience",
                s.issuer
            ),
        ));
    }
    if !listen.ip().is_loopback() && (tls.is_none() || sign_in.is_none()) {
        return Err(field(
            ".listen",
            format!(
                "{listen} is not loopback: the console then needs `tls` and `sign_in`, so each person signs in over HTTPS"
            ),
        ));
    }
    if sign_in.is_some() && tls.is_none() {
        return Err(field(
            ".tls",
            "sign-in needs TLS: its session cookie is only ever sent over HTTPS",
        ));
    }
    let public_url = match raw.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None if sign_in.is_some() => {
            return Err(field(
                ".public_url",
                "missing: the https:// URL people open (the sign-in comes back to it)",
            ));
        }
        None => format!("http://{listen}"),
    };
    if sign_in.is_some() && !public_url.starts_with("https://") {
        return Err(field(".public_url", "must be https:// with sign-in"));
    }
    let session = match &raw.session {
        Some(text) => duration_at(".session", text)?,
        None => MAX_SESSION,
    };
    if session.is_zero() || session > MAX_SESSION {
        return Err(field(".session", "between 1s and 1h: a console session is short"));
    }
    Ok(ConsoleSettings {
        listen,
        public_url,
        tls,
        sign_in,
        session,
    })
}
