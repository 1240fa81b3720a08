//! The outbox relay never blocks on one row: a row the broker refuses for good is parked
//! after a bounded number of attempts, listed and retryable, and every other row arrives, in
//! order per aggregate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use longshore_core::memory::{MemoryBroker, MemoryConfig};
use longshore_core::observe::names;
use longshore_core::{
    Broker, Codec, DeliveryStream, Event, EventStore, ExpectedVersion, JsonCodec, Outbox,
    OutboxRelay, Publisher, Subscription,
};
use uuid::Uuid;

use crate::fixture::skipped;
use crate::observe::{counter, install};
use crate::{recv, Names, StoreFactory};

/// Events per scenario, the one refused among them, and the aggregates they belong to.
const EVENTS: usize = 100;
const REFUSED: usize = 37;
const AGGREGATES: usize = 4;
/// Refusals before a row is parked.
pub(crate) const ATTEMPTS: u32 = 3;

/// What [`append_with_one_refused`] wrote: each aggregate's ids in order (the refused event
/// left out), and the refused event's id.
pub(crate) struct Written {
    pub(crate) order: BTreeMap<String, Vec<Uuid>>,
    pub(crate) refused: Uuid,
}

/// Appends [`EVENTS`] events of type `ok_type` over [`AGGREGATES`] streams, one at a time,
/// except event [`REFUSED`], made by `refused`.
pub(crate) async fn append_with_one_refused(
    store: &dyn EventStore,
    n: &Names,
    ok_type: &str,
    refused: impl Fn(usize) -> Event,
) -> Written {
    let mut order: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    let mut refused_id = Uuid::nil();
    for i in 0..EVENTS {
        let stream = n.sub(&format!("agg{}", i % AGGREGATES));
        let event = if i == REFUSED {
            refused(i)
        } else {
            Event::new(ok_type, serde_json::json!({ "i": i }))
        }
        .with_aggregate_id(&stream);
        if i == REFUSED {
            refused_id = event.id;
        } else {
            order.entry(stream.clone()).or_default().push(event.id);
        }
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
    }
    Written {
        order,
        refused: refused_id,
    }
}

/// Receives the `EVENTS - 1` relayed events and checks each aggregate's order.
pub(crate) async fn receive_all_but_one(stream: &mut DeliveryStream, written: &Written) {
    let mut got: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    for _ in 0..EVENTS - 1 {
        let d = recv(stream).await;
        let event = JsonCodec.decode(d.message()).expect("decode");
        assert_ne!(event.id, written.refused, "the refused event was delivered");
        let stream_id = event.metadata.aggregate_id.clone().unwrap_or_default();
        got.entry(stream_id).or_default().push(event.id);
        d.ack().await.expect("ack");
    }
    assert_eq!(
        got, written.order,
        "every other event, in order per aggregate"
    );
}

/// Checks the outbox after the relay stopped: the refused row parked with its error, nothing
/// else waiting; then puts it back and checks it is pending again.
pub(crate) async fn check_parked_and_retry(outbox: &dyn Outbox, written: &Written, topic: &str) {
    assert_eq!(
        outbox.pending().await.expect("pending"),
        0,
        "nothing else waits"
    );
    assert_eq!(outbox.failed_count().await.expect("failed count"), 1);
    let failed = outbox.failed(10).await.expect("failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let row = &failed[0];
    assert_eq!(row.topic, topic);
    assert_eq!(row.attempts, ATTEMPTS);
    assert!(!row.error.is_empty());
    let parked = JsonCodec
        .decode(&row.message)
        .expect("parked message decodes");
    assert_eq!(parked.id, written.refused);
    assert_eq!(outbox.retry_failed(&[row.seq]).await.expect("retry"), 1);
    assert_eq!(outbox.retry_failed(&[row.seq]).await.expect("retry"), 0);
    assert_eq!(outbox.failed_count().await.expect("failed count"), 0);
    assert_eq!(
        outbox.pending().await.expect("pending"),
        1,
        "back in the outbox"
    );
}

/// A relay on `outbox` to `publisher`, spawned, with a fast parking policy.
pub(crate) fn spawn_relay(
    name: &str,
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn Publisher>,
) -> longshore_core::RelayHandle {
    OutboxRelay::new(name, outbox, publisher)
        .batch_size(10)
        .max_attempts(ATTEMPTS)
        .spawn()
}

/// One event among 100 is too large for the broker (a permanent refusal): it is parked after
/// three attempts, counted in `longshore_outbox_parked_total`, listed by `Outbox::failed` and
/// put back by `Outbox::retry_failed`; the 99 others arrive in order per aggregate, and the
/// relay stays ready.
pub async fn relay_parks_a_refused_row_and_the_rest_arrive(f: &impl StoreFactory) {
    install();
    let Some((store, outbox)) = f.store_with_outbox().await else {
        skipped(
            "relay_parks_a_refused_row_and_the_rest_arrive",
            "this store has no outbox",
        );
        return;
    };
    let broker = MemoryBroker::new(MemoryConfig {
        max_payload: 16 * 1024,
        ..MemoryConfig::default()
    });
    let mut stream = Broker::subscriber(&broker)
        .subscribe(&Subscription::new("relay-parking", ["events.#"]).with_prefetch(500))
        .await
        .expect("subscribe");
    let n = Names::new();
    let written = append_with_one_refused(&*store, &n, "order_placed", |i| {
        Event::new(
            "bulk_report",
            serde_json::json!({ "i": i, "pad": "x".repeat(64 * 1024) }),
        )
    })
    .await;
    let relay_name = n.sub("relay");
    let relay = spawn_relay(&relay_name, outbox.clone(), Broker::publisher(&broker));
    receive_all_but_one(&mut stream, &written).await;
    // The refused event's later siblings arrived, so it was parked before them.
    assert!(relay.health().is_ready(), "{:?}", relay.health());
    relay.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        counter(names::OUTBOX_PARKED, &[("relay", relay_name.as_str())]),
        1
    );
    check_parked_and_retry(&*outbox, &written, "events.bulk_report").await;
}

/// A topic mapper on the relay routes each event (`Some(topic)`) or keeps it inside the
/// service (`None`: marked sent, never published); the outbox ends empty.
pub async fn relay_routes_and_filters_by_topic_mapper(f: &impl StoreFactory) {
    let Some((store, outbox)) = f.store_with_outbox().await else {
        skipped(
            "relay_routes_and_filters_by_topic_mapper",
            "this store has no outbox",
        );
        return;
    };
    let broker = MemoryBroker::default();
    let subscriber = Broker::subscriber(&broker);
    let mut routed = subscriber
        .subscribe(&Subscription::new("routed", ["shop.#"]))
        .await
        .expect("subscribe");
    let mut default = subscriber
        .subscribe(&Subscription::new("default", ["events.#"]))
        .await
        .expect("subscribe");
    let n = Names::new();
    let stream = n.sub("order");
    let events: Vec<Event> = ["order_placed", "order_audited", "order_shipped"]
        .iter()
        .map(|t| Event::new(*t, serde_json::json!({})).with_aggregate_id(&stream))
        .collect();
    store
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .expect("append");
    let relay = OutboxRelay::new(n.sub("relay"), outbox.clone(), Broker::publisher(&broker))
        .topics(|e| match e.event_type.as_str() {
            "order_audited" => None,
            t => Some(format!("shop.orders.{t}")),
        });
    while outbox.pending().await.expect("pending") > 0 {
        relay.run_once().await.expect("relay pass");
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = recv(&mut routed).await;
        got.push((
            d.topic.clone(),
            JsonCodec.decode(d.message()).expect("decode").event_type,
        ));
        d.ack().await.expect("ack");
    }
    assert_eq!(
        got,
        [
            (
                "shop.orders.order_placed".to_string(),
                "order_placed".to_string()
            ),
            (
                "shop.orders.order_shipped".to_string(),
                "order_shipped".to_string()
            ),
        ]
    );
    crate::expect_quiet(&mut routed, "the internal event stays inside").await;
    crate::expect_quiet(&mut default, "nothing goes to the default topics").await;
}
