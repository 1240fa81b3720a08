//! Interoperability with a Python service written from the seed (tests/python/seed_service.py,
//! aio_pika from tests/python/requirements.txt, installed by scripts/rabbitmq-python-interop.sh).
//!
//! - the seed-style publisher's events reach a longshore consumer and dispatch by event_type;
//! - longshore's events reach the seed-style consumer, which parses them;
//! - both sides declare the same queue without PRECONDITION_FAILED.
//!
//! The interpreter is `LONGSHORE_PYTHON` (default `python3`). Without aio_pika the tests skip
//! with a printed reason, and fail under `CI=true`.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use longshore_core::{Broker, Consumer, Event, EventPublisher, HandlerError, Subscription};
use longshore_rabbitmq::RabbitBroker;
use longshore_testkit::runtime::{OrderCancelled, OrderCreated};
use longshore_testkit::{within, Names};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

const COUNT: usize = 10;

fn python() -> String {
    std::env::var("LONGSHORE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/seed_service.py")
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The broker, if reachable, and whether aio_pika can be imported (skip otherwise).
async fn setup() -> Option<RabbitBroker> {
    let broker = common::broker_with(|c| c).await?;
    let probe = Command::new(python())
        .args(["-c", "import aio_pika"])
        .output()
        .await;
    match probe {
        Ok(out) if out.status.success() => Some(broker),
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                !ci(),
                "aio_pika is required under CI (bash scripts/rabbitmq-python-interop.sh): {why}"
            );
            eprintln!("SKIPPED: aio_pika not importable by {} ({why}); run bash scripts/rabbitmq-python-interop.sh", python());
            None
        }
    }
}

async fn run_python(args: &[&str]) -> (bool, Vec<Value>) {
    let out = within(
        "the python program",
        Command::new(python()).arg(script()).args(args).output(),
    )
    .await
    .expect("python runs");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if !out.status.success() {
        eprintln!("python stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), lines)
}

async fn next_json(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = within("a line from the seed consumer", lines.next_line())
        .await
        .expect("read")
        .expect("seed consumer ended early");
    serde_json::from_str::<Value>(&line).expect("json line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_publisher_reaches_longshore_consumer_by_event_type() {
    let Some(broker) = setup().await else { return };
    let url = common::amqp_url();
    let exchange = broker.config().exchange.clone();
    let n = Names::new();
    let prefix = n.topic("events");
    let queue = n.sub("py-to-rs");
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String, String)>();
    let (tx1, tx2) = (tx.clone(), tx);
    let consumer = Consumer::new(
        broker.subscriber(),
        Subscription::new(queue.clone(), [format!("{prefix}.#")]),
    )
    .on(move |e: OrderCreated, ctx| {
        let tx = tx1.clone();
        async move {
            tx.send(("order_created".into(), ctx.event.id.to_string(), e.order_id))
                .map_err(HandlerError::permanent)
        }
    })
    .on(move |e: OrderCancelled, ctx| {
        let tx = tx2.clone();
        async move {
            tx.send((
                "order_cancelled".into(),
                ctx.event.id.to_string(),
                e.order_id,
            ))
            .map_err(HandlerError::permanent)
        }
    })
    .start()
    .await
    .expect("longshore consumer declares the queue");
    // The seed's consumer declaring the same queue gets no PRECONDITION_FAILED.
    let (ok, lines) = run_python(&["declare", &url, &queue]).await;
    assert!(ok, "seed declaration of {queue}: {lines:?}");
    let (ok, published) =
        run_python(&["publish", &url, &exchange, &prefix, &COUNT.to_string()]).await;
    assert!(ok, "seed publisher failed: {published:?}");
    assert_eq!(published.len(), COUNT);
    let expected: BTreeSet<(String, String, String)> = published
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().expect("type").to_string(),
                e["event_id"].as_str().expect("id").to_string(),
                e["data"]["order_id"].as_str().expect("order").to_string(),
            )
        })
        .collect();
    let mut got = BTreeSet::new();
    while got.len() < COUNT {
        got.insert(
            within("seed events handled", rx.recv())
                .await
                .expect("handler"),
        );
    }
    assert_eq!(got, expected, "each event went to the handler of its type");
    let stats = consumer.shutdown(Duration::from_secs(10)).await;
    assert_eq!((stats.acked, stats.dead_lettered), (COUNT as u64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longshore_events_reach_seed_consumer_and_parse() {
    let Some(broker) = setup().await else { return };
    let url = common::amqp_url();
    let exchange = broker.config().exchange.clone();
    let n = Names::new();
    let topic = n.topic("events.order_created");
    let queue = n.sub("rs-to-py");
    let pattern = n.topic("events.#");
    let mut child = Command::new(python())
        .arg(script())
        .args([
            "consume",
            &url,
            &exchange,
            &queue,
            &pattern,
            &COUNT.to_string(),
            "60",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python consumer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(next_json(&mut lines).await["ready"], true);
    // longshore declares the queue the seed declared: same arguments, no PRECONDITION_FAILED.
    broker
        .subscriber()
        .ensure_subscription(&Subscription::new(queue.clone(), [pattern.clone()]))
        .await
        .expect("same queue, same arguments");
    let publisher = EventPublisher::new(broker.publisher());
    let mut sent = Vec::new();
    for i in 0..COUNT {
        let event = Event::from_typed(&OrderCreated {
            order_id: format!("rs-{i}"),
            total_cents: 7 * i as u64,
        })
        .expect("event")
        .with_aggregate_id(format!("order-{i}"));
        publisher.publish_to(&topic, &event).await.expect("publish");
        sent.push(event);
    }
    let mut handled = Vec::new();
    for _ in 0..COUNT {
        handled.push(next_json(&mut lines).await);
    }
    for (event, line) in sent.iter().zip(&handled) {
        assert_eq!(line["handled_by"], "order_created");
        assert_eq!(line["event"]["event_id"], event.id.to_string());
        assert_eq!(line["event"]["event_type"], "order_created");
        assert_eq!(line["event"]["data"], event.data);
        assert_eq!(line["message_id"], event.id.to_string());
        assert_eq!(line["content_type"], "application/json");
        assert_eq!(line["delivery_mode"], 2);
        assert_eq!(
            line["headers"]["aggregate-id"],
            event.metadata.aggregate_id.clone().expect("aggregate")
        );
    }
    let status = within("the seed consumer to exit", child.wait())
        .await
        .expect("status");
    assert!(status.success());
}
