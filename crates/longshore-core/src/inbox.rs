//! The inbox port: processed message ids per consumer, so a handler runs once per id.

use async_trait::async_trait;

use crate::store::StoreError;

/// Remembers processed message ids per consumer, so a handler runs once per message id.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Whether `consumer` already processed `message_id`.
    async fn is_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError>;
    /// Records that `consumer` processed `message_id`. Returns false if it was already there.
    async fn mark_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError>;
}
