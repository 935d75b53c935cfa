//! Shipping the audit log to a SIEM (`audit.ship`): every committed record
//! and checkpoint, in `seq` order, to an HTTP webhook, Splunk HEC or
//! syslog, with the sink's position kept in the audit store so that a
//! restart, a crash or a sink outage never loses a record and resends at
//! most the batch that was not acknowledged (at-least-once: each event
//! carries its `seq` and `record_hash`, so a receiver can drop repeats).
//!
//! Below the broker and beside it: the broker starts a shipper per sink
//! next to its listeners, `stint audit ship` runs the same loop in a
//! process of its own, and a claim in the store lets only one of them ship
//! a sink at a time.

pub mod commands;
mod event;
mod http;
pub mod ocsf;
pub mod position;
mod settings;
mod shipper;
mod syslog;
mod transport;

use std::sync::Arc;
use std::time::Duration;

pub use settings::{FACILITIES, Format, Secret, SinkKind, SinkSettings};
pub use shipper::{Shipper, Summary};

use crate::metrics::Metrics;

/// A shipper for `settings`, its transport built now: a token, CA file or
/// address that cannot be used is an error `(key, message)`, the key below
/// `audit.ship.NAME`.
pub fn shipper(
    settings: &SinkSettings,
    store: &str,
    store_timeout: Duration,
    metrics: Arc<Metrics>,
) -> Result<Shipper, (String, String)> {
    let transport = transport::open(settings)?;
    Ok(Shipper::new(settings.clone(), transport, store, store_timeout, metrics))
}

/// The shippers of the sinks the broker ships (`in_broker`), checked now
/// so a sink that cannot work stops the start before anything is opened.
/// An error names its key (`audit.ship.NAME.token_file`).
pub fn in_broker(
    sinks: &[SinkSettings],
    store: &str,
    store_timeout: Duration,
    metrics: &Arc<Metrics>,
) -> Result<Vec<Shipper>, (String, String)> {
    sinks
        .iter()
        .filter(|s| s.in_broker)
        .map(|settings| {
            shipper(settings, store, store_timeout, metrics.clone())
                .map_err(|(key, message)| (format!("audit.ship.{}{key}", settings.name), message))
        })
        .collect()
}
