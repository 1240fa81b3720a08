//! The adapter's own errors and their mapping into [`longshore_core::Error`].

use std::time::Duration;

use async_nats::jetstream;
use longshore_core::Error;

use crate::BACKEND;

/// JetStream error code: consumer not found.
pub(crate) const CONSUMER_NOT_FOUND: u64 = 10014;
/// JetStream error code: stream name already in use (created concurrently).
pub(crate) const STREAM_NAME_IN_USE: u64 = 10058;
/// JetStream error code: stream not found.
pub(crate) const STREAM_NOT_FOUND: u64 = 10059;

/// What went wrong talking to NATS. Converted into [`longshore_core::Error`] at the ports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The server could not be reached (or the connection was lost). Retryable.
    #[error("cannot reach NATS at {url}: {reason}")]
    Unreachable {
        /// The redacted URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The server refused our credentials.
    #[error("NATS at {url} refused the credentials: {reason}")]
    AuthenticationFailed {
        /// The redacted URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The server runs without JetStream (or this account has none).
    #[error(
        "JetStream is not enabled for this account on the server (start nats-server with -js)"
    )]
    JetStreamDisabled,
    /// The account lacks a permission the adapter needs.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A JetStream API call failed with the server's error.
    #[error("JetStream error {code} during {operation}: {description}")]
    Api {
        /// What the adapter was doing.
        operation: &'static str,
        /// The server's JetStream error code (`err_code`).
        code: u64,
        /// The server's description.
        description: String,
    },
    /// The existing stream does not capture the subjects longshore needs.
    #[error("stream {stream} exists but does not capture {subject}; add it to the stream's subjects or pick another stream")]
    StreamMismatch {
        /// Stream name.
        stream: String,
        /// The subject that is not captured.
        subject: String,
    },
    /// A request timed out.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The limit.
        after: Duration,
    },
}

impl From<NatsError> for Error {
    fn from(e: NatsError) -> Self {
        match e {
            NatsError::Unreachable { .. } => Error::Connection {
                backend: BACKEND,
                message: e.to_string(),
                source: None,
            },
            NatsError::AuthenticationFailed { .. } | NatsError::PermissionDenied(_) => {
                Error::Unauthorized {
                    backend: BACKEND,
                    message: e.to_string(),
                }
            }
            NatsError::JetStreamDisabled => Error::Unsupported {
                backend: BACKEND,
                operation: "JetStream (the server runs without it: start nats-server with -js)",
            },
            NatsError::StreamMismatch { .. } => Error::Config(e.to_string()),
            NatsError::Timeout { operation, after } => Error::Timeout { operation, after },
            NatsError::Api { code, .. } => {
                // 10008 JetStream not ready / temporarily unavailable, 10023 insufficient
                // resources, 10077 max messages: the same call may work later.
                let retryable = matches!(code, 10008 | 10023 | 10077);
                Error::Backend {
                    backend: BACKEND,
                    message: e.to_string(),
                    retryable,
                    source: None,
                }
            }
        }
    }
}

/// The server's answer to JetStream API call `operation` as a [`NatsError::Api`].
pub(crate) fn api_error(operation: &'static str, e: &jetstream::Error) -> NatsError {
    NatsError::Api {
        operation,
        code: e.error_code().0,
        description: e.to_string(),
    }
}
