//! Event-store scenarios: optimistic concurrency, idempotency, order, catch-up, outbox, inbox.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::catch_up::{run_catch_up, subscribe_all};
use longshore_core::memory::MemoryBroker;
use longshore_core::{
    Codec, Event, ExpectedVersion, JsonCodec, OutboxRelay, StoreError, Subscriber, Subscription,
};

use crate::{recv, within, Names, StoreFactory};

fn ev(n: u64) -> Event {
    Event::new("order_created", serde_json::json!({ "n": n })).with_header("n", n.to_string())
}

fn stream_name(names: &Names, s: &str) -> String {
    names.sub(s)
}

/// Appended events come back with ids, types, data, timestamps and metadata intact.
pub async fn append_and_read_back_intact(f: &impl StoreFactory) {
    let store = f.store().await;
    let n = Names::new();
    let s = stream_name(&n, "order-1");
    let events: Vec<Event> = (1..=3)
        .map(|i| ev(i).with_aggregate_id(&s).with_correlation_id("corr"))
        .collect();
    let r = store
        .append(&s, ExpectedVersion::NoStream, events.clone())
        .await
        .expect("append");
    assert_eq!((r.version, r.written), (3, true));
    let back = store.read_stream(&s, 1, 100).await.expect("read");
    assert_eq!(back.len(), 3);
    for (i, (rec, sent)) in back.iter().zip(&events).enumerate() {
        assert_eq!(rec.version, i as u64 + 1);
        assert_eq!(rec.stream_id, s);
        assert_eq!(rec.event.id, sent.id);
        assert_eq!(rec.event.event_type, sent.event_type);
        assert_eq!(rec.event.timestamp, sent.timestamp);
        assert_eq!(rec.event.data, sent.data);
        assert_eq!(rec.event.metadata, sent.metadata);
    }
    assert!(back.windows(2).all(|w| w[0].position < w[1].position));
    assert!(store
        .read_stream(&stream_name(&n, "missing"), 1, 10)
        .await
        .expect("read")
        .is_empty());
}

/// `NoStream` succeeds once and fails with the actual version afterwards.
pub async fn expected_version_no_stream(f: &impl StoreFactory) {
    let store = f.store().await;
    let s = stream_name(&Names::new(), "s");
    store
        .append(&s, ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .expect("first");
    match store
        .append(&s, ExpectedVersion::NoStream, vec![ev(2)])
        .await
    {
        Err(StoreError::WrongExpectedVersion { actual: 1, .. }) => {}
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
}

/// `Exact(n)` succeeds only at version n; `Any` always appends.
pub async fn expected_version_exact(f: &impl StoreFactory) {
    let store = f.store().await;
    let s = stream_name(&Names::new(), "s");
    store
        .append(&s, ExpectedVersion::Exact(0), vec![ev(1), ev(2)])
        .await
        .expect("exact 0 on new stream");
    let r = store
        .append(&s, ExpectedVersion::Exact(2), vec![ev(3)])
        .await
        .expect("exact 2");
    assert_eq!(r.version, 3);
    match store
        .append(&s, ExpectedVersion::Exact(2), vec![ev(4)])
        .await
    {
        Err(StoreError::WrongExpectedVersion { actual: 3, .. }) => {}
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
    let r = store
        .append(&s, ExpectedVersion::Any, vec![ev(5)])
        .await
        .expect("any");
    assert_eq!(r.version, 4);
}

/// Fifty concurrent appends with the same expected version: exactly one wins, versions stay
/// contiguous.
pub async fn concurrent_appends_exactly_one_wins(f: &impl StoreFactory) {
    let store = f.store().await;
    let s = stream_name(&Names::new(), "race");
    store
        .append(&s, ExpectedVersion::NoStream, vec![ev(0)])
        .await
        .expect("seed");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            store
                .append(&s, ExpectedVersion::Exact(1), vec![ev(i), ev(i + 100)])
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => wins += 1,
            Err(StoreError::WrongExpectedVersion { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(wins, 1);
    let versions: Vec<u64> = store
        .read_stream(&s, 1, 100)
        .await
        .expect("read")
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
}

/// Re-appending the same events (a retry after a lost reply) is a no-op success.
pub async fn idempotent_reappend(f: &impl StoreFactory) {
    let store = f.store().await;
    let s = stream_name(&Names::new(), "idem");
    let events = vec![ev(1), ev(2)];
    let first = store
        .append(&s, ExpectedVersion::NoStream, events.clone())
        .await
        .expect("append");
    let again = store
        .append(&s, ExpectedVersion::NoStream, events)
        .await
        .expect("re-append");
    assert!(!again.written);
    assert_eq!(again.version, first.version);
    assert_eq!(store.read_stream(&s, 1, 10).await.expect("read").len(), 2);
}

/// A batch mixing stored and new ids is rejected whole.
pub async fn partial_duplicate_is_rejected(f: &impl StoreFactory) {
    let store = f.store().await;
    let s = stream_name(&Names::new(), "partial");
    let a = ev(1);
    store
        .append(&s, ExpectedVersion::Any, vec![a.clone()])
        .await
        .expect("append");
    match store
        .append(&s, ExpectedVersion::Any, vec![a.clone(), ev(2)])
        .await
    {
        Err(StoreError::DuplicateEvent { event_id, .. }) => assert_eq!(event_id, a.id),
        other => panic!("expected DuplicateEvent, got {other:?}"),
    }
    assert_eq!(store.read_stream(&s, 1, 10).await.expect("read").len(), 1);
}

/// `read_stream` honours `from` (inclusive) and `limit`.
pub async fn read_stream_from_and_limit(f: &impl StoreFactory) {
    let store = f.store().await;
    let s = stream_name(&Names::new(), "page");
    store
        .append(&s, ExpectedVersion::Any, (1..=10).map(ev).collect())
        .await
        .expect("append");
    let page: Vec<u64> = store
        .read_stream(&s, 4, 3)
        .await
        .expect("read")
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(page, vec![4, 5, 6]);
    assert!(store.read_stream(&s, 11, 3).await.expect("read").is_empty());
}

/// `read_all` returns every event once, in one increasing global order, paging by position.
pub async fn read_all_global_order(f: &impl StoreFactory) {
    let store = f.store().await;
    let n = Names::new();
    let mut ids = Vec::new();
    for i in 0..10 {
        let s = stream_name(&n, &format!("s{}", i % 3));
        let e = ev(i);
        ids.push(e.id);
        store
            .append(&s, ExpectedVersion::Any, vec![e])
            .await
            .expect("append");
    }
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(after, 4).await.expect("read_all");
        if page.is_empty() {
            break;
        }
        for r in page {
            assert!(r.position > after, "positions must increase");
            after = r.position;
            seen.push(r.event.id);
        }
    }
    assert_eq!(seen, ids);
}

/// A named catch-up subscription stops, then resumes after its checkpoint without repeats.
pub async fn catch_up_resumes_from_checkpoint(f: &impl StoreFactory) {
    let store = f.store().await;
    let s = stream_name(&Names::new(), "cu");
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
    let s = stream_name(&Names::new(), "live");
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

/// Events appended to a store with an outbox reach the broker through the relay, each once
/// in the normal path, in order per aggregate, and the outbox ends empty.
pub async fn outbox_relay_publishes_every_event(f: &impl StoreFactory) {
    let Some((store, outbox)) = f.store_with_outbox().await else {
        println!("not applicable: this store has no outbox");
        return;
    };
    let broker = MemoryBroker::default();
    let subscriber = broker.subscriber();
    let mut stream = subscriber
        .subscribe(&Subscription::new("relay-check", ["events.#"]).with_prefetch(500))
        .await
        .expect("subscribe");
    let n = Names::new();
    let mut expected = Vec::new();
    for agg in 0..3 {
        let s = stream_name(&n, &format!("agg{agg}"));
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
        OutboxRelay::new("relay-1", outbox.clone(), Arc::new(broker.publisher())).batch_size(7);
    let mut sent = 0;
    while sent < expected.len() {
        sent += relay.run_once().await.expect("relay pass").sent;
    }
    assert_eq!(outbox.pending().await.expect("pending"), 0);
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        let d = recv(&mut stream).await;
        got.push(JsonCodec.decode(&d.message).expect("decode"));
        d.ack().await.expect("ack");
    }
    let ids: BTreeSet<_> = got.iter().map(|e| e.id).collect();
    assert_eq!(ids, expected.iter().copied().collect());
    for agg in 0..3 {
        let s = stream_name(&n, &format!("agg{agg}"));
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
        println!("not applicable: this adapter has no inbox");
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
