//! The outbox relays every appended event to the broker, and the inbox remembers what
//! was processed.

use std::collections::BTreeSet;

use longshore_core::memory::MemoryBroker;
use longshore_core::{Broker, Codec, ExpectedVersion, JsonCodec, OutboxRelay, Subscription};

use super::ev;
use crate::fixture::skipped;
use crate::{recv, Names, StoreFactory};

/// Events appended to a store with an outbox reach the broker through the relay, each once
/// in the normal path, in order per aggregate, and the outbox ends empty.
pub async fn outbox_relay_publishes_every_event(f: &impl StoreFactory) {
    let Some((store, outbox)) = f.store_with_outbox().await else {
        skipped(
            "outbox_relay_publishes_every_event",
            "this store has no outbox",
        );
        return;
    };
    let broker = MemoryBroker::default();
    let subscriber = Broker::subscriber(&broker);
    let mut stream = subscriber
        .subscribe(&Subscription::new("relay-check", ["events.#"]).with_prefetch(500))
        .await
        .expect("subscribe");
    let n = Names::new();
    let mut expected = Vec::new();
    for agg in 0..3 {
        let s = n.sub(&format!("agg{agg}"));
        for i in 0..10 {
            let e = ev(i).with_aggregate_id(&s);
            expected.push(e.id);
            store
                .append(&s, ExpectedVersion::Any, vec![e])
                .await
                .expect("append");
        }
    }
    let relay =
        OutboxRelay::new("relay-1", outbox.clone(), Broker::publisher(&broker)).batch_size(7);
    let mut sent = 0;
    while sent < expected.len() {
        sent += relay.run_once().await.expect("relay pass").sent;
    }
    assert_eq!(outbox.pending().await.expect("pending"), 0);
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        let d = recv(&mut stream).await;
        got.push(JsonCodec.decode(d.message()).expect("decode"));
        d.ack().await.expect("ack");
    }
    let ids: BTreeSet<_> = got.iter().map(|e| e.id).collect();
    assert_eq!(ids, expected.iter().copied().collect());
    for agg in 0..3 {
        let s = n.sub(&format!("agg{agg}"));
        let order: Vec<_> = got
            .iter()
            .filter(|e| e.metadata.aggregate_id.as_deref() == Some(&s))
            .map(|e| e.id)
            .collect();
        let want: Vec<_> = expected.iter().skip(agg * 10).take(10).copied().collect();
        assert_eq!(order, want, "per-aggregate order");
    }
}

/// The inbox remembers processed ids per consumer.
pub async fn inbox_remembers_processed_ids(f: &impl StoreFactory) {
    let Some(inbox) = f.inbox().await else {
        skipped("inbox_remembers_processed_ids", "this adapter has no inbox");
        return;
    };
    let n = Names::new();
    let (c1, c2) = (n.sub("c1"), n.sub("c2"));
    assert!(!inbox.is_processed(&c1, "m-1").await.expect("check"));
    assert!(inbox.mark_processed(&c1, "m-1").await.expect("mark"));
    assert!(!inbox.mark_processed(&c1, "m-1").await.expect("mark again"));
    assert!(inbox.is_processed(&c1, "m-1").await.expect("check"));
    assert!(!inbox
        .is_processed(&c2, "m-1")
        .await
        .expect("other consumer"));
}
