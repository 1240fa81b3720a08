//! Handlers and the errors they return.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::aggregate::ExecuteError;
use crate::error::{BoxError, CodecError};
use crate::event::{DomainEvent, Event};
use crate::store::StoreError;

/// What a handler knows about the message it handles, beside the event itself.
#[derive(Clone, Debug)]
pub struct HandlerContext {
    /// The subscription consuming the message (shared by all its messages' contexts).
    pub subscription: Arc<str>,
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
/// `?` and `.into()` classify what they convert, so the common cases need no thought:
///
/// | converted from | kind | why |
/// | --- | --- | --- |
/// | a message: `&str`, `String` (`Err("bad order".into())`) | permanent | a handler that writes a sentence has decided about this event; a retry decides the same |
/// | decode errors: [`CodecError`], `serde_json` data / syntax errors, number, UTF-8, UUID and date parse errors | permanent | the same bytes will not parse on a retry |
/// | [`crate::Error`] `InvalidName`, `PayloadTooLarge`, `HeadersTooLarge`, `Codec` | permanent | the same publish is refused again |
/// | [`StoreError`] `Invalid`, `DuplicateEvent`, `Codec`; [`ExecuteError`] `Rejected`, `Apply` | permanent | the command or the stored data is wrong, not the moment |
/// | anything else (I/O, timeouts, connection and conflict errors, your own types) | transient | it may work later |
///
/// The kind is decided by the error and its `source()` chain. Your own error type converts as
/// transient; say otherwise where you return it, with [`HandlerError::permanent`] or the
/// [`HandlerResultExt`] helpers: `validate(&order).permanent()?`.
///
/// Errors must be `Send + Sync + 'static` to convert: handlers run on a multi-threaded pool and
/// the error may cross threads on its way to the dead-letter reason. An error holding an `Rc`
/// or a `Box<dyn Error>` without `Send + Sync` does not convert; keep its text instead,
/// `HandlerError::transient(e.to_string())`.
pub struct HandlerError {
    permanent: bool,
    source: BoxError,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(e: impl Into<BoxError>) -> Self {
        HandlerError {
            permanent: false,
            source: e.into(),
        }
    }

    /// A failure no retry can fix; the message is dead-lettered at once.
    pub fn permanent(e: impl Into<BoxError>) -> Self {
        HandlerError {
            permanent: true,
            source: e.into(),
        }
    }

    /// Whether this failure is permanent.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The error the handler returned.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
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
    E: Into<BoxError>,
{
    /// Classifies the error (see the table on [`HandlerError`]).
    fn from(e: E) -> Self {
        let source = e.into();
        HandlerError {
            permanent: is_permanent(&*source),
            source,
        }
    }
}

/// `.permanent()` / `.transient()` on any `Result`, to say how its error should be handled:
/// `validate(&order).permanent()?`.
pub trait HandlerResultExt<T> {
    /// The error, if any, as a permanent [`HandlerError`] (dead-lettered at once).
    fn permanent(self) -> Result<T, HandlerError>;
    /// The error, if any, as a transient [`HandlerError`] (retried with backoff).
    fn transient(self) -> Result<T, HandlerError>;
}

impl<T, E: Into<BoxError>> HandlerResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent)
    }

    fn transient(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::transient)
    }
}

/// Whether a converted error is one that no retry can fix: a plain message, or a decode or
/// validation error anywhere in its source chain.
fn is_permanent(error: &(dyn std::error::Error + 'static)) -> bool {
    if is_message(error) {
        return true;
    }
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(known) = known_kind(e) {
            return known;
        }
        next = e.source();
    }
    false
}

/// The kind of the error types longshore knows, `None` for the rest.
fn known_kind(e: &(dyn std::error::Error + 'static)) -> Option<bool> {
    use crate::error::Error;
    if let Some(e) = e.downcast_ref::<serde_json::Error>() {
        // An I/O error under serde_json (a reader failed) may heal; bad JSON will not.
        return Some(!e.is_io());
    }
    if let Some(e) = e.downcast_ref::<Error>() {
        let refused = matches!(
            e,
            Error::InvalidName { .. }
                | Error::PayloadTooLarge { .. }
                | Error::HeadersTooLarge(_)
                | Error::Codec(_)
        );
        // Transient kinds may still carry a decode error as their source: look further.
        return refused.then_some(true);
    }
    if let Some(e) = e.downcast_ref::<StoreError>() {
        if let StoreError::Backend(inner) = e {
            // Transparent: its `source()` skips the inner error itself.
            return known_kind(inner);
        }
        let wrong = matches!(
            e,
            StoreError::Invalid { .. } | StoreError::DuplicateEvent { .. } | StoreError::Codec(_)
        );
        return wrong.then_some(true);
    }
    if let Some(e) = e.downcast_ref::<ExecuteError>() {
        return Some(!e.is_retryable());
    }
    let decode = e.is::<CodecError>()
        || e.is::<std::num::ParseIntError>()
        || e.is::<std::num::ParseFloatError>()
        || e.is::<std::str::ParseBoolError>()
        || e.is::<std::str::Utf8Error>()
        || e.is::<std::string::FromUtf8Error>()
        || e.is::<uuid::Error>()
        || e.is::<chrono::ParseError>();
    decode.then_some(true)
}

/// Whether the error is a plain message (`&str`, `String`, `Cow<str>` converted into a box).
///
/// std builds those as a private type, so it cannot be named for a downcast; it is recognised
/// by what it is: no source, and a `Debug` that is the quoted text of its `Display`. A typed
/// error's `Debug` names its type, so it never looks like that.
fn is_message(e: &(dyn std::error::Error + 'static)) -> bool {
    e.source().is_none() && format!("{e:?}") == format!("{:?}", e.to_string())
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
    Arc::new(move |ctx: HandlerContext| -> HandlerFuture {
        // The handler reads `ctx.event.data` as a `Value`. Data kept as text that is JSON but
        // no `Value` (nested too deep, a number beyond f64) is refused here, as decoding it
        // was before data stayed text, so no handler reads the `null` that stands in for it.
        if let Err(e) = ctx.event.data.try_value() {
            let error = HandlerError::permanent(CodecError::Data {
                event_type: ctx.event.event_type.clone(),
                message: e.to_string(),
            });
            return Box::pin(async move { Err(error) });
        }
        Box::pin(handler(ctx))
    })
}
