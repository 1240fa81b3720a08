//! The in-memory broker: durable-for-the-process subscriptions with the same semantics as the
//! real brokers (fan-out across subscriptions, competing consumers within one, prefetch,
//! redelivery, dead letters), and bounded queues.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream;
use tokio::sync::Notify;

use crate::capabilities::Capabilities;
use crate::error::{BatchError, Error};
use crate::message::Message;
use crate::publisher::Publisher;
use crate::subscriber::{
    dead_letter_message, dead_letter_topic, Acker, DeadLetter, Delivery, DeliveryStream,
    Subscriber, Subscription,
};
use crate::topic::validate_topic;

const BACKEND: &str = "memory";

/// Limits of the in-memory broker.
#[derive(Clone, Debug)]
pub struct MemoryConfig {
    /// Most messages a subscription holds (ready + unacknowledged). A publish into a full
    /// subscription waits for room up to `publish_timeout`, then fails with
    /// [`Error::Backpressure`]: memory never grows without bound.
    pub max_queue_depth: usize,
    /// How long a publish waits for room in a full subscription.
    pub publish_timeout: Duration,
    /// Largest payload accepted.
    pub max_payload: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_queue_depth: 100_000,
            publish_timeout: Duration::from_secs(5),
            max_payload: 16 * 1024 * 1024,
        }
    }
}

struct Entry {
    message: Message,
    topic: String,
    attempt: u32,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Entry>,
    /// Messages handed out (or waiting out a nack delay) and not yet settled.
    outstanding: usize,
}

struct Queue {
    name: String,
    patterns: Mutex<Vec<String>>,
    state: Mutex<QueueState>,
    /// Woken when a message becomes ready or a consumer's prefetch frees up.
    ready: Notify,
    /// Woken when room frees up for publishers.
    room: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of plain data; the data is
    // still consistent for our operations, so keep serving rather than cascading panics.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queue {
    fn depth(state: &QueueState) -> usize {
        state.ready.len() + state.outstanding
    }

    fn settle(&self) {
        let mut s = lock(&self.state);
        s.outstanding = s.outstanding.saturating_sub(1);
        drop(s);
        self.room.notify_waiters();
        self.ready.notify_waiters();
    }

    /// Puts a handed-out message back at the head, so an in-order consumer sees it next.
    fn requeue(&self, entry: Entry) {
        let mut s = lock(&self.state);
        s.outstanding = s.outstanding.saturating_sub(1);
        s.ready.push_front(entry);
        drop(s);
        self.ready.notify_waiters();
    }
}

struct Shared {
    config: MemoryConfig,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    /// Which subscriptions each topic routes to, so a publish costs a hash lookup instead of
    /// matching every pattern. Cleared whenever a subscription or binding is added; bounded by
    /// clearing when it grows past `ROUTE_CACHE_LIMIT` topics.
    routes: Mutex<HashMap<String, Arc<[Arc<Queue>]>>>,
}

/// Most topics whose routes are cached at once.
const ROUTE_CACHE_LIMIT: usize = 10_000;

impl Shared {
    fn ensure_queue(&self, name: &str, patterns: &[String]) -> Arc<Queue> {
        let mut queues = lock(&self.queues);
        let queue = queues
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Queue {
                    name: name.to_string(),
                    patterns: Mutex::new(Vec::new()),
                    state: Mutex::new(QueueState::default()),
                    ready: Notify::new(),
                    room: Notify::new(),
                })
            })
            .clone();
        let mut bound = lock(&queue.patterns);
        for p in patterns {
            if !bound.contains(p) {
                bound.push(p.clone());
            }
        }
        drop(bound);
        // Still under the queues lock: routes computed from now on see this binding.
        lock(&self.routes).clear();
        drop(queues);
        queue
    }

    fn matching(&self, topic: &str) -> Arc<[Arc<Queue>]> {
        if let Some(hit) = lock(&self.routes).get(topic) {
            return hit.clone();
        }
        // Match under the queues lock, so a subscription added meanwhile (which clears the
        // cache under the same lock) cannot be missed by what we insert.
        let queues = lock(&self.queues);
        let found: Arc<[Arc<Queue>]> = queues
            .values()
            .filter(|q| {
                lock(&q.patterns)
                    .iter()
                    .any(|p| crate::topic::matches(p, topic))
            })
            .cloned()
            .collect();
        let mut routes = lock(&self.routes);
        if routes.len() >= ROUTE_CACHE_LIMIT {
            routes.clear();
        }
        routes.insert(topic.to_string(), found.clone());
        drop(routes);
        drop(queues);
        found
    }

    /// Routes one message to every matching subscription, waiting for room where one is full.
    async fn route(&self, topic: &str, message: &Message) -> Result<(), Error> {
        for queue in self.matching(topic).iter() {
            let deadline = tokio::time::Instant::now() + self.config.publish_timeout;
            loop {
                let room = queue.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                {
                    let mut s = lock(&queue.state);
                    if Queue::depth(&s) < self.config.max_queue_depth {
                        s.ready.push_back(Entry {
                            message: message.clone(),
                            topic: topic.to_string(),
                            attempt: 1,
                        });
                        drop(s);
                        queue.ready.notify_waiters();
                        break;
                    }
                }
                if tokio::time::timeout_at(deadline, room).await.is_err() {
                    return Err(Error::Backpressure {
                        queue: queue.name.clone(),
                        capacity: self.config.max_queue_depth,
                        waited: self.config.publish_timeout,
                    });
                }
            }
        }
        Ok(())
    }
}

/// An in-process broker. Clone it, or take [`MemoryBroker::publisher`] and
/// [`MemoryBroker::subscriber`] handles; all clones share the same subscriptions.
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(MemoryConfig::default())
    }
}

impl MemoryBroker {
    /// A broker with the given limits.
    pub fn new(config: MemoryConfig) -> Self {
        MemoryBroker {
            shared: Arc::new(Shared {
                routes: Mutex::new(HashMap::new()),
                config,
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A publisher handle.
    pub fn publisher(&self) -> MemoryPublisher {
        MemoryPublisher {
            shared: self.shared.clone(),
            closed: AtomicBool::new(false),
        }
    }

    /// A subscriber handle.
    pub fn subscriber(&self) -> MemorySubscriber {
        MemorySubscriber {
            shared: self.shared.clone(),
            closed: Arc::new(Closed {
                flag: AtomicBool::new(false),
                notify: Notify::new(),
            }),
        }
    }

    /// Messages ready or unacknowledged in a subscription (0 if it does not exist).
    pub fn depth(&self, subscription: &str) -> usize {
        lock(&self.shared.queues)
            .get(subscription)
            .map_or(0, |q| Queue::depth(&lock(&q.state)))
    }

    /// What the memory backend can do.
    pub fn capabilities(&self) -> Capabilities {
        capabilities(&self.shared.config)
    }
}

fn capabilities(config: &MemoryConfig) -> Capabilities {
    Capabilities {
        native_delay: true,
        delivery_count: true,
        ..Capabilities::new(BACKEND, config.max_payload)
    }
}

/// Publishing handle of a [`MemoryBroker`].
pub struct MemoryPublisher {
    shared: Arc<Shared>,
    closed: AtomicBool,
}

impl MemoryPublisher {
    fn check(&self, topic: &str, message: &Message) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("memory publisher"));
        }
        validate_topic(topic)?;
        message.check_limits(self.shared.config.max_payload)
    }
}

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.check(topic, &message)?;
        self.shared.route(topic, &message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        let total = messages.len();
        let mut failed = Vec::new();
        for (index, message) in messages.into_iter().enumerate() {
            let result = match self.check(topic, &message) {
                Ok(()) => self.shared.route(topic, &message).await,
                Err(e) => Err(e),
            };
            if let Err(error) = result {
                failed.push(crate::error::FailedMessage {
                    index,
                    message,
                    error,
                });
            }
        }
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
        capabilities(&self.shared.config)
    }
}

struct Closed {
    flag: AtomicBool,
    notify: Notify,
}

/// Subscribing handle of a [`MemoryBroker`].
pub struct MemorySubscriber {
    shared: Arc<Shared>,
    closed: Arc<Closed>,
}

impl MemorySubscriber {
    fn declare(&self, subscription: &Subscription) -> Result<Arc<Queue>, Error> {
        subscription.validate()?;
        if !subscription.is_dead_letter_queue() {
            // Dead letters are kept from the moment the subscription exists, like a DLQ queue
            // bound to the dead-letter exchange.
            let dlq = dead_letter_topic(&subscription.name);
            self.shared.ensure_queue(&dlq, std::slice::from_ref(&dlq));
        }
        Ok(self
            .shared
            .ensure_queue(&subscription.name, &subscription.patterns))
    }
}

struct Consumer {
    queue: Arc<Queue>,
    in_flight: Arc<AtomicUsize>,
    prefetch: usize,
    closed: Arc<Closed>,
    shared: Arc<Shared>,
}

impl Consumer {
    fn try_take(&self) -> Option<Delivery> {
        if self.in_flight.load(Ordering::Acquire) >= self.prefetch {
            return None;
        }
        let mut s = lock(&self.queue.state);
        let entry = s.ready.pop_front()?;
        s.outstanding += 1;
        drop(s);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        // The acker keeps its own copy so that an unsettled drop can requeue the message
        // (payload bytes are shared, not copied).
        let acker = MemoryAcker {
            entry: Some(Entry {
                message: entry.message.clone(),
                topic: entry.topic.clone(),
                attempt: entry.attempt,
            }),
            queue: self.queue.clone(),
            in_flight: self.in_flight.clone(),
            shared: self.shared.clone(),
        };
        let Entry {
            message,
            topic,
            attempt,
        } = entry;
        Some(Delivery::new(message, topic, attempt, Box::new(acker)))
    }

    async fn next(&self) -> Option<Delivery> {
        loop {
            let ready = self.queue.ready.notified();
            let closed = self.closed.notify.notified();
            tokio::pin!(ready, closed);
            ready.as_mut().enable();
            closed.as_mut().enable();
            if self.closed.flag.load(Ordering::Acquire) {
                return None;
            }
            if let Some(delivery) = self.try_take() {
                return Some(delivery);
            }
            tokio::select! {
                _ = ready => {}
                _ = closed => {}
            }
        }
    }
}

#[async_trait]
impl Subscriber for MemorySubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        if self.closed.flag.load(Ordering::Acquire) {
            return Err(Error::Closed("memory subscriber"));
        }
        let queue = self.declare(subscription)?;
        let consumer = Consumer {
            queue,
            in_flight: Arc::new(AtomicUsize::new(0)),
            prefetch: usize::from(subscription.prefetch.max(1)),
            closed: self.closed.clone(),
            shared: self.shared.clone(),
        };
        Ok(Box::pin(stream::unfold(consumer, |c| async move {
            let d = c.next().await?;
            Some((Ok(d), c))
        })))
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        self.declare(subscription).map(|_| ())
    }

    async fn close(&self) -> Result<(), Error> {
        self.closed.flag.store(true, Ordering::Release);
        self.closed.notify.notify_waiters();
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.shared.config)
    }
}

struct MemoryAcker {
    /// `Some` until settled; a drop while `Some` requeues the message.
    entry: Option<Entry>,
    queue: Arc<Queue>,
    in_flight: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl MemoryAcker {
    fn release_prefetch(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.attempt += 1;
            self.release_prefetch();
            self.queue.requeue(entry);
        }
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        if self.entry.take().is_some() {
            self.release_prefetch();
            self.queue.settle();
        }
        Ok(())
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let Some(mut entry) = self.entry.take() else {
            return Ok(());
        };
        entry.attempt += 1;
        self.release_prefetch();
        match delay {
            None | Some(Duration::ZERO) => self.queue.requeue(entry),
            Some(delay) => {
                // The message stays counted as outstanding while it waits, so the queue's
                // bound holds; the prefetch slot is free for other messages meanwhile.
                self.queue.ready.notify_waiters();
                let queue = self.queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    queue.requeue(entry);
                });
            }
        }
        Ok(())
    }

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let dlq = dead_letter_topic(&self.queue.name);
        let letter = dead_letter_message(message, topic, &self.queue.name, &dead);
        // Publish first, settle after: if the dead-letter queue refuses, the drop requeues.
        self.shared.route(&dlq, &letter).await?;
        if self.entry.take().is_some() {
            self.release_prefetch();
            self.queue.settle();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_new_subscription_invalidates_cached_routes() {
        let broker = MemoryBroker::default();
        let publisher = broker.publisher();
        // Caches "no subscription" for the topic.
        publisher
            .publish("orders.created", Message::new("early"))
            .await
            .expect("publish");
        let subscriber = broker.subscriber();
        let mut first = subscriber
            .subscribe(&Subscription::new("a", ["orders.*"]))
            .await
            .expect("subscribe");
        publisher
            .publish("orders.created", Message::new("one"))
            .await
            .expect("publish");
        let d = first.next().await.expect("open").expect("delivery");
        assert_eq!(&d.message.payload[..], b"one");
        d.ack().await.expect("ack");
        // A second binding on the cached topic is seen too.
        let mut second = subscriber
            .subscribe(&Subscription::new("b", ["orders.#"]))
            .await
            .expect("subscribe");
        publisher
            .publish("orders.created", Message::new("two"))
            .await
            .expect("publish");
        for stream in [&mut first, &mut second] {
            let d = stream.next().await.expect("open").expect("delivery");
            assert_eq!(&d.message.payload[..], b"two");
            d.ack().await.expect("ack");
        }
    }
}
