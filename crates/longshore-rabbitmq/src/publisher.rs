//! The publisher port: every publish goes to the topic exchange and waits for its confirm; a
//! message scheduled at least 100 ms ahead goes into the delay levels instead (see `schedule`).

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
use crate::confirm::{ConfirmChannel, Detour, Outgoing, Route};
use crate::mapping::properties;
use crate::BACKEND;
use crate::{delay, health, schedule};

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

    /// The message's properties and, if it is scheduled far enough ahead, the route into the
    /// delay levels it takes (with its topic in the properties).
    fn check(
        &self,
        topic: &str,
        message: &Message,
    ) -> Result<(BasicProperties, Option<Detour>), Error> {
        let config = &self.channel.client().config;
        message.check_limits(config.max_payload)?;
        let props = properties(message)?;
        let now = chrono::Utc::now();
        match schedule::detour(&config.exchange, config.queue_type, topic, message, now) {
            Some(detour) => Ok((schedule::with_topic(props, topic), Some(detour))),
            None => Ok((props, None)),
        }
    }

    /// Declares the delay levels (once per connection) before a scheduled message goes in.
    async fn ensure_levels(&self) -> Result<(), Error> {
        let client = self.channel.client();
        let deadline = tokio::time::Instant::now() + client.config.publish_timeout;
        delay::ensure_levels(client, deadline).await
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
        let (props, detour) = self.check(topic, &message)?;
        let span = tracing::debug_span!("rabbitmq.publish", backend = BACKEND, topic, message_id = %message.id, scheduled = detour.is_some());
        let route = match &detour {
            Some(detour) => {
                self.ensure_levels().instrument(span.clone()).await?;
                detour.route()
            }
            None => self.route(topic),
        };
        self.channel
            .publish_confirmed(route, &message.payload, &props)
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
            match self.check(topic, &message) {
                Ok((properties, detour)) => items.push(Outgoing {
                    index,
                    message,
                    properties,
                    detour,
                }),
                Err(error) => failed.push(FailedMessage {
                    index,
                    message,
                    error,
                }),
            }
        }
        if items.iter().any(|item| item.detour.is_some()) {
            if let Err(e) = self.ensure_levels().await {
                // Without the levels the scheduled messages cannot go; the others still can.
                let (scheduled, immediate): (Vec<_>, Vec<_>) =
                    items.into_iter().partition(|i| i.detour.is_some());
                failed.extend(scheduled.into_iter().map(|item| FailedMessage {
                    index: item.index,
                    message: item.message,
                    error: e.copy(),
                }));
                items = immediate;
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
