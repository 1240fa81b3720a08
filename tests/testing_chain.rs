//! `TestBus::run_until_idle` waits for a chain of three handlers, each publishing the next
//! event, on every compiled-in backend; and a wait that cannot finish reports what is pending.
#![cfg(feature = "testing")]

mod common;

use std::time::Duration;

use longshore::prelude::*;
use longshore::testing::TestBus;
use longshore::ConsumerHandle;
use serde::{Deserialize, Serialize};

/// One link of the chain: `step` n is handled by handler n, which publishes step n + 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Step {
    run: String,
    n: u32,
}
impl DomainEvent for Step {
    const EVENT_TYPE: &'static str = "step";
}

/// Events of one step number go to their own topic, so each handler reads only its link.
fn topic(n: u32) -> String {
    format!("chain.step{n}")
}

const LINKS: u32 = 3;
const QUIET: Duration = Duration::from_secs(60);

/// Handlers 1..=3: handler n takes step n from `chain.step<n>` and publishes step n + 1.
async fn start_chain(bus: &TestBus) -> Vec<ConsumerHandle> {
    let mut consumers = Vec::new();
    for n in 1..=LINKS {
        let events = bus.events();
        let consumer = Consumer::new(
            bus.subscriber(),
            Subscription::new(format!("link{n}"), [topic(n)]),
        )
        .on(move |step: Step, _| {
            let events = events.clone();
            async move {
                let next = Event::from_typed(&Step {
                    run: step.run,
                    n: step.n + 1,
                })?;
                events.publish_to(&topic(step.n + 1), &next).await?;
                Ok(())
            }
        })
        .start()
        .await
        .expect("start consumer");
        consumers.push(consumer);
    }
    consumers
}

async fn chain(url: &str) {
    let backend = url.split("://").next().unwrap_or(url).to_string();
    let Some(bus) = longshore_testkit::require_broker(&backend, url, TestBus::connect(url).await)
    else {
        return;
    };
    let consumers = start_chain(&bus).await;
    // Where the last link's event goes: another service, only declared (so RabbitMQ can route
    // it), which the bus does not wait for.
    bus.subscriber()
        .ensure_subscription(&Subscription::new("downstream", [topic(LINKS + 1)]))
        .await
        .expect("declare downstream");
    let first = Event::from_typed(&Step {
        run: bus.unique("run"),
        n: 1,
    })
    .expect("event");
    bus.events()
        .publish_to(&topic(1), &first)
        .await
        .expect("publish");

    bus.run_until_idle(QUIET)
        .await
        .unwrap_or_else(|e| panic!("{backend}: {e}"));

    // Read straight after the wait, with no waiting of their own: if the wait returned early
    // the later links are missing here.
    let steps: Vec<u32> = bus.published::<Step>().iter().map(|s| s.n).collect();
    assert_eq!(steps, vec![1, 2, 3, 4], "{backend}\n{}", bus.traffic());
    let handled: Vec<u32> = bus.handled::<Step>().iter().map(|s| s.n).collect();
    assert_eq!(handled, vec![1, 2, 3], "{backend}\n{}", bus.traffic());
    assert!(bus.pending().is_empty());
    for c in consumers {
        c.shutdown(Duration::from_secs(10)).await;
    }
    bus.close().await.expect("close");
}

#[tokio::test]
async fn chain_memory() {
    chain("memory://").await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn chain_rabbitmq() {
    chain(&common::amqp_url()).await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn chain_nats() {
    chain(&common::nats_url()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn chain_postgres() {
    chain(&common::postgres_url()).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn chain_kafka() {
    chain(&common::kafka_url()).await;
}

/// A handler that never finishes: the wait gives up and names the message it holds, the
/// subscription, and the traffic; once the handler is released the bus goes quiet.
#[tokio::test]
async fn a_wait_that_cannot_finish_reports_what_is_pending() {
    let bus = TestBus::memory().await.expect("memory");
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let consumer = Consumer::new(bus.subscriber(), Subscription::new("stuck", [topic(1)]))
        .on(move |_: Step, _| {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                Ok(())
            }
        })
        .start()
        .await
        .expect("consumer");
    // A consumer opened and gone: its copy waits in the subscription, undelivered.
    let gone = bus
        .subscriber()
        .subscribe(&Subscription::new("later", [topic(1)]))
        .await
        .expect("subscribe");
    drop(gone);
    let first = Event::from_typed(&Step {
        run: "r".into(),
        n: 1,
    })
    .expect("event");
    bus.events()
        .publish_to(&topic(1), &first)
        .await
        .expect("publish");

    let err = bus
        .run_until_idle(Duration::from_millis(300))
        .await
        .expect_err("a held message is pending");
    let report = err.to_string();
    println!("{report}");
    let id = first.id.to_string();
    assert_eq!(err.pending.len(), 2, "{report}");
    assert!(report.contains("not idle"), "{report}");
    assert!(
        report.contains(&format!(
            "stuck <- chain.step1 step id={id}: delivered 1 time(s), last attempt 1: in handler"
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "later <- chain.step1 step id={id}: not delivered: no consumer open"
        )),
        "{report}"
    );
    assert!(report.contains("recorded traffic:"), "{report}");

    // Released, and `later` given a consumer again that acks: now the bus goes quiet.
    release.notify_one();
    let mut later = bus
        .subscriber()
        .subscribe(&Subscription::new("later", [topic(1)]))
        .await
        .expect("subscribe");
    let delivery = tokio::time::timeout(QUIET, futures::StreamExt::next(&mut later))
        .await
        .expect("delivered in time")
        .expect("stream open")
        .expect("delivery");
    delivery.ack().await.expect("ack");
    bus.run_until_idle(QUIET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bus.handled::<Step>().count(), 2);
    consumer.shutdown(Duration::from_secs(10)).await;
}
