//! The consumer builder and its handle: what a service configures (handlers, ordering,
//! retries, flow control) and the fetch loop that feeds the worker pool.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::batch::{batch_spec, BatchSpec};
use super::flow::{BreakerState, CircuitBreaker, ConsumerHealth, ConsumerProbe, Flow};
use super::handler::{typed, untyped, ErasedHandler, HandlerContext, HandlerError};
use super::lanes::Lanes;
use super::settle::Settler;
use super::state::WithState;
use super::stats::{ConsumerStats, Counters};
use super::stopped;
use super::worker::{ExpiredPolicy, Route, UnknownEventPolicy, Worker};
use crate::codec::{Codec, JsonCodec};
use crate::error::Error;
use crate::event::DomainEvent;
use crate::inbox::Inbox;
use crate::observe::names;
use crate::retry::RetryPolicy;
use crate::subscriber::{DeliveryStream, Subscriber, Subscription};

/// Builds and starts a consumer of one subscription.
///
/// ```no_run
/// # use std::sync::Arc; use std::time::Duration;
/// # use longshore_core::{*, memory::MemoryBroker};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderCreated { order_id: String }
/// # impl DomainEvent for OrderCreated { const EVENT_TYPE: &'static str = "order_created"; }
/// # async fn f() -> Result<(), Error> {
/// let broker = MemoryBroker::default();
/// let consumer = Consumer::new(broker.subscriber(), Subscription::new("billing", ["events.#"]))
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
    routes: HashMap<String, RouteSpec>,
    retry: RetryPolicy,
    unknown: UnknownEventPolicy,
    expired: ExpiredPolicy,
    concurrency: usize,
    ordered: bool,
    breaker: Option<CircuitBreaker>,
    rate: Option<f64>,
    inbox: Option<Arc<dyn Inbox>>,
    lag_interval: Option<Duration>,
}

/// A handler as registered, before the consumer starts.
enum RouteSpec {
    One(ErasedHandler),
    Batch(BatchSpec),
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
            routes: HashMap::new(),
            retry: RetryPolicy::default(),
            unknown: UnknownEventPolicy::default(),
            expired: ExpiredPolicy::default(),
            concurrency: 16,
            ordered: false,
            breaker: None,
            rate: None,
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
        let route = RouteSpec::One(typed(handler));
        self.routes.insert(T::EVENT_TYPE.to_string(), route);
        self
    }

    /// Gives the handlers registered next a state: `.with_state(app).on(|app, event: T, ctx|
    /// async move { … })`. Each call gets its own clone of `state` (an `Arc`, a pool, a
    /// handle), owned by the handler's future, so it can be used across awaits without the
    /// clone-outside-and-inside-the-closure dance. See [`WithState`].
    pub fn with_state<S: Clone + Send + Sync + 'static>(self, state: S) -> WithState<S> {
        WithState::new(self, state)
    }

    /// Handles events of `event_type` untyped: the handler reads `ctx.event`.
    pub fn on_event<F, Fut>(mut self, event_type: impl Into<String>, handler: F) -> Self
    where
        F: Fn(HandlerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let route = RouteSpec::One(untyped(handler));
        self.routes.insert(event_type.into(), route);
        self
    }

    /// Handles events of type `T` in batches: the handler gets up to `max_size` events with
    /// their contexts, or fewer once `max_wait` has passed since the first arrived, and returns
    /// one outcome per event, in the same order: `Ok` acks it, a transient error retries it
    /// (in a later batch, after the retry policy's backoff; dead-lettered after the last
    /// attempt), a permanent error dead-letters it. A missing outcome counts as a transient
    /// failure.
    ///
    /// Events that do not decode into `T` never reach the batch: they are dead-lettered. One
    /// batch of a type runs at a time. The consumer holds at least `max_size` deliveries (its
    /// prefetch grows to fit), so a batch can fill. With [`Consumer::ordered_by_key`] a batch
    /// holds at most one message per key: the next of the key waits until the one before is
    /// settled.
    pub fn on_batch<T, F, Fut>(mut self, max_size: usize, max_wait: Duration, handler: F) -> Self
    where
        T: DomainEvent,
        F: Fn(Vec<(T, HandlerContext)>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<(), HandlerError>>> + Send + 'static,
    {
        let route = RouteSpec::Batch(batch_spec(max_size, max_wait, handler));
        self.routes.insert(T::EVENT_TYPE.to_string(), route);
        self
    }

    /// How many handlers run at once (the size of the worker pool) and how many deliveries
    /// the runtime takes at once, unless a batch handler needs more. The subscription's
    /// prefetch (raised to this if lower) bounds what the backend holds for the consumer.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.clamp(1, usize::from(u16::MAX));
        self
    }

    /// Handles messages with the same [`Message::key`](crate::Message::key) one after another,
    /// in delivery order, and different keys in parallel (up to the concurrency). Messages
    /// without a key run unordered. A message being retried in process holds back its own key
    /// only; settling it (ack, dead letter) lets the next of its key run.
    pub fn ordered_by_key(mut self) -> Self {
        self.ordered = true;
        self
    }

    /// Stops fetching after consecutive transient failures, for a cool-off, then probes with
    /// one message (see [`CircuitBreaker`]). Its state is in [`ConsumerHandle::health`] and the
    /// `longshore_circuit_breaker_state` gauge.
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Takes at most `per_second` messages per second from the subscription (a token bucket
    /// allowing bursts of a tenth of a second's worth). Not positive or not finite: no limit.
    pub fn rate_limit(mut self, per_second: f64) -> Self {
        self.rate = Some(per_second);
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

    /// Sets what happens to messages past their expiry ([`Message::expires_at`]): dropped
    /// (the default) or dead-lettered with reason `expired`; counted either way
    /// (`longshore_expired_total`).
    ///
    /// [`Message::expires_at`]: crate::Message::expires_at
    pub fn on_expired(mut self, policy: ExpiredPolicy) -> Self {
        self.expired = policy;
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

    /// Subscribes and starts consuming in background tasks: the fetch loop and a fixed pool of
    /// `concurrency` workers (plus one runner per batch handler).
    ///
    /// Subscription errors (bad names, unreachable broker) are returned here, not later.
    pub async fn start(self) -> Result<ConsumerHandle, Error> {
        let largest_batch = self.routes.values().map(|r| match r {
            RouteSpec::Batch(b) => b.max_size,
            RouteSpec::One(_) => 0,
        });
        let held = largest_batch.fold(self.concurrency, usize::max);
        // The runtime takes at most `held` deliveries off the stream; the backend may hold up
        // to the subscription's prefetch beyond them, so the next ones are already on their
        // way when a worker frees up (a prefetch of `held` left the broker idle for a round
        // trip each time). Deliveries the runtime has not taken are not started by a paused
        // consumer, and closing the stream gives them back.
        let prefetch = u16::try_from(held)
            .unwrap_or(u16::MAX)
            .max(self.subscription.prefetch);
        let subscription = self.subscription.clone().with_prefetch(prefetch);
        let stream = self.subscriber.subscribe(&subscription).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let capabilities = self.subscriber.capabilities();
        let backend = capabilities.backend;
        let name = self.subscription.name.clone();
        if let Some(every) = self.lag_interval {
            tokio::spawn(poll_lag(
                self.subscriber.clone(),
                name.clone(),
                every,
                stop_rx.clone(),
            ));
        }
        let flow = Arc::new(Flow::new(
            self.breaker,
            self.rate,
            counters.clone(),
            backend,
            &name,
        ));
        let settler = Arc::new(Settler::new(
            &capabilities,
            name,
            self.retry,
            self.inbox,
            counters.clone(),
            Arc::new(Lanes::new(self.ordered)),
            flow.clone(),
        ));
        let (halt_tx, halt_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut routes = BTreeMap::new();
        for (event_type, spec) in self.routes {
            let route = match spec {
                RouteSpec::One(handler) => Route::One(handler),
                RouteSpec::Batch(spec) => {
                    let (route, runner) = spec.start(settler.clone(), halt_rx.clone());
                    tasks.spawn(runner);
                    Route::Batch(route)
                }
            };
            routes.insert(event_type, route);
        }
        let worker = Arc::new(Worker {
            settler,
            codec: self.codec,
            routes,
            unknown: self.unknown,
            expired: self.expired,
        });
        for _ in 0..self.concurrency {
            tasks.spawn(worker.clone().run(halt_rx.clone()));
        }
        let (deadline_tx, deadline_rx) = watch::channel(None);
        let pool = Pool {
            worker,
            tasks,
            halt: halt_tx,
            held,
        };
        let task = tokio::spawn(pool.run(stream, stop_rx, deadline_rx));
        Ok(ConsumerHandle {
            stop: stop_tx,
            deadline: deadline_tx,
            task,
            counters,
            flow,
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
    flow: Arc<Flow>,
}

impl ConsumerHandle {
    /// The counters so far.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// Whether it is running, paused, and the circuit breaker's state.
    pub fn health(&self) -> ConsumerHealth {
        ConsumerHealth {
            running: !self.task.is_finished() && !*self.stop.borrow(),
            paused: self.flow.is_paused(),
            breaker: self.flow.breaker_state(),
        }
    }

    /// A cloneable view of [`ConsumerHandle::health`], for a health endpoint that does not
    /// own the handle (e.g. `Longshore::watch_consumer`).
    pub fn probe(&self) -> ConsumerProbe {
        ConsumerProbe {
            flow: self.flow.clone(),
            stop: self.stop.subscribe(),
            task: self.task.abort_handle(),
        }
    }

    /// The circuit breaker's state ([`BreakerState::Closed`] without a breaker).
    pub fn breaker(&self) -> BreakerState {
        self.flow.breaker_state()
    }

    /// Stops taking deliveries from the subscription: from now on no handler starts on a
    /// delivery fetched after this call (the runtime takes at most one more; the backend holds
    /// no more than the prefetch, unacknowledged). Deliveries taken before run to their end.
    pub fn pause(&self) {
        self.flow.set_paused(true);
    }

    /// Takes deliveries again after [`ConsumerHandle::pause`].
    pub fn resume(&self) {
        self.flow.set_paused(false);
    }

    /// Whether the consumer stopped by itself (its subscription stream ended).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops fetching, lets running handlers finish for up to `deadline`, then abandons the
    /// rest unacknowledged (the broker redelivers them) and returns the final counters.
    /// Deliveries taken but not started (queued behind their key, waiting for a worker or a
    /// batch) are given back at once.
    pub async fn shutdown(self, deadline: Duration) -> ConsumerStats {
        self.deadline.send_replace(Some(deadline));
        self.stop.send_replace(true);
        let _ = self.task.await;
        self.counters.snapshot()
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

/// The started pool: workers and batch runners, and the signal that halts them.
struct Pool {
    worker: Arc<Worker>,
    tasks: JoinSet<()>,
    halt: watch::Sender<bool>,
    /// How many deliveries the consumer holds at most.
    held: usize,
}

impl Pool {
    async fn run(
        mut self,
        mut stream: DeliveryStream,
        mut stop: watch::Receiver<bool>,
        deadline: watch::Receiver<Option<Duration>>,
    ) {
        let settler = self.worker.settler.clone();
        fetch(&settler, &mut stream, self.held, &mut stop).await;
        // Stop starting work, but keep the stream (and so the broker channel) alive while
        // running handlers settle their deliveries.
        self.halt.send_replace(true);
        let limit = (*deadline.borrow()).unwrap_or(Duration::ZERO);
        let tasks = &mut self.tasks;
        let drained =
            tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(subscription = %settler.subscription, unfinished = self.tasks.len(), "shutdown deadline passed; abandoning unfinished deliveries unacknowledged");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        for job in settler.lanes.take_all() {
            settler.requeue(job).await;
        }
        drop(stream);
    }
}

/// The fetch loop: takes a delivery whenever the consumer holds fewer than `held`, and hands
/// it to the lanes once flow control lets it pass. Returns on stop, the stream's end, or a
/// stream error that will not heal.
async fn fetch(
    settler: &Settler,
    stream: &mut DeliveryStream,
    held: usize,
    stop: &mut watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(held));
    let mut gate = settler.flow.gate();
    // A stop is seen by a plain read at the top of every turn; the stop future (one for the
    // whole loop) is polled only while the loop waits, so a busy loop neither registers with
    // the stop signal per message nor draws a random branch order.
    let watched = stop.clone();
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        if *watched.borrow() {
            return;
        }
        let permit = tokio::select! {
            biased;
            permit = slots.clone().acquire_owned() => permit,
            _ = &mut stop => return,
        };
        let Ok(permit) = permit else { return };
        let next = tokio::select! {
            biased;
            next = stream.next() => next,
            _ = &mut stop => return,
        };
        let delivery = match next {
            None => return,
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => {
                Counters::inc(&settler.counters.stream_errors);
                tracing::warn!(subscription = %settler.subscription, error = %e, "delivery stream error");
                if !e.is_retryable() {
                    tracing::error!(subscription = %settler.subscription, "delivery stream failed for good; consumer stops");
                    return;
                }
                continue;
            }
        };
        Counters::inc(&settler.counters.received);
        let job = settler.lanes.job(delivery, permit);
        // Flow control acts here, after the fetch, so a pause or an opened breaker that came
        // while the loop waited on an idle stream still holds the delivery that ends the wait:
        // one delivery at most, within the prefetch.
        if !*watched.borrow() {
            tokio::select! {
                biased;
                _ = gate.pass() => {
                    settler.lanes.admit(job);
                    continue;
                }
                _ = &mut stop => {}
            }
        }
        // Stopped: never admitted, so its key is not in flight: give it back without
        // releasing.
        let mut job = job;
        job.key = None;
        return settler.requeue(job).await;
    }
}
