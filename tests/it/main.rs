//! One integration-test binary (one link) with a module per concern.
//! Every test runs the real broker on a free port against a real OIDC issuer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod github_emulator;
mod harness;
mod issuer;
mod moto;
mod process;
mod receivers;
mod tcp_fault;

mod admin;
mod agent;
mod agent_lifecycle;
mod attacks;
mod audit;
mod availability;
mod aws;
mod chain;
mod chart;
mod cli;
mod client;
mod client_retry;
mod console;
mod console_signin;
mod exec_leases;
mod faults;
mod github;
mod hygiene;
mod identity;
mod issue;
mod jwks;
mod layers;
mod leases;
mod leases_list;
mod limits;
mod openapi;
mod policy;
mod policy_tools;
mod reload;
mod replicas;
mod secrets;
mod ship;
mod ship_outages;
mod store;
mod telemetry;
mod tls;
mod watch;
