//! Errors of the RabbitMQ adapter and their mapping into [`longshore_core::Error`].

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::ErrorKind;
use longshore_core::Error;

use crate::BACKEND;

/// What can go wrong with a single message in this adapter, before it becomes a
/// [`longshore_core::Error`] (see the `From` impl for the mapping).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RabbitError {
    /// The message was published with `mandatory` and no queue is bound for its routing key:
    /// the broker returned it. Maps to a non-retryable [`Error::Rejected`].
    #[error(
        "unroutable: no queue on exchange {exchange:?} is bound for {routing_key:?} ({reply})"
    )]
    Unroutable {
        /// The exchange published to.
        exchange: String,
        /// The routing key (topic).
        routing_key: String,
        /// The broker's reply (`312 NO_ROUTE`).
        reply: String,
    },
    /// The broker answered the publish with a `basic.nack` (internal error, queue limits with
    /// `reject-publish`). Maps to a retryable [`Error::Rejected`].
    #[error("the broker nacked the message")]
    Nacked,
    /// The channel or connection went away before the broker confirmed; the message may or
    /// may not have been stored. Maps to a retryable [`Error::Connection`].
    #[error("no confirm received before the channel closed: {0}")]
    ConfirmLost(String),
}

impl From<RabbitError> for Error {
    fn from(e: RabbitError) -> Self {
        match e {
            RabbitError::Unroutable { .. } => Error::Rejected {
                backend: BACKEND,
                message: e.to_string(),
                retryable: false,
            },
            RabbitError::Nacked => Error::Rejected {
                backend: BACKEND,
                message: e.to_string(),
                retryable: true,
            },
            RabbitError::ConfirmLost(_) => Error::Connection {
                backend: BACKEND,
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
        }
    }
}

/// Maps a lapin error into a typed core error. `what` names the operation. lapin's messages
/// never contain the URL, so they are safe to keep.
pub(crate) fn map_lapin(what: &str, e: lapin::Error) -> Error {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let text = amqp.get_message().as_str().to_string();
            let message = format!("{what}: {text}");
            match amqp.kind() {
                AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => {
                    if text.contains("not found") {
                        Error::Config(format!("{what}: virtual host does not exist ({text})"))
                    } else {
                        Error::Unauthorized {
                            backend: BACKEND,
                            message,
                        }
                    }
                }
                AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)
                | AMQPErrorKind::Hard(AMQPHardError::INTERNALERROR)
                | AMQPErrorKind::Hard(AMQPHardError::RESOURCEERROR) => Error::Connection {
                    backend: BACKEND,
                    message,
                    source: Some(Box::new(e)),
                },
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => Error::Unauthorized {
                    backend: BACKEND,
                    message,
                },
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => Error::Config(message),
                AMQPErrorKind::Soft(AMQPSoftError::CONTENTTOOLARGE) => Error::Rejected {
                    backend: BACKEND,
                    message,
                    retryable: false,
                },
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => Error::Backend {
                    backend: BACKEND,
                    message,
                    retryable: true,
                    source: Some(Box::new(e)),
                },
                AMQPErrorKind::Soft(_) => Error::Backend {
                    backend: BACKEND,
                    message,
                    retryable: true,
                    source: Some(Box::new(e)),
                },
                AMQPErrorKind::Hard(_) => Error::Backend {
                    backend: BACKEND,
                    message,
                    retryable: false,
                    source: Some(Box::new(e)),
                },
            }
        }
        ErrorKind::IOError(_)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::MissingHeartbeatError => Error::Connection {
            backend: BACKEND,
            message: format!("{what}: {e}"),
            source: Some(Box::new(e)),
        },
        _ => Error::Backend {
            backend: BACKEND,
            message: format!("{what}: {e}"),
            retryable: false,
            source: Some(Box::new(e)),
        },
    }
}

/// Whether an error means the channel or connection is gone and a new one may help.
pub(crate) fn is_transport(e: &Error) -> bool {
    matches!(e, Error::Connection { .. })
}

/// Authentication failures arrive as a hard `ACCESS_REFUSED` connection close.
pub(crate) fn map_connect(e: lapin::Error) -> Error {
    if let ErrorKind::ProtocolError(amqp) = e.kind() {
        if matches!(
            amqp.kind(),
            AMQPErrorKind::Hard(_) | AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
        ) && amqp.get_id() == 403
        {
            return Error::Unauthorized {
                backend: BACKEND,
                message: format!("login refused: {}", amqp.get_message().as_str()),
            };
        }
    }
    map_lapin("connect", e)
}
