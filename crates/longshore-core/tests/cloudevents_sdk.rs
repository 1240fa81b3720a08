//! Interop with the official CloudEvents Rust SDK (`cloudevents-sdk`), used only as a test
//! oracle: events the SDK writes decode in longshore, and events longshore writes decode in
//! the SDK, attribute for attribute, in binary mode under the Kafka binding's names (as the
//! SDK's own rdkafka binding writes them: `ce_<attribute>`, `datacontenttype` as
//! `content-type`) and the HTTP/NATS names, and in structured mode.
//!
//! The SDK's `rdkafka` feature pins rdkafka 0.38 (and its own librdkafka build), which cannot
//! sit beside longshore's rdkafka 0.39 in one build; so the SDK's serializer is driven here
//! through its `BinarySerializer` trait with the Kafka binding's header rule, which is all its
//! rdkafka binding adds.

use cloudevents::message::{
    BinaryDeserializer, BinarySerializer, MessageAttributeValue, Result as SdkResult,
};
use cloudevents::{AttributesReader, Data, EventBuilder, EventBuilderV10};
use longshore_core::cloudevents::{CloudEventsCodec, HeaderBinding};
use longshore_core::{Codec, Event, JsonCodec, Message};
use serde_json::json;

/// Headers and body as the SDK's binary serializer lays them out under `prefix`.
struct Record {
    prefix: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl BinarySerializer<Record> for Record {
    fn set_spec_version(mut self, sv: cloudevents::event::SpecVersion) -> SdkResult<Self> {
        self.headers
            .push((format!("{}specversion", self.prefix), sv.to_string()));
        Ok(self)
    }
    fn set_attribute(mut self, name: &str, value: MessageAttributeValue) -> SdkResult<Self> {
        // The SDK bindings' rule (binding::header_prefix): datacontenttype is content-type.
        let header = if name == "datacontenttype" {
            "content-type".to_string()
        } else {
            format!("{}{name}", self.prefix)
        };
        self.headers.push((header, value.to_string()));
        Ok(self)
    }
    fn set_extension(self, name: &str, value: MessageAttributeValue) -> SdkResult<Self> {
        self.set_attribute(name, value)
    }
    fn end_with_data(mut self, bytes: Vec<u8>) -> SdkResult<Record> {
        self.body = bytes;
        Ok(self)
    }
    fn end(self) -> SdkResult<Record> {
        Ok(self)
    }
}

fn sdk_event() -> cloudevents::Event {
    EventBuilderV10::new()
        .id("0001-sdk")
        .ty("order_created")
        .source("http://orders.example/rust-sdk")
        .subject("order-9")
        .time("2024-01-26T10:00:00.123456Z")
        .extension("tenant", "acme")
        .data(
            "application/json",
            json!({"order_id": "o-9", "total_cents": 900}),
        )
        .build()
        .expect("a valid SDK event")
}

fn sdk_data(event: &cloudevents::Event) -> serde_json::Value {
    match event.data() {
        Some(Data::Json(v)) => v.clone(),
        Some(Data::String(s)) => serde_json::from_str(s).expect("JSON text"),
        Some(Data::Binary(b)) => serde_json::from_slice(b).expect("JSON bytes"),
        None => serde_json::Value::Null,
    }
}

fn assert_same(ours: &Event, sdk: &cloudevents::Event) {
    assert_eq!(ours.event_type, sdk.ty());
    assert_eq!(
        ours.metadata.headers.get("ce-source").map(String::as_str),
        Some(sdk.source().as_str())
    );
    assert_eq!(ours.metadata.aggregate_id.as_deref(), sdk.subject());
    assert_eq!(Some(ours.timestamp), sdk.time().copied());
    assert_eq!(ours.data, sdk_data(sdk));
    let tenant = sdk.extension("tenant").map(ToString::to_string);
    assert_eq!(ours.metadata.headers.get("ce-tenant").cloned(), tenant);
    let id = ours.metadata.headers.get("ce-id").cloned();
    assert_eq!(id.as_deref().unwrap_or(&ours.id.to_string()), sdk.id());
}

/// A message from the SDK's binary serialization under `prefix`.
fn sdk_binary(event: cloudevents::Event, prefix: &'static str) -> Message {
    let record = event
        .deserialize_binary(Record {
            prefix,
            headers: Vec::new(),
            body: Vec::new(),
        })
        .expect("the SDK serializes");
    let mut message = Message::new(record.body);
    message.headers.extend(record.headers);
    message
}

#[test]
fn sdk_binary_events_decode_in_longshore() {
    for binding in [
        HeaderBinding::Kafka,
        HeaderBinding::Http,
        HeaderBinding::Amqp,
    ] {
        let sdk = sdk_event();
        let message = sdk_binary(sdk.clone(), binding.prefix());
        let ours = JsonCodec
            .decode(&message)
            .expect("longshore decodes the SDK's event");
        assert_same(&ours, &sdk);
    }
}

#[test]
fn sdk_structured_events_decode_in_longshore() {
    let sdk = sdk_event();
    let message = Message::new(serde_json::to_vec(&sdk).expect("the SDK's JSON format"))
        .with_header("content-type", "application/cloudevents+json");
    let ours = JsonCodec.decode(&message).expect("longshore decodes");
    assert_same(&ours, &sdk);
}

fn longshore_event() -> Event {
    Event::new(
        "order_created",
        json!({"order_id": "o-1", "total_cents": 100}),
    )
    .with_aggregate_id("order-1")
    .with_correlation_id("corr-1")
}

#[test]
fn longshore_binary_events_decode_in_the_sdk() {
    // The SDK reads binary mode from `ce-` headers (its HTTP binding); the Kafka binding's
    // `ce_` headers are renamed for it, as its rdkafka binding reads them.
    for binding in [HeaderBinding::Http, HeaderBinding::Kafka] {
        let ours = longshore_event();
        let codec = CloudEventsCodec::binary()
            .with_binding(binding)
            .with_source("/billing")
            .expect("source");
        let message = codec.encode(&ours).expect("encode");
        let mut headers = http::HeaderMap::new();
        for (name, value) in &message.headers {
            let name = match name.strip_prefix(binding.prefix()) {
                Some(attr) => format!("ce-{attr}"),
                None => name.clone(),
            };
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                http::HeaderValue::from_str(value).expect("a header value"),
            );
        }
        let sdk = cloudevents::binding::http::to_event(&headers, message.payload.to_vec())
            .expect("the SDK reads longshore's event");
        assert_eq!(sdk.id(), ours.id.to_string());
        assert_eq!(sdk.source().as_str(), "/billing");
        assert_eq!(sdk.ty(), "order_created");
        assert_eq!(sdk.subject(), Some("order-1"));
        assert_eq!(sdk.time().copied(), Some(ours.timestamp));
        assert_eq!(sdk.datacontenttype(), Some("application/json"));
        assert_eq!(
            sdk.extension("correlationid")
                .map(ToString::to_string)
                .as_deref(),
            Some("corr-1")
        );
        assert_eq!(sdk_data(&sdk), ours.data);
    }
}

#[test]
fn longshore_structured_events_decode_in_the_sdk() {
    let ours = longshore_event();
    let message = CloudEventsCodec::structured()
        .encode(&ours)
        .expect("encode");
    let sdk: cloudevents::Event =
        serde_json::from_slice(&message.payload).expect("the SDK reads the JSON format");
    assert_eq!(sdk.id(), ours.id.to_string());
    assert_eq!(sdk.ty(), "order_created");
    assert_eq!(sdk.subject(), Some("order-1"));
    assert_eq!(sdk.time().copied(), Some(ours.timestamp));
    assert_eq!(sdk_data(&sdk), ours.data);
}
