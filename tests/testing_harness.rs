//! The rest of `longshore::testing`, in memory: what is recorded (retries, dead letters),
//! isolation between buses on one connection, the assertion macros' failure output, and the
//! store helpers (given / when / then, waiting for a catch-up subscription).
#![cfg(feature = "testing")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use longshore::prelude::*;
use longshore::testing::{Given, Outcome, TestBus, TestStore};
use longshore::{assert_dead_lettered, assert_published, run_catch_up};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Deposited {
    cents: u64,
}
impl DomainEvent for Deposited {
    const EVENT_TYPE: &'static str = "deposited";
}

const QUIET: Duration = Duration::from_secs(30);

async fn deposit(bus: &TestBus, cents: u64) {
    bus.events()
        .publish_typed(&Deposited { cents }, None)
        .await
        .expect("publish");
}

async fn next(stream: &mut longshore::DeliveryStream) -> longshore::Delivery {
    tokio::time::timeout(QUIET, stream.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("delivery")
}

#[tokio::test]
async fn nacks_and_redeliveries_are_retried_and_dead_letters_keep_their_reason() {
    let bus = TestBus::memory().await.expect("memory");
    let mut stream = bus
        .subscriber()
        .subscribe(&Subscription::new("ledger", ["events.deposited"]))
        .await
        .expect("subscribe");
    deposit(&bus, 5).await;
    next(&mut stream).await.nack(None).await.expect("nack");
    let again = next(&mut stream).await;
    assert_eq!(again.attempt, 2);
    again.dead_letter("overdrawn account").await.expect("dlq");
    bus.run_until_idle(QUIET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let retried: Vec<(u32, Outcome)> = bus
        .retried()
        .iter()
        .map(|d| (d.attempt, d.outcome.clone()))
        .collect();
    assert_eq!(
        retried,
        vec![
            (1, Outcome::Nacked),
            (
                2,
                Outcome::DeadLettered {
                    reason: "overdrawn account".into()
                }
            )
        ]
    );
    assert_eq!(bus.dead_lettered().with_reason("overdrawn").count(), 1);
    assert_eq!(bus.dead_lettered().with_reason("other").count(), 0);
    assert_dead_lettered!(bus, Deposited, "overdrawn");
    assert_eq!(bus.handled::<Deposited>().count(), 0);

    // The dead letter reads back through the bus under the service's own names.
    let mut dlq = bus
        .subscriber()
        .subscribe(&Subscription::dead_letters_of("ledger"))
        .await
        .expect("dlq");
    let letter = next(&mut dlq).await;
    assert_eq!(letter.topic, "dlq.ledger");
    assert_eq!(
        letter
            .message()
            .headers
            .get(longshore::HEADER_DLQ_TOPIC)
            .map(String::as_str),
        Some("events.deposited")
    );
    letter.ack().await.expect("ack");
}

/// A scheduled message the service cancels is not waited for; one it does not is, until due.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_cancelled_schedule_is_not_waited_for() {
    let dir = std::env::temp_dir().join("longshore-sqlite-tests");
    std::fs::create_dir_all(&dir).expect("test directory");
    let url = format!(
        "sqlite://{}",
        dir.join(format!("bus-{}.db", Uuid::new_v4().simple()))
            .display()
    );
    let bus = TestBus::connect(&url).await.expect("sqlite");
    let consumer = Consumer::new(
        bus.subscriber(),
        Subscription::new("ledger", ["events.deposited"]),
    )
    .on(|_: Deposited, _| async { Ok(()) })
    .start()
    .await
    .expect("consumer");
    let events = bus.events();
    let later = Event::from_typed(&Deposited { cents: 1 }).expect("event");
    let soon = Event::from_typed(&Deposited { cents: 2 }).expect("event");
    let hour = events
        .publish_after("events.deposited", &later, Duration::from_secs(3600))
        .await
        .expect("schedule");
    events
        .publish_after("events.deposited", &soon, Duration::from_millis(300))
        .await
        .expect("schedule");
    assert!(events.cancel(&hour).await.expect("cancel"));
    bus.run_until_idle(QUIET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cents: Vec<u64> = bus.handled::<Deposited>().iter().map(|d| d.cents).collect();
    assert_eq!(cents, vec![2]);
    consumer.shutdown(Duration::from_secs(5)).await;
    bus.close().await.expect("close");
}

#[tokio::test]
async fn buses_on_one_connection_do_not_see_each_others_messages() {
    let ls = longshore::connect("memory://").await.expect("memory");
    let (a, b) = (TestBus::new(ls.clone()), TestBus::new(ls));
    let mut consumers = Vec::new();
    for bus in [&a, &b] {
        let c = Consumer::new(
            bus.subscriber(),
            Subscription::new("ledger", ["events.deposited"]),
        )
        .on(|_: Deposited, _| async { Ok(()) })
        .start()
        .await
        .expect("consumer");
        consumers.push(c);
    }
    deposit(&a, 1).await;
    deposit(&a, 2).await;
    deposit(&b, 3).await;
    a.run_until_idle(QUIET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    b.run_until_idle(QUIET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cents = |bus: &TestBus| -> Vec<u64> {
        bus.handled::<Deposited>().iter().map(|d| d.cents).collect()
    };
    assert_eq!(cents(&a), vec![1, 2]);
    assert_eq!(cents(&b), vec![3]);
    for c in consumers {
        c.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_failed_assertion_shows_the_recorded_traffic() {
    let bus = TestBus::memory().await.expect("memory");
    deposit(&bus, 7).await;
    let failure = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_published!(bus, Deposited, |d| d.cents == 8);
    }))
    .expect_err("no deposit of 8 was published");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("no published \"deposited\" event matches"),
        "{message}"
    );
    assert!(message.contains("published (1):"), "{message}");
    assert!(
        message.contains("events.deposited deposited id="),
        "{message}"
    );
    assert_published!(bus, Deposited, count = 1);
}

#[tokio::test]
async fn given_when_then_on_the_store_port() {
    let store: Arc<dyn EventStore> = Arc::new(longshore::memory::MemoryStore::new());
    let history = [Deposited { cents: 100 }];
    Given::typed(store.clone(), "account-1", &history)
        .await
        .expect("given")
        .when(|store| async move {
            let event = Event::from_typed(&Deposited { cents: 50 })?;
            store
                .append("account-1", ExpectedVersion::Exact(1), vec![event])
                .await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        })
        .await
        .then_typed(&[Deposited { cents: 50 }]);

    // A command that loses the optimistic-concurrency race appends nothing.
    Given::typed(store.clone(), "account-2", &history)
        .await
        .expect("given")
        .when(|store| async move {
            let event = Event::from_typed(&Deposited { cents: 50 })?;
            store
                .append("account-2", ExpectedVersion::NoStream, vec![event])
                .await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        })
        .await
        .then_error("expected version");
}

#[tokio::test]
async fn wait_until_caught_up_waits_for_a_catch_up_subscription() {
    let store = TestStore::new(Arc::new(longshore::memory::MemoryStore::new()));
    for cents in [1, 2, 3] {
        let event = Event::from_typed(&Deposited { cents }).expect("event");
        store
            .append("account-3", ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
    }
    // Nothing follows the store yet: the wait gives up, saying how far behind it is.
    let err = store
        .wait_until_caught_up("balance", Duration::from_millis(100))
        .await
        .expect_err("no catch-up subscription runs");
    assert_eq!((err.checkpoint, err.head), (None, 3), "{err}");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let projection = {
        let (store, seen) = (store.shared(), seen.clone());
        tokio::spawn(async move {
            run_catch_up(
                store,
                "balance",
                async { stopped.await.unwrap_or(()) },
                |e| {
                    let seen = seen.clone();
                    async move {
                        let d: Deposited = e.event.to_typed().map_err(|e| e.to_string())?;
                        seen.lock().expect("lock").push(d.cents);
                        Ok::<_, String>(())
                    }
                },
            )
            .await
        })
    };
    store
        .wait_until_caught_up("balance", QUIET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(*seen.lock().expect("lock"), vec![1, 2, 3]);
    let _ = stop.send(());
    projection.await.expect("join").expect("projection");
}

/// The complete test in README.md's "Testing your service" (rustfmt-formatted), so it keeps
/// compiling and passing.
mod readme {
    use longshore::prelude::*;
    use longshore::testing::TestBus;
    use longshore::{assert_dead_lettered, assert_published};
    use std::time::Duration;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct OrderPlaced {
        order_id: String,
        total_cents: u64,
    }
    impl DomainEvent for OrderPlaced {
        const EVENT_TYPE: &'static str = "order_placed";
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct PaymentTaken {
        order_id: String,
    }
    impl DomainEvent for PaymentTaken {
        const EVENT_TYPE: &'static str = "payment_taken";
    }

    #[tokio::test]
    async fn billing_takes_payment_and_refuses_empty_orders() {
        let bus = TestBus::from_env().await.unwrap(); // LONGSHORE_TEST_URL, default memory://
        let events = bus.events();
        // The service under test, given the bus's publisher and subscriber.
        let billing = Consumer::new(
            bus.subscriber(),
            Subscription::new("billing", ["events.order_placed"]),
        )
        .on(move |o: OrderPlaced, _| {
            let events = events.clone();
            async move {
                if o.total_cents == 0 {
                    return Err(HandlerError::permanent("empty order"));
                }
                events
                    .publish_typed(
                        &PaymentTaken {
                            order_id: o.order_id,
                        },
                        None,
                    )
                    .await?;
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();

        for (id, total) in [("o-1", 500), ("o-2", 0)] {
            let order = OrderPlaced {
                order_id: id.into(),
                total_cents: total,
            };
            bus.events().publish_typed(&order, Some(id)).await.unwrap();
        }
        // Returns once both orders and the payment they caused are handled or dead-lettered;
        // on timeout it fails listing what is still pending and the recorded traffic.
        bus.run_until_idle(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        assert_published!(bus, PaymentTaken, |p| p.order_id == "o-1");
        assert_dead_lettered!(bus, OrderPlaced, "empty order");
        assert_eq!(bus.handled::<OrderPlaced>().count(), 1);
        billing.shutdown(Duration::from_secs(5)).await;
    }
}
