//! The subscribing port: subscriptions, deliveries and their acknowledgement.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::capabilities::Capabilities;
use crate::error::Error;
use crate::message::{Headers, Message};
use crate::observe::Health;
use crate::topic::{validate_name, validate_pattern};

/// Header naming why a message was dead-lettered.
pub const HEADER_DLQ_REASON: &str = "x-dead-letter-reason";
/// Header naming the topic the message was originally published to.
pub const HEADER_DLQ_TOPIC: &str = "x-original-topic";
/// Header naming the subscription that gave up on the message.
pub const HEADER_DLQ_SUBSCRIPTION: &str = "x-dead-letter-subscription";
/// Header with the number of delivery attempts made.
pub const HEADER_DLQ_ATTEMPTS: &str = "x-attempts";
/// Header with the time (RFC 3339) the message was dead-lettered.
pub const HEADER_DLQ_AT: &str = "x-dead-lettered-at";

/// Default number of unacknowledged deliveries a consumer may hold.
pub const DEFAULT_PREFETCH: u16 = 32;

/// A durable, named subscription to the topics matching any of its patterns.
///
/// Every subscription gets each matching message (fan-out); the consumers of one subscription
/// share its messages (competing consumers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Durable name (queue, consumer group, durable consumer).
    pub name: String,
    /// AMQP-style patterns (`*` one word, `#` zero or more).
    pub patterns: Vec<String>,
    /// How many unacknowledged deliveries this consumer may hold at once.
    pub prefetch: u16,
}

impl Subscription {
    /// A subscription to `patterns` with the default prefetch.
    pub fn new<I, S>(name: impl Into<String>, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Subscription {
            name: name.into(),
            patterns: patterns.into_iter().map(Into::into).collect(),
            prefetch: DEFAULT_PREFETCH,
        }
    }

    /// The subscription that reads the dead letters of subscription `name`.
    pub fn dead_letters_of(name: &str) -> Self {
        let dlq = dead_letter_topic(name);
        Subscription::new(dlq.clone(), [dlq])
    }

    /// Sets the prefetch (at least 1).
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Validates the name and every pattern.
    pub fn validate(&self) -> Result<(), Error> {
        validate_name("subscription", &self.name)?;
        if self.patterns.is_empty() {
            return Err(Error::InvalidName {
                kind: "subscription",
                value: self.name.clone(),
                reason: "needs at least one pattern",
            });
        }
        self.patterns.iter().try_for_each(|p| validate_pattern(p))
    }

    /// Whether `topic` matches any pattern.
    pub fn matches(&self, topic: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| crate::topic::matches(p, topic))
    }

    /// Whether this is a dead-letter subscription (`dlq.<name>`).
    pub fn is_dead_letter_queue(&self) -> bool {
        self.name.starts_with("dlq.")
    }
}

/// The topic (and queue) where dead letters of subscription `name` go: `dlq.<name>`.
pub fn dead_letter_topic(subscription: &str) -> String {
    format!("dlq.{subscription}")
}

/// Why a message is being dead-lettered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Human-readable reason (the error's message).
    pub reason: String,
    /// How many delivery attempts were made.
    pub attempts: u32,
}

impl DeadLetter {
    /// A dead-letter reason.
    pub fn new(reason: impl Into<String>, attempts: u32) -> Self {
        DeadLetter {
            reason: reason.into(),
            attempts,
        }
    }
}

/// The message an adapter publishes to `dlq.<subscription>`: the original, with headers naming
/// the error, the original topic, the subscription and the attempt count.
pub fn dead_letter_message(
    mut message: Message,
    topic: &str,
    subscription: &str,
    dead: &DeadLetter,
) -> Message {
    let reason: String = dead.reason.chars().take(1024).collect();
    let h: &mut Headers = &mut message.headers;
    h.insert(HEADER_DLQ_REASON.into(), reason);
    h.insert(HEADER_DLQ_TOPIC.into(), topic.into());
    h.insert(HEADER_DLQ_SUBSCRIPTION.into(), subscription.into());
    h.insert(HEADER_DLQ_ATTEMPTS.into(), dead.attempts.to_string());
    h.insert(
        HEADER_DLQ_AT.into(),
        crate::codec::rfc3339(&crate::event::now()),
    );
    message
}

/// The adapter side of a delivery: how to settle it on the broker.
///
/// Each method consumes the acker, so a delivery is settled at most once. An acker dropped
/// without being settled must make the message available again (redelivery), never lose it.
#[async_trait]
pub trait Acker: Send {
    /// Acknowledges: the message is done.
    async fn ack(self: Box<Self>) -> Result<(), Error>;
    /// Returns the message for redelivery, after `delay` if given.
    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), Error>;
    /// Moves the message to `dlq.<subscription>` with `dead`'s reason, then removes it.
    /// `message` is the delivered message (adapters that republish use it).
    async fn dead_letter(
        self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error>;
}

/// One message handed to a consumer, to be settled exactly once.
///
/// `ack`, `nack` and `dead_letter` take the delivery by value, so settling twice does not
/// compile. Dropping a delivery unsettled makes the message available again.
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// The topic it was published to.
    pub topic: String,
    /// 1 for the first delivery; higher when the broker reports redeliveries.
    pub attempt: u32,
    acker: Box<dyn Acker>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.message.id)
            .field("topic", &self.topic)
            .field("attempt", &self.attempt)
            .field("bytes", &self.message.payload.len())
            .finish()
    }
}

impl Delivery {
    /// Builds a delivery (for adapters).
    pub fn new(message: Message, topic: String, attempt: u32, acker: Box<dyn Acker>) -> Self {
        Delivery {
            message,
            topic,
            attempt: attempt.max(1),
            acker,
        }
    }

    /// Replaces the acker (for layers that observe settlement, like the metrics wrapper).
    pub(crate) fn map_acker(self, f: impl FnOnce(Box<dyn Acker>) -> Box<dyn Acker>) -> Self {
        Delivery {
            acker: f(self.acker),
            ..self
        }
    }

    /// Acknowledges the message.
    pub async fn ack(self) -> Result<(), Error> {
        self.acker.ack().await
    }

    /// Returns the message for redelivery, after `delay` if given.
    pub async fn nack(self, delay: Option<Duration>) -> Result<(), Error> {
        self.acker.nack(delay).await
    }

    /// Sends the message to `dlq.<subscription>` with `reason`, then removes it.
    pub async fn dead_letter(self, reason: impl Into<String>) -> Result<(), Error> {
        let dead = DeadLetter::new(reason, self.attempt);
        self.acker
            .dead_letter(self.message, &self.topic, dead)
            .await
    }

    /// Like [`Delivery::dead_letter`] with an explicit attempt count.
    pub async fn dead_letter_after(
        self,
        reason: impl Into<String>,
        attempts: u32,
    ) -> Result<(), Error> {
        let dead = DeadLetter::new(reason, attempts);
        self.acker
            .dead_letter(self.message, &self.topic, dead)
            .await
    }
}

/// The stream of deliveries of one consumer. An `Err` item reports a problem (a dropped
/// connection being recovered, for instance); the stream ends when the subscriber is closed.
pub type DeliveryStream = BoxStream<'static, Result<Delivery, Error>>;

/// Opens consumers on durable subscriptions.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// Creates the subscription if it does not exist (durable from then on) and starts one
    /// consumer on it. Several calls with the same name compete for its messages.
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error>;

    /// Creates the subscription without consuming, so messages published from now on are
    /// kept for it.
    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error>;

    /// Stops all consumers of this subscriber; their unacknowledged deliveries are redelivered.
    async fn close(&self) -> Result<(), Error>;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// The connection's health: connected, topology declared, last acknowledgement.
    async fn health(&self) -> Health {
        Health::up(self.capabilities().backend).with_detail("health not reported by this adapter")
    }

    /// How many messages wait for `subscription` (published, not yet acknowledged), where
    /// the backend can tell; `None` where it cannot.
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        let _ = subscription;
        Ok(None)
    }
}
