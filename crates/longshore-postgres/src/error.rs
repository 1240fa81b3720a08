//! [`PgError`], what can go wrong in the adapter, and its mapping into longshore's typed
//! errors ([`longshore_core::Error`] for the queue, [`StoreError`] for the store).
//!
//! SQLSTATE classes decide: `08` (connection), `57P0x` (server shutting down or the backend
//! was terminated) and `53` (out of resources) are retryable connection problems; `28` and
//! `42501` are authorization failures; `40001` (serialization failure) and `40P01` (deadlock)
//! are transient conflicts. Unique violations (`23505`) are turned into
//! [`StoreError::WrongExpectedVersion`] or [`StoreError::DuplicateEvent`] where they happen.

use std::future::Future;
use std::time::Duration;

use longshore_core::{CodecError, Error, StoreError};

use crate::BACKEND;

/// An error of the Postgres adapter, before it becomes a [`longshore_core::Error`] or a
/// [`StoreError`] (see the `From` impls). Messages never contain the URL: sqlx's server errors
/// carry the server's message only, and connection errors are I/O errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// A query, a connection or the pool failed.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// Applying the embedded migrations to a schema failed. Not retryable.
    #[error("migrating schema {schema:?}: {source}")]
    Migrate {
        /// The schema being migrated.
        schema: String,
        /// What sqlx's migrator said.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A message's headers could not be written as JSON. Not retryable.
    #[error("encoding message headers: {0}")]
    EncodeHeaders(#[source] serde_json::Error),
    /// A stored row's headers are not a JSON object of strings (a codec error).
    #[error("stored headers: {0}")]
    StoredHeaders(#[source] serde_json::Error),
    /// A stored queue or outbox row is not a message as longshore writes them (another writer
    /// of the table put it there): a codec error naming what was wrong.
    #[error("undecodable stored message: {0}")]
    StoredMessage(String),
}

impl PgError {
    /// SQLSTATE of a database error, if the error came from the server.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            PgError::Sqlx(e) => sqlstate(e),
            _ => None,
        }
    }
}

/// SQLSTATE of a database error, if the error came from the server.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Whether `e` means the statement's connection was lost: the server ended the session
/// (`57P01` after `pg_terminate_backend`, `57P02` crash shutdown, `57P03` not accepting
/// connections yet, class `08` connection exceptions) or the socket or protocol broke. The
/// statement never ran, was rolled back with its session, or (only if the reply to its
/// COMMIT was lost) committed. A pool timeout and a closed pool are not lost connections: a
/// second wait would not help.
pub(crate) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => sqlstate(e).is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_str(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// An error that can tell whether it is a [`connection_lost`] error.
pub(crate) trait LostConnection: std::fmt::Display {
    /// Whether the statement's connection was lost.
    fn lost_connection(&self) -> bool;
}

impl LostConnection for sqlx::Error {
    fn lost_connection(&self) -> bool {
        connection_lost(self)
    }
}

impl LostConnection for PgError {
    fn lost_connection(&self) -> bool {
        matches!(self, PgError::Sqlx(e) if connection_lost(e))
    }
}

impl LostConnection for Error {
    fn lost_connection(&self) -> bool {
        match self {
            Error::Connection {
                source: Some(source),
                ..
            } => source
                .downcast_ref::<sqlx::Error>()
                .is_some_and(connection_lost),
            _ => false,
        }
    }
}

impl LostConnection for StoreError {
    fn lost_connection(&self) -> bool {
        matches!(self, StoreError::Backend(e) if e.lost_connection())
    }
}

/// The pause before the first retry in [`retry_lost`]; it doubles for each further one, up to
/// [`LOST_CONNECTION_MAX_PAUSE`].
const LOST_CONNECTION_PAUSE: Duration = Duration::from_millis(25);

/// The longest pause between two tries in [`retry_lost`].
const LOST_CONNECTION_MAX_PAUSE: Duration = Duration::from_millis(500);

/// Runs one statement (or one short transaction), and again while its connection was lost
/// ([`connection_lost`]), after a short pause that doubles (25 ms up to 500 ms), until
/// `budget` (the configured `connect_timeout`) has passed since the first try: the pool tests
/// an idle connection before handing it out, so the next try normally runs on a live one.
/// Every statement path of the adapter goes through here, so a terminated pooled connection
/// costs a retry, not an error, as it does on the other brokers (RabbitMQ retries a publish
/// on a new channel until its deadline).
///
/// Why a time budget, not a count of tries: when the server terminates connections in sweeps
/// (a failover, an operator's `pg_terminate_backend` loop), the pool's other idle connections
/// and a connection still starting up (a backend signalled during its startup dies at its
/// first statement) fail in the same sweep. How many sweeps a statement meets depends on how
/// long a new connection takes to open, which grows with the machine's load: five tries
/// (375 ms of pauses) were not always enough under a loaded CI run. A budget bounds the wait
/// the way a user configured it, and the error after it is the last one seen.
///
/// `op` gets `true` on a retry. Every statement retried must be idempotent when an earlier
/// try committed and only the reply was lost: settling and claiming only touch rows still
/// leased or claimed as before, an append finds its own events and succeeds, and a publish's
/// retry skips subscriptions that already hold a row with the message's id (see
/// `QueueSql::publish_retry`).
pub(crate) async fn retry_lost<T, E, F, Fut>(
    what: &'static str,
    budget: Duration,
    mut op: F,
) -> Result<T, E>
where
    E: LostConnection,
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let mut tries: u32 = 1;
    let mut pause = LOST_CONNECTION_PAUSE;
    loop {
        match op(tries > 1).await {
            Err(e) if e.lost_connection() && started.elapsed() + pause < budget => {
                tracing::debug!(what, tries, error = %e, "connection lost; trying again on another");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LOST_CONNECTION_MAX_PAUSE);
                tries += 1;
            }
            done => return done,
        }
    }
}

/// The violated constraint's name, for a database error.
pub(crate) fn constraint(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.constraint().map(str::to_string),
        _ => None,
    }
}

impl From<PgError> for Error {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Sqlx(e) => from_sqlx(e),
            PgError::Migrate { .. } | PgError::EncodeHeaders(_) => Error::Backend {
                backend: BACKEND,
                message: e.to_string(),
                retryable: false,
                source: Some(Box::new(e)),
            },
            PgError::StoredHeaders(_) | PgError::StoredMessage(_) => {
                Error::Codec(CodecError::Malformed(e.to_string()))
            }
        }
    }
}

/// Serialization failures and deadlocks become [`StoreError::Conflict`], unreadable stored
/// headers a codec error, everything else [`StoreError::Backend`].
impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match e.sqlstate().as_deref() {
            Some("40001") | Some("40P01") => StoreError::Conflict(e.to_string()),
            _ => match e {
                PgError::StoredHeaders(_) | PgError::StoredMessage(_) => {
                    StoreError::Codec(CodecError::Malformed(e.to_string()))
                }
                other => StoreError::Backend(other.into()),
            },
        }
    }
}

/// The classification by error kind and SQLSTATE described in the module docs.
fn from_sqlx(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => Error::Connection {
            backend: BACKEND,
            message: e.to_string(),
            source: Some(Box::new(e)),
        },
        sqlx::Error::PoolClosed => Error::Closed("postgres pool"),
        sqlx::Error::Configuration(_) => {
            Error::Config(format!("{BACKEND}: invalid connection settings"))
        }
        sqlx::Error::Database(_) => from_database(e),
        other => Error::backend(BACKEND, false, other),
    }
}

/// A server error, by its SQLSTATE.
fn from_database(e: sqlx::Error) -> Error {
    let code = sqlstate(&e).unwrap_or_default();
    let message = e.to_string();
    if code.starts_with("28") || code == "42501" {
        Error::Unauthorized {
            backend: BACKEND,
            message,
        }
    } else if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") {
        Error::Connection {
            backend: BACKEND,
            message,
            source: Some(Box::new(e)),
        }
    } else {
        let retryable = matches!(code.as_str(), "40001" | "40P01" | "55P03");
        Error::Backend {
            backend: BACKEND,
            message,
            retryable,
            source: Some(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(e: sqlx::Error) -> Error {
        PgError::from(e).into()
    }

    #[test]
    fn io_is_retryable_connection() {
        let e = core(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        )));
        assert!(matches!(e, Error::Connection { .. }));
        assert!(e.is_retryable());
        assert!(!core(sqlx::Error::RowNotFound).is_retryable());
        assert!(matches!(core(sqlx::Error::PoolClosed), Error::Closed(_)));
    }

    /// A lost-connection error from the server (`57P01`, as after `pg_terminate_backend`).
    struct Lost;

    impl std::fmt::Display for Lost {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("terminating connection due to administrator command")
        }
    }

    impl LostConnection for Lost {
        fn lost_connection(&self) -> bool {
            true
        }
    }

    /// Runs `retry_lost` on an op that loses its connection `failures` times, then succeeds;
    /// returns the outcome and how many tries it made. The clock is paused, so the pauses
    /// cost no real time and the budget is measured exactly.
    async fn lose(failures: u32, budget: Duration) -> (Result<(), Lost>, u32) {
        let tries = std::cell::Cell::new(0);
        let outcome = retry_lost("test", budget, |_| {
            tries.set(tries.get() + 1);
            let fail = tries.get() <= failures;
            async move {
                if fail {
                    Err(Lost)
                } else {
                    Ok(())
                }
            }
        })
        .await;
        (outcome, tries.get())
    }

    /// Many sweeps in a row (more than the five tries the adapter used to make) still end in
    /// success within the budget; a connection that stays lost fails once the budget is
    /// spent, not before and not never.
    #[tokio::test(start_paused = true)]
    async fn lost_connections_are_retried_for_the_budget() {
        let (outcome, tries) = lose(12, Duration::from_secs(10)).await;
        assert!(outcome.is_ok(), "12 lost connections within 10 s");
        assert_eq!(tries, 13);

        let started = tokio::time::Instant::now();
        let (outcome, tries) = lose(u32::MAX, Duration::from_secs(2)).await;
        assert!(outcome.is_err(), "a connection lost for good fails");
        let spent = started.elapsed();
        assert!(
            spent < Duration::from_secs(2),
            "within the budget: {spent:?}"
        );
        assert!(
            spent >= Duration::from_millis(1500),
            "used the budget: {spent:?}"
        );
        assert!(tries > 5, "{tries} tries");
    }

    #[test]
    fn stored_headers_are_a_codec_error() {
        let bad = serde_json::from_str::<u8>("x").unwrap_err();
        let store: StoreError = PgError::StoredHeaders(bad).into();
        assert!(
            matches!(store, StoreError::Codec(CodecError::Malformed(ref m)) if m.starts_with("stored headers")),
            "{store:?}"
        );
        let store: StoreError = PgError::from(sqlx::Error::PoolTimedOut).into();
        assert!(
            matches!(store, StoreError::Backend(Error::Connection { .. })),
            "{store:?}"
        );
    }
}
