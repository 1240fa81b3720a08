//! The codec a URL asks for (`?codec=cloudevents…`), carried by the publisher `connect`
//! returns so that [`EventPublisher::new`](longshore_core::EventPublisher::new) writes it
//! without a code change.

use std::sync::Arc;

use longshore_core::{
    async_trait, BatchError, Capabilities, Codec, Error, Health, Message, Publisher, ScheduleId,
};

/// A publisher that names the codec events published through it are written with, and
/// otherwise forwards everything to the publisher it wraps.
pub(crate) struct CodecPublisher {
    pub(crate) inner: Arc<dyn Publisher>,
    pub(crate) codec: Arc<dyn Codec>,
}

#[async_trait]
impl Publisher for CodecPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.inner.publish(topic, message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        self.inner.publish_batch(topic, messages).await
    }

    async fn cancel(&self, id: &ScheduleId) -> Result<bool, Error> {
        self.inner.cancel(id).await
    }

    async fn close(&self) -> Result<(), Error> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn codec(&self) -> Option<Arc<dyn Codec>> {
        Some(self.codec.clone())
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }
}
