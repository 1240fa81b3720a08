//! Bad input from the wire: each kind is written by the broker's raw client straight into a
//! subscription that a consumer runtime serves. A kind that is valid is handled once; every
//! other kind is dead-lettered once, with a reason naming what was wrong, and counted. Either
//! way the consumer goes on: a valid order published after it is handled, nothing panics,
//! stalls or loops (the bad message is delivered once, not again and again).

use longshore_core::{Consumer, HandlerError, HEADER_DLQ_REASON};
use tokio::sync::mpsc;

use crate::events::{order, send_order_ids, SHUTDOWN};
use crate::fixture::skipped;
use crate::helpers::{expect_quiet, recv, within};
use crate::Fixture;

/// What must happen to a kind.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Handled by the `order_created` handler, once.
    Handled,
    /// Dead-lettered once, the reason containing this text (case-insensitive).
    DeadLettered(&'static str),
}

/// One kind of bad (or surprising but valid) input.
struct Kind {
    name: &'static str,
    body: fn(&str) -> Vec<u8>,
    headers: fn() -> Vec<(String, String)>,
    expect: Expect,
    /// Needs a client that writes past longshore's publisher limits.
    needs_raw: bool,
    /// Which handler the consumer runs.
    via: Via,
}

/// The handler a kind is read by.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `Consumer::on::<OrderCreated>`: reads its struct straight from the data's text.
    Typed,
    /// `Consumer::on_event("order_created", ..)`: reads `ctx.event.data` as a JSON value.
    Untyped,
}

const ID: &str = "6f1c1c9e-3c1c-4c55-9a32-0d3b8f0f6d7e";

/// A seed-format envelope with `event_id` = `id` and the given fields spliced in.
fn envelope(id: &str, event_type: &str, data: &str, timestamp: &str) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","event_type":{event_type},"data":{data},"timestamp":{timestamp}}}"#
    )
    .into_bytes()
}

fn valid(id: &str) -> Vec<u8> {
    envelope(
        id,
        r#""order_created""#,
        r#"{"order_id":"bad-input","total_cents":1}"#,
        r#""2024-01-26T10:00:00+00:00""#,
    )
}

fn none() -> Vec<(String, String)> {
    Vec::new()
}

/// 1,000 small headers: more than longshore publishes (64), far less than brokers take.
fn many_headers() -> Vec<(String, String)> {
    (0..1000)
        .map(|i| (format!("x-h{i}"), format!("v{i}")))
        .collect()
}

/// One 8 KiB header value: more than longshore publishes (4 KiB).
fn huge_header() -> Vec<(String, String)> {
    vec![("x-huge".to_string(), "h".repeat(8 * 1024))]
}

fn garbage_traceparent() -> Vec<(String, String)> {
    vec![(
        "traceparent".to_string(),
        "00-zz-not-a-trace-01".to_string(),
    )]
}

fn nested(depth: usize) -> Vec<u8> {
    let mut s = String::with_capacity(depth * 2 + 64);
    s.push_str(&"[".repeat(depth));
    s.push_str(&"]".repeat(depth));
    envelope(ID, r#""order_created""#, &s, r#""2024-01-26T10:00:00""#)
}

/// A valid order whose data also holds a field, not in the typed event, nested 10,000 deep.
fn deep_unread_field(id: &str) -> Vec<u8> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let data = format!(r#"{{"order_id":"bad-input","total_cents":1,"extra":{deep}}}"#);
    envelope(id, r#""order_created""#, &data, r#""2024-01-26T10:00:00""#)
}

macro_rules! kinds {
    ($($name:ident: $body:expr, $headers:expr, $expect:expr, $raw:expr $(, $via:ident)?;)+) => {
        const KINDS: &[Kind] = &[$(Kind {
            name: stringify!($name),
            body: $body,
            headers: $headers,
            expect: $expect,
            needs_raw: $raw,
            via: via!($($via)?),
        }),+];
        $(
            #[doc = concat!("Bad input `", stringify!($name), "`: see the table in this module.")]
            pub async fn $name(f: &Fixture) {
                run(f, stringify!($name)).await;
            }
        )+
    };
}

macro_rules! via {
    () => {
        Via::Typed
    };
    ($via:ident) => {
        Via::$via
    };
}

use Expect::{DeadLettered, Handled};

kinds! {
    bad_input_invalid_json: |_| b"{\"event_id\": ".to_vec(), none, DeadLettered("malformed"), false;
    bad_input_json_number: |_| b"42".to_vec(), none, DeadLettered("object"), false;
    bad_input_json_string: |_| b"\"order_created\"".to_vec(), none, DeadLettered("object"), false;
    bad_input_json_null: |_| b"null".to_vec(), none, DeadLettered("object"), false;
    bad_input_json_array: |_| b"[]".to_vec(), none, DeadLettered("array"), false;
    bad_input_positional_array: |id| format!(r#"["{id}","order_created",{{"order_id":"x","total_cents":1}},"2024-01-26T10:00:00"]"#).into_bytes(), none, DeadLettered("array"), false;
    bad_input_missing_event_id: |_| br#"{"event_type":"order_created","data":{},"timestamp":"2024-01-26T10:00:00"}"#.to_vec(), none, DeadLettered("event_id"), false;
    bad_input_event_id_not_uuid: |_| envelope("not-a-uuid", r#""order_created""#, "{}", r#""2024-01-26T10:00:00""#), none, DeadLettered("uuid"), false;
    bad_input_event_id_number: |_| br#"{"event_id":7,"event_type":"order_created","data":{},"timestamp":"2024-01-26T10:00:00"}"#.to_vec(), none, DeadLettered("malformed"), false;
    bad_input_missing_event_type: |id| format!(r#"{{"event_id":"{id}","data":{{}},"timestamp":"2024-01-26T10:00:00"}}"#).into_bytes(), none, DeadLettered("event_type"), false;
    bad_input_event_type_number: |id| envelope(id, "7", "{}", r#""2024-01-26T10:00:00""#), none, DeadLettered("malformed"), false;
    bad_input_event_type_null: |id| envelope(id, "null", "{}", r#""2024-01-26T10:00:00""#), none, DeadLettered("malformed"), false;
    bad_input_missing_timestamp: |id| format!(r#"{{"event_id":"{id}","event_type":"order_created","data":{{}}}}"#).into_bytes(), none, DeadLettered("timestamp"), false;
    bad_input_timestamp_words: |id| envelope(id, r#""order_created""#, "{}", r#""yesterday""#), none, DeadLettered("timestamp"), false;
    bad_input_timestamp_number: |id| envelope(id, r#""order_created""#, "{}", "1706263200"), none, DeadLettered("malformed"), false;
    bad_input_timestamp_day_first: |id| envelope(id, r#""order_created""#, "{}", r#""26/01/2024 10:00""#), none, DeadLettered("timestamp"), false;
    bad_input_missing_data: |id| format!(r#"{{"event_id":"{id}","event_type":"order_created","timestamp":"2024-01-26T10:00:00"}}"#).into_bytes(), none, DeadLettered("data"), false;
    bad_input_data_does_not_fit: |id| envelope(id, r#""order_created""#, r#"{"order_id":5}"#, r#""2024-01-26T10:00:00""#), none, DeadLettered("order_created"), false;
    bad_input_not_utf8: |_| vec![0xff, 0xfe, 0xfd, b'{'], none, DeadLettered("utf-8"), false;
    bad_input_empty: |_| Vec::new(), none, DeadLettered("empty"), false;
    bad_input_whitespace: |_| b"  \n\t ".to_vec(), none, DeadLettered("empty"), false;
    // Data stays text until a handler reads it: a typed handler finds no struct in it, an
    // untyped one no JSON value (serde_json's depth limit); neither sees the message.
    bad_input_deep_nesting: |_| nested(10_000), none, DeadLettered("does not fit"), false;
    bad_input_deep_nesting_untyped: |_| nested(10_000), none, DeadLettered("recursion limit"), false, Untyped;
    // Deep JSON in a field the typed event does not have is skipped without recursion.
    bad_input_deep_unread_field: |id| deep_unread_field(id), none, Handled, false;
    bad_input_unknown_event_type: |id| envelope(id, r#""order_shipped""#, "{}", r#""2024-01-26T10:00:00""#), none, DeadLettered("order_shipped"), false;
    bad_input_garbage_traceparent: valid, garbage_traceparent, Handled, false;
    bad_input_zoneless_seed_timestamp: |id| envelope(id, r#""order_created""#, r#"{"order_id":"bad-input","total_cents":1}"#, r#""2024-01-26T10:00:00.123456""#), none, Handled, false;
    bad_input_many_headers_valid: valid, many_headers, Handled, true;
    bad_input_many_headers_undecodable: |_| b"{not json".to_vec(), many_headers, DeadLettered("malformed"), true;
    bad_input_huge_header_undecodable: |_| b"{not json".to_vec(), huge_header, DeadLettered("malformed"), true;
    bad_input_over_limit_undecodable: |_| vec![b'x'; 0], none, DeadLettered("malformed"), true;
}

/// The body of `bad_input_over_limit_undecodable`: garbage as large as the raw client can
/// write, past longshore's limit or up to the broker's own, so the dead letter, which adds
/// headers, is the hard case.
fn over_limit(f: &Fixture, raw: &dyn crate::RawPublisher) -> Vec<u8> {
    vec![b'x'; raw.largest_body(f.capabilities().max_payload)]
}

async fn run(f: &Fixture, name: &str) {
    let Some(kind) = KINDS.iter().find(|k| k.name == name) else {
        panic!("{name} is not in the bad-input table");
    };
    let raw = f.raw();
    if kind.needs_raw && !raw.bypasses_limits() {
        skipped(
            name,
            &format!(
                "{} has no writer but longshore's publisher, which refuses this input",
                f.backend()
            ),
        );
        return;
    }
    let s = f.scene();
    let (topic, sub) = s.ensured("bad").await;
    let mut dlq = s.dead_letters(&sub.name).await;
    let (tx, mut handled) = mpsc::unbounded_channel();
    let consumer = Consumer::new(s.subscriber.clone(), sub);
    let consumer = match kind.via {
        Via::Typed => consumer.on(send_order_ids(tx)),
        Via::Untyped => consumer.on_event("order_created", move |ctx| {
            let id = ctx.event.data["order_id"].as_str().map(str::to_string);
            let sent = id.map(|id| tx.send(id));
            async move {
                match sent {
                    Some(Ok(())) => Ok(()),
                    _ => Err(HandlerError::permanent("no order_id, or the test ended")),
                }
            }
        }),
    };
    let consumer = consumer.start().await.expect("start the consumer");

    let bad_id = uuid::Uuid::new_v4().to_string();
    let body = if name == "bad_input_over_limit_undecodable" {
        over_limit(f, raw.as_ref())
    } else {
        (kind.body)(&bad_id)
    };
    within(
        "the raw publish",
        raw.publish_raw(&topic, &bad_id, &(kind.headers)(), &body),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: the raw client could not publish: {e}"));
    // A valid order after it: the consumer must get past the bad one.
    let sentinel = order("after-bad-input");
    s.publish_event(&topic, &sentinel).await;

    let mut seen = Vec::new();
    while !seen.iter().any(|id: &String| id == "after-bad-input") {
        seen.push(
            within("the order after the bad input", handled.recv())
                .await
                .expect("open"),
        );
    }
    match kind.expect {
        Handled => {
            if !seen.iter().any(|id| id == "bad-input") {
                let id = within("the valid input's handling", handled.recv()).await;
                assert_eq!(id.as_deref(), Some("bad-input"), "{name}");
            }
        }
        DeadLettered(why) => {
            let dead = recv(&mut dlq).await;
            assert_eq!(
                dead.message().id,
                bad_id,
                "{name}: a different message was dead-lettered"
            );
            let reason = dead
                .message()
                .headers
                .get(HEADER_DLQ_REASON)
                .cloned()
                .unwrap_or_default();
            assert!(
                reason.to_lowercase().contains(why),
                "{name}: the reason {reason:?} does not say {why:?}"
            );
            dead.ack().await.expect("ack the dead letter");
            assert!(
                !seen.iter().any(|id| id == "bad-input"),
                "{name} reached the handler"
            );
        }
    }
    // Once, not again and again.
    expect_quiet(&mut dlq, &format!("{name}: a second dead letter")).await;
    let stats = consumer.shutdown(SHUTDOWN).await;
    let dead = u64::from(matches!(kind.expect, DeadLettered(_)));
    assert_eq!(stats.dead_lettered, dead, "{name}: {stats:?}");
    assert_eq!(
        stats.received, 2,
        "{name}: two messages were published, each must be delivered once: {stats:?}"
    );
}
