//! Settling one delivery: ack, nack (with a delay: through the broker's delay levels), dead
//! letter to `dlx`, or requeue when dropped unsettled.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use longshore_core::{
    async_trait, dead_letter_message, dead_letter_topic, Acker, DeadLetter, Error, Message,
};
use tokio::time::Instant;

use crate::config::DEAD_LETTER_EXCHANGE;
use crate::confirm::{ConfirmChannel, Route};
use crate::delay::{self, ATTEMPTS_HEADER, TOPIC_HEADER};
use crate::error::map_lapin;
use crate::mapping::{self, properties, Source};
use crate::BACKEND;

/// What a delayed nack sends again: the delivery as received (its AMQP properties are moved
/// here, the payload shared with the delivery's message) and what the subscriber made of it.
pub(crate) struct Original {
    pub(crate) properties: BasicProperties,
    pub(crate) payload: bytes::Bytes,
    pub(crate) redelivered: bool,
    /// The exchange it was delivered from.
    pub(crate) exchange: ShortString,
    /// The message id handed out (generated when the publisher set none).
    pub(crate) id: String,
    /// The topic handed out.
    pub(crate) topic: String,
    /// The attempt handed out.
    pub(crate) attempt: u32,
}

/// A nack that puts the delivery back in its queue.
pub(crate) fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        multiple: false,
        requeue: true,
    }
}

/// Settles one delivery. Dropped unsettled, it nacks (requeue) in a spawned task.
pub(crate) struct RabbitAcker {
    acker: Option<lapin::Acker>,
    /// Keeps the consumer's channel open until the delivery is settled, even after the
    /// stream is dropped.
    channel: Channel,
    dead_letters: Arc<ConfirmChannel>,
    queue: String,
    /// Longest wait for lapin to take a settlement (see [`bounded`]).
    timeout: Duration,
    original: Original,
}

impl RabbitAcker {
    /// The acker of a delivery received on `channel` from `queue`; dead letters go out on
    /// `dead_letters`, and so do delayed copies of `original`; a settlement lapin has not
    /// taken within `timeout` fails.
    pub(crate) fn new(
        acker: lapin::Acker,
        channel: Channel,
        dead_letters: Arc<ConfirmChannel>,
        queue: String,
        timeout: Duration,
        original: Original,
    ) -> Self {
        RabbitAcker {
            acker: Some(acker),
            channel,
            dead_letters,
            queue,
            timeout,
            original,
        }
    }

    /// The properties of the delayed copy: the message as it was handed out, written as a
    /// publish writes it (same id, key, headers and content type; no `x-death`, no broker
    /// count), plus the attempts made so far and the topic, which the copy's routing key
    /// (the delay's) no longer says.
    fn delayed_properties(&self) -> Result<BasicProperties, Error> {
        let o = &self.original;
        let delay_prefix = delay::prefix(&self.dead_letters.client().config.exchange);
        let source = Source {
            exchange: o.exchange.as_str(),
            delay_prefix: &delay_prefix,
        };
        let mut message =
            mapping::message(&o.properties, o.payload.clone(), o.redelivered, source).message;
        message.id.clone_from(&o.id);
        let props = properties(&message)?;
        let mut table = props.headers().clone().unwrap_or_default();
        let mut text = |name: &str, value: &str| {
            table.insert(
                ShortString::from(name),
                AMQPValue::LongString(LongString::from(value.as_bytes())),
            );
        };
        text(ATTEMPTS_HEADER, &o.attempt.to_string());
        text(TOPIC_HEADER, &o.topic);
        Ok(props.with_headers(table))
    }

    /// Hands the wait to the broker: publishes a copy to the delay levels, routed back to
    /// this queue after `units`, waits for its confirm, and only then acks the delivery. If
    /// the copy is not confirmed, the error is returned and the delivery, dropped unsettled,
    /// is requeued at once: never lost, possibly early.
    async fn delay(mut self: Box<Self>, units: u64) -> Result<(), Error> {
        let client = self.dead_letters.client().clone();
        let deadline = Instant::now() + client.config.publish_timeout;
        delay::ensure_levels(&client, deadline).await?;
        let props = self.delayed_properties()?;
        let level = delay::level_name(
            &client.config.exchange,
            client.config.queue_type,
            delay::first_level(units),
        );
        let routing_key = delay::routing_key(units, &self.queue);
        let route = Route {
            exchange: &level,
            routing_key: &routing_key,
            mandatory: true,
        };
        let payload = self.original.payload.clone();
        self.dead_letters
            .publish_confirmed(route, &payload, &props)
            .await?;
        match self.acker.take() {
            Some(acker) => {
                bounded("ack", self.timeout, acker.ack(BasicAckOptions::default())).await
            }
            None => Ok(()),
        }
    }
}

/// Runs one lapin settlement within `timeout`. lapin may leave it unanswered on a connection
/// the broker closed cleanly (lapin issue #409); the consumer would then wait forever. The
/// broker redelivers an unsettled delivery once its channel is gone, so a timeout is a
/// retryable error, never a loss.
async fn bounded(
    what: &'static str,
    timeout: Duration,
    settle: impl std::future::Future<Output = Result<bool, lapin::Error>>,
) -> Result<(), Error> {
    match tokio::time::timeout(timeout, settle).await {
        Ok(result) => settled(what, result),
        Err(_) => Err(Error::Timeout {
            operation: what,
            after: timeout,
        }),
    }
}

fn settled(what: &str, result: Result<bool, lapin::Error>) -> Result<(), Error> {
    match result {
        Ok(true) => Ok(()),
        // lapin reports a delivery of a closed channel as unusable: the broker requeues it.
        Ok(false) => Err(Error::connection(
            BACKEND,
            format!("{what}: the channel closed before the delivery was settled; the broker will redeliver it"),
        )),
        Err(e) => Err(map_lapin(what, e)),
    }
}

impl Drop for RabbitAcker {
    fn drop(&mut self) {
        let Some(acker) = self.acker.take() else {
            return;
        };
        if !acker.usable() {
            return;
        }
        let channel = self.channel.clone();
        let timeout = self.timeout;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = bounded("nack", timeout, acker.nack(requeue())).await;
                drop(channel);
            });
        }
    }
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        match self.acker.take() {
            Some(acker) => {
                bounded("ack", self.timeout, acker.ack(BasicAckOptions::default())).await
            }
            None => Ok(()),
        }
    }

    /// Without a delay (or one of zero): back to the queue at once. With a delay: a copy
    /// waits in the broker's delay levels (durably, 100 ms granularity, at most
    /// [`delay::MAX_DELAY`]) and comes back to this subscription's queue only, with the same
    /// id, topic, key, headers and payload and the attempt count carried on; the delivery is
    /// acked once the copy is confirmed, so it frees its prefetch slot at once.
    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        if self.acker.is_none() {
            return Ok(());
        }
        match delay.map_or(0, delay::units) {
            0 => match self.acker.take() {
                Some(acker) => bounded("nack", self.timeout, acker.nack(requeue())).await,
                None => Ok(()),
            },
            units => self.delay(units).await,
        }
    }

    /// The broker keeps the message until it is settled: nothing to hold.
    fn hold(&mut self, _message: Message) {}

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let dlq = dead_letter_topic(&self.queue);
        let letter = dead_letter_message(message, topic, &self.queue, &dead);
        let props = properties(&letter)?;
        let route = Route {
            exchange: DEAD_LETTER_EXCHANGE,
            routing_key: &dlq,
            mandatory: true,
        };
        // Publish first, settle after: if the dead letter is not confirmed, dropping `self`
        // requeues the original.
        self.dead_letters
            .publish_confirmed(route, &letter.payload, &props)
            .await?;
        self.ack().await
    }
}
