//! Error types shared by every port.
//!
//! Each error says whether retrying the same call may succeed ([`Error::is_retryable`]), so the
//! consumer runtime and the outbox relay can decide between backing off and giving up without
//! knowing which broker produced the error.

use std::time::Duration;

/// A boxed error from a client library, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for the broker ports.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a publisher, subscriber or delivery.
///
/// Messages never contain credentials: adapters build them from redacted URLs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name (topic, pattern, subscription, queue, schema ...) failed validation.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidName {
        /// What the name was for ("topic", "subscription" ...).
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The payload is larger than the backend accepts; nothing was sent.
    #[error("message of {size} bytes exceeds the backend's limit of {limit} bytes")]
    PayloadTooLarge {
        /// Payload size in bytes.
        size: usize,
        /// The backend's limit.
        limit: usize,
    },
    /// Headers are too many or too large; nothing was sent.
    #[error("headers too large: {0}")]
    HeadersTooLarge(String),
    /// A header longshore reads (a schedule or expiry time) has a value it cannot read;
    /// nothing was sent.
    #[error("header {name}: {reason}")]
    InvalidHeader {
        /// The header.
        name: &'static str,
        /// What is wrong with its value.
        reason: &'static str,
    },
    /// The broker could not be reached (or the connection dropped). Retryable.
    #[error("connection to {backend} failed: {message}")]
    Connection {
        /// Backend name ("rabbitmq", "nats" ...).
        backend: &'static str,
        /// What happened, without credentials.
        message: String,
        /// The client error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The broker refused our credentials or permissions. Not retryable.
    #[error("{backend} refused access: {message}")]
    Unauthorized {
        /// Backend name.
        backend: &'static str,
        /// What happened, without credentials.
        message: String,
    },
    /// The broker did not take responsibility for a message (nack, unroutable, rejected).
    #[error("{backend} did not accept the message: {message}")]
    Rejected {
        /// Backend name.
        backend: &'static str,
        /// The broker's reason.
        message: String,
        /// Whether sending the same message again may succeed.
        retryable: bool,
    },
    /// A bounded queue is full and stayed full for the publish timeout. Retryable.
    #[error("queue {queue:?} is full ({capacity} messages) for longer than {waited:?}")]
    Backpressure {
        /// The full queue.
        queue: String,
        /// Its capacity.
        capacity: usize,
        /// How long the publisher waited for room.
        waited: Duration,
    },
    /// An operation did not finish in time. Retryable; the outcome may be unknown.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The limit that was hit.
        after: Duration,
    },
    /// The handle was closed.
    #[error("{0} is closed")]
    Closed(&'static str),
    /// An encoding or decoding problem.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A URL or configuration value is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The requested operation is not supported by this backend.
    #[error("{backend} does not support {operation}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// The missing operation.
        operation: &'static str,
    },
    /// Any other backend error.
    #[error("{backend}: {message}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// What happened, without credentials.
        message: String,
        /// Whether retrying may help.
        retryable: bool,
        /// The client error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Whether the same call may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connection { .. } | Error::Backpressure { .. } | Error::Timeout { .. } => true,
            Error::Rejected { retryable, .. } | Error::Backend { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Shorthand for a connection error without a source.
    pub fn connection(backend: &'static str, message: impl Into<String>) -> Self {
        Error::Connection {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// The same error again, for every message of a batch that failed as a whole. Errors are
    /// not `Clone` (their sources are not); the copy keeps the kind, the text and the
    /// retryability, and drops the source.
    pub fn copy(&self) -> Error {
        match self {
            Error::InvalidName {
                kind,
                value,
                reason,
            } => Error::InvalidName {
                kind,
                value: value.clone(),
                reason,
            },
            Error::PayloadTooLarge { size, limit } => Error::PayloadTooLarge {
                size: *size,
                limit: *limit,
            },
            Error::HeadersTooLarge(m) => Error::HeadersTooLarge(m.clone()),
            Error::InvalidHeader { name, reason } => Error::InvalidHeader { name, reason },
            Error::Connection {
                backend, message, ..
            } => Error::connection(backend, message.clone()),
            Error::Unauthorized { backend, message } => Error::Unauthorized {
                backend,
                message: message.clone(),
            },
            Error::Rejected {
                backend,
                message,
                retryable,
            } => Error::Rejected {
                backend,
                message: message.clone(),
                retryable: *retryable,
            },
            Error::Backpressure {
                queue,
                capacity,
                waited,
            } => Error::Backpressure {
                queue: queue.clone(),
                capacity: *capacity,
                waited: *waited,
            },
            Error::Timeout { operation, after } => Error::Timeout {
                operation,
                after: *after,
            },
            Error::Closed(what) => Error::Closed(what),
            Error::Codec(e) => Error::Codec(e.clone()),
            Error::Config(m) => Error::Config(m.clone()),
            Error::Unsupported { backend, operation } => Error::Unsupported { backend, operation },
            Error::Backend {
                backend,
                message,
                retryable,
                ..
            } => Error::Backend {
                backend,
                message: message.clone(),
                retryable: *retryable,
                source: None,
            },
        }
    }

    /// Shorthand for a backend error that keeps its source.
    pub fn backend(backend: &'static str, retryable: bool, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Error::Backend {
            backend,
            message: source.to_string(),
            retryable,
            source: Some(source),
        }
    }
}

/// A `publish_batch` that did not fully succeed.
///
/// Every message of the batch is either confirmed or listed in `failed` together with its own
/// error, so the caller can retry exactly what was not taken. Nothing is dropped silently.
#[derive(Debug, thiserror::Error)]
#[error("{} of {} messages were not confirmed; first error: {}", failed.len(), total, first_error(failed))]
pub struct BatchError {
    /// Number of messages in the batch.
    pub total: usize,
    /// The messages the backend did not confirm, each with its index in the batch and the error.
    pub failed: Vec<FailedMessage>,
}

/// One message of a batch that the backend did not confirm.
#[derive(Debug)]
pub struct FailedMessage {
    /// Position in the batch that was passed to `publish_batch`.
    pub index: usize,
    /// The message, returned to the caller untouched.
    pub message: crate::Message,
    /// Why it was not confirmed.
    pub error: Error,
}

fn first_error(failed: &[FailedMessage]) -> String {
    failed
        .first()
        .map(|f| f.error.to_string())
        .unwrap_or_default()
}

impl BatchError {
    /// Whether every failure is retryable.
    pub fn is_retryable(&self) -> bool {
        self.failed.iter().all(|f| f.error.is_retryable())
    }

    /// The end of every `publish_batch`: `Ok` when nothing failed, otherwise the failures in
    /// batch order.
    pub fn check(total: usize, mut failed: Vec<FailedMessage>) -> Result<(), BatchError> {
        if failed.is_empty() {
            return Ok(());
        }
        failed.sort_by_key(|f| f.index);
        Err(BatchError { total, failed })
    }

    /// Builds a batch error where every message failed with a copy of the same reason.
    pub fn all(messages: Vec<crate::Message>, make: impl Fn() -> Error) -> Self {
        let total = messages.len();
        let failed = messages
            .into_iter()
            .enumerate()
            .map(|(index, message)| FailedMessage {
                index,
                message,
                error: make(),
            })
            .collect();
        BatchError { total, failed }
    }
}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Self {
        let retryable = e.is_retryable();
        let message = e.to_string();
        Error::Backend {
            backend: "batch",
            message,
            retryable,
            source: Some(Box::new(e)),
        }
    }
}

/// Why a message could not be turned into an event (or the reverse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The body is empty.
    #[error("empty message body")]
    Empty,
    /// The body is not UTF-8.
    #[error("body is not valid UTF-8 at byte {valid_up_to}")]
    Utf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The body is not JSON, or not the envelope's shape (missing field, wrong type).
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// `event_id` is not a UUID.
    #[error("event_id {0:?} is not a UUID")]
    BadId(String),
    /// `timestamp` is neither RFC 3339 nor a naive ISO 8601 date-time.
    #[error("timestamp {0:?} is neither RFC 3339 nor naive ISO 8601")]
    BadTimestamp(String),
    /// The event's data does not fit the typed event.
    #[error("data of {event_type:?} does not fit: {message}")]
    Data {
        /// The event type.
        event_type: String,
        /// What serde said.
        message: String,
    },
    /// Encoding failed.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// A CloudEvent lacks a required attribute (`id`, `source`, `type`, `specversion`).
    #[error("CloudEvent lacks the required attribute {0:?}")]
    MissingAttribute(&'static str),
    /// A CloudEvent's `specversion` is not `1.0`.
    #[error("unsupported CloudEvents specversion {0:?}: longshore reads 1.0")]
    SpecVersion(String),
    /// A CloudEvent attribute longshore cannot take.
    #[error("CloudEvent attribute {name:?}: {reason}")]
    BadAttribute {
        /// The attribute.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}
