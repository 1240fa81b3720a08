//! Handlers and the errors they return.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::{DomainEvent, Event};

/// What a handler knows about the message it handles, beside the event itself.
#[derive(Clone, Debug)]
pub struct HandlerContext {
    /// The subscription consuming the message.
    pub subscription: String,
    /// The topic the message was published to.
    pub topic: String,
    /// 1-based attempt number (broker redeliveries and in-process retries both count).
    pub attempt: u32,
    /// The whole event (id, timestamp, metadata). For typed handlers `data` is also here raw.
    /// Shared, so a retry hands the same event to the next attempt without copying it.
    pub event: Arc<Event>,
}

/// A handler failure: transient (retry with backoff) or permanent (dead-letter now).
///
/// Any `std::error::Error` converts into a transient one with `?`; use
/// [`HandlerError::permanent`] for failures that no retry can fix.
pub struct HandlerError {
    permanent: bool,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        HandlerError {
            permanent: false,
            source: e.into(),
        }
    }

    /// A failure no retry can fix; the message is dead-lettered at once.
    pub fn permanent(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        HandlerError {
            permanent: true,
            source: e.into(),
        }
    }

    /// Whether this failure is permanent.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.permanent {
            "permanent"
        } else {
            "transient"
        };
        write!(f, "HandlerError({kind}: {:?})", self.source)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl<E> From<E> for HandlerError
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn from(e: E) -> Self {
        HandlerError::transient(e)
    }
}

/// The boxed future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A type-erased handler: takes the decoded event and its context.
pub(crate) type ErasedHandler = Arc<dyn Fn(HandlerContext) -> HandlerFuture + Send + Sync>;

pub(crate) fn typed<T, F, Fut>(handler: F) -> ErasedHandler
where
    T: DomainEvent,
    F: Fn(T, HandlerContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |ctx: HandlerContext| {
        let handler = handler.clone();
        Box::pin(async move {
            // Data that does not fit the type will not fit on a retry either.
            let event: T = ctx.event.to_typed().map_err(HandlerError::permanent)?;
            handler(event, ctx).await
        })
    })
}

pub(crate) fn untyped<F, Fut>(handler: F) -> ErasedHandler
where
    F: Fn(HandlerContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    Arc::new(move |ctx: HandlerContext| Box::pin(handler(ctx)))
}
