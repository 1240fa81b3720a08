//! Dead letters: a dead-lettered message lands in `dlq.<subscription>` with its reason and
//! origin, can be replayed, and the runtime dead-letters what it cannot decode or dispatch.

use longshore_core::{Consumer, ConsumerHandle, Event, Message, Subscription};
use longshore_core::{
    HEADER_DLQ_ATTEMPTS, HEADER_DLQ_REASON, HEADER_DLQ_SUBSCRIPTION, HEADER_DLQ_TOPIC,
};
use tokio::sync::mpsc;

use crate::events::{created, event_of, send_order_ids, OrderCreated, SHUTDOWN};
use crate::helpers::{expect_quiet, message, recv, within};
use crate::{Fixture, Scene};

/// `dead_letter` moves the message to `dlq.<subscription>` with headers naming the reason,
/// the original topic, the subscription and the attempts; it is not redelivered.
pub async fn dead_letter_carries_reason_and_topic(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("dl");
    let mut stream = s.subscribe(&sub).await;
    let mut dlq = s.dead_letters(&sub.name).await;
    let m = message(7).with_key("k-7");
    s.publish(&topic, m.clone()).await;
    let d = recv(&mut stream).await;
    d.dead_letter_after("boom: cannot handle", 3)
        .await
        .expect("dead letter");
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message().id, m.id);
    assert_eq!(dead.message().payload, m.payload);
    assert_eq!(dead.message().headers["seq"], "7");
    assert_eq!(
        dead.message().headers[HEADER_DLQ_REASON],
        "boom: cannot handle"
    );
    assert_eq!(dead.message().headers[HEADER_DLQ_TOPIC], topic);
    assert_eq!(dead.message().headers[HEADER_DLQ_SUBSCRIPTION], sub.name);
    assert_eq!(dead.message().headers[HEADER_DLQ_ATTEMPTS], "3");
    dead.ack().await.expect("ack dead letter");
    expect_quiet(
        &mut stream,
        "a dead-lettered message must not be redelivered",
    )
    .await;
}

/// A dead letter republished to its original topic (what `dlq_replay` does) is delivered
/// again to the subscription.
pub async fn dead_letters_can_be_replayed(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("replay");
    let mut stream = s.subscribe(&sub).await;
    let mut dlq = s.dead_letters(&sub.name).await;
    let m = message(1);
    s.publish(&topic, m.clone()).await;
    recv(&mut stream)
        .await
        .dead_letter("first try failed")
        .await
        .expect("dead letter");
    let dead = recv(&mut dlq).await;
    let original = dead.message().headers[HEADER_DLQ_TOPIC].clone();
    let mut replay = dead.message().clone();
    replay.headers.retain(|k, _| !k.starts_with("x-"));
    s.publisher
        .publish(&original, replay)
        .await
        .expect("replay");
    dead.ack().await.expect("ack dead letter");
    let again = recv(&mut stream).await;
    assert_eq!(again.message().id, m.id);
    assert_eq!(again.message().payload, m.payload);
    again.ack().await.expect("ack");
}

/// A body that is not an event goes to the DLQ; the valid message after it is handled.
pub async fn poison_body_dead_lettered_consumer_continues(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("poison");
    let mut dlq = s.dead_letters(&sub.name).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .on(send_order_ids(tx))
        .start()
        .await
        .expect("start");
    let poison = Message::new(&b"\x00\x01 definitely not json"[..]);
    s.publish(&topic, poison.clone()).await;
    s.publish_event(&topic, &event_of(&created(2))).await;
    assert_eq!(
        within("valid message handled", rx.recv()).await.as_deref(),
        Some("o-2")
    );
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message().id, poison.id);
    assert_eq!(dead.message().payload, poison.payload);
    assert!(dead.message().headers[HEADER_DLQ_REASON].contains("undecodable"));
    dead.ack().await.expect("ack");
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.dead_lettered), (1, 1));
}

/// A consumer of `sub` that accepts every [`OrderCreated`] and has no other handler.
async fn accepting_orders(s: &Scene, sub: Subscription) -> ConsumerHandle {
    Consumer::new(s.subscriber.clone(), sub)
        .on(|_: OrderCreated, _| async move { Ok(()) })
        .start()
        .await
        .expect("start")
}

/// Empty body, invalid UTF-8, bad JSON, missing fields, wrong types, bad id, bad timestamp,
/// and data that does not fit the typed event: each is dead-lettered with a reason, none
/// panics, and nothing is lost.
pub async fn malformed_inputs_are_dead_lettered_with_reason(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("malformed");
    let mut dlq = s.dead_letters(&sub.name).await;
    let consumer = accepting_orders(&s, sub).await;
    let id = "6f1c1c9e-3c1c-4c55-9a32-0d3b8f0f6d7e";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("utf8", vec![0xff, 0xfe, 0xfd]),
        ("json", b"{\"event_id\": ".to_vec()),
        ("missing", br#"{"event_type":"order_created","data":{}}"#.to_vec()),
        ("types", format!(r#"{{"event_id":"{id}","event_type":["x"],"data":{{}},"timestamp":"2024-01-26T10:00:00"}}"#).into_bytes()),
        ("id", br#"{"event_id":"not-a-uuid","event_type":"order_created","data":{},"timestamp":"2024-01-26T10:00:00"}"#.to_vec()),
        ("timestamp", format!(r#"{{"event_id":"{id}","event_type":"order_created","data":{{}},"timestamp":"26/01/2024"}}"#).into_bytes()),
        ("data", format!(r#"{{"event_id":"{id}","event_type":"order_created","data":{{"order_id":5}},"timestamp":"2024-01-26T10:00:00"}}"#).into_bytes()),
    ];
    let mut expected = std::collections::BTreeMap::new();
    for (label, body) in cases {
        let m = Message::new(body).with_header("case", label);
        expected.insert(m.id.clone(), label);
        s.publish(&topic, m).await;
    }
    for _ in 0..expected.len() {
        let dead = recv(&mut dlq).await;
        let label = expected
            .remove(&dead.message().id)
            .expect("a message we sent, once");
        let reason = &dead.message().headers[HEADER_DLQ_REASON];
        assert!(!reason.is_empty(), "{label}: empty reason");
        dead.ack().await.expect("ack");
    }
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.dead_lettered, stats.acked), (8, 0));
}

/// An event type without a handler is dead-lettered by default.
pub async fn unknown_event_type_dead_lettered(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("unknown");
    let mut dlq = s.dead_letters(&sub.name).await;
    let consumer = accepting_orders(&s, sub).await;
    let event = Event::new("order_shipped", serde_json::json!({"order_id": "o-1"}));
    s.publish_event(&topic, &event).await;
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message().id, event.id.to_string());
    assert!(dead.message().headers[HEADER_DLQ_REASON].contains("order_shipped"));
    dead.ack().await.expect("ack");
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!(stats.dead_lettered, 1);
}
