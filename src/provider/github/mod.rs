//! GitHub as an upstream: the App client (JWT, installations, tokens,
//! rate limits). The `github` grant kind that uses it, with its leases,
//! is `crate::leases::GithubProvider`.

mod app;

pub use app::{AppSettings, DEFAULT_API_URL, GithubApp, GithubError, InstallationToken, parse_key};
