//! The event store port: streams per aggregate, one global order, catch-up subscriptions.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::event::Event;

/// What the caller believes about a stream's current version when appending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the current version is.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this (versions start at 1).
    Exact(u64),
}

/// An event as stored: its stream, its version in the stream and its global position.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// The stream (aggregate) id.
    pub stream_id: String,
    /// 1-based version within the stream; contiguous.
    pub version: u64,
    /// Position in the store's single global order: sparse, increasing. Later events have
    /// larger positions, but numbers can be skipped (Postgres sequences lose values to rolled
    /// back transactions), so use it to order and to checkpoint, never to count events.
    pub position: u64,
    /// The event, with its original id and timestamp.
    pub event: Event,
}

/// The outcome of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append.
    pub version: u64,
    /// Global position (sparse, increasing) of the last appended event (of the existing ones
    /// for an idempotent re-append).
    pub position: u64,
    /// False when every event was already stored (an idempotent re-append wrote nothing).
    pub written: bool,
}

/// Errors of the event store, outbox and inbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Optimistic concurrency check failed.
    #[error("stream {stream_id:?}: expected version {expected:?}, actual {actual}")]
    WrongExpectedVersion {
        /// The stream.
        stream_id: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's actual version (0 = no stream).
        actual: u64,
    },
    /// Some but not all event ids were already stored, or an id is stored in another stream.
    #[error("event {event_id} already stored ({detail})")]
    DuplicateEvent {
        /// The conflicting id.
        event_id: uuid::Uuid,
        /// Where it is.
        detail: String,
    },
    /// A name or argument is invalid.
    #[error("invalid {kind} {value:?}: {reason}")]
    Invalid {
        /// What it was for.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// Serialization conflict or similar: retrying the whole operation may succeed.
    #[error("transient conflict: {0}")]
    Conflict(String),
    /// Stored data could not be read back as an event.
    #[error(transparent)]
    Codec(#[from] crate::error::CodecError),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] crate::error::Error),
}

impl StoreError {
    /// Whether retrying may succeed (optimistic concurrency failures need a re-read first and
    /// are not retryable as they are).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Conflict(_) => true,
            StoreError::Backend(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// A stream of recorded events from a catch-up subscription.
pub type RecordedStream = BoxStream<'static, Result<RecordedEvent, StoreError>>;

/// Stores events per stream with optimistic concurrency and one global order.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream_id` atomically if the stream is at `expected`.
    ///
    /// Idempotent by event id: appending events that are all already stored in this stream
    /// returns `Ok` with `written: false`; a partial overlap is [`StoreError::DuplicateEvent`].
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError>;

    /// Reads up to `limit` events of a stream from version `from` (inclusive), in order.
    async fn read_stream(
        &self,
        stream_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `limit` events with position greater than `after`, in global order, never
    /// skipping an event that a concurrent transaction commits later.
    ///
    /// To keep that promise a store may return fewer events than exist (even none) while an
    /// earlier position is still held by a transaction in flight; positions may be sparse but
    /// always increase. Followers should poll (or use [`crate::catch_up::subscribe_all`]) rather
    /// than treat an empty page as the end for good.
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Loads the last position processed by the named catch-up subscription.
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError>;

    /// Saves the last position processed by the named catch-up subscription.
    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError>;

    /// Waits until events after `after` may exist, or `timeout` passes. A hint only:
    /// the default sleeps for `timeout`; adapters wake earlier (notify, LISTEN).
    async fn wait_for_events(&self, after: u64, timeout: Duration) {
        let _ = after;
        tokio::time::sleep(timeout).await;
    }
}
