//! Handlers with state: `Consumer::with_state(state).on(|state, event, ctx| …)`.
//!
//! A plain `Fn` handler cannot move what it captured into its `async move` block (E0507), so
//! state needed a clone outside the block and another inside it. Here the runtime clones the
//! state once per call and hands it in as an argument the future owns.

use std::future::Future;
use std::time::Duration;

use super::consumer::Consumer;
use super::handler::{HandlerContext, HandlerError};
use crate::error::Error;
use crate::event::DomainEvent;
use crate::runtime::ConsumerHandle;

/// A [`Consumer`] whose handlers receive a clone of one state value (a pool, an
/// `Arc<AppState>`, a store handle) as their first argument. Made by [`Consumer::with_state`].
///
/// ```no_run
/// # use std::sync::Arc; use std::time::Duration;
/// # use longshore_core::{*, memory::MemoryBroker};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderPlaced { order_id: String }
/// # impl DomainEvent for OrderPlaced { const EVENT_TYPE: &'static str = "order_placed"; }
/// # async fn f() -> Result<(), Error> {
/// # let broker = MemoryBroker::default();
/// struct App { store: Arc<dyn EventStore>, events: EventPublisher }
/// let app = Arc::new(App {
///     store: broker.stores().map(|s| s.store).ok_or(Error::Closed("store"))?,
///     events: EventPublisher::new(broker.publisher()),
/// });
/// let consumer = Consumer::new(broker.subscriber(), Subscription::new("billing", ["events.#"]))
///     .concurrency(8)
///     .with_state(app)
///     .on(|app, order: OrderPlaced, ctx| async move {
///         let event = Event::from_typed(&order)?.caused_by(&ctx.event);
///         app.store.append(&order.order_id, ExpectedVersion::Any, vec![event]).await?;
///         Ok(())
///     })
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
pub struct WithState<S> {
    consumer: Consumer,
    state: S,
}

impl<S: Clone + Send + Sync + 'static> WithState<S> {
    pub(super) fn new(consumer: Consumer, state: S) -> Self {
        WithState { consumer, state }
    }

    /// Handles events of type `T`; each call gets its own clone of the state.
    pub fn on<T, F, Fut>(mut self, handler: F) -> Self
    where
        T: DomainEvent,
        F: Fn(S, T, HandlerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let state = self.state.clone();
        self.consumer = self
            .consumer
            .on(move |event: T, ctx| handler(state.clone(), event, ctx));
        self
    }

    /// Handles events of `event_type` untyped (the handler reads `ctx.event`).
    pub fn on_event<F, Fut>(mut self, event_type: impl Into<String>, handler: F) -> Self
    where
        F: Fn(S, HandlerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let state = self.state.clone();
        self.consumer = self
            .consumer
            .on_event(event_type, move |ctx| handler(state.clone(), ctx));
        self
    }

    /// Handles events of type `T` in batches (see [`Consumer::on_batch`]).
    pub fn on_batch<T, F, Fut>(mut self, max_size: usize, max_wait: Duration, handler: F) -> Self
    where
        T: DomainEvent,
        F: Fn(S, Vec<(T, HandlerContext)>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<(), HandlerError>>> + Send + 'static,
    {
        let state = self.state.clone();
        self.consumer = self.consumer.on_batch(
            max_size,
            max_wait,
            move |batch: Vec<(T, HandlerContext)>| handler(state.clone(), batch),
        );
        self
    }

    /// Configures the consumer further (concurrency, retries, ordering …) without leaving
    /// the stateful builder.
    pub fn configure(mut self, f: impl FnOnce(Consumer) -> Consumer) -> Self {
        self.consumer = f(self.consumer);
        self
    }

    /// The plain consumer, with the handlers registered so far.
    pub fn into_consumer(self) -> Consumer {
        self.consumer
    }

    /// Starts consuming (see [`Consumer::start`]).
    pub async fn start(self) -> Result<ConsumerHandle, Error> {
        self.consumer.start().await
    }
}
