//! The subscribing port: subscriptions, deliveries and their acknowledgement.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::capabilities::Capabilities;
use crate::error::Error;
use crate::health::Health;
use crate::message::{Headers, Message};
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
/// Header: what [`fit_dead_letter`] cut from a dead letter too large for the broker.
pub const HEADER_DLQ_TRUNCATED: &str = "x-dead-letter-truncated";

/// Default number of unacknowledged deliveries a consumer may hold: enough that the broker
/// streams while handlers run (see BENCHMARKS.md, "Prefetch"); lower it where slow handlers
/// should leave messages to competing consumers.
pub const DEFAULT_PREFETCH: u16 = 256;

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
    // Bounded in bytes, not characters: 1,024 four-byte characters would be 4 KiB.
    let reason = prefix_within(&dead.reason, MAX_REASON_BYTES).to_string();
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

/// Fits a dead letter into `max_bytes`, the most the broker takes for one message, counting
/// each header as its name, value and 4 bytes of framing plus the payload.
///
/// A message the broker already holds must always be dead-letterable, so adapters never apply
/// their publishers' limits (header count and size, payload) to a dead letter; only the
/// broker's own limit counts. When the letter (the original plus the dead-letter headers) is
/// larger than that, the original's own headers are dropped first, largest first, then the
/// payload is cut, and [`HEADER_DLQ_TRUNCATED`] records what was cut:
/// `payload=<original bytes>` and/or `headers=<count dropped>`.
pub fn fit_dead_letter(mut letter: Message, max_bytes: usize) -> Message {
    const FRAMING: usize = 4;
    let size = |k: &str, v: &str| k.len() + v.len() + FRAMING;
    let mut header_bytes: usize = letter.headers.iter().map(|(k, v)| size(k, v)).sum();
    if header_bytes + letter.payload.len() <= max_bytes {
        return letter;
    }
    // Room for the truncation note itself.
    let budget = max_bytes.saturating_sub(HEADER_DLQ_TRUNCATED.len() + 64 + FRAMING);
    let mut dropped = 0usize;
    if header_bytes > budget {
        let mut own: Vec<(String, usize)> = letter
            .headers
            .iter()
            .filter(|(k, _)| !DLQ_HEADERS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), size(k, v)))
            .collect();
        own.sort_by_key(|h| std::cmp::Reverse(h.1));
        for (name, bytes) in own {
            if header_bytes <= budget {
                break;
            }
            letter.headers.remove(&name);
            header_bytes -= bytes;
            dropped += 1;
        }
    }
    if header_bytes > budget {
        // Only the dead-letter headers are left and they still do not fit (a broker limit
        // below a few KiB): the reason gives way, as it is the one of them that can be long.
        if let Some(reason) = letter.headers.get_mut(HEADER_DLQ_REASON) {
            let over = header_bytes - budget;
            let keep = prefix_within(reason, reason.len().saturating_sub(over)).len();
            header_bytes -= reason.len() - keep;
            reason.truncate(keep);
        }
    }
    let room = budget.saturating_sub(header_bytes);
    let original = letter.payload.len();
    let mut note = Vec::new();
    if original > room {
        letter.payload = letter.payload.slice(..room);
        note.push(format!("payload={original}"));
    }
    if dropped > 0 {
        note.push(format!("headers={dropped}"));
    }
    letter
        .headers
        .insert(HEADER_DLQ_TRUNCATED.into(), note.join(" "));
    letter
}

/// The most bytes of an error's text a dead letter's reason header carries.
const MAX_REASON_BYTES: usize = 1024;

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix_within(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The dead-letter headers [`dead_letter_message`] writes, kept by [`fit_dead_letter`].
const DLQ_HEADERS: &[&str] = &[
    HEADER_DLQ_REASON,
    HEADER_DLQ_TOPIC,
    HEADER_DLQ_SUBSCRIPTION,
    HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_AT,
];

/// The adapter side of a delivery: how to settle it on the broker.
///
/// Each method consumes the acker, so a delivery is settled at most once. An acker dropped
/// without being settled must make the message available again (redelivery), never lose it.
/// A [`Delivery`] dropped unsettled, or nacked, gives the acker its message first
/// ([`Acker::hold`]); an acker that puts messages back itself relies on that.
#[async_trait]
pub trait Acker: Send {
    /// Takes the delivered message before a nack, or before being dropped with an unsettled
    /// delivery, for an adapter that puts messages back itself (the in-memory broker) and so
    /// needs no copy of its own. Adapters whose broker keeps the message ignore it; a
    /// wrapping acker (see [`Delivery::map_acker`]) passes it on to the one it wraps.
    fn hold(&mut self, message: Message);
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
    /// The message, read through [`Delivery::message`]: a nack or an unsettled drop must give
    /// back the message as delivered, so it cannot be changed in between.
    message: Message,
    /// The topic it was published to.
    pub topic: String,
    /// 1 for the first delivery; higher when the broker reports redeliveries.
    pub attempt: u32,
    /// `Some` until settled (taken by the settling method, or by `drop`).
    acker: Option<Box<dyn Acker>>,
}

impl Drop for Delivery {
    /// Unsettled: the acker holds the message as it is dropped, to make it available again.
    fn drop(&mut self) {
        if let Some(mut acker) = self.acker.take() {
            acker.hold(std::mem::take(&mut self.message));
        }
    }
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
            acker: Some(acker),
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The acker, taken for settling; the delivery is then dropped as settled.
    fn settling(&mut self) -> Box<dyn Acker> {
        match self.acker.take() {
            Some(acker) => acker,
            // Every settling method takes `self` by value, and only they and `drop` take it.
            None => Box::new(Settled),
        }
    }

    /// Replaces the acker with one built around it, so a layer wrapping a [`Subscriber`]
    /// sees how each delivery is settled (the metrics wrapper and `longshore::testing`
    /// record ack, nack and dead-letter this way without touching the consumer runtime).
    pub fn map_acker(mut self, f: impl FnOnce(Box<dyn Acker>) -> Box<dyn Acker>) -> Self {
        let acker = self.settling();
        self.acker = Some(f(acker));
        self
    }

    /// Acknowledges the message.
    pub async fn ack(mut self) -> Result<(), Error> {
        let acker = self.settling();
        // Nothing needs the message any more: it is freed before the broker is told.
        drop(self);
        acker.ack().await
    }

    /// Returns the message for redelivery, after `delay` if given.
    pub async fn nack(mut self, delay: Option<Duration>) -> Result<(), Error> {
        let mut acker = self.settling();
        acker.hold(std::mem::take(&mut self.message));
        drop(self);
        acker.nack(delay).await
    }

    /// Sends the message to `dlq.<subscription>` with `reason`, then removes it.
    pub async fn dead_letter(self, reason: impl Into<String>) -> Result<(), Error> {
        let attempts = self.attempt;
        self.dead_letter_after(reason, attempts).await
    }

    /// Like [`Delivery::dead_letter`] with an explicit attempt count.
    pub async fn dead_letter_after(
        mut self,
        reason: impl Into<String>,
        attempts: u32,
    ) -> Result<(), Error> {
        let dead = DeadLetter::new(reason, attempts);
        let acker = self.settling();
        let message = std::mem::take(&mut self.message);
        let topic = std::mem::take(&mut self.topic);
        drop(self);
        acker.dead_letter(message, &topic, dead).await
    }
}

/// Stands in for an acker already taken: settling it does nothing.
struct Settled;

#[async_trait]
impl Acker for Settled {
    async fn ack(self: Box<Self>) -> Result<(), Error> {
        Ok(())
    }

    fn hold(&mut self, _: Message) {}

    async fn nack(self: Box<Self>, _: Option<Duration>) -> Result<(), Error> {
        Ok(())
    }

    async fn dead_letter(self: Box<Self>, _: Message, _: &str, _: DeadLetter) -> Result<(), Error> {
        Ok(())
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

    /// Deletes `subscription` and its dead-letter queue with whatever they hold (for
    /// temporary subscriptions, such as the command-line tool's `tail`). Consumers still open
    /// on it fail. [`Error::Unsupported`] where the adapter cannot.
    async fn remove_subscription(&self, subscription: &str) -> Result<(), Error> {
        let _ = subscription;
        Err(Error::Unsupported {
            backend: self.capabilities().backend,
            operation: "removing a subscription",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: usize, value: usize, payload: usize) -> Message {
        let mut m = Message::new(vec![b'p'; payload]);
        for i in 0..headers {
            m = m.with_header(format!("h{i}"), "v".repeat(value));
        }
        let dead = DeadLetter {
            reason: "undecodable".into(),
            attempts: 1,
        };
        dead_letter_message(m, "t", "s", &dead)
    }

    fn size(m: &Message) -> usize {
        m.headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + m.payload.len()
    }

    #[test]
    fn a_letter_that_fits_is_untouched() {
        let m = letter(1000, 10, 100);
        let fitted = fit_dead_letter(m.clone(), 1 << 20);
        assert_eq!(fitted.headers, m.headers);
        assert_eq!(fitted.payload, m.payload);
    }

    #[test]
    fn a_large_payload_is_cut_and_the_cut_recorded() {
        let fitted = fit_dead_letter(letter(2, 10, 2_000_000), 1 << 20);
        assert!(size(&fitted) <= 1 << 20);
        assert_eq!(fitted.headers[HEADER_DLQ_TRUNCATED], "payload=2000000");
        assert_eq!(fitted.headers[HEADER_DLQ_REASON], "undecodable");
        assert_eq!(fitted.headers["h1"], "v".repeat(10));
    }

    #[test]
    fn too_many_headers_are_dropped_but_never_the_dead_letter_ones() {
        let fitted = fit_dead_letter(letter(1000, 100, 10), 16 * 1024);
        assert!(size(&fitted) <= 16 * 1024, "{}", size(&fitted));
        for h in DLQ_HEADERS {
            assert!(fitted.headers.contains_key(*h), "{h} dropped");
        }
        assert!(fitted.headers[HEADER_DLQ_TRUNCATED].starts_with("headers="));
    }

    /// The fuzzer's case: a reason of multi-byte characters is bounded in bytes, and a broker
    /// limit below the dead-letter headers' own size shortens the reason, on a char boundary.
    #[test]
    fn a_long_multibyte_reason_fits_small_limits() {
        let dead = DeadLetter::new("\u{10c8ba}".repeat(2000), 3);
        let letter = dead_letter_message(Message::new(Vec::new()), "t", "s", &dead);
        assert!(letter.headers[HEADER_DLQ_REASON].len() <= MAX_REASON_BYTES);
        for max in [2048, 1024, 600] {
            let fitted = fit_dead_letter(letter.clone(), max);
            assert!(size(&fitted) <= max, "{} > {max}", size(&fitted));
            assert!(fitted.headers[HEADER_DLQ_REASON].starts_with('\u{10c8ba}'));
        }
    }
}
