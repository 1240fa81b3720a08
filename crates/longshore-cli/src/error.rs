//! The tool's one error type: every failure is one line on stderr and a non-zero exit.

/// Why a command failed. `Display` is the one line printed; no variant carries credentials
/// (URLs are redacted by `longshore` before they reach an error).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Connecting failed (unreachable broker, wrong credentials, unknown scheme).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// Why.
        source: longshore::ConnectError,
    },
    /// `memory://` lives inside one process; the tool is another process.
    #[error("memory:// lives inside one process: the longshore tool cannot attach to another process's memory backend; pass the broker's URL with --url or LONGSHORE_URL (amqp://, kafka://, nats://, postgres://, sqlite://)")]
    MemoryBackend,
    /// A backend operation failed.
    #[error("{0}")]
    Backend(#[from] longshore::Error),
    /// An event-store operation failed.
    #[error("{0}")]
    Store(#[from] longshore::StoreError),
    /// The subscription has no dead letter with this id.
    #[error("no dead letter with id {id} in dlq.{subscription}")]
    NoSuchLetter {
        /// The subscription.
        subscription: String,
        /// The id asked for.
        id: String,
    },
    /// Input the tool could not use (bad JSON, a bad time, a bad header).
    #[error("{0}")]
    Input(String),
    /// Reading a file or stdin failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// Some items of a batch failed (each was reported on its own line already).
    #[error("{failed} of {total} failed")]
    Partial {
        /// How many failed.
        failed: usize,
        /// How many there were.
        total: usize,
    },
    /// An operation did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
}
