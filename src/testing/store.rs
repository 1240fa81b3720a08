//! `TestStore`: an event store that tells waiters when a catch-up subscription checkpoints,
//! so a test can wait for a projection to catch up without polling.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use longshore_core::{
    async_trait, AppendResult, Event, EventStore, ExpectedVersion, RecordedEvent, StoreError,
};
use tokio::sync::watch;
use tokio::time::Instant;

/// Wraps any [`EventStore`]; give [`TestStore::shared`] to the projection (e.g. to
/// [`crate::run_catch_up`]) and [`TestStore::wait_until_caught_up`] waits for it.
#[derive(Clone)]
pub struct TestStore {
    inner: Arc<dyn EventStore>,
    changed: Arc<watch::Sender<u64>>,
}

impl fmt::Debug for TestStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestStore").finish_non_exhaustive()
    }
}

/// [`TestStore::wait_until_caught_up`] timed out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("catch-up subscription {name} is not caught up after {waited:?}: checkpoint at {checkpoint:?}, the store's last position is {head}")]
pub struct NotCaughtUp {
    /// The catch-up subscription's name.
    pub name: String,
    /// Its checkpoint when the wait gave up (`None`: never saved).
    pub checkpoint: Option<u64>,
    /// The last position in the store when the wait began.
    pub head: u64,
    /// How long it waited.
    pub waited: Duration,
}

impl TestStore {
    /// Wraps `store`.
    pub fn new(store: Arc<dyn EventStore>) -> TestStore {
        TestStore {
            inner: store,
            changed: Arc::new(watch::channel(0).0),
        }
    }

    /// This store as the port, for the code under test.
    pub fn shared(&self) -> Arc<dyn EventStore> {
        Arc::new(self.clone())
    }

    /// The last global position in the store (0 when empty).
    pub async fn head(&self) -> Result<u64, StoreError> {
        let mut after = 0;
        loop {
            let page = self.inner.read_all(after, 1024).await?;
            match page.last() {
                Some(last) => after = last.position,
                None => return Ok(after),
            }
        }
    }

    /// Waits until the catch-up subscription `name` has checkpointed the store's last
    /// position as of this call, woken by each checkpoint saved through this store.
    pub async fn wait_until_caught_up(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<(), NotCaughtUp> {
        let deadline = Instant::now() + timeout;
        let mut changes = self.changed.subscribe();
        let gave_up = |checkpoint, head| NotCaughtUp {
            name: name.to_string(),
            checkpoint,
            head,
            waited: timeout,
        };
        let head = self.head().await.map_err(|_| gave_up(None, 0))?;
        loop {
            changes.borrow_and_update();
            // A failed read counts as not caught up yet; the deadline still bounds the wait.
            let checkpoint = self.inner.load_checkpoint(name).await.ok().flatten();
            if checkpoint.unwrap_or(0) >= head {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(gave_up(checkpoint, head));
            }
        }
    }

    fn touch(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[async_trait]
impl EventStore for TestStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        let result = self.inner.append(stream_id, expected, events).await;
        self.touch();
        result
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
        let result = self.inner.save_checkpoint(name, position).await;
        self.touch();
        result
    }

    async fn wait_for_events(&self, after: u64, timeout: Duration) {
        self.inner.wait_for_events(after, timeout).await
    }
}
