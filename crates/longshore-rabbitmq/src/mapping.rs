//! How longshore maps onto AMQP: a subscription's queue arguments, and messages to AMQP
//! properties and back.
//!
//! - a subscription is a queue of the same name declared with [`queue_arguments`] (the seed's
//!   dead-letter exchange and `dlq.<queue>` routing key), plus `x-queue-type: quorum` for
//!   [`QueueType::Quorum`] ([`subscription_queue_arguments`]); a topic is a routing key;
//! - `Message.id` → `message_id` property (at most 255 bytes, an AMQP short string);
//! - `Message.key` → header [`KEY_HEADER`];
//! - header `content-type` → `content_type` property (the seed sets `application/json`);
//! - every other header → an AMQP header table entry of type long string, except
//!   `x-delivery-count`: it is the broker's count of a delivery, never sent (a dead letter or a
//!   replayed message would otherwise arrive with its source's count);
//! - `delivery_mode` 2 (persistent) always.
//!
//! On receipt, string, boolean and numeric AMQP header values become strings; arrays and tables
//! are skipped, except RabbitMQ's own `x-death`: a message dead-lettered by the broker (a peer
//! rejected it, its TTL ran out, a queue limit) gets longshore's dead-letter headers from its
//! first entry where it has none of its own ([`x_death_headers`]).

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use longshore_core::{
    dead_letter_topic, rfc3339, Error, Headers, Message, HEADER_CONTENT_TYPE, HEADER_DLQ_AT,
    HEADER_DLQ_ATTEMPTS, HEADER_DLQ_REASON, HEADER_DLQ_SUBSCRIPTION, HEADER_DLQ_TOPIC,
};

use crate::config::{QueueType, DEAD_LETTER_EXCHANGE};
use crate::delay::{self, ATTEMPTS_HEADER, TOPIC_HEADER};

/// The AMQP header carrying [`Message::key`] (reserved: a message header of that name is
/// replaced by the key).
pub const KEY_HEADER: &str = "longshore-key";

/// Quorum queues count deliveries in this header (classic queues do not).
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

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

/// The arguments a subscription's queue is declared with: exactly [`queue_arguments`] for
/// classic queues (the seed's), and `x-queue-type: quorum` besides for quorum queues (which
/// accept the dead-letter arguments; the queue is durable, not exclusive, not auto-delete).
pub fn subscription_queue_arguments(queue: &str, queue_type: QueueType) -> FieldTable {
    let mut args = queue_arguments(queue);
    add_queue_type(&mut args, queue_type);
    args
}

/// The arguments of a `dlq.<name>` queue: none for classic queues (as the seed declares it),
/// `x-queue-type: quorum` for quorum queues.
pub fn dead_letter_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    add_queue_type(&mut args, queue_type);
    args
}

/// Classic queues are declared without `x-queue-type`, as the seed's Python services declare
/// them, so that either side may declare first.
fn add_queue_type(args: &mut FieldTable, queue_type: QueueType) {
    if queue_type != QueueType::Classic {
        args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from(queue_type.as_str())),
        );
    }
}

fn short(kind: &'static str, value: &str) -> Result<ShortString, Error> {
    ShortString::try_new(value).map_err(|_| Error::InvalidName {
        kind,
        value: value.chars().take(64).collect(),
        reason: "must be at most 255 bytes for AMQP",
    })
}

/// Builds the properties of a persistent message. Fails (before sending) on values AMQP cannot
/// carry: ids or header names longer than 255 bytes.
pub(crate) fn properties(message: &Message) -> Result<BasicProperties, Error> {
    let mut table = FieldTable::default();
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(short("message id", &message.id)?);
    for (name, value) in &message.headers {
        if matches!(
            name.as_str(),
            DELIVERY_COUNT_HEADER | ATTEMPTS_HEADER | TOPIC_HEADER
        ) {
            continue;
        }
        if name == HEADER_CONTENT_TYPE {
            if let Ok(ct) = ShortString::try_new(value.as_str()) {
                props = props.with_content_type(ct);
                continue;
            }
        }
        let name = ShortString::try_new(name.as_str()).map_err(|_| {
            Error::HeadersTooLarge(format!(
                "header name {:?}… is longer than 255 bytes",
                name.chars().take(32).collect::<String>()
            ))
        })?;
        table.insert(
            name,
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    if let Some(key) = &message.key {
        table.insert(
            ShortString::from(KEY_HEADER),
            AMQPValue::LongString(LongString::from(key.as_bytes())),
        );
    }
    Ok(props.with_headers(table))
}

fn value_string(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        _ => return None,
    })
}

/// The header RabbitMQ writes on a message it dead-letters: an array of tables, newest first.
const X_DEATH_HEADER: &str = "x-death";

/// Fills longshore's dead-letter headers from the first (latest) `x-death` entry, for each
/// one `headers` lacks: the reason (`rejected by queue billing (x-death)`), the original
/// topic (its first routing key), the subscription (its queue), the attempts (its count) and
/// the time. A letter made by longshore already has them and keeps its own. Entries of the
/// delay queues (names starting with `delay_prefix`) are skipped.
pub(crate) fn x_death_headers(x_death: &AMQPValue, delay_prefix: &str, headers: &mut Headers) {
    let AMQPValue::FieldArray(entries) = x_death else {
        return;
    };
    // The delay levels' own entries (expired in a delay queue) are not dead letters.
    let of_delay = |entry: &FieldTable| {
        !delay_prefix.is_empty()
            && entry
                .inner()
                .get("queue")
                .and_then(value_string)
                .is_some_and(|q| q.starts_with(delay_prefix))
    };
    let Some(first) = entries.as_slice().iter().find_map(|entry| match entry {
        AMQPValue::FieldTable(entry) if !of_delay(entry) => Some(entry),
        _ => None,
    }) else {
        return;
    };
    let field = |name: &str| first.inner().get(name);
    let text = |name: &str| field(name).and_then(value_string);
    let queue = text("queue");
    let mut add = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            headers.entry(name.to_string()).or_insert(value);
        }
    };
    let reason = text("reason").map(|reason| match &queue {
        Some(queue) => format!("{reason} by queue {queue} (x-death)"),
        None => format!("{reason} (x-death)"),
    });
    add(HEADER_DLQ_REASON, reason);
    let topic = match field("routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first().and_then(value_string),
        _ => None,
    };
    add(HEADER_DLQ_TOPIC, topic);
    add(HEADER_DLQ_SUBSCRIPTION, queue);
    add(HEADER_DLQ_ATTEMPTS, text("count"));
    let at = match field("time") {
        Some(AMQPValue::Timestamp(secs)) => i64::try_from(*secs)
            .ok()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(|t| rfc3339(&t)),
        _ => None,
    };
    add(HEADER_DLQ_AT, at);
}

/// A received message, as the subscriber hands it out.
pub(crate) struct Received {
    pub(crate) message: Message,
    /// 1 for a first delivery; see [`message`].
    pub(crate) attempt: u32,
    /// The topic it was published to, for a message that came back from the delay levels
    /// (whose routing key is the delay's); `None`: the routing key is the topic.
    pub(crate) topic: Option<String>,
}

/// Where a message was received from: the exchange of its delivery (for a dead-lettered
/// message, the one it was dead-lettered to) and the delay levels' prefix, `<exchange>.delay.`.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) delay_prefix: &'a str,
}

impl Source<'_> {
    /// Whether the message came out of the delay levels (the last of them dead-lettered it).
    fn delayed(&self) -> bool {
        !self.delay_prefix.is_empty() && self.exchange.starts_with(self.delay_prefix)
    }
}

/// A received message: the [`Message`], the attempt number and, for a message back from a
/// delay, its topic.
///
/// The attempt is what the broker reports for this queue (`x-delivery-count` + 1 on quorum
/// queues; 2 for a redelivery and 1 otherwise on classic ones), plus, for a message back from
/// a delay, the attempts made before it ([`ATTEMPTS_HEADER`]; a value that is not a number is
/// ignored, so the count never drops below the broker's). The delay's bookkeeping never shows:
/// [`ATTEMPTS_HEADER`], [`TOPIC_HEADER`], and RabbitMQ's `x-first-death-*` / `x-last-death-*`
/// headers naming a delay queue are removed, and `x-death` entries of delay queues are not
/// read as dead-letter headers.
pub(crate) fn message(
    properties: &BasicProperties,
    data: bytes::Bytes,
    redelivered: bool,
    source: Source<'_>,
) -> Received {
    let mut headers = Headers::new();
    let mut key = None;
    let mut delivery_count = None;
    let mut x_death = None;
    let mut prior = None;
    let mut topic = None;
    let delayed = source.delayed();
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            let name = name.as_str();
            match name {
                DELIVERY_COUNT_HEADER => {
                    delivery_count = value_string(value).and_then(|v| v.parse::<u32>().ok());
                }
                X_DEATH_HEADER => x_death = Some(value),
                ATTEMPTS_HEADER => {
                    if delayed {
                        prior = value_string(value).and_then(|v| v.trim().parse::<u32>().ok());
                    }
                    continue;
                }
                TOPIC_HEADER => {
                    if delayed {
                        topic = value_string(value)
                            .filter(|t| longshore_core::topic::validate_topic(t).is_ok());
                    }
                    continue;
                }
                _ => {}
            }
            let Some(value) = value_string(value) else {
                continue;
            };
            if name == KEY_HEADER {
                key = Some(value);
            } else {
                headers.insert(name.to_string(), value);
            }
        }
    }
    delay::forget_deaths(&mut headers, source.delay_prefix);
    if let Some(x_death) = x_death {
        x_death_headers(x_death, source.delay_prefix, &mut headers);
    }
    if let Some(ct) = properties.content_type() {
        headers
            .entry(HEADER_CONTENT_TYPE.to_string())
            .or_insert_with(|| ct.as_str().to_string());
    }
    let id = properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_string())
        .filter(|id| !id.is_empty())
        // A publisher that set no message id (not the seed's): give the message one so that
        // it can be tracked; redeliveries of it get different ids.
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let here = match delivery_count {
        Some(n) => n.saturating_add(1),
        None if redelivered => 2,
        None => 1,
    };
    let attempt = prior.map_or(here, |prior: u32| prior.saturating_add(here));
    Received {
        message: Message {
            id,
            key,
            headers,
            payload: data,
        },
        attempt,
        topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "longshore.delay.";
    /// A delivery from the topic exchange.
    const DIRECT: Source<'static> = Source {
        exchange: "longshore",
        delay_prefix: PREFIX,
    };
    /// A delivery dead-lettered by the last delay level.
    const DELAYED: Source<'static> = Source {
        exchange: "longshore.delay.deliver",
        delay_prefix: PREFIX,
    };

    /// `(message, attempt)` of a delivery from the topic exchange.
    fn message(p: &BasicProperties, data: Vec<u8>, redelivered: bool) -> (Message, u32) {
        let r = super::message(p, data.into(), redelivered, DIRECT);
        assert!(r.topic.is_none());
        (r.message, r.attempt)
    }

    #[test]
    fn round_trip() {
        let m = Message::new(&b"{}"[..])
            .with_key("order-1")
            .with_header("content-type", "application/json")
            .with_header("tenant", "acme ✓");
        let p = properties(&m).expect("props");
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        let (back, attempt) = message(&p, b"{}".to_vec(), false);
        assert_eq!(back, m);
        assert_eq!(attempt, 1);
        let (_, attempt) = message(&p, Vec::new(), true);
        assert_eq!(attempt, 2);
    }

    #[test]
    fn amqp_limits_are_typed_errors() {
        let m = Message::new("x").with_id("i".repeat(256));
        assert!(matches!(properties(&m), Err(Error::InvalidName { .. })));
        let m = Message::new("x").with_header("h".repeat(256), "v");
        assert!(matches!(properties(&m), Err(Error::HeadersTooLarge(_))));
    }

    #[test]
    fn foreign_headers_become_strings() {
        let mut t = FieldTable::default();
        t.insert("n".into(), AMQPValue::LongLongInt(-5));
        t.insert("b".into(), AMQPValue::Boolean(true));
        t.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        t.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        let p = BasicProperties::default().with_headers(t);
        let (m, attempt) = message(&p, Vec::new(), true);
        assert_eq!(m.headers["n"], "-5");
        assert_eq!(m.headers["b"], "true");
        assert!(!m.headers.contains_key("x-death"));
        assert_eq!(attempt, 4);
        assert!(!m.id.is_empty());
        // The count is the broker's: a republished message does not carry its source's.
        let sent = properties(&m).expect("props");
        let table = sent.headers().as_ref().expect("headers");
        assert!(!table.inner().contains_key("x-delivery-count"));
        assert!(table.inner().contains_key("n"));
    }

    #[test]
    fn x_death_fills_missing_dead_letter_headers() {
        let mut entry = FieldTable::default();
        entry.insert("queue".into(), AMQPValue::LongString("billing".into()));
        entry.insert("reason".into(), AMQPValue::LongString("rejected".into()));
        entry.insert("count".into(), AMQPValue::LongLongInt(2));
        entry.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        let keys = vec![AMQPValue::LongString("events.order_placed".into())];
        entry.insert("routing-keys".into(), AMQPValue::FieldArray(keys.into()));
        let mut t = FieldTable::default();
        let deaths = vec![AMQPValue::FieldTable(entry)];
        t.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
        let p = BasicProperties::default().with_headers(t.clone());
        let (m, _) = message(&p, Vec::new(), false);
        assert_eq!(
            m.headers[HEADER_DLQ_REASON],
            "rejected by queue billing (x-death)"
        );
        assert_eq!(m.headers[HEADER_DLQ_TOPIC], "events.order_placed");
        assert_eq!(m.headers[HEADER_DLQ_SUBSCRIPTION], "billing");
        assert_eq!(m.headers[HEADER_DLQ_ATTEMPTS], "2");
        assert_eq!(m.headers[HEADER_DLQ_AT], "2023-11-14T22:13:20.000000Z");
        assert!(!m.headers.contains_key("x-death"));
        // longshore's own headers win.
        t.insert(
            HEADER_DLQ_REASON.into(),
            AMQPValue::LongString("provider timeout".into()),
        );
        let p = BasicProperties::default().with_headers(t);
        let (m, _) = message(&p, Vec::new(), false);
        assert_eq!(m.headers[HEADER_DLQ_REASON], "provider timeout");
        assert_eq!(m.headers[HEADER_DLQ_ATTEMPTS], "2");
    }

    /// A delivery dead-lettered by the last delay level.
    fn back(p: &BasicProperties, redelivered: bool) -> Received {
        super::message(p, Vec::new().into(), redelivered, DELAYED)
    }

    fn text(value: &str) -> AMQPValue {
        AMQPValue::LongString(value.into())
    }

    /// The properties of a copy that went through the delay levels: what the acker sent, plus
    /// what RabbitMQ adds when it dead-letters it (3.10: `x-death`, `x-first-death-*`).
    fn delayed_copy(attempts: AMQPValue) -> BasicProperties {
        let m = Message::new(&b"{}"[..])
            .with_id("id-1")
            .with_key("order-1")
            .with_header("tenant", "acme");
        let p = properties(&m).expect("props");
        let mut t = p.headers().clone().expect("headers");
        t.insert(ATTEMPTS_HEADER.into(), attempts);
        t.insert(TOPIC_HEADER.into(), text("orders.created"));
        let mut entry = FieldTable::default();
        entry.insert("queue".into(), text("longshore.delay.3"));
        entry.insert("reason".into(), text("expired"));
        entry.insert("count".into(), AMQPValue::LongLongInt(1));
        let deaths = vec![AMQPValue::FieldTable(entry)];
        t.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
        t.insert("x-first-death-queue".into(), text("longshore.delay.3"));
        t.insert("x-first-death-reason".into(), text("expired"));
        t.insert("x-first-death-exchange".into(), text("longshore.delay.3"));
        p.with_headers(t)
    }

    #[test]
    fn a_delayed_copy_keeps_topic_attempts_and_headers() {
        let p = delayed_copy(text("3"));
        let r = super::message(&p, b"{}".to_vec().into(), false, DELAYED);
        assert_eq!(r.topic.as_deref(), Some("orders.created"));
        assert_eq!(r.attempt, 4);
        let want = Message::new(&b"{}"[..])
            .with_id("id-1")
            .with_key("order-1")
            .with_header("tenant", "acme");
        // No delay bookkeeping and no dead-letter headers from the delay queues' x-death.
        assert_eq!(r.message, want);
        // Redelivered again in its queue: one more than that.
        let r = back(&p, true);
        assert_eq!(r.attempt, 5);
        // The republished copy never carries the bookkeeping of an earlier trip.
        let again = properties(&r.message).expect("props");
        let table = again.headers().as_ref().expect("headers");
        assert!(!table.inner().contains_key(ATTEMPTS_HEADER));
        assert!(!table.inner().contains_key(TOPIC_HEADER));
        assert!(!table.inner().contains_key("x-death"));
    }

    #[test]
    fn hostile_attempts_never_lower_the_count_or_panic() {
        for bad in [
            text("-1"),
            text("many"),
            text(""),
            text("99999999999999999999"),
            AMQPValue::FieldArray(Default::default()),
            AMQPValue::Boolean(true),
        ] {
            let r = back(&delayed_copy(bad.clone()), true);
            assert_eq!(r.attempt, 2, "{bad:?}");
        }
        let r = back(&delayed_copy(text("4294967295")), true);
        assert_eq!(r.attempt, u32::MAX);
        let r = back(&delayed_copy(AMQPValue::LongLongInt(2)), false);
        assert_eq!(r.attempt, 3);
        // Quorum queues' own count adds to it.
        let p = delayed_copy(text("2"));
        let mut t = p.headers().clone().expect("headers");
        t.insert("x-delivery-count".into(), AMQPValue::LongLongInt(1));
        let r = back(&p.with_headers(t), true);
        assert_eq!(r.attempt, 4);
    }

    #[test]
    fn delay_headers_count_only_from_the_delay_levels() {
        // Published straight to the topic exchange with the delay's headers (by hand, by a
        // peer): they are neither believed nor shown.
        let p = delayed_copy(text("7"));
        let (m, attempt) = message(&p, Vec::new(), false);
        assert_eq!(attempt, 1);
        assert!(!m.headers.contains_key(ATTEMPTS_HEADER));
        assert!(!m.headers.contains_key(TOPIC_HEADER));
        assert!(!m.headers.contains_key(HEADER_DLQ_REASON));
        assert!(!m.headers.contains_key("x-first-death-queue"));
        // A topic that is not one is ignored.
        let mut t = p.headers().clone().expect("headers");
        t.insert(TOPIC_HEADER.into(), text("not a topic!"));
        let r = back(&p.with_headers(t), false);
        assert!(r.topic.is_none());
        // A user header of that name is never sent.
        let sent = properties(&Message::new("x").with_header(ATTEMPTS_HEADER, "9")).expect("p");
        let table = sent.headers().as_ref().expect("headers");
        assert!(!table.inner().contains_key(ATTEMPTS_HEADER));
    }

    #[test]
    fn a_real_dead_letter_after_a_delay_keeps_its_reason() {
        // Rejected by a peer after a trip through the delay levels: the newest non-delay
        // x-death entry is the reason, and the first death (a delay queue) is not shown.
        let p = delayed_copy(text("1"));
        let mut t = p.headers().clone().expect("headers");
        let mut rejected = FieldTable::default();
        rejected.insert("queue".into(), text("billing"));
        rejected.insert("reason".into(), text("rejected"));
        let mut expired = FieldTable::default();
        expired.insert("queue".into(), text("longshore.delay.0"));
        expired.insert("reason".into(), text("expired"));
        let deaths = vec![
            AMQPValue::FieldTable(expired),
            AMQPValue::FieldTable(rejected),
        ];
        t.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
        let source = Source {
            exchange: DEAD_LETTER_EXCHANGE,
            delay_prefix: PREFIX,
        };
        let r = super::message(&p.with_headers(t), Vec::new().into(), false, source);
        assert_eq!(
            r.message.headers[HEADER_DLQ_REASON],
            "rejected by queue billing (x-death)"
        );
        assert!(!r.message.headers.contains_key("x-first-death-queue"));
    }

    #[test]
    fn quorum_adds_the_queue_type_only() {
        let classic = subscription_queue_arguments("q", QueueType::Classic);
        assert_eq!(classic, queue_arguments("q"));
        assert!(dead_letter_queue_arguments(QueueType::Classic)
            .inner()
            .is_empty());
        let quorum = subscription_queue_arguments("q", QueueType::Quorum);
        assert_eq!(quorum.inner().len(), 3);
        assert_eq!(
            quorum.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            dead_letter_queue_arguments(QueueType::Quorum).inner().len(),
            1
        );
    }
}
