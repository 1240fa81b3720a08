//! Store observability: the outbox relay and catch-up subscriptions report their progress as
//! metrics.

use std::sync::Arc;

use longshore_core::memory::MemoryBroker;
use longshore_core::observe::names;
use longshore_core::{run_catch_up, Broker, Event, ExpectedVersion, OutboxRelay};
use tokio::sync::mpsc;

use crate::events::order;
use crate::fixture::skipped;
use crate::observe::{counter, gauge, install};
use crate::{eventually, within, Names, StoreFactory};

/// The outbox relay reports its backlog and what it relayed; a catch-up subscription reports
/// the position it has checkpointed.
pub async fn outbox_and_catch_up_metrics(f: &impl StoreFactory) {
    install();
    let Some((store, outbox)) = f.store_with_outbox().await else {
        skipped("outbox_and_catch_up_metrics", "this store has no outbox");
        return;
    };
    let n = Names::new();
    let stream = n.sub("agg");
    let events: Vec<Event> = (0..5).map(|i| order(&format!("o-{i}"))).collect();
    store
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .expect("append");

    let relay_name = n.sub("relay");
    let relay = Arc::new(OutboxRelay::new(
        relay_name.clone(),
        outbox,
        Broker::publisher(&MemoryBroker::default()),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let relay = relay.clone();
        async move {
            relay
                .run(async {
                    let _ = stop_rx.await;
                })
                .await
        }
    });
    let on_relay = [("relay", relay_name.as_str())];
    eventually("5 events relayed", || {
        counter(names::OUTBOX_RELAYED, &on_relay) == 5
    })
    .await;
    let _ = stop_tx.send(());
    assert_eq!(running.await.expect("relay task"), 5);
    // Read once before the first pass, when all five were waiting.
    assert_eq!(gauge(names::OUTBOX_BACKLOG, &on_relay), 5.0);

    let catch_up = n.sub("projection");
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let (store, catch_up) = (store.clone(), catch_up.clone());
        async move {
            run_catch_up(
                store,
                &catch_up,
                async {
                    let _ = stop_rx.await;
                },
                move |event| {
                    let tx = seen_tx.clone();
                    async move { tx.send(event.position) }
                },
            )
            .await
        }
    });
    let mut last = 0;
    for _ in 0..5 {
        last = within("a caught-up event", seen_rx.recv())
            .await
            .expect("handler ran");
    }
    let _ = stop_tx.send(());
    let stopped_at = task.await.expect("catch-up task").expect("catch-up");
    assert_eq!(stopped_at, last);
    assert_eq!(
        gauge(
            names::CHECKPOINT_POSITION,
            &[("subscription", catch_up.as_str())]
        ),
        last as f64
    );
}
