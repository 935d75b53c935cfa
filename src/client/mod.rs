//! The client side: find the CI/workload OIDC token, ask the broker, and
//! hand the credential to a command (`exec`), an AWS SDK
//! (`credential-process`) or a script (`token`), and end what `exec` was
//! issued once its command has exited; `exec --watch` keeps a
//! long-running command supplied (renewal, files, overlapping roles).

pub mod broker;
pub mod child;
pub mod commands;
pub mod credential_process;
pub mod discovery;
pub mod env;
pub mod exec;
pub mod files;
pub mod git_credential;
pub mod retry;
pub mod revoke;
pub mod schedule;
pub mod watch;

pub use broker::{BrokerClient, BrokerTls, ClientError};
pub use discovery::{Discovery, DiscoveryError, ProcessEnv, Source};
