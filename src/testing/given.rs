//! Given events, when a command, then the expected events: tests for event-sourced
//! aggregates on the [`EventStore`] port.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::Arc;

use longshore_core::{Data, DomainEvent, Event, EventStore, ExpectedVersion, StoreError};

/// Most events one command is expected to append (read back in one page).
const READ_LIMIT: usize = 10_000;

/// A stream with its history appended; [`Given::when`] runs the command.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use std::sync::Arc;
/// use longshore::testing::Given;
/// use longshore::{Event, EventStore, ExpectedVersion};
///
/// let store: Arc<dyn EventStore> = Arc::new(longshore::memory::MemoryStore::new());
/// let opened = Event::new("account_opened", serde_json::json!({"id": "a-1"}));
/// Given::events(store, "account-a-1", vec![opened]).await?
///     .when(|store| async move {
///         let deposit = Event::new("deposited", serde_json::json!({"cents": 500}));
///         store.append("account-a-1", ExpectedVersion::Exact(1), vec![deposit]).await
///     })
///     .await
///     .then_events(&[Event::new("deposited", serde_json::json!({"cents": 500}))]);
/// # Ok(()) }
/// ```
pub struct Given {
    store: Arc<dyn EventStore>,
    stream: String,
    version: u64,
}

/// What [`Given::when`] left behind: the command's result and the events it appended.
#[derive(Debug)]
pub struct Then {
    stream: String,
    error: Option<String>,
    events: Vec<Event>,
}

impl Given {
    /// Appends `history` to a new stream `stream` (which must not exist yet).
    pub async fn events(
        store: Arc<dyn EventStore>,
        stream: &str,
        history: Vec<Event>,
    ) -> Result<Given, StoreError> {
        let version = if history.is_empty() {
            0
        } else {
            store
                .append(stream, ExpectedVersion::NoStream, history)
                .await?
                .version
        };
        Ok(Given {
            store,
            stream: stream.to_string(),
            version,
        })
    }

    /// Like [`Given::events`], from typed events.
    pub async fn typed<T: DomainEvent>(
        store: Arc<dyn EventStore>,
        stream: &str,
        history: &[T],
    ) -> Result<Given, StoreError> {
        let events = history
            .iter()
            .map(Event::from_typed)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::from)?;
        Given::events(store, stream, events).await
    }

    /// Runs `command` against the store and collects what it appended to the stream.
    pub async fn when<F, Fut, R, E>(self, command: F) -> Then
    where
        F: FnOnce(Arc<dyn EventStore>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        E: Display,
    {
        let mut error = command(self.store.clone())
            .await
            .err()
            .map(|e| e.to_string());
        let events = match self
            .store
            .read_stream(&self.stream, self.version + 1, READ_LIMIT)
            .await
        {
            Ok(recorded) => recorded.into_iter().map(|r| r.event).collect(),
            // Reported through the assertions, which show `error`.
            Err(e) => {
                error = Some(format!("reading the stream after the command failed: {e}"));
                Vec::new()
            }
        };
        Then {
            stream: self.stream,
            error,
            events,
        }
    }
}

impl Then {
    /// The events the command appended.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The command's error, if it failed.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Panics unless the command succeeded and appended exactly `expected` (compared by
    /// event type and data; ids and timestamps are the store's).
    pub fn then_events(&self, expected: &[Event]) -> &Self {
        let want: Vec<(&str, &Data)> = expected
            .iter()
            .map(|e| (e.event_type.as_str(), &e.data))
            .collect();
        let got: Vec<(&str, &Data)> = self
            .events
            .iter()
            .map(|e| (e.event_type.as_str(), &e.data))
            .collect();
        if self.error.is_some() || want != got {
            panic!(
                "stream {}: expected the command to append {want:#?}\nbut it appended {got:#?}{}",
                self.stream,
                self.failure()
            );
        }
        self
    }

    /// Panics unless the command succeeded and appended exactly `expected`, decoded as `T`.
    pub fn then_typed<T: DomainEvent + PartialEq + Debug>(&self, expected: &[T]) -> &Self {
        let got: Vec<Option<T>> = self.events.iter().map(|e| e.to_typed().ok()).collect();
        let want: Vec<Option<&T>> = expected.iter().map(Some).collect();
        if self.error.is_some() || got.iter().map(Option::as_ref).collect::<Vec<_>>() != want {
            panic!(
                "stream {}: expected the command to append {expected:#?}\nbut it appended {:#?}{}",
                self.stream,
                self.events,
                self.failure()
            );
        }
        self
    }

    /// Panics unless the command failed with an error containing `needle` and appended
    /// nothing.
    pub fn then_error(&self, needle: &str) -> &Self {
        match &self.error {
            Some(e) if e.contains(needle) && self.events.is_empty() => self,
            _ => panic!(
                "stream {}: expected the command to fail with {needle:?} and append nothing; \
                 it returned {:?} and appended {:#?}",
                self.stream, self.error, self.events
            ),
        }
    }

    fn failure(&self) -> String {
        self.error
            .as_ref()
            .map(|e| format!("\nand the command failed: {e}"))
            .unwrap_or_default()
    }
}
