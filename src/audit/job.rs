//! What a store's single writer is asked to make durable. Both stores
//! take both kinds of job on one queue, so a single-use token is recorded
//! in the same transaction (and the same sync) as the records queued with
//! it, instead of a transaction of its own per request.

use tokio::sync::oneshot;

use super::columns::JsonColumns;
use super::{AuditError, AuditRecord};

// Appends are nearly every job: boxing the record to shrink the rare
// variant would cost an allocation per append instead.
#[allow(clippy::large_enum_variant)]
pub(super) enum Job {
    /// A record to append (its claims and detail serialized by the caller),
    /// and who to tell, with the record as stored, once it is durable.
    Append {
        record: AuditRecord,
        json: JsonColumns,
        done: oneshot::Sender<Result<AuditRecord, AuditError>>,
    },
    /// A single-use token's key to record until `expires_at`, and who to
    /// tell whether it was new once that is durable.
    FirstUse {
        key: String,
        expires_at: i64,
        done: oneshot::Sender<Result<bool, AuditError>>,
    },
}
