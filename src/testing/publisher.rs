//! The bus's publisher: records each message and moves it into the bus's namespace.

use std::sync::Arc;

use longshore_core::{
    async_trait, BatchError, Capabilities, Codec, Error, Health, Message, Publisher, ScheduleId,
};

use super::ledger::Ledger;
use super::names::Namespace;

/// Wraps the backend's publisher; see [`TestBus`](crate::testing::TestBus).
pub(crate) struct TestPublisher {
    pub(crate) inner: Arc<dyn Publisher>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) names: Namespace,
}

#[async_trait]
impl Publisher for TestPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        // Recorded before sending, so a handler's publish is pending before its own ack.
        let index = self.ledger.publishing(topic, &message);
        let result = self.inner.publish(&self.names.topic(topic), message).await;
        self.ledger.published(index, result.is_ok());
        result
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        let indexes: Vec<usize> = messages
            .iter()
            .map(|m| self.ledger.publishing(topic, m))
            .collect();
        let result = self
            .inner
            .publish_batch(&self.names.topic(topic), messages)
            .await;
        let failed: Vec<usize> = match &result {
            Ok(()) => Vec::new(),
            Err(e) => e.failed.iter().map(|f| f.index).collect(),
        };
        for (position, index) in indexes.into_iter().enumerate() {
            self.ledger.published(index, !failed.contains(&position));
        }
        result
    }

    async fn cancel(&self, id: &ScheduleId) -> Result<bool, Error> {
        let cancelled = self.inner.cancel(id).await;
        if let Ok(true) = cancelled {
            // Withdrawn: `run_until_idle` must not wait for its delivery.
            self.ledger.cancelled(&id.0);
        }
        cancelled
    }

    async fn close(&self) -> Result<(), Error> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn codec(&self) -> Option<Arc<dyn Codec>> {
        self.inner.codec()
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }
}
