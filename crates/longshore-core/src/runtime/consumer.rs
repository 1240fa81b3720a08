//! The consumer runtime: dispatch by event type, bounded concurrency, retries, dead letters and
//! graceful shutdown, on top of any [`Subscriber`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::handler::{typed, untyped, ErasedHandler, HandlerContext, HandlerError};
use super::stats::{ConsumerStats, Counters};
use crate::codec::{Codec, JsonCodec};
use crate::error::Error;
use crate::event::DomainEvent;
use crate::observe::{attach, names, TraceContext};
use crate::outbox::Inbox;
use crate::retry::RetryPolicy;
use crate::subscriber::{Delivery, Subscriber, Subscription};

/// What to do with a message whose `event_type` has no handler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownEventPolicy {
    /// Dead-letter it (the default): nothing is silently ignored.
    #[default]
    DeadLetter,
    /// Acknowledge and drop it: for subscriptions that deliberately see more types than they
    /// handle.
    Ack,
}

/// Builds and starts a consumer of one subscription.
///
/// ```no_run
/// # use std::sync::Arc; use std::time::Duration;
/// # use longshore_core::{*, memory::MemoryBroker};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderCreated { order_id: String }
/// # impl DomainEvent for OrderCreated { const EVENT_TYPE: &'static str = "order_created"; }
/// # async fn f() -> Result<(), Error> {
/// let broker = MemoryBroker::default();
/// let consumer = Consumer::new(Arc::new(broker.subscriber()), Subscription::new("billing", ["events.#"]))
///     .on(|order: OrderCreated, _ctx| async move {
///         println!("bill {}", order.order_id);
///         Ok(())
///     })
///     .concurrency(8)
///     .start()
///     .await?;
/// let stats = consumer.shutdown(Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
pub struct Consumer {
    subscriber: Arc<dyn Subscriber>,
    subscription: Subscription,
    codec: Arc<dyn Codec>,
    handlers: HashMap<String, ErasedHandler>,
    retry: RetryPolicy,
    unknown: UnknownEventPolicy,
    concurrency: usize,
    inbox: Option<Arc<dyn Inbox>>,
    lag_interval: Option<Duration>,
}

/// How often a consumer asks its backend for the subscription's lag, by default.
pub const DEFAULT_LAG_INTERVAL: Duration = Duration::from_secs(15);

impl Consumer {
    /// A consumer of `subscription` with the JSON codec, 16 concurrent handlers and the
    /// default retry policy.
    pub fn new(subscriber: Arc<dyn Subscriber>, subscription: Subscription) -> Self {
        Consumer {
            subscriber,
            subscription,
            codec: Arc::new(JsonCodec),
            handlers: HashMap::new(),
            retry: RetryPolicy::default(),
            unknown: UnknownEventPolicy::default(),
            concurrency: 16,
            inbox: None,
            lag_interval: Some(DEFAULT_LAG_INTERVAL),
        }
    }

    /// Handles events of type `T` (dispatched on `T::EVENT_TYPE`).
    pub fn on<T, F, Fut>(mut self, handler: F) -> Self
    where
        T: DomainEvent,
        F: Fn(T, HandlerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handlers
            .insert(T::EVENT_TYPE.to_string(), typed(handler));
        self
    }

    /// Handles events of `event_type` untyped: the handler reads `ctx.event`.
    pub fn on_event<F, Fut>(mut self, event_type: impl Into<String>, handler: F) -> Self
    where
        F: Fn(HandlerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handlers.insert(event_type.into(), untyped(handler));
        self
    }

    /// How many messages are handled at once (also the subscription's prefetch).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.clamp(1, usize::from(u16::MAX));
        self
    }

    /// Sets the retry policy for transient handler errors.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets what happens to events without a handler.
    pub fn on_unknown(mut self, policy: UnknownEventPolicy) -> Self {
        self.unknown = policy;
        self
    }

    /// Uses another codec.
    pub fn codec(mut self, codec: Arc<dyn Codec>) -> Self {
        self.codec = codec;
        self
    }

    /// Skips (acks) messages whose id the inbox has seen, and records ids after success.
    ///
    /// The check and the record are two steps around the handler, so two copies of one message
    /// handled at the same moment (concurrency > 1, or two consumers) can both run. Where a
    /// handler's effects must happen exactly once, record the id in the same transaction as
    /// the effects (`longshore_postgres::PgInbox::process_once`) or consume with concurrency 1.
    pub fn inbox(mut self, inbox: Arc<dyn Inbox>) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// How often to read the subscription's lag from the backend into the
    /// `longshore_consumer_lag` gauge (default 15 s); `None` turns it off.
    pub fn lag_interval(mut self, every: Option<Duration>) -> Self {
        self.lag_interval = every.filter(|d| !d.is_zero());
        self
    }

    /// Subscribes and starts consuming in a background task.
    ///
    /// Subscription errors (bad names, unreachable broker) are returned here, not later.
    pub async fn start(self) -> Result<ConsumerHandle, Error> {
        let prefetch = u16::try_from(self.concurrency).unwrap_or(u16::MAX);
        let subscription = self.subscription.clone().with_prefetch(prefetch);
        let stream = self.subscriber.subscribe(&subscription).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let backend = self.subscriber.capabilities().backend;
        if let Some(every) = self.lag_interval {
            tokio::spawn(poll_lag(
                self.subscriber.clone(),
                self.subscription.name.clone(),
                every,
                stop_rx.clone(),
            ));
        }
        let worker = Arc::new(Worker {
            metrics: WorkerMetrics::new(backend, &self.subscription.name),
            backend,
            subscription: self.subscription.name.clone(),
            codec: self.codec,
            handlers: self.handlers,
            retry: self.retry,
            unknown: self.unknown,
            inbox: self.inbox,
            counters: counters.clone(),
        });
        let (deadline_tx, deadline_rx) = watch::channel(None);
        let task = tokio::spawn(run(worker, stream, self.concurrency, stop_rx, deadline_rx));
        Ok(ConsumerHandle {
            stop: stop_tx,
            deadline: deadline_tx,
            task,
            counters,
        })
    }
}

/// A running consumer. Dropping the handle stops it as [`ConsumerHandle::shutdown`] with a
/// zero deadline would: nothing unfinished is acknowledged.
pub struct ConsumerHandle {
    stop: watch::Sender<bool>,
    deadline: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
}

impl ConsumerHandle {
    /// The counters so far.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// Whether the consumer stopped by itself (its subscription stream ended).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops fetching, lets in-flight handlers finish for up to `deadline`, then abandons the
    /// rest unacknowledged (the broker redelivers them) and returns the final counters.
    pub async fn shutdown(self, deadline: Duration) -> ConsumerStats {
        self.deadline.send_replace(Some(deadline));
        self.stop.send_replace(true);
        let _ = self.task.await;
        self.counters.snapshot()
    }
}

struct Worker {
    backend: &'static str,
    metrics: WorkerMetrics,
    subscription: String,
    codec: Arc<dyn Codec>,
    handlers: HashMap<String, ErasedHandler>,
    retry: RetryPolicy,
    unknown: UnknownEventPolicy,
    inbox: Option<Arc<dyn Inbox>>,
    counters: Arc<Counters>,
}

/// The runtime's metric handles, registered once per consumer.
struct WorkerMetrics {
    retried: metrics::Counter,
    handled_ok: metrics::Histogram,
    handled_retry: metrics::Histogram,
    handled_dead: metrics::Histogram,
}

impl WorkerMetrics {
    fn new(backend: &'static str, subscription: &str) -> Self {
        let labels = |outcome: &'static str| {
            [
                ("backend", backend.to_string()),
                ("subscription", subscription.to_string()),
                ("outcome", outcome.to_string()),
            ]
        };
        WorkerMetrics {
            retried: metrics::counter!(
                names::RETRIED,
                "backend" => backend,
                "subscription" => subscription.to_string()
            ),
            handled_ok: metrics::histogram!(names::HANDLER_DURATION, &labels("ok")),
            handled_retry: metrics::histogram!(names::HANDLER_DURATION, &labels("retry")),
            handled_dead: metrics::histogram!(names::HANDLER_DURATION, &labels("dead_letter")),
        }
    }
}

/// Reads the subscription's lag into its gauge until the consumer stops. Stops at once on a
/// backend that cannot tell.
async fn poll_lag(
    subscriber: Arc<dyn Subscriber>,
    subscription: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let gauge = metrics::gauge!(
        names::CONSUMER_LAG,
        "backend" => subscriber.capabilities().backend,
        "subscription" => subscription.clone()
    );
    loop {
        match subscriber.lag(&subscription).await {
            Ok(Some(lag)) => gauge.set(lag as f64),
            Ok(None) => return,
            Err(e) => tracing::debug!(%subscription, error = %e, "could not read consumer lag"),
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn run(
    worker: Arc<Worker>,
    mut stream: crate::subscriber::DeliveryStream,
    concurrency: usize,
    mut stop: watch::Receiver<bool>,
    deadline: watch::Receiver<Option<Duration>>,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = stopped(&mut stop) => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let next = tokio::select! {
            _ = stopped(&mut stop) => break,
            next = stream.next() => next,
        };
        match next {
            None => break,
            Some(Err(e)) => {
                Counters::inc(&worker.counters.stream_errors);
                tracing::warn!(subscription = %worker.subscription, error = %e, "delivery stream error");
                if !e.is_retryable() {
                    tracing::error!(subscription = %worker.subscription, "delivery stream failed for good; consumer stops");
                    break;
                }
            }
            Some(Ok(delivery)) => {
                Counters::inc(&worker.counters.received);
                let worker = worker.clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    worker.process(delivery, stop).await;
                    drop(slot);
                });
            }
        }
    }
    // Stop fetching, but keep the stream (and so the broker channel) alive while in-flight
    // handlers settle their deliveries.
    let limit = (*deadline.borrow()).unwrap_or(Duration::ZERO);
    let drained =
        tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(subscription = %worker.subscription, unfinished = tasks.len(), "shutdown deadline passed; abandoning unfinished deliveries unacknowledged");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    drop(stream);
}

impl Worker {
    async fn process(&self, delivery: Delivery, mut stop: watch::Receiver<bool>) {
        // Continue the trace the message carries (or start one for a message that has none,
        // from a publisher that does not trace), so whatever the handler publishes joins it.
        let parent = TraceContext::from_headers(&delivery.message.headers);
        let trace = parent
            .as_ref()
            .map_or_else(TraceContext::new_root, TraceContext::child);
        let span = tracing::info_span!(
            "longshore.handle",
            backend = self.backend,
            subscription = %self.subscription,
            topic = %delivery.topic,
            message_id = %delivery.message.id,
            event_type = tracing::field::Empty,
            attempt = delivery.attempt,
            trace_id = %trace.trace_id_hex(),
        );
        if let Some(parent) = &parent {
            attach(&span, parent);
        }
        async move {
            let event = match self.codec.decode(&delivery.message) {
                Ok(event) => Arc::new(event),
                Err(e) => {
                    let attempts = delivery.attempt;
                    return self.dead_letter(delivery, format!("undecodable message: {e}"), attempts).await;
                }
            };
            tracing::Span::current().record("event_type", event.event_type.as_str());
            let Some(handler) = self.handlers.get(&event.event_type) else {
                return match self.unknown {
                    UnknownEventPolicy::Ack => self.ack(delivery).await,
                    UnknownEventPolicy::DeadLetter => {
                        let attempts = delivery.attempt;
                        let reason = format!("unknown event type {:?}", event.event_type);
                        self.dead_letter(delivery, reason, attempts).await
                    }
                };
            };
            if let Some(inbox) = &self.inbox {
                match inbox.is_processed(&self.subscription, &delivery.message.id).await {
                    Ok(true) => {
                        Counters::inc(&self.counters.duplicates);
                        return self.ack(delivery).await;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        // Without the inbox we cannot tell a duplicate; let the broker retry.
                        tracing::warn!(error = %e, "inbox unavailable; message will be redelivered");
                        return self.requeue(delivery).await;
                    }
                }
            }
            let mut attempt = delivery.attempt;
            loop {
                let ctx = HandlerContext {
                    subscription: self.subscription.clone(),
                    topic: delivery.topic.clone(),
                    attempt,
                    event: event.clone(),
                };
                // A panicking handler is a failed attempt, not a dead consumer.
                let started = std::time::Instant::now();
                let result = trace
                    .clone()
                    .scope(std::panic::AssertUnwindSafe(handler(ctx)).catch_unwind())
                    .await;
                let took = started.elapsed();
                let error = match result {
                    Ok(Ok(())) => {
                        self.metrics.handled_ok.record(took);
                        if let Some(inbox) = &self.inbox {
                            if let Err(e) = inbox.mark_processed(&self.subscription, &delivery.message.id).await {
                                tracing::warn!(error = %e, "could not record message in inbox; it may be handled again");
                            }
                        }
                        return self.ack(delivery).await;
                    }
                    Ok(Err(e)) => e,
                    Err(_) => HandlerError::transient("handler panicked"),
                };
                if error.is_permanent() {
                    self.metrics.handled_dead.record(took);
                    return self.dead_letter(delivery, format!("permanent error: {error}"), attempt).await;
                }
                if attempt >= self.retry.max_attempts {
                    self.metrics.handled_dead.record(took);
                    let reason = format!("gave up after {attempt} attempts: {error}");
                    return self.dead_letter(delivery, reason, attempt).await;
                }
                tracing::debug!(attempt, error = %error, "handler failed; retrying");
                Counters::inc(&self.counters.retried);
                self.metrics.handled_retry.record(took);
                self.metrics.retried.increment(1);
                let delay = self.retry.backoff(attempt);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => attempt += 1,
                    _ = stopped(&mut stop) => return self.requeue(delivery).await,
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn ack(&self, delivery: Delivery) {
        match delivery.ack().await {
            Ok(()) => Counters::inc(&self.counters.acked),
            Err(e) => self.settle_failed("ack", e),
        }
    }

    async fn requeue(&self, delivery: Delivery) {
        match delivery.nack(None).await {
            Ok(()) => Counters::inc(&self.counters.requeued),
            Err(e) => self.settle_failed("nack", e),
        }
    }

    async fn dead_letter(&self, delivery: Delivery, reason: String, attempts: u32) {
        tracing::warn!(%reason, attempts, "dead-lettering message");
        match delivery.dead_letter_after(reason, attempts).await {
            Ok(()) => Counters::inc(&self.counters.dead_lettered),
            Err(e) => self.settle_failed("dead-letter", e),
        }
    }

    fn settle_failed(&self, what: &str, e: Error) {
        Counters::inc(&self.counters.settle_errors);
        tracing::warn!(error = %e, "{what} failed; the broker will redeliver the message");
    }
}

/// Resolves once stop is requested or the handle is dropped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard returned by `wait_for` is not `Send`; drop it before the caller goes on.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
