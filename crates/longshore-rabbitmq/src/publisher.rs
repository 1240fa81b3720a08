//! The publisher port: every publish goes to the topic exchange and waits for its confirm.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lapin::BasicProperties;
use longshore_core::topic::validate_topic;
use longshore_core::{
    async_trait, BatchError, Capabilities, Error, FailedMessage, Health, Message, Publisher,
};
use tracing::Instrument;

use crate::client::{capabilities, Client};
use crate::config::Unroutable;
use crate::confirm::{ConfirmChannel, Outgoing, Route};
use crate::health;
use crate::mapping::properties;
use crate::BACKEND;

/// Publishes to the topic exchange with publisher confirms. Made by
/// [`RabbitBroker`](crate::RabbitBroker)'s `publisher()`; has its own channel on the broker's
/// connection.
pub struct RabbitPublisher {
    channel: ConfirmChannel,
    closed: AtomicBool,
}

impl RabbitPublisher {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        RabbitPublisher {
            channel: ConfirmChannel::new(client),
            closed: AtomicBool::new(false),
        }
    }

    fn route<'a>(&'a self, topic: &'a str) -> Route<'a> {
        let config = &self.channel.client().config;
        Route {
            exchange: &config.exchange,
            routing_key: topic,
            mandatory: config.unroutable == Unroutable::Error,
        }
    }

    fn check(&self, message: &Message) -> Result<BasicProperties, Error> {
        message.check_limits(self.channel.client().config.max_payload)?;
        properties(message)
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) || self.channel.client().is_closed() {
            return Err(Error::Closed("rabbitmq publisher"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for RabbitPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitPublisher")
            .field("exchange", &self.channel.client().config.exchange)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

#[async_trait]
impl Publisher for RabbitPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.check_open()?;
        validate_topic(topic)?;
        let props = self.check(&message)?;
        let span = tracing::debug_span!("rabbitmq.publish", backend = BACKEND, topic, message_id = %message.id);
        self.channel
            .publish_confirmed(self.route(topic), &message.payload, &props)
            .instrument(span)
            .await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        let total = messages.len();
        if total == 0 {
            return Ok(());
        }
        if let Err(e) = self.check_open().and_then(|()| validate_topic(topic)) {
            return Err(BatchError::all(messages, || e.copy()));
        }
        let mut failed = Vec::new();
        let mut items = Vec::with_capacity(total);
        for (index, message) in messages.into_iter().enumerate() {
            match self.check(&message) {
                Ok(properties) => items.push(Outgoing {
                    index,
                    message,
                    properties,
                }),
                Err(error) => failed.push(FailedMessage {
                    index,
                    message,
                    error,
                }),
            }
        }
        if !items.is_empty() {
            failed.extend(
                self.channel
                    .publish_pipelined(self.route(topic), items)
                    .await,
            );
        }
        BatchError::check(total, failed)
    }

    async fn close(&self) -> Result<(), Error> {
        // Every publish waits for its confirm, so nothing is buffered here.
        self.closed.store(true, Ordering::Release);
        self.channel.close().await;
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.channel.client().config)
    }

    /// Connected (a dropped connection is re-opened, waiting at most 2 s) with both
    /// exchanges present; not ready once this publisher or its broker is closed.
    async fn health(&self) -> Health {
        let closed = self.closed.load(Ordering::Acquire);
        health::report(
            self.channel.client(),
            closed.then_some("rabbitmq publisher"),
        )
        .await
    }
}
