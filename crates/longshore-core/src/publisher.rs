//! The publishing port.

use std::sync::Arc;

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::codec::Codec;
use crate::error::{BatchError, Error};
use crate::health::Health;
use crate::message::Message;

/// Sends messages to topics.
///
/// `Ok` means the backend has taken responsibility for the message: a RabbitMQ publisher
/// confirm, a Kafka delivery report with `acks=all`, a JetStream PubAck, a Postgres commit.
/// Implementations validate the topic and [`Message::check_limits`] before sending anything.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one message and waits for the backend's confirmation.
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error>;

    /// Publishes many messages to one topic, keeping their order, with confirmations
    /// pipelined (never one round trip per message). Messages that were not confirmed come
    /// back in the [`BatchError`] with their own errors; the rest are confirmed.
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError>;

    /// Flushes anything buffered and releases the connection. Publishing afterwards fails with
    /// [`Error::Closed`].
    async fn close(&self) -> Result<(), Error>;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// The codec this connection was configured to write events with (`?codec=` in the URL),
    /// which [`EventPublisher::new`](crate::EventPublisher::new) takes; `None` (the default)
    /// means the seed's JSON codec. Wrappers forward their inner publisher's.
    fn codec(&self) -> Option<Arc<dyn Codec>> {
        None
    }

    /// The connection's health: connected, topology declared, last confirmed publish.
    /// Adapters that cannot tell report themselves connected with a `detail` saying so.
    async fn health(&self) -> Health {
        Health::up(self.capabilities().backend).with_detail("health not reported by this adapter")
    }
}
