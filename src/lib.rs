//! stint: a short-lived secrets broker.
//!
//! The request flow is identity → policy → provider → audit, one module each;
//! [`broker`] is the only place where the whole flow is written down.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod agent;
pub mod audit;
pub mod broker;
pub mod client;
pub mod clock;
pub mod config;
pub mod console;
pub mod dev;
pub mod duration;
pub mod http;
pub mod identity;
pub mod keys;
pub mod leases;
pub mod lint;
pub mod metrics;
pub mod percent;
pub mod pg_tls;
pub mod policy;
pub mod policy_tools;
pub mod private_file;
pub mod provider;
pub mod redact;
pub mod reload;
pub mod server;
pub mod ship;
pub mod telemetry;
pub mod template;
