//! Mapping sqlx errors onto longshore's typed errors.
//!
//! SQLSTATE classes decide: `08` (connection), `57P0x` (server shutting down or the backend
//! was terminated) and `53` (out of resources) are retryable connection problems; `28` and
//! `42501` are authorization failures; `40001` (serialization failure) and `40P01` (deadlock)
//! are transient conflicts. Unique violations (`23505`) are turned into
//! [`StoreError::WrongExpectedVersion`] or [`StoreError::DuplicateEvent`] where they happen.

use longshore_core::{Error, StoreError};

use crate::BACKEND;

/// SQLSTATE of a database error, if the error came from the server.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The violated constraint's name, for a database error.
pub(crate) fn constraint(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.constraint().map(str::to_string),
        _ => None,
    }
}

/// Converts a sqlx error into a port error. Messages never contain the URL: sqlx's server
/// errors carry the server's message only, and connection errors are I/O errors.
pub fn map_error(e: sqlx::Error) -> Error {
    let code = sqlstate(&e);
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
        sqlx::Error::Database(_) => {
            let code = code.unwrap_or_default();
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
        other => Error::backend(BACKEND, false, other),
    }
}

/// Converts a sqlx error into a store error: serialization failures and deadlocks become
/// [`StoreError::Conflict`], everything else [`StoreError::Backend`].
pub fn map_store_error(e: sqlx::Error) -> StoreError {
    match sqlstate(&e).as_deref() {
        Some("40001") | Some("40P01") => StoreError::Conflict(e.to_string()),
        _ => StoreError::Backend(map_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_is_retryable_connection() {
        let e = map_error(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        )));
        assert!(matches!(e, Error::Connection { .. }));
        assert!(e.is_retryable());
        assert!(!map_error(sqlx::Error::RowNotFound).is_retryable());
        assert!(matches!(
            map_error(sqlx::Error::PoolClosed),
            Error::Closed(_)
        ));
    }
}
