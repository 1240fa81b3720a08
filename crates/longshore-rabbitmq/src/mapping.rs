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
        if name == DELIVERY_COUNT_HEADER {
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
/// the time. A letter made by longshore already has them and keeps its own.
pub(crate) fn x_death_headers(x_death: &AMQPValue, headers: &mut Headers) {
    let AMQPValue::FieldArray(entries) = x_death else {
        return;
    };
    let Some(AMQPValue::FieldTable(first)) = entries.as_slice().first() else {
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

/// A received message: the [`Message`] and the attempt number.
pub(crate) fn message(
    properties: &BasicProperties,
    data: Vec<u8>,
    redelivered: bool,
) -> (Message, u32) {
    let mut headers = Headers::new();
    let mut key = None;
    let mut delivery_count = None;
    let mut x_death = None;
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            let name = name.as_str();
            if name == DELIVERY_COUNT_HEADER {
                delivery_count = value_string(value).and_then(|v| v.parse::<u32>().ok());
            }
            if name == X_DEATH_HEADER {
                x_death = Some(value);
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
    if let Some(x_death) = x_death {
        x_death_headers(x_death, &mut headers);
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
    let attempt = match delivery_count {
        Some(n) => n.saturating_add(1),
        None if redelivered => 2,
        None => 1,
    };
    (
        Message {
            id,
            key,
            headers,
            payload: data.into(),
        },
        attempt,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
