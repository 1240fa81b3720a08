//! Publishing into the memory broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::client::{capabilities, Client, Slot};
use super::BACKEND;
use crate::capabilities::Capabilities;
use crate::error::{BatchError, Error, FailedMessage};
use crate::health::Health;
use crate::message::Message;
use crate::publisher::Publisher;
use crate::topic::validate_topic;

/// Publishing handle of a [`MemoryBroker`].
pub struct MemoryPublisher {
    client: Arc<Client>,
    closed: AtomicBool,
}

impl MemoryPublisher {
    pub(super) fn new(client: Arc<Client>) -> Self {
        MemoryPublisher {
            client,
            closed: AtomicBool::new(false),
        }
    }

    /// Why nothing at all can be published to `topic`, if so.
    fn refuse(&self, topic: &str) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) || self.client.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("memory publisher"));
        }
        validate_topic(topic)
    }
}

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.refuse(topic)?;
        message.check_limits(self.client.config.max_payload)?;
        self.client.route_one(topic, message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        let total = messages.len();
        let max_payload = self.client.config.max_payload;
        let usable = self.refuse(topic).is_ok();
        let mut slots: Vec<Slot> = messages
            .into_iter()
            .map(|message| {
                let checked = if usable {
                    message.check_limits(max_payload)
                } else {
                    // Asked again per message, so each failure carries its own error.
                    self.refuse(topic)
                };
                match checked {
                    Ok(()) => Slot::Pending(message),
                    Err(error) => Slot::Failed(message, error),
                }
            })
            .collect();
        self.client.route(topic, &mut slots).await;
        let failed: Vec<FailedMessage> = slots
            .into_iter()
            .enumerate()
            .filter_map(|(index, slot)| match slot {
                Slot::Failed(message, error) => Some(FailedMessage {
                    index,
                    message,
                    error,
                }),
                _ => None,
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BatchError { total, failed })
        }
    }

    async fn close(&self) -> Result<(), Error> {
        // Every publish is routed before it returns, so there is nothing to flush.
        self.closed.store(true, Ordering::Release);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.client.config)
    }

    async fn health(&self) -> Health {
        if self.closed.load(Ordering::Acquire) || self.client.closed.load(Ordering::Acquire) {
            Health::down(BACKEND, "memory publisher is closed")
        } else {
            Health::up(BACKEND)
        }
    }
}
