//! The generated AsyncAPI 3.0 documents are valid against the official AsyncAPI 3.0.0 JSON
//! Schema (vendored as `docs/asyncapi/asyncapi-3.0.0.schema.json`, from the `@asyncapi/specs`
//! package), every reference in them resolves, no credential leaks into them, and the
//! committed example document is current; `on_validated` handlers dead-letter data that does
//! not match the schema, naming the path.
//!
//! The schema check runs Python's `jsonschema` (Draft 7, the schema's own dialect); without it
//! the check is skipped with a printed reason, and fails under `CI=true`.
#![cfg(feature = "asyncapi")]

#[path = "../examples/asyncapi_document.rs"]
mod example;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const COMMITTED: &str = "docs/asyncapi/order_service.json";
const COMMITTED_URL: &str = "kafka://127.0.0.1:9092?codec=cloudevents";
const SCHEMA: &str = "docs/asyncapi/asyncapi-3.0.0.schema.json";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Follows a local `$ref` (`#/a/b`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn check_references(doc: &Value) {
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    assert!(resolve(doc, r).is_some(), "{r} does not resolve");
                }
                map.values().for_each(|v| walk(doc, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
            _ => {}
        }
    }
    walk(doc, doc);
    // AsyncAPI 3: an operation's messages are messages of its channel.
    for (id, op) in doc["operations"].as_object().expect("operations") {
        let channel = op["channel"]["$ref"].as_str().expect("a channel ref");
        for m in op["messages"].as_array().expect("messages") {
            let r = m["$ref"].as_str().expect("a message ref");
            assert!(r.starts_with(&format!("{channel}/messages/")), "{id}: {r}");
        }
    }
}

/// Validates with Python's jsonschema; `false` when it cannot run here.
fn validate_with_official_schema(doc: &Value) -> bool {
    let script = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    sys.exit(3)
schema = json.load(open(sys.argv[1]))
doc = json.load(sys.stdin)
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
for e in errors[:10]:
    print("/".join(map(str, e.path)), ":", e.message[:300])
sys.exit(1 if errors else 0)
"#;
    let child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(root().join(SCHEMA))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return skip("python3 is not installed");
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(doc.to_string().as_bytes())
            .expect("write the document to the validator");
    }
    let out = child.wait_with_output().expect("the validator ran");
    match out.status.code() {
        Some(0) => true,
        Some(3) => skip("Python's jsonschema is not installed (pip install jsonschema)"),
        _ => panic!(
            "the document is not valid AsyncAPI 3.0.0:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

fn skip(why: &str) -> bool {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "AsyncAPI schema validation cannot run under CI: {why}"
    );
    println!("SKIPPED: the official-schema check: {why}");
    false
}

#[test]
fn documents_validate_against_the_official_schema() {
    for url in [
        "memory://",
        "amqp://guest:s3cret@127.0.0.1:5672/%2f",
        "kafka://127.0.0.1:9092?codec=cloudevents",
        "nats://tok3n@127.0.0.1:4222?codec=cloudevents-structured&ce_source=%2Forders",
        "postgres://postgres:pw@127.0.0.1:5432/test?codec=cloudevents-binary",
    ] {
        let doc = example::document(url).to_json();
        let text = doc.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("tok3n") && !text.contains(":pw@"),
            "{text}"
        );
        check_references(&doc);
        validate_with_official_schema(&doc);
    }
}

#[test]
fn the_document_says_what_the_service_does() {
    let doc = example::document(COMMITTED_URL).to_json();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["servers"]["kafka"]["host"], "127.0.0.1:9092");
    assert_eq!(doc["servers"]["kafka"]["protocol"], "kafka");
    let channel = &doc["channels"]["events.order_created"];
    assert_eq!(channel["address"], "events.order_created");
    assert_eq!(doc["channels"]["events.rest"]["address"], "events.{rest}");
    let ops = doc["operations"].as_object().expect("operations");
    let actions: Vec<(&str, &str)> = ops
        .iter()
        .map(|(id, op)| (id.as_str(), op["action"].as_str().unwrap_or("")))
        .collect();
    assert!(
        actions.contains(&("send_order_created_events_order_created", "send")),
        "{actions:?}"
    );
    assert!(actions
        .iter()
        .any(|(id, a)| id.starts_with("receive_billing") && *a == "receive"));
    let message = &doc["components"]["messages"]["order_created"];
    // CloudEvents binary mode on Kafka: ce_ headers, the data schema as the payload.
    assert_eq!(
        message["headers"]["properties"]["ce_type"]["const"],
        "order_created"
    );
    let payload = &message["payload"];
    assert_eq!(payload["properties"]["total_cents"]["type"], "integer");
    assert_eq!(
        payload["properties"]["lines"]["items"]["properties"]["sku"]["type"],
        "string"
    );
}

#[test]
fn the_committed_example_document_is_current() {
    let generated = example::document(COMMITTED_URL).to_json_string() + "\n";
    let path = root().join(COMMITTED);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        if std::env::var("LONGSHORE_BLESS").is_ok() {
            std::fs::write(&path, &generated).expect("write the document");
            return;
        }
        panic!("{COMMITTED} is stale: run LONGSHORE_BLESS=1 cargo test --features asyncapi --test asyncapi");
    }
}

/// A consumer's `on_validated` handler dead-letters data that does not match the type's
/// schema, with the failing path in the reason, and handles what matches.
#[tokio::test]
async fn validated_handlers_dead_letter_mismatches_with_the_path() {
    use longshore::asyncapi::ValidatedHandlers;
    use longshore::{Consumer, Event, EventPublisher, Subscription, HEADER_DLQ_REASON};

    let ls = longshore::connect("memory://").await.expect("memory");
    let sub = Subscription::new("validated", ["events.order_created"]);
    ls.subscriber
        .ensure_subscription(&sub)
        .await
        .expect("ensure");
    let mut dlq = ls
        .subscriber
        .subscribe(&Subscription::dead_letters_of("validated"))
        .await
        .expect("dlq");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let consumer = Consumer::new(ls.subscriber.clone(), sub)
        .on_validated(move |o: example::OrderCreated, _| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(o.order_id);
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    let events = EventPublisher::new(ls.publisher.clone());
    let bad = serde_json::json!({"order_id": "bad", "total_cents": 1,
        "lines": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": -3}]});
    let good = serde_json::json!({"order_id": "good", "total_cents": 1, "lines": []});
    for data in [bad, good] {
        events
            .publish(&Event::new("order_created", data))
            .await
            .expect("publish");
    }
    let wait = std::time::Duration::from_secs(10);
    let handled = tokio::time::timeout(wait, rx.recv())
        .await
        .expect("handled");
    assert_eq!(handled.as_deref(), Some("good"));
    let dead = tokio::time::timeout(wait, futures::StreamExt::next(&mut dlq))
        .await
        .expect("dead-lettered in time")
        .expect("a dead letter")
        .expect("no stream error");
    let reason = dead
        .message()
        .headers
        .get(HEADER_DLQ_REASON)
        .cloned()
        .unwrap_or_default();
    assert!(reason.contains("/lines/1/quantity"), "{reason}");
    dead.ack().await.expect("ack");
    let stats = consumer.shutdown(wait).await;
    assert_eq!((stats.acked, stats.dead_lettered), (1, 1), "{stats:?}");
}
