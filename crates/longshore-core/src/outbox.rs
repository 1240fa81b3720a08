//! Outbox and inbox ports.
//!
//! The outbox gets every stored event onto the broker: the event store writes outbox rows in
//! the same transaction as the events, and a relay publishes them with confirmations and marks
//! them sent only afterwards (at-least-once, never lost). A row the broker keeps refusing
//! (unroutable, rejected, too large, undecodable) is parked after a bounded number of attempts,
//! with its error, so it never holds back the rows behind it; [`Outbox::failed`] lists parked
//! rows and [`Outbox::retry_failed`] puts them back. The inbox makes a handler idempotent by
//! remembering the message ids it has processed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::message::Message;
use crate::store::StoreError;

/// A message waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Outbox sequence number; rows are relayed in this order.
    pub seq: u64,
    /// Destination topic.
    pub topic: String,
    /// The message to publish.
    pub message: Message,
}

/// An outbox row parked after its publish failed permanently (see [`Outbox::record_failure`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedOutboxMessage {
    /// Outbox sequence number.
    pub seq: u64,
    /// Destination topic.
    pub topic: String,
    /// The message, as it would be published (without a body when the row could not even be
    /// read back: see `error`).
    pub message: Message,
    /// Publish attempts made.
    pub attempts: u32,
    /// The last error, as text (never holds credentials: adapters' errors are redacted).
    pub error: String,
    /// When the row was parked.
    pub failed_at: DateTime<Utc>,
}

/// Storage side of a transactional outbox.
///
/// A relay calls [`Outbox::claim`], publishes, then [`Outbox::mark_sent`] with the
/// confirmed rows, [`Outbox::release`] for rows to try again later, and
/// [`Outbox::record_failure`] for rows the broker refused for good. Claims must keep several
/// relays from sending the same rows in the normal path and keep one aggregate's rows in order;
/// parked rows are never claimed.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims up to `limit` unsent, unparked rows in sequence order for `relay`. A claim that
    /// is not marked or released within the backend's lease is given to another relay. A row
    /// that cannot be read back as a message is parked here, with the reason, instead of
    /// failing the claim.
    async fn claim(&self, relay: &str, limit: usize) -> Result<Vec<OutboxMessage>, StoreError>;
    /// Marks rows as sent (after the publisher confirmed them).
    async fn mark_sent(&self, relay: &str, seqs: &[u64]) -> Result<(), StoreError>;
    /// Gives claimed rows back (their publish failed) so they are tried again.
    async fn release(&self, relay: &str, seqs: &[u64]) -> Result<(), StoreError>;
    /// Counts a permanent publish failure of the claimed row `seq`: the row is released with
    /// its attempt counted, or parked with `error` once it has failed `max_attempts` times.
    /// Returns whether it was parked.
    async fn record_failure(
        &self,
        relay: &str,
        seq: u64,
        error: &str,
        max_attempts: u32,
    ) -> Result<bool, StoreError>;
    /// Number of rows waiting to be relayed (parked rows not included).
    async fn pending(&self) -> Result<u64, StoreError>;
    /// Number of parked rows.
    async fn failed_count(&self) -> Result<u64, StoreError>;
    /// Up to `limit` parked rows, oldest first.
    async fn failed(&self, limit: usize) -> Result<Vec<FailedOutboxMessage>, StoreError>;
    /// Puts parked rows back in the outbox, attempts reset, to be relayed in their original
    /// sequence order. Returns how many were parked and are now pending again.
    async fn retry_failed(&self, seqs: &[u64]) -> Result<u64, StoreError>;
}
