//! The subscriber port: one durable queue per subscription with the seed's dead-letter
//! arguments, one channel per consumer, manual acknowledgements (see `acker`), and
//! re-subscription after the connection drops.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;
use longshore_core::{
    async_trait, dead_letter_topic, Capabilities, Delivery, DeliveryStream, Error, Health,
    Subscriber, Subscription,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::acker::{requeue, Original, RabbitAcker};
use crate::client::{capabilities, declare_exchanges, Client};
use crate::config::{QueueType, DEAD_LETTER_EXCHANGE};
use crate::confirm::ConfirmChannel;
use crate::error::map_lapin;
use crate::mapping::{self, dead_letter_queue_arguments, subscription_queue_arguments, Source};
use crate::BACKEND;
use crate::{delay, health};

/// What one subscription is on the broker. Names are validated before (`Subscription::validate`:
/// queue ≤ 128 bytes, patterns ≤ 255), so converting them to AMQP short strings cannot fail.
struct Topology {
    queue: String,
    patterns: Vec<String>,
    /// `dlq.<name>`: consume the dead-letter queue, bound to `dlx` only.
    dead_letter_queue: bool,
    /// The type of the queue and of its dead-letter queue.
    queue_type: QueueType,
    /// `<exchange>.delay.`: what the delay levels' names start with.
    delay_prefix: String,
}

impl Topology {
    fn of(subscription: &Subscription, config: &crate::RabbitConfig) -> Self {
        Topology {
            queue: subscription.name.clone(),
            patterns: subscription.patterns.clone(),
            dead_letter_queue: subscription.is_dead_letter_queue(),
            queue_type: config.queue_type,
            delay_prefix: delay::prefix(&config.exchange),
        }
    }

    /// Declares one durable queue. A queue that exists with other arguments or another type
    /// is refused by the broker (`PRECONDITION_FAILED`, which closes the channel): that is an
    /// [`Error::Config`] naming the queue and what was declared, never retried.
    async fn declare_queue(
        &self,
        channel: &Channel,
        queue: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        channel
            .queue_declare(queue.into(), durable(), arguments)
            .await
            .map(drop)
            .map_err(|e| match map_lapin("declare queue", e) {
                Error::Config(reason) => Error::Config(format!(
                    "queue {queue:?} already exists with other settings than this subscription \
                     declares ({}): {reason}",
                    match self.queue_type {
                        QueueType::Classic => "a durable classic queue, no x-queue-type",
                        QueueType::Quorum => "a durable quorum queue, x-queue-type=quorum",
                    }
                )),
                other => other,
            })
    }

    async fn declare_dead_letter_queue(&self, channel: &Channel, dlq: &str) -> Result<(), Error> {
        self.declare_queue(channel, dlq, dead_letter_queue_arguments(self.queue_type))
            .await?;
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

    /// Declares exchanges, the dead-letter queue, the queue and its bindings, those on the
    /// delay levels' delivery exchange (delayed nacks) and scheduled exchange (scheduled
    /// publishes, one per pattern) included (idempotent).
    async fn declare(&self, channel: &Channel, exchange: &str) -> Result<(), Error> {
        declare_exchanges(channel, exchange).await?;
        if self.dead_letter_queue {
            self.declare_dead_letter_queue(channel, &self.queue).await?;
            return delay::bind_queue(channel, exchange, &self.queue).await;
        }
        self.declare_dead_letter_queue(channel, &dead_letter_topic(&self.queue))
            .await?;
        self.declare_queue(
            channel,
            &self.queue,
            subscription_queue_arguments(&self.queue, self.queue_type),
        )
        .await?;
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
        // Its delayed nacks come back through the delay levels to this queue only.
        delay::bind_queue(channel, exchange, &self.queue).await?;
        // Scheduled publishes of the topics it matches reach it when due.
        delay::bind_patterns(channel, exchange, &self.queue, &self.patterns).await
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

/// How often a waiting consumer checks that its channel and connection are still the live
/// ones (see [`Active::alive`]).
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// A consumer's channel and lapin consumer. Dropping it cancels the consumer and returns the
/// messages lapin had prefetched but nobody received to the queue.
struct Active {
    channel: Channel,
    consumer: Option<lapin::Consumer>,
    /// The client's connection generation the channel was opened on.
    generation: u64,
}

impl Active {
    /// Whether the consumer can still receive. lapin does not always end a consumer's stream
    /// when the broker closes the connection cleanly (a shutdown; lapin issue #409): the
    /// stream then waits forever. A closed channel, or a connection the client has since
    /// re-opened, means this consumer is gone even if its stream never says so.
    fn alive(&self, client: &Client) -> bool {
        self.channel.status().connected() && client.generation() == self.generation
    }
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
            // Bounded: on a connection the broker has left, lapin may never answer.
            let cancel = async {
                let cancelled = channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
                if cancelled.is_ok() {
                    // After cancel-ok nothing new arrives: nack what is buffered, then the
                    // stream ends.
                    while let Some(Ok(d)) = consumer.next().await {
                        let _ = d.acker.nack(requeue()).await;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), cancel).await;
            // The channel closes when the last acker holding it is gone.
            drop(channel);
        });
    }
}

/// Opens a channel, declares the topology, sets the prefetch and starts consuming, all
/// within `publish_timeout` (a broker going down mid-way can leave a lapin call unanswered).
async fn open_consumer(
    client: &Client,
    topology: &Topology,
    prefetch: u16,
) -> Result<Active, Error> {
    let deadline = Instant::now() + client.config.publish_timeout;
    let channel = client.channel(deadline).await?;
    let generation = client.generation();
    let steps = async {
        topology.declare(&channel, &client.config.exchange).await?;
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
    };
    let result = match tokio::time::timeout_at(deadline, steps).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            operation: "rabbitmq subscribe",
            after: client.config.publish_timeout,
        }),
    };
    match result {
        Ok(consumer) => Ok(Active {
            channel,
            consumer: Some(consumer),
            generation,
        }),
        Err(e) => {
            close_channel(&channel).await;
            Err(e)
        }
    }
}

/// Opens consumers on durable subscriptions. Made by [`RabbitBroker`](crate::RabbitBroker)'s
/// `subscriber()`; each consumer has its own channel on the broker's connection, dead letters
/// go out on one confirm channel.
pub struct RabbitSubscriber {
    client: Arc<Client>,
    dead_letters: Arc<ConfirmChannel>,
    close: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for RabbitSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitSubscriber")
            .field("exchange", &self.client.config.exchange)
            .field("closed", &*self.close.borrow())
            .finish()
    }
}

impl RabbitSubscriber {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        RabbitSubscriber {
            dead_letters: Arc::new(ConfirmChannel::new(client.clone())),
            client,
            close: Arc::new(watch::channel(false).0),
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if *self.close.borrow() || self.client.is_closed() {
            return Err(Error::Closed("rabbitmq subscriber"));
        }
        Ok(())
    }
}

struct StreamState {
    client: Arc<Client>,
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
    /// Ticks [`LIVENESS_CHECK`] while waiting for a delivery.
    liveness: tokio::time::Interval,
}

impl StreamState {
    fn delivery(&self, d: lapin::message::Delivery) -> Option<Delivery> {
        let channel = self.active.as_ref()?.channel.clone();
        let lapin::message::Delivery {
            exchange,
            routing_key,
            redelivered,
            properties,
            data,
            acker,
            ..
        } = d;
        let source = Source {
            exchange: exchange.as_str(),
            delay_prefix: &self.topology.delay_prefix,
        };
        let received = mapping::message(&properties, data.into(), redelivered, source);
        let topic = received
            .topic
            .unwrap_or_else(|| routing_key.as_str().to_string());
        let original = Original {
            properties,
            payload: received.message.payload.clone(),
            redelivered,
            exchange,
            id: received.message.id.clone(),
            topic: topic.clone(),
            attempt: received.attempt,
        };
        let acker = RabbitAcker::new(
            acker,
            channel,
            self.dead_letters.clone(),
            self.topology.queue.clone(),
            self.client.config.publish_timeout,
            original,
        );
        Some(Delivery::new(
            received.message,
            topic,
            received.attempt,
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

    /// The stream's next item: a delivery, or an outage reported once; `None` when closed.
    async fn next(mut self) -> Option<(Result<Delivery, Error>, Self)> {
        loop {
            if self.done || *self.closed.borrow() {
                self.done = true;
                self.active = None;
                return None;
            }
            let step = if self.active.is_some() {
                self.receive().await
            } else {
                self.resubscribe().await
            };
            match step {
                Step::Yield(item) => return Some((item, self)),
                Step::End => return None,
                Step::Again => {}
            }
        }
    }

    /// Waits for the active consumer's next delivery (or for the subscriber to close).
    async fn receive(&mut self) -> Step {
        let Some(active) = self.active.as_mut() else {
            return Step::Again;
        };
        let Some(consumer) = active.consumer.as_mut() else {
            return Step::End;
        };
        // `None`: the liveness timer fired.
        let item = tokio::select! {
            _ = self.closed.changed() => return Step::Again,
            item = consumer.next() => Some(item),
            _ = self.liveness.tick() => None,
        };
        let lost = match item {
            None if active.alive(&self.client) => return Step::Again,
            None => Error::connection(
                BACKEND,
                "the consumer's channel or connection closed without ending its stream; \
                 re-subscribing",
            ),
            Some(Some(Ok(d))) => {
                return match self.delivery(d) {
                    Some(delivery) => Step::Yield(Ok(delivery)),
                    None => Step::Again,
                }
            }
            Some(Some(Err(e))) => map_lapin("consume", e),
            Some(None) => Error::connection(
                BACKEND,
                "consumer cancelled (channel closed or queue deleted); re-subscribing",
            ),
        };
        self.lost(lost).map_or(Step::Again, |e| Step::Yield(Err(e)))
    }

    /// Opens the consumer again after a backoff (none before the first attempt of an outage).
    async fn resubscribe(&mut self) -> Step {
        if self.attempt > 0 {
            let delay = self.client.config.backoff(self.attempt - 1);
            tokio::select! {
                _ = self.closed.changed() => return Step::Again,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let opened = tokio::select! {
            _ = self.closed.changed() => return Step::Again,
            opened = open_consumer(&self.client, &self.topology, self.prefetch) => opened,
        };
        match opened {
            Ok(active) => {
                if self.reported || self.attempt > 0 {
                    tracing::info!(queue = %self.topology.queue, "rabbitmq consumer re-subscribed");
                }
                self.active = Some(active);
                self.attempt = 0;
                self.reported = false;
                Step::Again
            }
            Err(Error::Closed(_)) => {
                self.done = true;
                Step::End
            }
            Err(e) if !e.is_retryable() => {
                tracing::error!(queue = %self.topology.queue, error = %e, "cannot re-subscribe");
                self.done = true;
                Step::Yield(Err(e))
            }
            Err(e) => {
                self.attempt = self.attempt.saturating_add(1);
                self.lost(e).map_or(Step::Again, |e| Step::Yield(Err(e)))
            }
        }
    }
}

/// The liveness timer: first tick after one period, late ticks not made up.
fn liveness_timer() -> tokio::time::Interval {
    let mut timer = tokio::time::interval_at(Instant::now() + LIVENESS_CHECK, LIVENESS_CHECK);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// What one turn of a delivery stream came to.
enum Step {
    /// An item for the stream.
    Yield(Result<Delivery, Error>),
    /// The stream is over.
    End,
    /// Nothing to hand out yet: go round again.
    Again,
}

#[async_trait]
impl Subscriber for RabbitSubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        self.check_open()?;
        subscription.validate()?;
        let topology = Arc::new(Topology::of(subscription, &self.client.config));
        let active = open_consumer(&self.client, &topology, subscription.prefetch).await?;
        let state = StreamState {
            client: self.client.clone(),
            dead_letters: self.dead_letters.clone(),
            topology,
            prefetch: subscription.prefetch,
            active: Some(active),
            _close: self.close.clone(),
            closed: self.close.subscribe(),
            attempt: 0,
            reported: false,
            done: false,
            liveness: liveness_timer(),
        };
        Ok(futures::stream::unfold(state, StreamState::next).boxed())
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        self.check_open()?;
        subscription.validate()?;
        let topology = Topology::of(subscription, &self.client.config);
        let deadline = Instant::now() + self.client.config.publish_timeout;
        let channel = self.client.channel(deadline).await?;
        let result = topology
            .declare(&channel, &self.client.config.exchange)
            .await;
        close_channel(&channel).await;
        result
    }

    async fn close(&self) -> Result<(), Error> {
        self.close.send_replace(true);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.client.config)
    }

    /// Connected (a dropped connection is re-opened, waiting at most 2 s) with both
    /// exchanges present; not ready once this subscriber or its broker is closed.
    async fn health(&self) -> Health {
        let closed = *self.close.borrow();
        health::report(&self.client, closed.then_some("rabbitmq subscriber")).await
    }

    /// Messages ready in the subscription's queue. Deliveries a consumer holds unacknowledged
    /// are not counted (AMQP reports only ready messages). An unknown subscription is
    /// [`Error::InvalidName`].
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        self.check_open()?;
        health::lag(&self.client, subscription).await
    }

    /// Deletes the queue and its `dlq.<name>` queue (messages included).
    async fn remove_subscription(&self, subscription: &str) -> Result<(), Error> {
        self.check_open()?;
        longshore_core::topic::validate_name("subscription", subscription)?;
        let deadline = Instant::now() + self.client.config.publish_timeout;
        let channel = self.client.channel(deadline).await?;
        let mut result = Ok(());
        for queue in [subscription.to_string(), dead_letter_topic(subscription)] {
            let deleted = channel
                .queue_delete(
                    queue.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
            if let Err(e) = deleted {
                result = Err(map_lapin("delete queue", e));
                break;
            }
        }
        close_channel(&channel).await;
        result
    }
}
