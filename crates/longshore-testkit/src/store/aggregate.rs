//! Aggregates through `AggregateStore::execute`: load, fold, decide, append with the expected
//! version, and the retry on a version conflict.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longshore_core::{
    async_trait, Aggregate, AggregateStore, AppendResult, BoxError, Event, EventStore,
    ExecuteError, ExpectedVersion, RecordedEvent, StoreError, MAX_CONFLICT_RETRIES,
};

use crate::{Names, StoreFactory};

/// A counter: the sum and the number of its `counted` events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tally {
    total: u64,
    count: u64,
}

impl Aggregate for Tally {
    const CATEGORY: &'static str = "tally";

    fn apply(&mut self, event: &Event) -> Result<(), BoxError> {
        let by = event.data["by"].as_u64().ok_or("counted without `by`")?;
        self.total += by;
        self.count += 1;
        Ok(())
    }
}

fn counted(by: u64) -> Event {
    Event::new("counted", serde_json::json!({ "by": by }))
}

/// Adds `by`, refusing to go past `limit`.
fn add(tally: &Tally, by: u64, limit: u64) -> Result<Vec<Event>, BoxError> {
    if tally.total + by > limit {
        return Err(format!("{} + {by} is over {limit}", tally.total).into());
    }
    Ok(vec![counted(by)])
}

/// Versions 1..=n, contiguous, each event once.
async fn assert_contiguous(store: &dyn EventStore, stream: &str, n: u64) -> Vec<RecordedEvent> {
    let events = store.read_stream(stream, 1, 1000).await.expect("read");
    let versions: Vec<u64> = events.iter().map(|r| r.version).collect();
    assert_eq!(versions, (1..=n).collect::<Vec<_>>(), "stream {stream}");
    events
}

/// Execute folds the stream, appends what the decision returns at the next version, and a
/// refused or empty decision appends nothing.
pub async fn execute_loads_decides_and_appends(f: &impl StoreFactory) {
    let store = f.store().await;
    let id = Names::new().sub("a");
    let stream = Tally::stream_id(&id);
    let first = store
        .execute::<Tally>(&id, |t| add(t, 3, 10))
        .await
        .expect("first");
    assert_eq!(
        (first.version, first.written, first.conflicts),
        (1, true, 0)
    );
    assert_eq!(first.state, Tally { total: 3, count: 1 });
    let cause = Event::new("add_requested", serde_json::json!({}));
    let second = store
        .execute::<Tally>(&id, |t| {
            Ok(add(t, 4, 10)?
                .into_iter()
                .map(|e| e.caused_by(&cause))
                .collect())
        })
        .await
        .expect("second");
    assert_eq!(second.version, 2);
    assert_eq!(second.state, Tally { total: 7, count: 2 });
    match store.execute::<Tally>(&id, |t| add(t, 5, 10)).await {
        Err(e @ ExecuteError::Rejected { .. }) => assert!(!e.is_retryable()),
        other => panic!("expected Rejected, got {other:?}"),
    }
    let nothing = store
        .execute::<Tally>(&id, |_| Ok(Vec::new()))
        .await
        .expect("empty decision");
    assert_eq!((nothing.version, nothing.written), (2, false));
    let events = assert_contiguous(store.as_ref(), &stream, 2).await;
    let meta = &events[1].event.metadata;
    assert_eq!(meta.aggregate_id.as_deref(), Some(stream.as_str()));
    assert_eq!(meta.causation_id, Some(cause.id.to_string()));
    assert_eq!(meta.correlation_id, Some(cause.id.to_string()));
    let loaded = store.load::<Tally>(&id).await.expect("load");
    assert_eq!((loaded.version, loaded.state.total), (2, 7));
}

/// Events whose ids derive from the command: running the same command twice (a redelivery)
/// stores its events once.
pub async fn execute_redelivered_command_appends_once(f: &impl StoreFactory) {
    let store = f.store().await;
    let id = Names::new().sub("r");
    let command = Event::new("add_requested", serde_json::json!({ "by": 2 }));
    let decide = |t: &Tally| -> Result<Vec<Event>, BoxError> {
        Ok(add(t, 2, 100)?
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                e.caused_by(&command)
                    .with_id_derived_from(&command, i as u32)
            })
            .collect())
    };
    let first = store.execute::<Tally>(&id, decide).await.expect("first");
    let again = store.execute::<Tally>(&id, decide).await.expect("again");
    assert!(first.written);
    assert!(!again.written, "the redelivered command appended again");
    assert_eq!(again.version, 1);
    assert_eq!(again.state, Tally { total: 2, count: 1 });
    assert_eq!(first.events[0].id, again.events[0].id);
    // Deciding differently on the redelivery (the state moved on) still maps to the same id.
    let other = store
        .execute::<Tally>(&id, |_| {
            Ok(vec![Event::new("adjusted", serde_json::json!({ "by": 9 }))
                .with_id_derived_from(&command, 0)])
        })
        .await
        .expect("a different decision");
    assert!(
        !other.written,
        "a second outcome of one command was appended"
    );
    assert_eq!(other.state, Tally { total: 2, count: 1 });
    assert_contiguous(store.as_ref(), &Tally::stream_id(&id), 1).await;
}

/// Another writer appends between execute's load and its append (every time, or once):
/// execute loads again and decides again, up to its bound, then gives up retryably with
/// nothing of its own appended.
pub async fn execute_retries_a_version_conflict(f: &impl StoreFactory) {
    let inner = f.store().await;
    let id = Names::new().sub("c");
    let stream = Tally::stream_id(&id);
    let once = Interloper::new(inner.clone(), 1);
    let done = once
        .execute::<Tally>(&id, |t| add(t, 5, 100))
        .await
        .expect("execute after one conflict");
    assert_eq!(done.conflicts, 1);
    // The interloper's 1 came first; the decision was taken again on top of it.
    assert_eq!((done.version, done.state.total), (2, 6));
    assert_contiguous(inner.as_ref(), &stream, 2).await;

    let always = Interloper::new(inner.clone(), u32::MAX);
    match always.execute::<Tally>(&id, |t| add(t, 5, 1000)).await {
        Err(e @ ExecuteError::TooManyConflicts { conflicts, .. }) => {
            assert_eq!(conflicts, MAX_CONFLICT_RETRIES);
            assert!(e.is_retryable());
        }
        other => panic!("expected TooManyConflicts, got {other:?}"),
    }
    let n = 2 + u64::from(MAX_CONFLICT_RETRIES) + 1;
    let events = assert_contiguous(inner.as_ref(), &stream, n).await;
    assert!(
        events.iter().skip(2).all(|r| r.event.data["by"] == 1),
        "only the interloper's events were appended"
    );
}

/// Writers run commands on one aggregate at once: every command lands exactly once, versions
/// stay contiguous, and the state is the fold of them all.
pub async fn execute_concurrent_writers_all_land(f: &impl StoreFactory) {
    const WRITERS: u64 = 4;
    const COMMANDS: u64 = 3;
    let store = f.store().await;
    let id = Names::new().sub("w");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (store, id) = (store.clone(), id.clone());
        tasks.spawn(async move {
            let mut conflicts = 0;
            for _ in 0..COMMANDS {
                // What a consumer does with a retryable failure: run the command again.
                loop {
                    match store.execute::<Tally>(&id, |t| add(t, 1, 1000)).await {
                        Ok(done) => {
                            conflicts += done.conflicts;
                            break;
                        }
                        Err(e) if e.is_retryable() => {
                            conflicts += 1;
                            tokio::task::yield_now().await;
                        }
                        Err(e) => panic!("execute: {e}"),
                    }
                }
            }
            conflicts
        });
    }
    let mut conflicts = 0;
    while let Some(joined) = tasks.join_next().await {
        conflicts += joined.expect("writer");
    }
    let n = WRITERS * COMMANDS;
    assert_contiguous(store.as_ref(), &Tally::stream_id(&id), n).await;
    let loaded = store.load::<Tally>(&id).await.expect("load");
    assert_eq!(loaded.state, Tally { total: n, count: n });
    println!("{n} commands from {WRITERS} writers, {conflicts} conflicts retried");
}

/// A store where another writer appends `counted(1)` just before each of the first `times`
/// appends, as a concurrent service would between execute's load and its append.
struct Interloper {
    inner: Arc<dyn EventStore>,
    left: AtomicU32,
}

impl Interloper {
    fn new(inner: Arc<dyn EventStore>, times: u32) -> Self {
        Interloper {
            inner,
            left: AtomicU32::new(times),
        }
    }
}

#[async_trait]
impl EventStore for Interloper {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        let interfere = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if interfere {
            self.inner
                .append(stream_id, ExpectedVersion::Any, vec![counted(1)])
                .await?;
        }
        self.inner.append(stream_id, expected, events).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream_id, from, limit).await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        self.inner.save_checkpoint(name, position).await
    }

    async fn wait_for_events(&self, after: u64, timeout: Duration) {
        self.inner.wait_for_events(after, timeout).await
    }
}
