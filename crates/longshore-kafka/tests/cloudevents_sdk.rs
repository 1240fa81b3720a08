//! Kafka interop with the official CloudEvents Rust SDK (`cloudevents-sdk`, a test oracle
//! only): a record the SDK serializes in binary mode and a plain rdkafka producer writes (no
//! longshore headers at all) is handled by a longshore consumer, and a record longshore's
//! `?codec=cloudevents` publisher writes, read back by a plain rdkafka consumer, is an event
//! the SDK reads, attribute for attribute.
//!
//! The SDK's own `rdkafka` feature pins rdkafka 0.38 (and a second librdkafka build), which
//! cannot sit beside this crate's rdkafka 0.39; so its serializer is driven through its
//! `BinarySerializer` trait with the Kafka binding's header rule (`ce_<attribute>`,
//! `datacontenttype` as `content-type`), exactly what its rdkafka binding does, and records are
//! read back into its HTTP binding, whose names differ only by the `ce-` prefix.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cloudevents::message::{
    BinaryDeserializer, BinarySerializer, MessageAttributeValue, Result as SdkResult,
};
use cloudevents::{AttributesReader, Data, EventBuilder, EventBuilderV10};
use longshore_core::cloudevents::CloudEventsCodec;
use longshore_core::{
    Broker, Consumer, DomainEvent, Event, EventPublisher, HandlerError, Subscription,
};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(serde::Serialize, serde::Deserialize)]
struct OrderCreated {
    order_id: String,
    total_cents: u64,
}
impl DomainEvent for OrderCreated {
    const EVENT_TYPE: &'static str = "order_created";
}

/// The SDK's binary serialization under the Kafka binding's names.
#[derive(Default)]
struct KafkaRecord {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl BinarySerializer<KafkaRecord> for KafkaRecord {
    fn set_spec_version(mut self, sv: cloudevents::event::SpecVersion) -> SdkResult<Self> {
        self.headers.push(("ce_specversion".into(), sv.to_string()));
        Ok(self)
    }
    fn set_attribute(mut self, name: &str, value: MessageAttributeValue) -> SdkResult<Self> {
        let header = if name == "datacontenttype" {
            "content-type".to_string()
        } else {
            format!("ce_{name}")
        };
        self.headers.push((header, value.to_string()));
        Ok(self)
    }
    fn set_extension(self, name: &str, value: MessageAttributeValue) -> SdkResult<Self> {
        self.set_attribute(name, value)
    }
    fn end_with_data(mut self, bytes: Vec<u8>) -> SdkResult<KafkaRecord> {
        self.body = bytes;
        Ok(self)
    }
    fn end(self) -> SdkResult<KafkaRecord> {
        Ok(self)
    }
}

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

async fn broker() -> Option<Arc<dyn Broker>> {
    let b = common::connect_with(common::config()).await?;
    Some(Arc::new(b))
}

#[tokio::test]
async fn a_record_the_sdk_writes_is_handled_by_a_longshore_consumer() {
    let Some(broker) = broker().await else { return };
    let topic = format!("cesdk{}", run_id());
    let sub = Subscription::new(format!("{topic}-billing"), [topic.clone()]);
    let subscriber = broker.subscriber();
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(subscriber, sub)
        .on(move |o: OrderCreated, ctx| {
            let tx = tx.clone();
            async move {
                let e = &ctx.event;
                tx.send((
                    o.order_id,
                    o.total_cents,
                    e.metadata.headers.get("ce-source").cloned(),
                    e.metadata.headers.get("ce-id").cloned(),
                    e.metadata.aggregate_id.clone(),
                    e.metadata.headers.get("ce-tenant").cloned(),
                ))
                .map_err(HandlerError::permanent)
            }
        })
        .start()
        .await
        .expect("start");

    let sdk = EventBuilderV10::new()
        .id("sdk-0001")
        .ty("order_created")
        .source("urn:example:orders")
        .subject("order-7")
        .time("2024-01-26T10:00:00Z")
        .extension("tenant", "acme")
        .data(
            "application/json",
            json!({"order_id": "o-7", "total_cents": 700}),
        )
        .build()
        .expect("a valid SDK event");
    let record = sdk
        .deserialize_binary(KafkaRecord::default())
        .expect("the SDK serializes");
    let mut headers = OwnedHeaders::new();
    for (k, v) in &record.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .set("acks", "all")
        .create()
        .expect("a plain producer");
    producer
        .send(
            FutureRecord::to(&topic)
                .key("order-7")
                .payload(&record.body)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("the plain producer's record is stored");

    let got = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("handled in time")
        .expect("open");
    assert_eq!(
        got,
        (
            "o-7".to_string(),
            700,
            Some("urn:example:orders".to_string()),
            Some("sdk-0001".to_string()),
            Some("order-7".to_string()),
            Some("acme".to_string()),
        )
    );
    let stats = consumer.shutdown(Duration::from_secs(10)).await;
    assert_eq!((stats.acked, stats.dead_lettered), (1, 0), "{stats:?}");
}

#[tokio::test]
async fn a_record_longshore_writes_is_read_by_the_sdk() {
    let Some(broker) = broker().await else { return };
    let topic = format!("cesdk{}", run_id());
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .set("group.id", format!("{topic}-plain"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a plain consumer");
    let codec = CloudEventsCodec::binary()
        .for_backend(broker.backend())
        .with_source("/billing")
        .expect("source");
    let event = Event::new(
        "order_created",
        json!({"order_id": "o-1", "total_cents": 100}),
    )
    .with_aggregate_id("order-1")
    .with_correlation_id("corr-1");
    EventPublisher::new(broker.publisher())
        .with_codec(Arc::new(codec))
        .publish_to(&topic, &event)
        .await
        .expect("publish");
    reader.subscribe(&[topic.as_str()]).expect("subscribe");
    let record = tokio::time::timeout(Duration::from_secs(60), reader.recv())
        .await
        .expect("a record in time")
        .expect("no consumer error");
    assert_eq!(record.key(), Some(&b"order-1"[..]));
    let mut http_headers = http::HeaderMap::new();
    for h in record.headers().expect("headers").iter() {
        let Some(attr) = h
            .key
            .strip_prefix("ce_")
            .map(|a| format!("ce-{a}"))
            .or_else(|| (h.key == "content-type").then(|| h.key.to_string()))
        else {
            continue;
        };
        let value = std::str::from_utf8(h.value.unwrap_or_default()).expect("UTF-8");
        http_headers.insert(
            http::HeaderName::from_bytes(attr.as_bytes()).expect("a header name"),
            http::HeaderValue::from_str(value).expect("a header value"),
        );
    }
    let body = record.payload().unwrap_or_default().to_vec();
    let sdk = cloudevents::binding::http::to_event(&http_headers, body)
        .expect("the SDK reads longshore's record");
    assert_eq!(sdk.id(), event.id.to_string());
    assert_eq!(sdk.ty(), "order_created");
    assert_eq!(sdk.source().as_str(), "/billing");
    assert_eq!(sdk.subject(), Some("order-1"));
    assert_eq!(sdk.time().copied(), Some(event.timestamp));
    assert_eq!(sdk.datacontenttype(), Some("application/json"));
    assert_eq!(
        sdk.extension("correlationid")
            .map(ToString::to_string)
            .as_deref(),
        Some("corr-1")
    );
    let data = match sdk.data() {
        Some(Data::Json(v)) => v.clone(),
        Some(Data::Binary(b)) => serde_json::from_slice(b).expect("JSON"),
        Some(Data::String(s)) => serde_json::from_str(s).expect("JSON"),
        None => serde_json::Value::Null,
    };
    assert_eq!(data, event.data);
}
