//! Writing into a subscription the way a peer that is not longshore would: with the broker's
//! own client, past every limit longshore's publishers keep, so the consumer side meets what
//! the wire can really carry.

use std::sync::Arc;

use longshore_core::{async_trait, Message, Publisher};

/// A broker's raw client, given to the suite by each adapter's tests
/// (`conformance!(…, raw: common::raw, …)`).
#[async_trait]
pub trait RawPublisher: Send + Sync {
    /// Publishes `body` with `headers` and message id `id` to `topic` (as longshore maps
    /// topics onto the broker), checking nothing, and waits until the broker stored it.
    async fn publish_raw(
        &self,
        topic: &str,
        id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), String>;

    /// The largest body this client can write in one message with a few small headers:
    /// the broker's own limit where it is below `longshore_limit` + 1 (NATS, Kafka), else
    /// `longshore_limit` + 1, one byte more than longshore's publisher takes.
    fn largest_body(&self, longshore_limit: usize) -> usize {
        longshore_limit + 1
    }

    /// Whether this client can write what longshore's publisher refuses (too many or too
    /// large headers, a body over longshore's limit). False for the fallback.
    fn bypasses_limits(&self) -> bool {
        true
    }
}

/// The fallback where a backend has no other writer (memory): longshore's own publisher.
pub(crate) struct ThroughPublisher(pub(crate) Arc<dyn Publisher>);

#[async_trait]
impl RawPublisher for ThroughPublisher {
    async fn publish_raw(
        &self,
        topic: &str,
        id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), String> {
        let mut message = Message::new(body.to_vec()).with_id(id);
        for (name, value) in headers {
            message = message.with_header(name.clone(), value.clone());
        }
        self.0
            .publish(topic, message)
            .await
            .map_err(|e| e.to_string())
    }

    fn bypasses_limits(&self) -> bool {
        false
    }
}
