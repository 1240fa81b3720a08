//! Dead letters made by a peer that is not longshore: the seed's own Python consumer
//! (tests/python/seed_service.py) rejects a message, RabbitMQ dead-letters it with `x-death`,
//! and longshore lists it with reason, original topic and attempts, and replays it.
//!
//! Needs aio_pika (scripts/rabbitmq-python-interop.sh); skips without it, fails under `CI=true`.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::{
    Broker, DeadLetterFilter, DeadLetters, Event, EventPublisher, Message, Publisher, Subscription,
    HEADER_DLQ_REASON,
};
use longshore_testkit::{within, Names};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn python() -> String {
    std::env::var("LONGSHORE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

async fn aio_pika() -> bool {
    let probe = Command::new(python())
        .args(["-c", "import aio_pika"])
        .output()
        .await;
    let ok = matches!(&probe, Ok(out) if out.status.success());
    if !ok {
        assert!(
            !common::ci(),
            "aio_pika is required under CI (bash scripts/rabbitmq-python-interop.sh)"
        );
        eprintln!(
            "SKIPPED: aio_pika not importable by {}; run bash scripts/rabbitmq-python-interop.sh",
            python()
        );
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_rejected_message_lists_with_reason_and_topic_and_replays() {
    let Some(broker) = common::broker_with(|c| c).await else {
        return;
    };
    if !aio_pika().await {
        return;
    }
    let url = common::amqp_url();
    let exchange = broker.config().exchange.clone();
    let n = Names::new();
    let queue = n.sub("seed-rejects");
    let pattern = n.topic("events.#");
    let topic = n.topic("events.order_created");
    let (publisher, subscriber) = (broker.publisher(), broker.subscriber());
    // longshore declares the queue (the seed's arguments) and its dead-letter queue.
    let sub = Subscription::new(queue.clone(), [pattern.clone()]);
    subscriber
        .ensure_subscription(&sub)
        .await
        .expect("subscription");

    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/seed_service.py");
    let mut seed = Command::new(python())
        .arg(script)
        .args(["consume", &url, &exchange, &queue, &pattern, "1", "60"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the seed consumer");
    let mut lines = BufReader::new(seed.stdout.take().expect("stdout")).lines();
    let ready = within("the seed consumer to start", lines.next_line())
        .await
        .expect("stdout")
        .expect("a line");
    assert!(ready.contains("ready"), "{ready}");

    // The seed's handler parses event_id as a UUID: this one raises, and the seed rejects it
    // (process(requeue=False)), so RabbitMQ dead-letters it to dlq.<queue> with x-death.
    let bad_id = uuid::Uuid::new_v4().to_string();
    let bad = serde_json::json!({
        "event_id": "not-a-uuid", "event_type": "order_created",
        "data": {"order_id": "o-bad"}, "timestamp": "2026-01-01T00:00:00",
    });
    let message = Message::new(bad.to_string())
        .with_id(bad_id.clone())
        .with_header("content-type", "application/json");
    publisher.publish(&topic, message).await.expect("publish");
    let good = Event::new("order_created", serde_json::json!({"order_id": "o-good"}));
    EventPublisher::new(publisher.clone())
        .publish_to(&topic, &good)
        .await
        .expect("publish");
    let status = within("the seed consumer to handle one", seed.wait())
        .await
        .expect("status");
    assert!(status.success(), "the seed consumer handled the good event");

    // Wait for the rejected message to reach the dead-letter queue, then give it back.
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&queue))
        .await
        .expect("dlq");
    let letter = within("the rejected message in dlq", dlq.next())
        .await
        .expect("open")
        .expect("delivery");
    assert_eq!(letter.message().id, bad_id);
    letter.nack(None).await.expect("give back");
    drop(dlq);

    let letters = DeadLetters::new(publisher.clone(), subscriber.clone(), queue.clone())
        .with_wait(Duration::from_secs(30));
    let listed = letters.list(&DeadLetterFilter::all()).await.expect("list");
    assert_eq!(listed.len(), 1);
    let l = &listed[0];
    assert_eq!(l.id, bad_id);
    assert_eq!(
        l.reason.as_deref(),
        Some(format!("rejected by queue {queue} (x-death)").as_str())
    );
    assert_eq!(l.original_topic.as_deref(), Some(topic.as_str()));
    assert_eq!(l.subscription.as_deref(), Some(queue.as_str()));
    assert_eq!(l.attempts, Some(1));
    assert!(l.dead_lettered_at.is_some());
    let rejected = letters
        .list(&DeadLetterFilter::all().reason("rejected"))
        .await
        .expect("list by reason");
    assert_eq!(rejected.len(), 1);

    // Replayed to its original routing key: it arrives in the queue again, without x-death
    // and without dead-letter headers.
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let report = letters
        .replay(&DeadLetterFilter::all(), None)
        .await
        .expect("replay");
    assert_eq!(report.replayed, vec![bad_id.clone()]);
    let again = within("the replayed message", stream.next())
        .await
        .expect("open")
        .expect("delivery");
    assert_eq!(again.message().id, bad_id);
    assert_eq!(again.topic, topic);
    assert!(!again.message().headers.contains_key(HEADER_DLQ_REASON));
    again.ack().await.expect("ack");
    drop(stream);
    let publisher: Arc<dyn Publisher> = publisher;
    publisher.close().await.expect("close");
    subscriber.close().await.expect("close");
}
