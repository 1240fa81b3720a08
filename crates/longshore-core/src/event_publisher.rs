//! Publishing events (typed or not) through any [`Publisher`] with a codec.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::codec::{Codec, JsonCodec};
use crate::error::Error;
use crate::event::{DomainEvent, Event};
use crate::publisher::Publisher;
use crate::schedule::{after, ScheduleId};

/// Encodes events and publishes them to `events.<event_type>` (or a topic you name).
#[derive(Clone)]
pub struct EventPublisher {
    publisher: Arc<dyn Publisher>,
    codec: Arc<dyn Codec>,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("codec", &self.codec)
            .finish()
    }
}

impl EventPublisher {
    /// An event publisher with the codec the connection was configured with
    /// ([`Publisher::codec`], e.g. `?codec=cloudevents` in the URL), else the seed-compatible
    /// JSON codec.
    pub fn new(publisher: Arc<dyn Publisher>) -> Self {
        let codec = publisher.codec().unwrap_or_else(|| Arc::new(JsonCodec));
        EventPublisher { publisher, codec }
    }

    /// Uses another codec.
    pub fn with_codec(mut self, codec: Arc<dyn Codec>) -> Self {
        self.codec = codec;
        self
    }

    /// The underlying transport publisher.
    pub fn transport(&self) -> &Arc<dyn Publisher> {
        &self.publisher
    }

    /// Publishes an event to `events.<event_type>`.
    pub async fn publish(&self, event: &Event) -> Result<(), Error> {
        self.publish_to(&event.default_topic(), event).await
    }

    /// Publishes an event to `topic`.
    pub async fn publish_to(&self, topic: &str, event: &Event) -> Result<(), Error> {
        let message = self.codec.encode(event)?;
        self.publisher.publish(topic, message).await
    }

    /// Publishes an event to `topic` that reaches handlers at `when`, not before (see
    /// [`Publisher::publish_at`]). The returned id cancels it where the backend can.
    pub async fn publish_at(
        &self,
        topic: &str,
        event: &Event,
        when: DateTime<Utc>,
    ) -> Result<ScheduleId, Error> {
        let message = self.codec.encode(event)?;
        self.publisher.publish_at(topic, message, when).await
    }

    /// [`EventPublisher::publish_at`] `delay` from now.
    pub async fn publish_after(
        &self,
        topic: &str,
        event: &Event,
        delay: Duration,
    ) -> Result<ScheduleId, Error> {
        self.publish_at(topic, event, after(delay)).await
    }

    /// Cancels a scheduled event that is not yet due (see [`Publisher::cancel`]).
    pub async fn cancel(&self, id: &ScheduleId) -> Result<bool, Error> {
        self.publisher.cancel(id).await
    }

    /// Publishes a typed event (with an optional aggregate id) and returns the envelope sent.
    pub async fn publish_typed<T: DomainEvent>(
        &self,
        event: &T,
        aggregate_id: Option<&str>,
    ) -> Result<Event, Error> {
        let mut envelope = Event::from_typed(event)?;
        envelope.metadata.aggregate_id = aggregate_id.map(str::to_string);
        self.publish(&envelope).await?;
        Ok(envelope)
    }

    /// Publishes events to one topic as a pipelined batch. Nothing is sent if an event
    /// cannot be encoded; a partial failure is an [`Error`] whose source is the
    /// [`BatchError`](crate::BatchError) listing the unconfirmed messages.
    pub async fn publish_batch_to(&self, topic: &str, events: &[Event]) -> Result<(), Error> {
        let messages = events
            .iter()
            .map(|e| self.codec.encode(e))
            .collect::<Result<Vec<_>, _>>()?;
        self.publisher
            .publish_batch(topic, messages)
            .await
            .map_err(Error::from)
    }
}
