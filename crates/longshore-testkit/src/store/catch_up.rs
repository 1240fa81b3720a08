//! Catch-up subscriptions: they resume after their checkpoint and follow live appends.

use std::time::Duration;

use futures::StreamExt;
use longshore_core::{run_catch_up, subscribe_all, Event, ExpectedVersion};

use super::ev;
use crate::{within, Names, StoreFactory};

/// A named catch-up subscription stops, then resumes after its checkpoint without repeats.
pub async fn catch_up_resumes_from_checkpoint(f: &impl StoreFactory) {
    let store = f.store().await;
    let s = Names::new().sub("cu");
    let first: Vec<Event> = (0..5).map(ev).collect();
    store
        .append(&s, ExpectedVersion::Any, first.clone())
        .await
        .expect("append");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let st = store.clone();
    let task = tokio::spawn(async move {
        run_catch_up(
            st,
            "projection",
            async {
                let _ = stop_rx.await;
            },
            |r| {
                let tx = tx.clone();
                async move { tx.send(r.event.id).map_err(|_| "closed") }
            },
        )
        .await
    });
    for e in &first {
        assert_eq!(within("catch-up event", rx.recv()).await, Some(e.id));
    }
    // The checkpoint is saved after each handled event; wait until the last one is stored.
    let last = store
        .read_all(0, 1000)
        .await
        .expect("read_all")
        .last()
        .map(|r| r.position)
        .expect("events");
    within("checkpoint", async {
        while store
            .load_checkpoint("projection")
            .await
            .expect("checkpoint")
            != Some(last)
        {
            store.wait_for_events(last, Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = stop_tx.send(());
    within("catch-up stop", task)
        .await
        .expect("task")
        .map_err(|e| format!("{e:?}"))
        .expect("catch-up");
    let second: Vec<Event> = (5..8).map(ev).collect();
    store
        .append(&s, ExpectedVersion::Any, second.clone())
        .await
        .expect("append");
    let mut resumed = subscribe_all(
        store.clone(),
        store
            .load_checkpoint("projection")
            .await
            .expect("load")
            .unwrap_or(0),
    );
    for e in &second {
        let r = within("resumed event", resumed.next())
            .await
            .expect("stream")
            .expect("event");
        assert_eq!(
            r.event.id, e.id,
            "resumed subscription must start right after the checkpoint"
        );
    }
}

/// A catch-up subscription started on an empty store gets events appended afterwards.
pub async fn catch_up_follows_live_appends(f: &impl StoreFactory) {
    let store = f.store().await;
    let head = store
        .read_all(0, 100_000)
        .await
        .expect("read_all")
        .last()
        .map_or(0, |r| r.position);
    let mut sub = subscribe_all(store.clone(), head);
    let s = Names::new().sub("live");
    let writer = store.clone();
    let events: Vec<Event> = (0..20).map(ev).collect();
    let to_write = events.clone();
    let w = tokio::spawn(async move {
        for e in to_write {
            writer
                .append(&s, ExpectedVersion::Any, vec![e])
                .await
                .expect("append");
        }
    });
    for e in &events {
        let r = within("live event", sub.next())
            .await
            .expect("stream")
            .expect("event");
        assert_eq!(r.event.id, e.id);
    }
    w.await.expect("writer");
}
