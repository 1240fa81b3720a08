//! The in-memory broker: durable-for-the-process subscriptions with the same semantics as the
//! real brokers (fan-out across subscriptions, competing consumers within one, prefetch,
//! redelivery, dead letters), and bounded queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream;
use tokio::sync::Notify;

use super::consumer::{Closed, Consumer};
use super::queue::{lock, Entry, Queue, Side};
use crate::capabilities::Capabilities;
use crate::error::{BatchError, Error, FailedMessage};
use crate::message::Message;
use crate::observe::Health;
use crate::publisher::Publisher;
use crate::subscriber::{dead_letter_topic, DeliveryStream, Subscriber, Subscription};
use crate::topic::{validate_name, validate_topic};

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

pub(super) struct Shared {
    config: MemoryConfig,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    /// Which subscriptions each topic routes to, so a publish costs a hash lookup instead of
    /// matching every pattern. Cleared whenever a subscription or binding is added; bounded by
    /// clearing when it grows past `ROUTE_CACHE_LIMIT` topics.
    routes: Mutex<HashMap<String, Route>>,
}

/// Where one topic's messages go; the topic itself is kept once here and shared by every
/// queued message.
#[derive(Clone)]
struct Route {
    topic: Arc<str>,
    queues: Arc<[Arc<Queue>]>,
}

/// Most topics whose routes are cached at once.
const ROUTE_CACHE_LIMIT: usize = 10_000;

/// Most messages queued per lock: a large batch still lets consumers in between runs.
const RUN: usize = 256;

impl Shared {
    fn ensure_queue(&self, name: &str, patterns: &[String]) -> Arc<Queue> {
        let mut queues = lock(&self.queues);
        let queue = queues
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Queue::new(name)))
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

    fn matching(&self, topic: &str) -> Route {
        if let Some(hit) = lock(&self.routes).get(topic) {
            return hit.clone();
        }
        // Match under the queues lock, so a subscription added meanwhile (which clears the
        // cache under the same lock) cannot be missed by what we insert.
        let queues = lock(&self.queues);
        let found = Route {
            topic: Arc::from(topic),
            queues: queues
                .values()
                .filter(|q| {
                    lock(&q.patterns)
                        .iter()
                        .any(|p| crate::topic::matches(p, topic))
                })
                .cloned()
                .collect(),
        };
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
    pub(super) async fn route_one(&self, topic: &str, message: Message) -> Result<(), Error> {
        let mut slots = [Slot::Pending(message)];
        self.route(topic, &mut slots).await;
        match slots {
            [Slot::Failed(_, error)] => Err(error),
            _ => Ok(()),
        }
    }

    /// Routes every pending slot, in order, to every matching subscription. A slot that one
    /// subscription refuses (full past the publish timeout) fails and goes to no further
    /// subscription; the others become `Sent`.
    async fn route(&self, topic: &str, slots: &mut [Slot]) {
        let route = self.matching(topic);
        let Some((last, others)) = route.queues.split_last() else {
            slots.iter_mut().for_each(Slot::sent);
            return;
        };
        for queue in others {
            self.fill(queue, &route.topic, slots, |m| Some(m.clone()))
                .await;
        }
        // The last subscription takes the messages themselves: one queue, no copies.
        self.fill(last, &route.topic, slots, |_| None).await;
    }

    /// Appends the pending slots to `queue` in order, as many per lock as there is room for,
    /// waking consumers once per run rather than once per message. `copy` gives the message
    /// to queue while the slot keeps its own, or `None` to move the slot's message in.
    async fn fill(
        &self,
        queue: &Queue,
        topic: &Arc<str>,
        slots: &mut [Slot],
        copy: impl Fn(&Message) -> Option<Message>,
    ) {
        let max = self.config.max_queue_depth;
        let mut next = 0;
        // How long the message at `blocked.0` may still wait: woken but beaten to the room by
        // another publisher, it keeps its first deadline.
        let mut blocked: Option<(usize, tokio::time::Instant)> = None;
        while next < slots.len() {
            let room = queue.notified(Side::Publisher);
            tokio::pin!(room);
            let (wake, parking) = {
                let mut s = lock(&queue.state);
                let mut pushed = 0;
                let mut full = false;
                while next < slots.len() && pushed < RUN {
                    if !slots[next].is_pending() {
                        next += 1;
                        continue;
                    }
                    if s.depth() >= max {
                        full = true;
                        break;
                    }
                    if let Some(message) = slots[next].take(&copy) {
                        s.ready.push_back(Entry {
                            message,
                            topic: topic.clone(),
                            attempt: 1,
                        });
                        pushed += 1;
                    }
                    next += 1;
                }
                let wake = pushed > 0 && Queue::consumers_to_wake(&mut s);
                let parking = if full {
                    room.as_mut().enable();
                    Some(queue.park(&mut s, Side::Publisher))
                } else {
                    None
                };
                (wake, parking)
            };
            if wake {
                queue.wake_consumers();
            }
            let Some(parking) = parking else {
                continue;
            };
            let deadline = match blocked {
                Some((index, deadline)) if index == next => deadline,
                _ => tokio::time::Instant::now() + self.config.publish_timeout,
            };
            blocked = Some((next, deadline));
            let waited = tokio::time::timeout_at(deadline, room.as_mut()).await;
            drop(parking);
            if waited.is_err() {
                slots[next].fail(Error::Backpressure {
                    queue: queue.name.clone(),
                    capacity: max,
                    waited: self.config.publish_timeout,
                });
                next += 1;
            }
        }
    }
}

/// One message of a publish on its way through the subscriptions.
enum Slot {
    Pending(Message),
    /// Queued everywhere it routes to (the last queue took the message itself).
    Sent,
    Failed(Message, Error),
}

impl Slot {
    fn is_pending(&self) -> bool {
        matches!(self, Slot::Pending(_))
    }

    fn sent(&mut self) {
        if self.is_pending() {
            *self = Slot::Sent;
        }
    }

    /// The message to queue if this slot is still pending: a copy, or the message itself
    /// (leaving the slot `Sent`) when `copy` gives none.
    fn take(&mut self, copy: impl Fn(&Message) -> Option<Message>) -> Option<Message> {
        let Slot::Pending(message) = self else {
            return None;
        };
        if let Some(copied) = copy(message) {
            return Some(copied);
        }
        match std::mem::replace(self, Slot::Sent) {
            Slot::Pending(message) => Some(message),
            _ => None,
        }
    }

    fn fail(&mut self, error: Error) {
        if let Slot::Pending(message) = std::mem::replace(self, Slot::Sent) {
            *self = Slot::Failed(message, error);
        }
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
            .map_or(0, |q| lock(&q.state).depth())
    }

    /// What the memory backend can do.
    pub fn capabilities(&self) -> Capabilities {
        capabilities(&self.shared.config)
    }

    /// How many messages a subscription's buffer can hold before it grows again.
    #[cfg(test)]
    pub(super) fn buffer_capacity(&self, subscription: &str) -> usize {
        lock(&self.shared.queues)
            .get(subscription)
            .map_or(0, |q| lock(&q.state).ready.capacity())
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
    /// Why nothing at all can be published to `topic`, if so.
    fn refuse(&self, topic: &str) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("memory publisher"));
        }
        validate_topic(topic)
    }
}

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.refuse(topic)?;
        message.check_limits(self.shared.config.max_payload)?;
        self.shared.route_one(topic, message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        let total = messages.len();
        let max_payload = self.shared.config.max_payload;
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
        self.shared.route(topic, &mut slots).await;
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
        capabilities(&self.shared.config)
    }

    async fn health(&self) -> Health {
        if self.closed.load(Ordering::Acquire) {
            Health::down(BACKEND, "memory publisher is closed")
        } else {
            Health::up(BACKEND)
        }
    }
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

#[async_trait]
impl Subscriber for MemorySubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        if self.closed.flag.load(Ordering::Acquire) {
            return Err(Error::Closed("memory subscriber"));
        }
        let queue = self.declare(subscription)?;
        let consumer = Consumer::new(
            queue,
            self.shared.clone(),
            usize::from(subscription.prefetch.max(1)),
            self.closed.clone(),
        );
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

    async fn health(&self) -> Health {
        if self.closed.flag.load(Ordering::Acquire) {
            Health::down(BACKEND, "memory subscriber is closed")
        } else {
            Health::up(BACKEND)
        }
    }

    /// Messages ready or delivered and not yet acknowledged.
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        validate_name("subscription", subscription)?;
        let queues = lock(&self.shared.queues);
        let Some(queue) = queues.get(subscription) else {
            return Err(Error::InvalidName {
                kind: "subscription",
                value: subscription.to_string(),
                reason: "no such subscription",
            });
        };
        let depth = lock(&queue.state).depth();
        Ok(Some(depth as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lag_counts_unacknowledged_messages_and_health_follows_close() {
        use futures::StreamExt;
        let broker = MemoryBroker::default();
        let (publisher, subscriber) = (broker.publisher(), broker.subscriber());
        let sub = Subscription::new("lagging", ["lag.#"]);
        subscriber.ensure_subscription(&sub).await.expect("ensure");
        for _ in 0..3 {
            publisher
                .publish("lag.x", Message::new("m"))
                .await
                .expect("publish");
        }
        assert_eq!(subscriber.lag("lagging").await.expect("lag"), Some(3));
        let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
        let first = stream.next().await.expect("delivery").expect("ok");
        assert_eq!(subscriber.lag("lagging").await.expect("lag"), Some(3));
        first.ack().await.expect("ack");
        assert_eq!(subscriber.lag("lagging").await.expect("lag"), Some(2));
        assert!(matches!(
            subscriber.lag("nobody").await,
            Err(Error::InvalidName { .. })
        ));
        assert!(publisher.health().await.is_ready());
        assert!(subscriber.health().await.is_ready());
        publisher.close().await.expect("close");
        subscriber.close().await.expect("close");
        assert!(!publisher.health().await.is_ready());
        assert!(!subscriber.health().await.is_ready());
    }
    use crate::subscriber::Subscriber;
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
