//! Outbox and inbox ports.
//!
//! The outbox gets every stored event onto the broker: the event store writes outbox rows in
//! the same transaction as the events, and a relay publishes them with confirmations and marks
//! them sent only afterwards (at-least-once, never lost). The inbox makes a handler idempotent
//! by remembering the message ids it has processed.

use async_trait::async_trait;

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

/// Storage side of a transactional outbox.
///
/// A relay calls [`Outbox::claim`], publishes, then [`Outbox::mark_sent`] with the
/// confirmed rows, and [`Outbox::release`] for the rest. Claims must keep several relays from
/// sending the same rows in the normal path and keep one aggregate's rows in order.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims up to `limit` unsent rows in sequence order for `relay`. A claim that is not
    /// marked or released within the backend's lease is given to another relay.
    async fn claim(&self, relay: &str, limit: usize) -> Result<Vec<OutboxMessage>, StoreError>;
    /// Marks rows as sent (after the publisher confirmed them).
    async fn mark_sent(&self, relay: &str, seqs: &[u64]) -> Result<(), StoreError>;
    /// Gives claimed rows back (their publish failed) so they are tried again.
    async fn release(&self, relay: &str, seqs: &[u64]) -> Result<(), StoreError>;
    /// Number of unsent rows (for metrics and tests).
    async fn pending(&self) -> Result<u64, StoreError>;
}

/// Remembers processed message ids per consumer, so a handler runs once per message id.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Whether `consumer` already processed `message_id`.
    async fn is_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError>;
    /// Records that `consumer` processed `message_id`. Returns false if it was already there.
    async fn mark_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError>;
}
