use serde_json::json;

use super::*;
use crate::codec::{Codec, JsonCodec};
use crate::error::CodecError;

fn event() -> Event {
    Event::new("order_created", json!({"order_id": "o-1", "n": 3}))
        .with_aggregate_id("o-1")
        .with_correlation_id("c-1")
        .with_causation_id("x-1")
        .with_header("tenant", "acme")
}

fn same_event(back: &Event, sent: &Event) {
    assert_eq!(back.id, sent.id);
    assert_eq!(back.event_type, sent.event_type);
    assert_eq!(back.timestamp, sent.timestamp);
    assert_eq!(back.data, sent.data);
    assert_eq!(back.metadata.aggregate_id, sent.metadata.aggregate_id);
    assert_eq!(back.metadata.correlation_id, sent.metadata.correlation_id);
    assert_eq!(back.metadata.causation_id, sent.metadata.causation_id);
    assert_eq!(
        back.metadata.headers.get("tenant").map(String::as_str),
        Some("acme")
    );
}

#[test]
fn binary_round_trip_on_every_binding() {
    let sent = event();
    for binding in [
        HeaderBinding::Http,
        HeaderBinding::Kafka,
        HeaderBinding::Amqp,
    ] {
        let codec = CloudEventsCodec::binary()
            .with_binding(binding)
            .with_source("/billing")
            .unwrap();
        let m = codec.encode(&sent).unwrap();
        let p = binding.prefix();
        assert_eq!(m.headers[&format!("{p}specversion")], "1.0");
        assert_eq!(m.headers[&format!("{p}id")], sent.id.to_string());
        assert_eq!(m.headers[&format!("{p}type")], "order_created");
        assert_eq!(m.headers[&format!("{p}source")], "/billing");
        assert_eq!(m.headers[&format!("{p}subject")], "o-1");
        assert_eq!(m.headers[&format!("{p}correlationid")], "c-1");
        assert_eq!(m.headers["content-type"], "application/json");
        assert_eq!(m.headers["tenant"], "acme");
        assert_eq!(m.key.as_deref(), Some("o-1"));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap(),
            sent.data
        );
        // Either codec reads it.
        for back in [codec.decode(&m).unwrap(), JsonCodec.decode(&m).unwrap()] {
            same_event(&back, &sent);
            assert_eq!(back.metadata.headers["ce-source"], "/billing");
        }
    }
}

#[test]
fn structured_round_trip() {
    let mut sent = event();
    sent.metadata.traceparent =
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    let codec = CloudEventsCodec::structured();
    let m = codec.encode(&sent).unwrap();
    assert_eq!(m.headers["content-type"], CONTENT_TYPE_STRUCTURED);
    assert_eq!(
        m.headers["traceparent"],
        sent.metadata.traceparent.clone().unwrap()
    );
    let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["source"], DEFAULT_SOURCE);
    assert_eq!(body["data"], sent.data);
    assert_eq!(body["subject"], "o-1");
    let back = JsonCodec.decode(&m).unwrap();
    same_event(&back, &sent);
    assert_eq!(back.metadata.traceparent, sent.metadata.traceparent);
}

#[test]
fn seed_form_still_decodes_and_is_unchanged() {
    let sent = event();
    let m = JsonCodec.encode(&sent).unwrap();
    assert_eq!(detect(&m.headers), None);
    assert_eq!(CloudEventsCodec::binary().decode(&m).unwrap(), sent);
}

#[test]
fn decoded_attributes_survive_reencoding() {
    // A peer's event: non-UUID id, its own source, an extension and a schema.
    let m = Message::new(&br#"{"a":1}"#[..])
        .with_header("ce_specversion", "1.0")
        .with_header("ce_id", "A234-1234-1234")
        .with_header("ce_source", "/orders")
        .with_header("ce_type", "order_created")
        .with_header("ce_time", "2018-04-05T17:31:00Z")
        .with_header("ce_dataschema", "https://example.com/s.json")
        .with_header("ce_tenant", "acme")
        .with_header("content-type", "application/json");
    let event = JsonCodec.decode(&m).unwrap();
    assert_eq!(event.metadata.headers["ce-id"], "A234-1234-1234");
    assert_eq!(
        event.id,
        JsonCodec.decode(&m).unwrap().id,
        "derived ids are stable"
    );
    assert_eq!(event.timestamp, parse_timestamp_ok("2018-04-05T17:31:00Z"));
    for codec in [CloudEventsCodec::binary(), CloudEventsCodec::structured()] {
        let again = codec.encode(&event).unwrap();
        let back = codec.decode(&again).unwrap();
        assert_eq!(back, event, "{:?}", codec.mode());
        if codec.mode() == ContentMode::Binary {
            assert_eq!(again.headers["ce-id"], "A234-1234-1234");
            assert_eq!(again.headers["ce-source"], "/orders");
            assert_eq!(again.headers["ce-tenant"], "acme");
            assert_eq!(again.headers["ce-dataschema"], "https://example.com/s.json");
        }
    }
}

fn parse_timestamp_ok(s: &str) -> chrono::DateTime<chrono::Utc> {
    crate::codec::parse_timestamp(s).unwrap()
}

#[test]
fn required_attributes_are_typed_errors() {
    let full = || {
        Message::new(&b"{}"[..])
            .with_header("ce-specversion", "1.0")
            .with_header("ce-id", "1")
            .with_header("ce-source", "/s")
            .with_header("ce-type", "t")
    };
    assert!(JsonCodec.decode(&full()).is_ok());
    for missing in ["id", "source", "type"] {
        let mut m = full();
        m.headers.remove(&format!("ce-{missing}"));
        assert_eq!(
            JsonCodec.decode(&m),
            Err(CodecError::MissingAttribute(match missing {
                "id" => "id",
                "source" => "source",
                _ => "type",
            }))
        );
    }
    let m = full().with_header("ce-specversion", "0.3");
    assert_eq!(
        JsonCodec.decode(&m),
        Err(CodecError::SpecVersion("0.3".into()))
    );
    let m = full().with_header("ce-id", "");
    assert_eq!(
        JsonCodec.decode(&m),
        Err(CodecError::MissingAttribute("id"))
    );
    let m = full().with_header("ce-time", "yesterday");
    assert!(matches!(
        JsonCodec.decode(&m),
        Err(CodecError::BadTimestamp(_))
    ));
    let structured = |body: &str| {
        Message::new(body.as_bytes().to_vec())
            .with_header("content-type", "application/cloudevents+json")
    };
    assert_eq!(
        JsonCodec.decode(&structured(r#"{"specversion":"1.0","id":"1","type":"t"}"#)),
        Err(CodecError::MissingAttribute("source"))
    );
    assert_eq!(
        JsonCodec.decode(&structured(r#"{"id":"1","source":"/s","type":"t"}"#)),
        Err(CodecError::MissingAttribute("specversion"))
    );
    assert!(matches!(
        JsonCodec.decode(&structured("[1]")),
        Err(CodecError::Malformed(_))
    ));
    assert!(matches!(
        JsonCodec.decode(&structured(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AA=="}"#
        )),
        Err(CodecError::BadAttribute { .. })
    ));
}

#[test]
fn headerless_structured_and_case_insensitive_prefixes() {
    // NATS's structured mode before headers: no content type at all.
    let m = Message::new(
        &br#"{"specversion":"1.0","id":"7","source":"/s","type":"t","data":{"x":1}}"#[..],
    );
    let e = JsonCodec.decode(&m).unwrap();
    assert_eq!((e.event_type.as_str(), &*e.data), ("t", &json!({"x": 1})));
    let m = Message::new(&b"{}"[..])
        .with_header("Ce-SpecVersion", "1.0")
        .with_header("Ce-Id", "7")
        .with_header("cloudEvents_source", "/s")
        .with_header("CE-TYPE", "t");
    assert_eq!(JsonCodec.decode(&m).unwrap().event_type, "t");
}

#[test]
fn text_data_keeps_its_content_type() {
    let m = Message::new(&b"hello"[..])
        .with_header("ce-specversion", "1.0")
        .with_header("ce-id", "1")
        .with_header("ce-source", "/s")
        .with_header("ce-type", "t")
        .with_header("content-type", "text/plain");
    let e = JsonCodec.decode(&m).unwrap();
    assert_eq!(e.data, json!("hello"));
    let again = CloudEventsCodec::binary().encode(&e).unwrap();
    assert_eq!(&again.payload[..], b"hello");
    assert_eq!(again.headers["content-type"], "text/plain");
    let bad = m
        .clone()
        .with_header("content-type", "application/octet-stream");
    let bad = Message {
        payload: bytes::Bytes::from_static(b"\xff\xfe"),
        ..bad
    };
    assert!(matches!(
        JsonCodec.decode(&bad),
        Err(CodecError::BadAttribute { .. })
    ));
}

#[test]
fn structured_content_type_wins_over_repeated_headers() {
    let sent = event();
    let mut m = CloudEventsCodec::structured().encode(&sent).unwrap();
    m.headers.insert("ce-specversion".into(), "1.0".into());
    m.headers.insert("ce-id".into(), "other".into());
    assert_eq!(detect(&m.headers), Some(Detected::Structured));
    let back = JsonCodec.decode(&m).unwrap();
    assert_eq!(back.id, sent.id);
    assert!(!back.metadata.headers.contains_key("ce-id"));
}

#[test]
fn codec_by_url() {
    let (url, codec) = codec_from_url("memory://").unwrap();
    assert_eq!((url.as_str(), codec), ("memory://", None));
    let (url, codec) =
        codec_from_url("amqp://u:p?w@h:5672/%2f?heartbeat=5&codec=cloudevents-structured#x")
            .unwrap();
    assert_eq!(url, "amqp://u:p?w@h:5672/%2f?heartbeat=5#x");
    assert_eq!(codec.unwrap().mode(), ContentMode::Structured);
    let (url, codec) = codec_from_url("nats://h?codec=cloudevents&ce_source=urn%3Aacme").unwrap();
    assert_eq!(url, "nats://h");
    let codec = codec.unwrap();
    assert_eq!(
        (codec.mode(), codec.source()),
        (ContentMode::Binary, "urn:acme")
    );
    let (_, codec) = codec_from_url("kafka://h?codec=json").unwrap();
    assert_eq!(codec, None);
    assert!(codec_from_url("kafka://h?codec=avro").is_err());
    assert!(codec_from_url("kafka://h?ce_source=/x").is_err());
    assert!(codec_from_url("kafka://h?codec=cloudevents&ce_source=").is_err());
    assert!(codec_from_url("kafka://h?codec=cloudevents&ce_source=%zz").is_err());
    assert_eq!(
        CloudEventsCodec::binary().for_backend("kafka").binding(),
        HeaderBinding::Kafka
    );
}

proptest::proptest! {
    #[test]
    fn decode_never_panics_on_cloudevent_shapes(
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128),
        names in proptest::collection::vec("(ce-|ce_|cloudEvents:|CE-)(specversion|id|source|type|time|x)", 0..6),
        values in proptest::collection::vec(".{0,12}", 6),
        structured in proptest::prelude::any::<bool>(),
    ) {
        let mut m = Message::new(body);
        for (n, v) in names.into_iter().zip(values) {
            m.headers.insert(n, v);
        }
        if structured {
            m.headers.insert("content-type".into(), "application/cloudevents+json".into());
        }
        let _ = JsonCodec.decode(&m);
    }
}
