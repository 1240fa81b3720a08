//! Publishing into the memory broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use chrono::{DateTime, Utc};

use super::client::{capabilities, Client, Slot};
use super::timers;
use super::BACKEND;
use crate::capabilities::Capabilities;
use crate::error::{BatchError, Error, FailedMessage};
use crate::health::Health;
use crate::message::Message;
use crate::publisher::Publisher;
use crate::schedule::ScheduleId;
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

    /// `Err` with its time when the message is scheduled for later (checked by
    /// `check_limits`, so the header reads), else the message, to route now.
    fn later(&self, message: Message) -> Result<Message, (Message, DateTime<Utc>)> {
        match message.scheduled_for() {
            Ok(Some(due)) if due > Utc::now() => Err((message, due)),
            _ => Ok(message),
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
        match self.later(message) {
            Ok(message) => self.client.route_one(topic, message).await,
            Err((message, due)) => {
                timers::schedule(&self.client, topic, message, due);
                Ok(())
            }
        }
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
                    Err(error) => Slot::Failed(message, error),
                    Ok(()) => match self.later(message) {
                        Ok(message) => Slot::Pending(message),
                        // Held by a timer from here; nothing to route now.
                        Err((message, due)) => {
                            timers::schedule(&self.client, topic, message, due);
                            Slot::Sent
                        }
                    },
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

    /// Stops the timer of a scheduled message not yet due.
    async fn cancel(&self, id: &ScheduleId) -> Result<bool, Error> {
        Ok(self.client.timers.cancel(&id.0))
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
