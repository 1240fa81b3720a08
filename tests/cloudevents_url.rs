//! Choosing CloudEvents by URL, without code changes: `connect("…?codec=cloudevents…")` makes
//! `EventPublisher::new(ls.publisher.clone())` write CloudEvents in the backend's binding
//! names, the adapter never sees the parameters, and a consumer on a plain URL reads them.
// Without a broker feature only the memory test is compiled; the shared check is unused.
#![cfg_attr(
    not(any(
        feature = "rabbitmq",
        feature = "kafka",
        feature = "nats",
        feature = "postgres"
    )),
    allow(dead_code, unused_imports)
)]

mod common;

use std::time::Duration;

use longshore::cloudevents::HeaderBinding;
use longshore::prelude::*;
use longshore::{Codec, JsonCodec};

#[derive(serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order_id: String,
}
impl DomainEvent for OrderPlaced {
    const EVENT_TYPE: &'static str = "order_placed";
}

/// `url` with the codec parameters added.
fn with_codec(url: &str, codec: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}codec={codec}&ce_source=%2Fcheckout")
}

async fn check(url: &str) {
    let backend = url.split("://").next().unwrap_or(url).to_string();
    for (codec, binary) in [("cloudevents", true), ("cloudevents-structured", false)] {
        let ce_url = with_codec(url, codec);
        let Some(writer) =
            longshore_testkit::require_broker(&backend, url, longshore::connect(&ce_url).await)
        else {
            return;
        };
        let reader = longshore::connect(url).await.expect("a plain connection");
        let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let topic = format!("ce{run}.orders.placed");
        let sub = Subscription::new(format!("ce-url-{run}"), [topic.clone()]);
        reader
            .subscriber
            .ensure_subscription(&sub)
            .await
            .expect("ensure");
        let mut stream = reader.subscriber.subscribe(&sub).await.expect("subscribe");
        let order = OrderPlaced {
            order_id: format!("o-{run}"),
        };
        let event = Event::from_typed(&order)
            .expect("an event")
            .with_aggregate_id("agg-1");
        EventPublisher::new(writer.publisher.clone())
            .publish_to(&topic, &event)
            .await
            .expect("publish");
        let delivery = tokio::time::timeout(
            Duration::from_secs(30),
            futures::StreamExt::next(&mut stream),
        )
        .await
        .expect("delivered in time")
        .expect("a delivery")
        .expect("no stream error");
        let headers = &delivery.message().headers;
        if binary {
            let p = HeaderBinding::for_backend(writer.backend).prefix();
            assert_eq!(
                headers.get(&format!("{p}specversion")).map(String::as_str),
                Some("1.0"),
                "{headers:?}"
            );
            assert_eq!(
                headers.get(&format!("{p}source")).map(String::as_str),
                Some("/checkout")
            );
            assert_eq!(
                headers.get(&format!("{p}subject")).map(String::as_str),
                Some("agg-1")
            );
        } else {
            let ct = headers.get("content-type").cloned().unwrap_or_default();
            assert!(ct.starts_with("application/cloudevents+json"), "{ct:?}");
        }
        let back = JsonCodec.decode(delivery.message()).expect("decodes");
        assert_eq!(
            (back.id, back.event_type.as_str()),
            (event.id, "order_placed")
        );
        delivery.ack().await.expect("ack");
        writer.close().await.expect("close");
        reader.close().await.expect("close");
    }
}

#[tokio::test]
async fn cloudevents_by_url_memory() {
    // One process, one memory broker per connect: the writer and reader must share it.
    let ls = longshore::connect("memory://?codec=cloudevents")
        .await
        .expect("connect");
    assert!(ls.publisher.codec().is_some());
    let plain = longshore::connect("memory://").await.expect("connect");
    assert!(plain.publisher.codec().is_none());
    assert!(longshore::connect("memory://?codec=avro").await.is_err());
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn cloudevents_by_url_rabbitmq() {
    check(&common::amqp_url()).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn cloudevents_by_url_kafka() {
    check(&common::kafka_url()).await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn cloudevents_by_url_nats() {
    check(&common::nats_url()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn cloudevents_by_url_postgres() {
    check(&common::postgres_url()).await;
}
