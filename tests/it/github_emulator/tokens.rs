//! Installation access tokens: what a request may ask for, how GitHub
//! narrows a token to it, and how tokens look.

use std::collections::BTreeMap;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::{GitHub, IssuedToken, Repository, TokenState, permissions};

/// GitHub's lifetime for an installation token.
const TOKEN_LIFETIME_SECS: i64 = 3600;
/// "Up to 500 repositories can be listed in this manner."
const MAX_REPOSITORIES: usize = 500;

pub(super) const NOT_ACCESSIBLE: &str =
    "There is at least one repository that does not exist or is not accessible to the parent installation.";
const TOO_MANY_REPOSITORIES: &str = "Invalid request.\n\nAt most 500 repositories may be listed.";
pub(super) const NOT_GRANTED: &str = "The permissions requested are not granted to this installation.";

/// The body of `POST /app/installations/{id}/access_tokens`.
#[derive(Default, Deserialize)]
pub(super) struct TokenRequest {
    repositories: Option<Vec<String>>,
    repository_ids: Option<Vec<u64>>,
    permissions: Option<BTreeMap<String, String>>,
}

/// Why a token was not issued.
#[derive(Debug)]
pub(super) enum TokenRefusal {
    /// 404: no such installation of this App.
    NoInstallation,
    /// 422, with GitHub's message.
    Unprocessable(&'static str),
}

/// A token issued, with the repositories to answer with (`None` when the
/// request named none: GitHub then leaves `repositories` out).
pub(super) struct Minted {
    pub issued: IssuedToken,
    pub named_repositories: Option<Vec<Repository>>,
}

impl GitHub {
    /// Issues a token for installation `id` narrowed to `request`.
    pub(super) fn mint(
        &self,
        id: u64,
        request: TokenRequest,
        stateless: Option<bool>,
        now: i64,
    ) -> Result<Minted, TokenRefusal> {
        let mut world = self.world();
        let installation = world.installation(id).cloned().ok_or(TokenRefusal::NoInstallation)?;
        let names = request.repositories.unwrap_or_default();
        let ids = request.repository_ids.unwrap_or_default();
        let narrowed = !names.is_empty() || !ids.is_empty();
        if names.len() + ids.len() > MAX_REPOSITORIES {
            // The limit is documented, its refusal's wording is not.
            return Err(TokenRefusal::Unprocessable(TOO_MANY_REPOSITORIES));
        }
        let mut chosen: Vec<Repository> = Vec::new();
        for name in &names {
            let repo = installation
                .repositories
                .iter()
                .find(|r| r.name.eq_ignore_ascii_case(name))
                .ok_or(TokenRefusal::Unprocessable(NOT_ACCESSIBLE))?;
            chosen.push(repo.clone());
        }
        for wanted in &ids {
            let repo = installation
                .repositories
                .iter()
                .find(|r| r.id == *wanted)
                .ok_or(TokenRefusal::Unprocessable(NOT_ACCESSIBLE))?;
            chosen.push(repo.clone());
        }
        if !narrowed {
            chosen = installation.repositories.clone();
        }
        chosen.sort_by(|a, b| a.name.cmp(&b.name));
        chosen.dedup_by_key(|r| r.id);

        let permissions = match request.permissions.filter(|p| !p.is_empty()) {
            None => installation.permissions.clone(),
            Some(asked) => {
                for (name, level) in &asked {
                    let held = installation.permissions.get(name);
                    let granted =
                        permissions::is_valid(name, level) && held.is_some_and(|held| permissions::covers(held, level));
                    if !granted {
                        return Err(TokenRefusal::Unprocessable(NOT_GRANTED));
                    }
                }
                let mut permissions = asked;
                if let Some(metadata) = installation.permissions.get("metadata") {
                    permissions.entry("metadata".into()).or_insert_with(|| metadata.clone());
                }
                permissions
            }
        };

        let stateless = stateless.unwrap_or(world.stateless_tokens);
        let token = if stateless {
            stateless_token(self.app_id)
        } else {
            format!("ghs_{}", alphanumerics(36))
        };
        let expires_at = now + TOKEN_LIFETIME_SECS;
        let issued = IssuedToken {
            token: token.clone(),
            installation_id: id,
            repositories: chosen.iter().map(|r| r.name.clone()).collect(),
            permissions,
            expires_at: stint::clock::rfc3339(expires_at),
            hashed_token: hashed_token(&token),
        };
        world.tokens.insert(
            token,
            TokenState {
                installation_id: id,
                repositories: chosen.clone(),
                expires_at,
                revoked: false,
            },
        );
        world.issued.push(issued.clone());
        Ok(Minted {
            issued,
            named_repositories: narrowed.then_some(chosen),
        })
    }

    /// The live token behind `Authorization: token X` / `Bearer X`, or
    /// `None` (unknown, revoked, expired: all "Bad credentials").
    pub(super) fn live_token(&self, authorization: Option<&str>, now: i64) -> Option<String> {
        let (scheme, token) = authorization?.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("token") && !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        let world = self.world();
        let state = world.tokens.get(token)?;
        let live = !state.revoked && state.expires_at > now;
        live.then(|| token.to_string())
    }
}

/// GitHub's audit-log `hashed_token`: base64 of the token's SHA-256.
pub(super) fn hashed_token(token: &str) -> String {
    STANDARD.encode(digest(&SHA256, token.as_bytes()).as_ref())
}

/// A stateless token as GitHub's 2026 format: `ghs_`, then a JWT-like body
/// of ~520 characters with two dots, within GitHub's recommended pattern
/// `ghs_[A-Za-z0-9._]{36,}`.
fn stateless_token(app_id: u64) -> String {
    format!(
        "ghs_{app_id}_{}.{}.{}",
        alphanumerics(36),
        alphanumerics(390),
        alphanumerics(86)
    )
}

fn alphanumerics(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}
