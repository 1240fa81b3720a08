//! The publishing port.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::capabilities::Capabilities;
use crate::codec::Codec;
use crate::error::{BatchError, Error};
use crate::health::Health;
use crate::message::Message;
use crate::schedule::{after, ScheduleId};

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

    /// Publishes a message that reaches handlers at `when`, not before (the
    /// [`HEADER_DELIVER_AT`](crate::HEADER_DELIVER_AT) header; a time in the past means now).
    /// `Ok` means the backend holds it as durably as any publish.
    ///
    /// Where the backend can hold a message until a time
    /// ([`Capabilities::native_schedule`]) it is invisible until then; elsewhere it is
    /// delivered at once and the consumer runtime gives it back with a delayed `nack` for the
    /// time left (see the capability table). Adapters override this only to do better.
    async fn publish_at(
        &self,
        topic: &str,
        message: Message,
        when: DateTime<Utc>,
    ) -> Result<ScheduleId, Error> {
        let id = ScheduleId(message.id.clone());
        self.publish(topic, message.deliver_at(when)).await?;
        Ok(id)
    }

    /// [`Publisher::publish_at`] `delay` from now.
    async fn publish_after(
        &self,
        topic: &str,
        message: Message,
        delay: Duration,
    ) -> Result<ScheduleId, Error> {
        self.publish_at(topic, message, after(delay)).await
    }

    /// Cancels a scheduled message that is not yet due: `Ok(true)` if it will not be
    /// delivered, `Ok(false)` if it was already due (or unknown). Backends without
    /// [`Capabilities::cancel_schedule`] return [`Error::Unsupported`].
    async fn cancel(&self, id: &ScheduleId) -> Result<bool, Error> {
        let _ = id;
        Err(Error::Unsupported {
            backend: self.capabilities().backend,
            operation: "cancelling a scheduled message",
        })
    }

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
