//! CloudEvents on the wire: binary mode in the backend's binding names and structured mode
//! round-trip; one subscription carries the seed envelope and both CloudEvents modes at once;
//! a CloudEvent written by the broker's own client (as the official SDKs and other languages
//! write them) is handled; an invalid one is dead-lettered with the attribute it lacks.

use std::sync::Arc;

use longshore_core::cloudevents::{CloudEventsCodec, ContentMode};
use longshore_core::{Codec, Consumer, HandlerError, JsonCodec, HEADER_DLQ_REASON};
use tokio::sync::mpsc;

use crate::events::{order, send_order_ids, OrderCreated, SHUTDOWN};
use crate::helpers::{expect_quiet, recv, within};
use crate::Fixture;

/// Binary mode: attributes arrive as `<prefix>…` headers of the backend's binding, the data as
/// the body, and the event decodes back whole.
pub async fn cloudevents_binary_round_trip(f: &Fixture) {
    round_trip(f, CloudEventsCodec::binary()).await;
}

/// Structured mode: `application/cloudevents+json` arrives and decodes back whole.
pub async fn cloudevents_structured_round_trip(f: &Fixture) {
    round_trip(f, CloudEventsCodec::structured()).await;
}

async fn round_trip(f: &Fixture, codec: CloudEventsCodec) {
    let s = f.scene();
    let codec = codec
        .for_backend(f.backend())
        .with_source("/testkit")
        .expect("a source");
    let (topic, mut stream) = s.open("ce-wire").await;
    let sent = order("ce-1")
        .with_aggregate_id("order-ce-1")
        .with_correlation_id("corr-1")
        .with_header("tenant", "acme");
    s.events()
        .with_codec(Arc::new(codec.clone()))
        .publish_to(&topic, &sent)
        .await
        .expect("publish a CloudEvent");
    let delivery = recv(&mut stream).await;
    let headers = &delivery.message().headers;
    match codec.mode() {
        ContentMode::Binary => {
            let p = codec.binding().prefix();
            for (attr, want) in [
                ("specversion", "1.0".to_string()),
                ("id", sent.id.to_string()),
                ("type", "order_created".to_string()),
                ("source", "/testkit".to_string()),
                ("subject", "order-ce-1".to_string()),
            ] {
                let name = format!("{p}{attr}");
                assert_eq!(headers.get(&name), Some(&want), "{name} in {headers:?}");
            }
            assert_eq!(
                headers.get("content-type").map(String::as_str),
                Some("application/json")
            );
        }
        ContentMode::Structured => {
            let ct = headers.get("content-type").cloned().unwrap_or_default();
            assert!(ct.starts_with("application/cloudevents+json"), "{ct:?}");
            let body: serde_json::Value =
                serde_json::from_slice(&delivery.message().payload).expect("a JSON body");
            assert_eq!(body["specversion"], "1.0");
            assert_eq!(body["id"], sent.id.to_string());
        }
    }
    let back = JsonCodec.decode(delivery.message()).expect("decodes");
    assert_eq!(
        (&back.id, &back.event_type, &back.timestamp, &back.data),
        (&sent.id, &sent.event_type, &sent.timestamp, &sent.data)
    );
    assert_eq!(back.metadata.aggregate_id.as_deref(), Some("order-ce-1"));
    assert_eq!(back.metadata.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(
        back.metadata.headers.get("tenant").map(String::as_str),
        Some("acme")
    );
    assert_eq!(
        back.metadata.headers.get("ce-source").map(String::as_str),
        Some("/testkit")
    );
    delivery.ack().await.expect("ack");
}

/// A consumer with the default codec handles the seed envelope, binary and structured
/// CloudEvents on one subscription, so services can move one at a time.
pub async fn cloudevents_and_seed_mix_on_one_subscription(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("ce-mix").await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .on(send_order_ids(tx))
        .start()
        .await
        .expect("start");
    s.publish_event(&topic, &order("seed")).await;
    for (id, codec) in [
        ("binary", CloudEventsCodec::binary()),
        ("structured", CloudEventsCodec::structured()),
    ] {
        s.events()
            .with_codec(Arc::new(codec.for_backend(f.backend())))
            .publish_to(&topic, &order(id))
            .await
            .expect("publish");
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(within("each form handled", rx.recv()).await.expect("open"));
    }
    got.sort();
    assert_eq!(got, ["binary", "seed", "structured"]);
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.dead_lettered), (3, 0), "{stats:?}");
}

/// CloudEvents written by the broker's own client, as an SDK of another language writes them
/// (a non-UUID id, the binding's header names; and a structured one), are handled; one
/// without `source` is dead-lettered with a reason naming it.
pub async fn cloudevents_from_a_raw_client_decode(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("ce-raw").await;
    let mut dlq = s.dead_letters(&sub.name).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .on(move |o: OrderCreated, ctx| {
            let tx = tx.clone();
            async move {
                let source = ctx.event.metadata.headers.get("ce-source").cloned();
                tx.send((o.order_id, source, ctx.event.metadata.aggregate_id.clone()))
                    .map_err(HandlerError::permanent)
            }
        })
        .start()
        .await
        .expect("start");
    let p = CloudEventsCodec::binary()
        .for_backend(f.backend())
        .binding()
        .prefix();
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.replace("{p}", p), v.to_string()))
            .collect()
    };
    let raw = f.raw();
    let binary = h(&[
        ("{p}specversion", "1.0"),
        ("{p}id", "A234-1234-1234"),
        ("{p}source", "/peer/python"),
        ("{p}type", "order_created"),
        ("{p}time", "2018-04-05T17:31:00Z"),
        ("{p}subject", "order-raw"),
        ("content-type", "application/json"),
    ]);
    let body = br#"{"order_id":"raw-binary","total_cents":5}"#;
    within(
        "raw publish",
        raw.publish_raw(&topic, "raw-1", &binary, body),
    )
    .await
    .expect("raw binary CloudEvent");
    let structured = h(&[(
        "content-type",
        "application/cloudevents+json; charset=utf-8",
    )]);
    let body = br#"{"specversion":"1.0","id":"B-1","source":"urn:peer:go","type":"order_created","datacontenttype":"application/json","data":{"order_id":"raw-structured","total_cents":7}}"#;
    within(
        "raw publish",
        raw.publish_raw(&topic, "raw-2", &structured, body),
    )
    .await
    .expect("raw structured CloudEvent");
    let no_source = h(&[
        ("{p}specversion", "1.0"),
        ("{p}id", "C-1"),
        ("{p}type", "order_created"),
        ("content-type", "application/json"),
    ]);
    let body = br#"{"order_id":"raw-invalid","total_cents":1}"#;
    within(
        "raw publish",
        raw.publish_raw(&topic, "raw-3", &no_source, body),
    )
    .await
    .expect("raw invalid CloudEvent");

    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            within("raw CloudEvents handled", rx.recv())
                .await
                .expect("open"),
        );
    }
    got.sort();
    assert_eq!(
        got,
        [
            (
                "raw-binary".to_string(),
                Some("/peer/python".to_string()),
                Some("order-raw".to_string())
            ),
            (
                "raw-structured".to_string(),
                Some("urn:peer:go".to_string()),
                None
            ),
        ]
    );
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message().id, "raw-3");
    let reason = dead
        .message()
        .headers
        .get(HEADER_DLQ_REASON)
        .cloned()
        .unwrap_or_default();
    assert!(reason.contains("source"), "{reason:?}");
    dead.ack().await.expect("ack the dead letter");
    expect_quiet(&mut dlq, "a second dead letter").await;
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.dead_lettered), (2, 1), "{stats:?}");
}
