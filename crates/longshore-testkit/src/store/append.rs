//! Appending: optimistic concurrency by expected version, and idempotent re-appends.

use longshore_core::{Event, ExpectedVersion, StoreError};

use super::ev;
use crate::{Names, StoreFactory};

/// Appended events come back with ids, types, data, timestamps and metadata intact.
pub async fn append_and_read_back_intact(f: &impl StoreFactory) {
    let store = f.store().await;
    let n = Names::new();
    let s = n.sub("order-1");
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
        .read_stream(&n.sub("missing"), 1, 10)
        .await
        .expect("read")
        .is_empty());
}

/// `NoStream` succeeds once and fails with the actual version afterwards.
pub async fn expected_version_no_stream(f: &impl StoreFactory) {
    let store = f.store().await;
    let s = Names::new().sub("s");
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
    let s = Names::new().sub("s");
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
    let s = Names::new().sub("race");
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
    let s = Names::new().sub("idem");
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
    let s = Names::new().sub("partial");
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
