//! Errors of the Kafka adapter and their mapping onto [`longshore_core::Error`].

use longshore_core::Error;
use rdkafka::error::RDKafkaErrorCode as Code;

use crate::BACKEND;

/// What went wrong inside the Kafka adapter (kept as the `source` of a core error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// An error reported by librdkafka.
    #[error("{operation}: {source}")]
    Client {
        /// What the adapter was doing.
        operation: &'static str,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic could not be created or found.
    #[error("topic {topic:?}: {reason}")]
    Topic {
        /// The Kafka topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

impl From<KafkaError> for Error {
    fn from(e: KafkaError) -> Self {
        match e {
            KafkaError::Client { operation, source } => map(operation, source),
            other => Error::Backend {
                backend: BACKEND,
                message: other.to_string(),
                retryable: true,
                source: Some(Box::new(other)),
            },
        }
    }
}

/// Maps a librdkafka error, classifying it as retryable or not.
pub(crate) fn map(operation: &'static str, e: rdkafka::error::KafkaError) -> Error {
    let code = e.rdkafka_error_code();
    let message = format!("{operation}: {e}");
    let wrap = |e: rdkafka::error::KafkaError| -> Option<longshore_core::BoxError> {
        Some(Box::new(KafkaError::Client {
            operation,
            source: e,
        }))
    };
    match code {
        Some(
            Code::TopicAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::SaslAuthenticationFailed
            | Code::Authentication
            | Code::IllegalSASLState
            | Code::TransactionalIdAuthorizationFailed,
        ) => Error::Unauthorized {
            backend: BACKEND,
            message,
        },
        Some(Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::InvalidRecord) => {
            Error::Rejected {
                backend: BACKEND,
                message,
                retryable: false,
            }
        }
        Some(Code::InvalidTopic | Code::InvalidRequiredAcks | Code::InvalidConfig) => {
            Error::Rejected {
                backend: BACKEND,
                message,
                retryable: false,
            }
        }
        Some(Code::MessageTimedOut | Code::OperationTimedOut | Code::RequestTimedOut) => {
            Error::Timeout {
                operation,
                after: std::time::Duration::ZERO,
            }
        }
        Some(Code::QueueFull) => Error::Backpressure {
            queue: "librdkafka producer queue".into(),
            capacity: 0,
            waited: std::time::Duration::ZERO,
        },
        Some(
            Code::AllBrokersDown
            | Code::BrokerTransportFailure
            | Code::Resolve
            | Code::NetworkException
            | Code::LeaderNotAvailable
            | Code::NotLeaderForPartition
            | Code::NotEnoughReplicas
            | Code::NotEnoughReplicasAfterAppend
            | Code::ReplicaNotAvailable
            | Code::BrokerDestroy
            | Code::DestroyBroker,
        ) => Error::Connection {
            backend: BACKEND,
            message,
            source: wrap(e),
        },
        Some(Code::PurgeQueue | Code::PurgeInflight | Code::Fatal) => Error::Backend {
            backend: BACKEND,
            message,
            retryable: true,
            source: wrap(e),
        },
        _ if matches!(e, rdkafka::error::KafkaError::ClientConfig(..)) => Error::Config(message),
        _ => Error::Backend {
            backend: BACKEND,
            message,
            retryable: true,
            source: wrap(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let e = map(
            "publish",
            rdkafka::error::KafkaError::MessageProduction(Code::MessageSizeTooLarge),
        );
        assert!(matches!(
            e,
            Error::Rejected {
                retryable: false,
                ..
            }
        ));
        let e = map(
            "publish",
            rdkafka::error::KafkaError::MessageProduction(Code::MessageTimedOut),
        );
        assert!(e.is_retryable());
        let e = map(
            "connect",
            rdkafka::error::KafkaError::MetadataFetch(Code::AllBrokersDown),
        );
        assert!(matches!(e, Error::Connection { .. }) && e.is_retryable());
        let e = map(
            "connect",
            rdkafka::error::KafkaError::MetadataFetch(Code::SaslAuthenticationFailed),
        );
        assert!(matches!(e, Error::Unauthorized { .. }) && !e.is_retryable());
    }
}
