//! Fuzz targets for everything in the core that a peer or a user controls: event JSON, topics
//! and patterns, URLs (redaction), W3C trace context and dead-letter fitting.
//!
//! Property tests (stable Rust has no cargo-fuzz): each `fuzz_*` target runs
//! `PROPTEST_CASES` inputs (256 by default, as CI runs them; `scripts/fuzz.sh` runs millions).
//! A target fails on a panic or a broken invariant, never on an error result: errors are the
//! expected answer to bad input.

use bytes::Bytes;
use longshore_core::observe::TraceContext;
use longshore_core::topic::{matches, validate_name, validate_pattern, validate_topic};
use longshore_core::url::redact_url;
use longshore_core::{
    dead_letter_message, fit_dead_letter, Codec, DeadLetter, JsonCodec, Message,
    HEADER_DLQ_ATTEMPTS, HEADER_DLQ_REASON, HEADER_DLQ_SUBSCRIPTION, HEADER_DLQ_TOPIC,
};
use proptest::prelude::*;

const VALID: &str = r#"{"event_id":"6f1c1c9e-3c1c-4c55-9a32-0d3b8f0f6d7e","event_type":"order_created","data":{"order_id":"o-1","lines":[1,2.5,null,true,"x"]},"timestamp":"2024-01-26T10:00:00.123456"}"#;

/// A valid envelope with `edits` byte edits (set, insert, remove) applied.
fn mutated(edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut b = VALID.as_bytes().to_vec();
    for &(at, op, byte) in edits {
        let at = at % (b.len() + 1);
        match op % 3 {
            0 if at < b.len() => b[at] = byte,
            1 => b.insert(at, byte),
            _ if at < b.len() => {
                b.remove(at);
            }
            _ => {}
        }
    }
    b
}

fn message_with(body: Vec<u8>, headers: Vec<(String, String)>) -> Message {
    let mut m = Message::new(body);
    for (k, v) in headers {
        m.headers.insert(k, v);
    }
    m
}

proptest! {
    #[test]
    fn fuzz_event_json_bytes(body in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = JsonCodec.decode(&Message::new(body));
    }

    #[test]
    fn fuzz_event_json_mutations(edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let body = mutated(&edits);
        if let Ok(event) = JsonCodec.decode(&Message::new(body)) {
            // Whatever decodes encodes again and decodes to the same event.
            let again = JsonCodec.decode(&JsonCodec.encode(&event).expect("encode a decoded event")).expect("decode an encoded event");
            prop_assert_eq!(again.id, event.id);
            prop_assert_eq!(again.event_type, event.event_type);
            prop_assert_eq!(again.data, event.data);
        }
    }

    #[test]
    fn fuzz_event_json_headers(headers in prop::collection::vec((".{0,40}", ".{0,80}"), 0..40)) {
        let m = message_with(VALID.as_bytes().to_vec(), headers);
        let event = JsonCodec.decode(&m);
        prop_assert!(event.is_ok(), "headers never make a valid body undecodable: {event:?}");
    }

    #[test]
    fn fuzz_topics_and_patterns(topic in "[a-z0-9_.*#-]{0,40}|.{0,40}", pattern in "[a-z0-9_.*#-]{0,40}|.{0,40}") {
        let topic_ok = validate_topic(&topic).is_ok();
        let pattern_ok = validate_pattern(&pattern).is_ok();
        let _ = validate_name("subscription", &topic);
        let _ = matches(&pattern, &topic);
        if topic_ok {
            prop_assert!(validate_pattern(&topic).is_ok(), "a valid topic is a valid pattern");
            prop_assert!(matches(&topic, &topic), "a topic matches itself");
            prop_assert!(matches("#", &topic), "# matches every topic");
        }
        if pattern_ok && !pattern.contains(['*', '#']) {
            prop_assert_eq!(matches(&pattern, &topic), pattern == topic);
        }
    }

    #[test]
    fn fuzz_url_redaction(scheme in "[a-z]{1,8}", user in "[^@/:]{0,12}", password in "[A-Za-z0-9]{6,16}", rest in ".{0,40}") {
        let url = format!("{scheme}://{user}:{password}@{rest}");
        let shown = redact_url(&url);
        prop_assert!(!shown.contains(&password) || user.contains(&password) || rest.contains(&password), "{shown}");
        let _ = redact_url(&rest);
    }

    #[test]
    fn fuzz_traceparent(s in ".{0,80}|00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]") {
        if let Some(ctx) = TraceContext::parse(&s) {
            prop_assert_eq!(TraceContext::parse(&ctx.traceparent()), Some(ctx));
        }
    }

    #[test]
    fn fuzz_dead_letter_fitting(
        headers in prop::collection::vec(("[a-z-]{1,20}", ".{0,300}"), 0..200),
        payload in 0usize..200_000,
        max in 2_048usize..300_000,
        reason in ".{0,2000}",
    ) {
        let m = message_with(vec![b'x'; payload], headers);
        let letter = dead_letter_message(m, "t.x", "sub", &DeadLetter { reason, attempts: 3 });
        let fitted = fit_dead_letter(letter, max);
        let size: usize = fitted.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + fitted.payload.len();
        prop_assert!(size <= max, "{size} > {max}");
        for h in [HEADER_DLQ_REASON, HEADER_DLQ_TOPIC, HEADER_DLQ_SUBSCRIPTION, HEADER_DLQ_ATTEMPTS] {
            prop_assert!(fitted.headers.contains_key(h), "{h} dropped");
        }
        prop_assert!(fitted.payload.len() <= payload);
        let _ = Bytes::new();
    }
}
