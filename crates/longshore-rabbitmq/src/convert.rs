//! Messages to AMQP properties and back.
//!
//! - `Message.id` → `message_id` property (at most 255 bytes, an AMQP short string);
//! - `Message.key` → header [`KEY_HEADER`];
//! - header `content-type` → `content_type` property (the seed sets `application/json`);
//! - every other header → an AMQP header table entry of type long string;
//! - `delivery_mode` 2 (persistent) always.
//!
//! On receipt, string, boolean and numeric AMQP header values become strings; arrays and tables
//! (such as RabbitMQ's own `x-death`) are skipped.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use longshore_core::codec::HEADER_CONTENT_TYPE;
use longshore_core::{Error, Headers, Message};

/// The AMQP header carrying [`Message::key`] (reserved: a message header of that name is
/// replaced by the key).
pub const KEY_HEADER: &str = "longshore-key";

/// Quorum queues count deliveries in this header (classic queues do not).
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

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

/// A received message: the [`Message`] and the attempt number.
pub(crate) fn message(
    properties: &BasicProperties,
    data: Vec<u8>,
    redelivered: bool,
) -> (Message, u32) {
    let mut headers = Headers::new();
    let mut key = None;
    let mut delivery_count = None;
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            let name = name.as_str();
            if name == DELIVERY_COUNT_HEADER {
                delivery_count = value_string(value).and_then(|v| v.parse::<u32>().ok());
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
    }
}
