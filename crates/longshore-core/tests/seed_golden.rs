//! Golden tests against bodies produced by the seed's own Python `DomainEvent`
//! (tests/fixtures/make_seed_events.py wrote tests/fixtures/seed_events.jsonl).

use longshore_core::{Codec, JsonCodec, Message};

const FIXTURES: &str = include_str!("fixtures/seed_events.jsonl");

fn python_body(line: &str) -> Message {
    // The seed publishes message_id = event_id and content_type application/json.
    let v: serde_json::Value = serde_json::from_str(line).expect("fixture is JSON");
    let id = v["event_id"].as_str().expect("event_id").to_string();
    Message::new(line.as_bytes().to_vec()).with_id(id)
}

#[test]
fn decodes_every_seed_event() {
    let mut count = 0;
    for line in FIXTURES.lines().filter(|l| !l.trim().is_empty()) {
        let expected: serde_json::Value = serde_json::from_str(line).expect("json");
        let event = JsonCodec
            .decode(&python_body(line))
            .expect("seed body decodes");
        assert_eq!(
            event.id.to_string(),
            expected["event_id"].as_str().expect("id")
        );
        assert_eq!(
            event.event_type,
            expected["event_type"].as_str().expect("type")
        );
        assert_eq!(event.data, expected["data"]);
        // Naive ISO timestamps are UTC.
        let ts = expected["timestamp"].as_str().expect("ts");
        let naive = event.timestamp.naive_utc();
        let formatted = if ts.contains('.') {
            naive.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
        } else {
            naive.format("%Y-%m-%dT%H:%M:%S").to_string()
        };
        assert_eq!(formatted, ts);
        count += 1;
    }
    assert_eq!(count, 5);
}

#[test]
fn re_encodes_to_exactly_the_seed_form() {
    for line in FIXTURES.lines().filter(|l| !l.trim().is_empty()) {
        let event = JsonCodec.decode(&python_body(line)).expect("decode");
        let message = JsonCodec.encode(&event).expect("encode");
        let ours: serde_json::Value = serde_json::from_slice(&message.payload).expect("json");
        let theirs: serde_json::Value = serde_json::from_str(line).expect("json");
        // Same keys in the same order, same values, same timestamp string.
        assert_eq!(ours, theirs);
        let keys = |v: &serde_json::Value| {
            v.as_object()
                .expect("object")
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&ours),
            vec!["event_id", "event_type", "data", "timestamp"]
        );
        assert_eq!(keys(&ours), keys(&theirs));
        assert_eq!(message.id, theirs["event_id"].as_str().expect("id"));
        assert_eq!(
            message.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
    }
}
