//! [`SqliteError`], what can go wrong in the adapter, and its mapping into longshore's typed
//! errors ([`longshore_core::Error`] for the queue, [`StoreError`] for the store).
//!
//! SQLite's primary result codes decide: `SQLITE_BUSY`/`SQLITE_LOCKED` (5, 6) after the busy
//! timeout is [`SqliteError::Locked`] (retryable), `SQLITE_READONLY` (8) is
//! [`SqliteError::ReadOnly`], `SQLITE_CANTOPEN` (14) is [`SqliteError::Open`],
//! `SQLITE_NOTADB` (26) is [`SqliteError::NotADatabase`], `SQLITE_CORRUPT` (11) is
//! [`SqliteError::Corrupt`].

use std::path::{Path, PathBuf};

use longshore_core::{CodecError, Error, StoreError};

use crate::BACKEND;

/// An error of the SQLite adapter, before it becomes a [`longshore_core::Error`] or a
/// [`StoreError`] (see the `From` impls). [`SqliteError::of`] finds it again in a core error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The database file cannot be opened or created (its directory is missing or not
    /// writable, or the path is a directory). Not retryable.
    #[error("cannot open or create the database file {path:?}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite or the file system said.
        message: String,
    },
    /// The file exists but is not an SQLite database (or is encrypted). Not retryable.
    #[error("{path:?} is not an SQLite database")]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The file (or its directory, where the WAL lives) is read-only, or it was opened with
    /// `mode=ro`, and a write was attempted. Not retryable.
    #[error("the database file {path:?} is read-only: {message}")]
    ReadOnly {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        message: String,
    },
    /// Another connection or process held the write lock for longer than the busy timeout.
    /// Retryable.
    #[error("the database is locked: another writer held it past busy_timeout ({message})")]
    Locked {
        /// What SQLite said.
        message: String,
    },
    /// SQLite found the file damaged. Not retryable.
    #[error("the database file is corrupt: {message}")]
    Corrupt {
        /// What SQLite said.
        message: String,
    },
    /// The file's longshore schema is newer than this build knows: written by a newer
    /// longshore. Refused rather than guessed at. Not retryable.
    #[error("the database's longshore schema is version {found}, newer than this build's {supported}: upgrade longshore")]
    SchemaTooNew {
        /// The version recorded in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// Any other query or pool failure.
    #[error(transparent)]
    Sqlx(sqlx::Error),
    /// A message's headers could not be written as JSON. Not retryable.
    #[error("encoding message headers: {0}")]
    EncodeHeaders(#[source] serde_json::Error),
    /// A stored row's headers are not a JSON object of strings (a codec error).
    #[error("stored headers: {0}")]
    StoredHeaders(#[source] serde_json::Error),
    /// A stored queue or outbox row is not a message as longshore writes them.
    #[error("undecodable stored message: {0}")]
    StoredMessage(String),
}

/// SQLite's primary result code of a database error.
pub(crate) fn primary_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff),
        _ => None,
    }
}

impl SqliteError {
    /// Classifies a sqlx error of the database at `path`.
    pub(crate) fn at(path: &Path, e: sqlx::Error) -> Self {
        let message = match &e {
            sqlx::Error::Database(db) => db.message().to_string(),
            other => other.to_string(),
        };
        match primary_code(&e) {
            Some(5 | 6) => SqliteError::Locked { message },
            Some(8) => SqliteError::ReadOnly {
                path: path.to_path_buf(),
                message,
            },
            Some(11) => SqliteError::Corrupt { message },
            Some(14) => SqliteError::Open {
                path: path.to_path_buf(),
                message,
            },
            Some(26) => SqliteError::NotADatabase {
                path: path.to_path_buf(),
            },
            _ => SqliteError::Sqlx(e),
        }
    }

    /// The same error again, for each caller of a shared write ([`longshore_core::GroupCommit`])
    /// to get its own typed error; `None` for the kinds that wrap another library's error,
    /// which cannot be cloned.
    pub(crate) fn replicate(&self) -> Option<SqliteError> {
        Some(match self {
            SqliteError::Open { path, message } => SqliteError::Open {
                path: path.clone(),
                message: message.clone(),
            },
            SqliteError::NotADatabase { path } => SqliteError::NotADatabase { path: path.clone() },
            SqliteError::ReadOnly { path, message } => SqliteError::ReadOnly {
                path: path.clone(),
                message: message.clone(),
            },
            SqliteError::Locked { message } => SqliteError::Locked {
                message: message.clone(),
            },
            SqliteError::Corrupt { message } => SqliteError::Corrupt {
                message: message.clone(),
            },
            SqliteError::SchemaTooNew { found, supported } => SqliteError::SchemaTooNew {
                found: *found,
                supported: *supported,
            },
            SqliteError::StoredMessage(m) => SqliteError::StoredMessage(m.clone()),
            SqliteError::Sqlx(_)
            | SqliteError::EncodeHeaders(_)
            | SqliteError::StoredHeaders(_) => return None,
        })
    }

    /// The adapter's error behind a core error, if there is one.
    pub fn of(e: &Error) -> Option<&SqliteError> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(found) = s.downcast_ref::<SqliteError>() {
                return Some(found);
            }
            source = s.source();
        }
        None
    }
}

/// Classifies without a path (errors of a statement on an already open file).
impl From<sqlx::Error> for SqliteError {
    fn from(e: sqlx::Error) -> Self {
        SqliteError::at(Path::new(""), e)
    }
}

impl From<SqliteError> for Error {
    fn from(e: SqliteError) -> Self {
        match e {
            SqliteError::Sqlx(e) => from_sqlx(e),
            SqliteError::ReadOnly { .. } => Error::Unauthorized {
                backend: BACKEND,
                message: e.to_string(),
            },
            SqliteError::Locked { .. } => Error::Backend {
                backend: BACKEND,
                message: e.to_string(),
                retryable: true,
                source: Some(Box::new(e)),
            },
            SqliteError::StoredHeaders(_) | SqliteError::StoredMessage(_) => {
                Error::Codec(CodecError::Malformed(e.to_string()))
            }
            other => Error::Backend {
                backend: BACKEND,
                message: other.to_string(),
                retryable: false,
                source: Some(Box::new(other)),
            },
        }
    }
}

/// A lock held past the timeout is a [`StoreError::Conflict`] (retry the command), unreadable
/// stored headers a codec error, everything else [`StoreError::Backend`].
impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> Self {
        match e {
            SqliteError::StoredHeaders(_) | SqliteError::StoredMessage(_) => {
                StoreError::Codec(CodecError::Malformed(e.to_string()))
            }
            other => StoreError::Backend(other.into()),
        }
    }
}

/// By error kind: I/O and pool timeouts are connection problems, a closed pool is closed.
fn from_sqlx(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            Error::Connection {
                backend: BACKEND,
                message: e.to_string(),
                source: Some(Box::new(e)),
            }
        }
        sqlx::Error::PoolClosed => Error::Closed("sqlite pool"),
        sqlx::Error::Configuration(_) => {
            Error::Config(format!("{BACKEND}: invalid connection settings"))
        }
        other => Error::backend(BACKEND, false, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_are_found_again() {
        let e: Error = SqliteError::NotADatabase {
            path: PathBuf::from("x.db"),
        }
        .into();
        assert!(!e.is_retryable());
        assert!(matches!(
            SqliteError::of(&e),
            Some(SqliteError::NotADatabase { .. })
        ));
        let e: Error = SqliteError::Locked {
            message: "database is locked".into(),
        }
        .into();
        assert!(e.is_retryable(), "{e:?}");
        assert!(matches!(
            Error::from(SqliteError::from(sqlx::Error::PoolClosed)),
            Error::Closed(_)
        ));
    }
}
