//! Event-sourced aggregates on any [`EventStore`]: load → fold → decide → append with the
//! expected version, retried on a version conflict.

use std::future::Future;

use crate::error::BoxError;
use crate::event::Event;
use crate::store::{EventStore, ExpectedVersion, StoreError};

/// How many times [`AggregateStore::execute`] re-reads and decides again after a version
/// conflict before it gives up with [`ExecuteError::TooManyConflicts`].
pub const MAX_CONFLICT_RETRIES: u32 = 5;

/// Events are read back in pages of this size while an aggregate is loaded.
const PAGE: usize = 256;

/// A consistency boundary kept as one stream of events: its state is the fold of its events.
///
/// ```
/// use longshore_core::{Aggregate, BoxError, DomainEvent, Event};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Restocked { qty: u32 }
/// # impl DomainEvent for Restocked { const EVENT_TYPE: &'static str = "restocked"; }
/// #[derive(Default)]
/// struct Stock { on_hand: u32 }
///
/// impl Aggregate for Stock {
///     const CATEGORY: &'static str = "stock";
///     fn apply(&mut self, event: &Event) -> Result<(), BoxError> {
///         match event.event_type.as_str() {
///             Restocked::EVENT_TYPE => self.on_hand += event.to_typed::<Restocked>()?.qty,
///             _ => {} // events this model does not need
///         }
///         Ok(())
///     }
/// }
/// assert_eq!(Stock::stream_id("sku-1"), "stock-sku-1");
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The stream category: the stream of aggregate `id` is `<CATEGORY>-<id>` (see
    /// [`Aggregate::stream_id`]).
    const CATEGORY: &'static str;

    /// Folds one stored event into the state. An error stops the load
    /// ([`ExecuteError::Apply`]): the stream holds something this model cannot read.
    fn apply(&mut self, event: &Event) -> Result<(), BoxError>;

    /// The stream holding aggregate `id`; override to map ids differently.
    fn stream_id(id: &str) -> String {
        format!("{}-{id}", Self::CATEGORY)
    }
}

/// An aggregate's state as loaded from its stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded<A> {
    /// The fold of every event in the stream.
    pub state: A,
    /// The stream's version (0: no stream yet).
    pub version: u64,
}

/// What [`AggregateStore::execute`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Executed<A> {
    /// The state after the decided events (unchanged when nothing was decided).
    pub state: A,
    /// The stream's version afterwards.
    pub version: u64,
    /// The events decided and appended, as appended (aggregate id set).
    pub events: Vec<Event>,
    /// False when nothing new was stored: the decision was empty, or every event id was
    /// already in the stream (a redelivered command with [`Event::with_id_derived_from`]).
    pub written: bool,
    /// Version conflicts met and retried on the way.
    pub conflicts: u32,
}

/// Why [`AggregateStore::execute`] or [`AggregateStore::load`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError {
    /// The decision refused the command; nothing was appended. Permanent.
    #[error("{stream_id}: {source}")]
    Rejected {
        /// The aggregate's stream.
        stream_id: String,
        /// What the decision returned.
        source: BoxError,
    },
    /// A stored event could not be applied to the state. Permanent.
    #[error("{stream_id} v{version}: cannot apply {event_type}: {source}")]
    Apply {
        /// The aggregate's stream.
        stream_id: String,
        /// The event's version in the stream.
        version: u64,
        /// Its type.
        event_type: String,
        /// Why it failed.
        source: BoxError,
    },
    /// Other writers kept appending between load and append, more than the retry bound.
    /// Retryable (a redelivery runs the command again).
    #[error("{stream_id}: gave up after {conflicts} version conflicts")]
    TooManyConflicts {
        /// The aggregate's stream.
        stream_id: String,
        /// Conflicts met.
        conflicts: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExecuteError {
    /// Whether running the command again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecuteError::Rejected { .. } | ExecuteError::Apply { .. } => false,
            ExecuteError::TooManyConflicts { .. } => true,
            ExecuteError::Store(e) => {
                e.is_retryable() || matches!(e, StoreError::WrongExpectedVersion { .. })
            }
        }
    }
}

/// Loads and changes [`Aggregate`]s on any event store (`Arc<dyn EventStore>` included).
///
/// ```no_run
/// # use longshore_core::*;
/// # #[derive(Default)] struct Stock { on_hand: u32 }
/// # impl Aggregate for Stock { const CATEGORY: &'static str = "stock";
/// #   fn apply(&mut self, _: &Event) -> Result<(), BoxError> { Ok(()) } }
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Reserved { qty: u32 }
/// # impl DomainEvent for Reserved { const EVENT_TYPE: &'static str = "reserved"; }
/// # async fn f(store: std::sync::Arc<dyn EventStore>, ctx: HandlerContext) -> Result<(), HandlerError> {
/// let done = store
///     .execute::<Stock>("sku-1", |stock| {
///         if stock.on_hand < 2 {
///             return Err("out of stock".into()); // Rejected: a permanent handler error
///         }
///         Ok(vec![Event::from_typed(&Reserved { qty: 2 })?.caused_by(&ctx.event)])
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub trait AggregateStore {
    /// Reads aggregate `id`'s stream and folds it into `A`.
    fn load<A: Aggregate>(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Loaded<A>, ExecuteError>> + Send;

    /// Runs a command against aggregate `id`: loads it, calls `decide` with the state, and
    /// appends what it returns with the version it read (`NoStream` for a new stream). On a
    /// version conflict (another writer appended in between) it loads again and decides again,
    /// up to [`MAX_CONFLICT_RETRIES`] times, so `decide` must be a pure function of the state.
    ///
    /// `decide` returns the events to append (each gets the aggregate's stream as its
    /// aggregate id unless it has one), an empty list for "nothing to do", or an error that
    /// refuses the command ([`ExecuteError::Rejected`]). The events are applied to the
    /// returned state as they were appended.
    fn execute<A: Aggregate>(
        &self,
        id: &str,
        decide: impl FnMut(&A) -> Result<Vec<Event>, BoxError> + Send,
    ) -> impl Future<Output = Result<Executed<A>, ExecuteError>> + Send;
}

impl<S: EventStore + ?Sized> AggregateStore for S {
    fn load<A: Aggregate>(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Loaded<A>, ExecuteError>> + Send {
        let stream_id = A::stream_id(id);
        async move { load_stream(self, &stream_id).await }
    }

    fn execute<A: Aggregate>(
        &self,
        id: &str,
        mut decide: impl FnMut(&A) -> Result<Vec<Event>, BoxError> + Send,
    ) -> impl Future<Output = Result<Executed<A>, ExecuteError>> + Send {
        let stream_id = A::stream_id(id);
        async move {
            let mut conflicts = 0;
            loop {
                let Loaded { mut state, version } = load_stream::<A, S>(self, &stream_id).await?;
                let mut events = decide(&state).map_err(|source| ExecuteError::Rejected {
                    stream_id: stream_id.clone(),
                    source,
                })?;
                if events.is_empty() {
                    return Ok(Executed {
                        state,
                        version,
                        events,
                        written: false,
                        conflicts,
                    });
                }
                for event in &mut events {
                    if event.metadata.aggregate_id.is_none() {
                        event.metadata.aggregate_id = Some(stream_id.clone());
                    }
                }
                let expected = match version {
                    0 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(v),
                };
                match self.append(&stream_id, expected, events.clone()).await {
                    Ok(done) => {
                        if done.written {
                            apply_all(&mut state, &stream_id, version, &events)?;
                        } else {
                            // Every id was already stored (at some earlier version): read
                            // the stream as it is rather than apply the events twice.
                            state = load_stream::<A, S>(self, &stream_id).await?.state;
                        }
                        return Ok(Executed {
                            state,
                            version: done.version,
                            events,
                            written: done.written,
                            conflicts,
                        });
                    }
                    Err(StoreError::WrongExpectedVersion { .. }) | Err(StoreError::Conflict(_))
                        if conflicts < MAX_CONFLICT_RETRIES =>
                    {
                        conflicts += 1;
                        tracing::debug!(stream = %stream_id, conflicts, "version conflict; loading again and deciding again");
                    }
                    Err(StoreError::WrongExpectedVersion { .. }) | Err(StoreError::Conflict(_)) => {
                        return Err(ExecuteError::TooManyConflicts {
                            stream_id,
                            conflicts,
                        })
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// Reads a stream page by page and folds it.
async fn load_stream<A: Aggregate, S: EventStore + ?Sized>(
    store: &S,
    stream_id: &str,
) -> Result<Loaded<A>, ExecuteError> {
    let mut loaded = Loaded {
        state: A::default(),
        version: 0,
    };
    loop {
        let page = store
            .read_stream(stream_id, loaded.version + 1, PAGE)
            .await?;
        let full = page.len() == PAGE;
        for recorded in page {
            apply_one(
                &mut loaded.state,
                stream_id,
                recorded.version,
                &recorded.event,
            )?;
            loaded.version = recorded.version;
        }
        if !full {
            return Ok(loaded);
        }
    }
}

fn apply_all<A: Aggregate>(
    state: &mut A,
    stream_id: &str,
    version: u64,
    events: &[Event],
) -> Result<(), ExecuteError> {
    for (version, event) in (version + 1..).zip(events) {
        apply_one(state, stream_id, version, event)?;
    }
    Ok(())
}

fn apply_one<A: Aggregate>(
    state: &mut A,
    stream_id: &str,
    version: u64,
    event: &Event,
) -> Result<(), ExecuteError> {
    state.apply(event).map_err(|source| ExecuteError::Apply {
        stream_id: stream_id.to_string(),
        version,
        event_type: event.event_type.clone(),
        source,
    })
}
