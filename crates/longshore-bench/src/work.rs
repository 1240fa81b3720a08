//! The work both sides do: the same messages, events and names.

use longshore_core::{Codec, Event, JsonCodec, Message};

use crate::measure::{now_us, SENT_HEADER};

/// Payload size of the publish scenarios.
pub const PAYLOAD: usize = 256;
/// Messages per batch in the batched scenarios.
pub const BATCH: usize = 100;
/// The consumer runtime's default concurrency (`Consumer::new`), used by both sides end to end.
pub const CONCURRENCY: usize = 16;
/// The prefetch longshore's runtime gives the backend by default (the subscription's default,
/// at least the concurrency), used by both sides end to end.
pub const PREFETCH: usize = {
    let p = longshore_core::DEFAULT_PREFETCH as usize;
    if p > CONCURRENCY {
        p
    } else {
        CONCURRENCY
    }
};
/// Event type of the end-to-end messages.
pub const EVENT_TYPE: &str = "bench_tick";

/// A unique lowercase alphanumeric name (valid as topic word, queue, durable, group, schema).
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..12])
}

/// `n` messages of [`PAYLOAD`] bytes with a key (one of 64), a content type and one header.
pub fn payload_messages(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(vec![b'x'; PAYLOAD])
                .with_key(format!("agg-{}", i % 64))
                .with_header("content-type", "application/octet-stream")
                .with_header("seq", i.to_string())
        })
        .collect()
}

/// `n` events encoded by the JSON codec (what `EventPublisher` sends), about 250 bytes each.
pub fn event_messages(n: usize) -> crate::Result<Vec<Message>> {
    keyed_event_messages(n, 64)
}

/// [`event_messages`] over `keys` aggregates (message keys), taken in turn.
pub fn keyed_event_messages(n: usize, keys: usize) -> crate::Result<Vec<Message>> {
    let keys = keys.max(1);
    let pad = "x".repeat(120);
    (0..n)
        .map(|i| {
            let e = Event::new(
                EVENT_TYPE,
                serde_json::json!({"seq": i, "order_id": format!("o-{i}"), "pad": pad}),
            )
            .with_aggregate_id(format!("agg-{}", i % keys));
            JsonCodec.encode(&e).map_err(Into::into)
        })
        .collect()
}

/// Stamps a batch with the send time, just before it goes out.
pub fn stamp(batch: &mut [Message]) {
    let now = now_us().to_string();
    for m in batch {
        m.headers.insert(SENT_HEADER.to_string(), now.clone());
    }
}

/// `n` events for one store transaction, on `stream`.
pub fn events(n: usize, stream: &str, event_type: &str) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::new(
                event_type,
                serde_json::json!({"order_id": format!("o-{i}"), "total_cents": 1234, "lines": [1, 2, 3]}),
            )
            .with_aggregate_id(stream)
            .with_correlation_id("bench")
        })
        .collect()
}

/// Gives a message for the raw side the W3C `traceparent` header the facade's observed
/// publisher adds to every message, so both sides put the same bytes on the wire.
pub fn with_traceparent(m: &mut Message) {
    if m.headers.contains_key("traceparent") {
        return;
    }
    let mut hex: String = m.id.chars().filter(char::is_ascii_hexdigit).collect();
    while hex.len() < 32 {
        hex.push('0');
    }
    let tp = format!("00-{}-{}-01", &hex[..32], &hex[16..32]);
    m.headers.insert("traceparent".to_string(), tp);
}

/// [`with_traceparent`] on every message.
pub fn traced(mut msgs: Vec<Message>) -> Vec<Message> {
    msgs.iter_mut().for_each(with_traceparent);
    msgs
}
