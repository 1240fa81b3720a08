//! Durable subscriptions: one queue per subscription with the seed's dead-letter arguments,
//! one channel per consumer, manual acknowledgements, dead letters republished to `dlx`, and
//! re-subscription after the connection drops.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Channel;
use longshore_core::subscriber::dead_letter_message;
use longshore_core::{
    async_trait, dead_letter_topic, Acker, Capabilities, DeadLetter, Delivery, DeliveryStream,
    Error, Health, Message, Subscriber, Subscription,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::DEAD_LETTER_EXCHANGE;
use crate::connection::{declare_exchanges, ConfirmChannel, Shared};
use crate::convert;
use crate::error::{map_lapin, BACKEND};
use crate::publisher::Route;

/// The queue arguments the seed's Python consumer declares, exactly: a Python service and
/// longshore can declare the same queue without `PRECONDITION_FAILED`.
pub fn queue_arguments(queue: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from(DEAD_LETTER_EXCHANGE)),
    );
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(dead_letter_topic(queue).as_bytes())),
    );
    args
}

/// What one subscription is on the broker. Names are validated before (`Subscription::validate`:
/// queue ≤ 128 bytes, patterns ≤ 255), so converting them to AMQP short strings cannot fail.
struct Topology {
    queue: String,
    patterns: Vec<String>,
    /// `dlq.<name>`: consume the dead-letter queue, bound to `dlx` only.
    dead_letter_queue: bool,
}

impl Topology {
    fn of(subscription: &Subscription) -> Self {
        Topology {
            queue: subscription.name.clone(),
            patterns: subscription.patterns.clone(),
            dead_letter_queue: subscription.is_dead_letter_queue(),
        }
    }

    async fn declare_dead_letter_queue(channel: &Channel, dlq: &str) -> Result<(), Error> {
        channel
            .queue_declare(dlq.into(), durable(), FieldTable::default())
            .await
            .map_err(|e| map_lapin("declare dead-letter queue", e))?;
        channel
            .queue_bind(
                dlq.into(),
                DEAD_LETTER_EXCHANGE.into(),
                dlq.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| map_lapin("bind dead-letter queue", e))
    }

    /// Declares exchanges, the dead-letter queue, the queue and its bindings (idempotent).
    async fn declare(&self, channel: &Channel, exchange: &str) -> Result<(), Error> {
        declare_exchanges(channel, exchange).await?;
        if self.dead_letter_queue {
            return Self::declare_dead_letter_queue(channel, &self.queue).await;
        }
        Self::declare_dead_letter_queue(channel, &dead_letter_topic(&self.queue)).await?;
        channel
            .queue_declare(
                self.queue.as_str().into(),
                durable(),
                queue_arguments(&self.queue),
            )
            .await
            .map_err(|e| map_lapin("declare queue", e))?;
        for pattern in &self.patterns {
            channel
                .queue_bind(
                    self.queue.as_str().into(),
                    exchange.into(),
                    pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| map_lapin("bind queue", e))?;
        }
        Ok(())
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

async fn close_channel(channel: &Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "OK".into()).await;
    }
}

/// A consumer's channel and lapin consumer. Dropping it cancels the consumer and returns the
/// messages lapin had prefetched but nobody received to the queue.
struct Active {
    channel: Channel,
    consumer: Option<lapin::Consumer>,
}

impl Drop for Active {
    fn drop(&mut self) {
        let Some(mut consumer) = self.consumer.take() else {
            return;
        };
        let channel = self.channel.clone();
        if !channel.status().connected() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let cancelled = channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await;
            if cancelled.is_ok() {
                // After cancel-ok nothing new arrives: nack what is buffered, then the stream
                // ends. Bounded in case the channel dies meanwhile.
                let drain = async {
                    while let Some(Ok(d)) = consumer.next().await {
                        let _ = d.acker.nack(requeue()).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
            }
            // The channel closes when the last acker holding it is gone.
            drop(channel);
        });
    }
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        multiple: false,
        requeue: true,
    }
}

/// Opens a channel, declares the topology, sets the prefetch and starts consuming.
async fn open_consumer(
    shared: &Shared,
    topology: &Topology,
    prefetch: u16,
) -> Result<Active, Error> {
    let deadline = Instant::now() + shared.config.publish_timeout;
    let channel = shared.channel(deadline).await?;
    let result = async {
        topology.declare(&channel, &shared.config.exchange).await?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions { global: false })
            .await
            .map_err(|e| map_lapin("basic.qos", e))?;
        channel
            .basic_consume(
                topology.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| map_lapin("basic.consume", e))
    }
    .await;
    match result {
        Ok(consumer) => Ok(Active {
            channel,
            consumer: Some(consumer),
        }),
        Err(e) => {
            close_channel(&channel).await;
            Err(e)
        }
    }
}

/// Opens consumers on durable subscriptions. Made by
/// [`RabbitBroker::subscriber`](crate::RabbitBroker::subscriber); each consumer has its own
/// channel on the broker's connection, dead letters go out on one confirm channel.
pub struct RabbitSubscriber {
    shared: Arc<Shared>,
    dead_letters: Arc<ConfirmChannel>,
    close: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for RabbitSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitSubscriber")
            .field("exchange", &self.shared.config.exchange)
            .field("closed", &*self.close.borrow())
            .finish()
    }
}

impl RabbitSubscriber {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        RabbitSubscriber {
            dead_letters: Arc::new(ConfirmChannel::new(shared.clone())),
            shared,
            close: Arc::new(watch::channel(false).0),
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if *self.close.borrow() || self.shared.is_closed() {
            return Err(Error::Closed("rabbitmq subscriber"));
        }
        Ok(())
    }
}

struct StreamState {
    shared: Arc<Shared>,
    dead_letters: Arc<ConfirmChannel>,
    topology: Arc<Topology>,
    prefetch: u16,
    active: Option<Active>,
    /// Held so that `closed` never sees a dropped sender.
    _close: Arc<watch::Sender<bool>>,
    closed: watch::Receiver<bool>,
    /// Failed (re)subscription attempts in the current outage.
    attempt: u32,
    /// The current outage was already reported on the stream.
    reported: bool,
    done: bool,
}

impl StreamState {
    fn delivery(&self, d: lapin::message::Delivery) -> Option<Delivery> {
        let channel = self.active.as_ref()?.channel.clone();
        let lapin::message::Delivery {
            routing_key,
            redelivered,
            properties,
            data,
            acker,
            ..
        } = d;
        let (message, attempt) = convert::message(&properties, data, redelivered);
        let acker = RabbitAcker {
            acker: Some(acker),
            channel,
            dead_letters: self.dead_letters.clone(),
            queue: self.topology.queue.clone(),
        };
        Some(Delivery::new(
            message,
            routing_key.to_string(),
            attempt,
            Box::new(acker),
        ))
    }

    /// Records a lost consumer; returns the error to report if this outage is new.
    fn lost(&mut self, error: Error) -> Option<Error> {
        self.active = None;
        tracing::warn!(queue = %self.topology.queue, error = %error, "rabbitmq consumer lost; re-subscribing");
        if self.reported {
            None
        } else {
            self.reported = true;
            Some(error)
        }
    }

    async fn next(mut self) -> Option<(Result<Delivery, Error>, Self)> {
        loop {
            if self.done || *self.closed.borrow() {
                self.done = true;
                self.active = None;
                return None;
            }
            if let Some(active) = self.active.as_mut() {
                let consumer = active.consumer.as_mut()?;
                let closed = &mut self.closed;
                let item = tokio::select! {
                    _ = closed.changed() => continue,
                    item = consumer.next() => item,
                };
                match item {
                    Some(Ok(d)) => {
                        if let Some(delivery) = self.delivery(d) {
                            return Some((Ok(delivery), self));
                        }
                    }
                    Some(Err(e)) => {
                        if let Some(e) = self.lost(map_lapin("consume", e)) {
                            return Some((Err(e), self));
                        }
                    }
                    None => {
                        let e = crate::connection::unavailable(
                            "consumer cancelled (channel closed or queue deleted); re-subscribing",
                        );
                        if let Some(e) = self.lost(e) {
                            return Some((Err(e), self));
                        }
                    }
                }
                continue;
            }
            if self.attempt > 0 {
                let delay = self.shared.config.backoff(self.attempt - 1);
                let closed = &mut self.closed;
                tokio::select! {
                    _ = closed.changed() => continue,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            let opened = {
                let closed = &mut self.closed;
                tokio::select! {
                    _ = closed.changed() => continue,
                    opened = open_consumer(&self.shared, &self.topology, self.prefetch) => opened,
                }
            };
            match opened {
                Ok(active) => {
                    if self.reported || self.attempt > 0 {
                        tracing::info!(queue = %self.topology.queue, "rabbitmq consumer re-subscribed");
                    }
                    self.active = Some(active);
                    self.attempt = 0;
                    self.reported = false;
                }
                Err(Error::Closed(_)) => {
                    self.done = true;
                    return None;
                }
                Err(e) if !e.is_retryable() => {
                    tracing::error!(queue = %self.topology.queue, error = %e, "cannot re-subscribe");
                    self.done = true;
                    return Some((Err(e), self));
                }
                Err(e) => {
                    self.attempt = self.attempt.saturating_add(1);
                    if let Some(e) = self.lost(e) {
                        return Some((Err(e), self));
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Subscriber for RabbitSubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        self.check_open()?;
        subscription.validate()?;
        let topology = Arc::new(Topology::of(subscription));
        let active = open_consumer(&self.shared, &topology, subscription.prefetch).await?;
        let state = StreamState {
            shared: self.shared.clone(),
            dead_letters: self.dead_letters.clone(),
            topology,
            prefetch: subscription.prefetch,
            active: Some(active),
            _close: self.close.clone(),
            closed: self.close.subscribe(),
            attempt: 0,
            reported: false,
            done: false,
        };
        Ok(futures::stream::unfold(state, StreamState::next).boxed())
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        self.check_open()?;
        subscription.validate()?;
        let topology = Topology::of(subscription);
        let deadline = Instant::now() + self.shared.config.publish_timeout;
        let channel = self.shared.channel(deadline).await?;
        let result = topology
            .declare(&channel, &self.shared.config.exchange)
            .await;
        close_channel(&channel).await;
        result
    }

    async fn close(&self) -> Result<(), Error> {
        self.close.send_replace(true);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        crate::capabilities(&self.shared.config)
    }

    /// Connected (a dropped connection is re-opened, waiting at most 2 s) with both
    /// exchanges present; not ready once this subscriber or its broker is closed.
    async fn health(&self) -> Health {
        let closed = *self.close.borrow();
        crate::health::report(&self.shared, closed.then_some("rabbitmq subscriber")).await
    }

    /// Messages ready in the subscription's queue. Deliveries a consumer holds unacknowledged
    /// are not counted (AMQP reports only ready messages). An unknown subscription is
    /// [`Error::InvalidName`].
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        self.check_open()?;
        crate::health::lag(&self.shared, subscription).await
    }
}

/// Settles one delivery. Dropped unsettled, it nacks (requeue) in a spawned task.
struct RabbitAcker {
    acker: Option<lapin::Acker>,
    /// Keeps the consumer's channel open until the delivery is settled, even after the
    /// stream is dropped.
    channel: Channel,
    dead_letters: Arc<ConfirmChannel>,
    queue: String,
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
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = acker.nack(requeue()).await;
                drop(channel);
            });
        }
    }
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        match self.acker.take() {
            Some(acker) => settled("ack", acker.ack(BasicAckOptions::default()).await),
            None => Ok(()),
        }
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let Some(acker) = self.acker.take() else {
            return Ok(());
        };
        match delay {
            None | Some(Duration::ZERO) => settled("nack", acker.nack(requeue()).await),
            Some(delay) => {
                // RabbitMQ has no per-message delay without a plugin: the delivery stays
                // unacknowledged (holding its prefetch slot) until the delay has passed.
                let channel = self.channel.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = acker.nack(requeue()).await;
                    drop(channel);
                });
                Ok(())
            }
        }
    }

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let dlq = dead_letter_topic(&self.queue);
        let letter = dead_letter_message(message, topic, &self.queue, &dead);
        let props = convert::properties(&letter)?;
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
        match self.acker.take() {
            Some(acker) => settled("ack", acker.ack(BasicAckOptions::default()).await),
            None => Ok(()),
        }
    }
}
