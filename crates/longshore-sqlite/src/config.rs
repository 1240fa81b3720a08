//! Configuration: the database file, SQLite's durability and locking knobs, and the queue's
//! timings, parsed from a `sqlite://path/to/file.db?…` URL.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use longshore_core::url::SecretUrl;
use longshore_core::Error;

use crate::BACKEND;

/// SQLite's `synchronous` setting in WAL mode: how often a commit waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// A commit is durable once the WAL is synced at the next checkpoint: a power loss may
    /// undo the last commits, an application crash (even SIGKILL) never does. The default.
    Normal,
    /// Every commit syncs the WAL before it returns: durable across power loss, slower.
    Full,
}

impl FromStr for Synchronous {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(Synchronous::Normal),
            "full" => Ok(Synchronous::Full),
            _ => Err(Error::Config(format!(
                "{BACKEND}: synchronous must be normal or full, not {s:?}"
            ))),
        }
    }
}

/// Settings of the SQLite adapter.
///
/// ```
/// use longshore_sqlite::{SqliteConfig, Synchronous};
/// let config = SqliteConfig::from_url("sqlite:///var/lib/app/orders.db?synchronous=full").unwrap();
/// assert_eq!(config.path.to_str(), Some("/var/lib/app/orders.db"));
/// assert_eq!(config.synchronous, Synchronous::Full);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The URL as given (kept redacted in `Debug` like every adapter's, though a file path
    /// holds no credentials).
    pub url: SecretUrl,
    /// The database file: `sqlite:///abs/path.db` is absolute, `sqlite://rel/path.db`
    /// relative to the working directory. Created (not its directory) unless read-only.
    pub path: PathBuf,
    /// How long a write waits for another connection's (or process's) write lock before it
    /// fails with [`crate::SqliteError::Locked`] (URL `busy_timeout` in ms; default 5 s).
    pub busy_timeout: Duration,
    /// Commit durability (URL `synchronous=normal|full`; default normal).
    pub synchronous: Synchronous,
    /// Open the file read-only (URL `mode=ro`): reads work, every write is refused with
    /// [`crate::SqliteError::ReadOnly`]. The schema must already be there.
    pub read_only: bool,
    /// Most pooled reading connections (URL `max_connections`; default 4). Writes go through
    /// one connection per process: SQLite has one writer at a time anyway.
    pub max_connections: u32,
    /// Create or upgrade longshore's tables on connect (URL `migrate=false` to skip).
    pub migrate: bool,
    /// Appends write outbox rows in the same transaction (URL `outbox=false` to skip).
    pub outbox: bool,
    /// How long a relay's claim on outbox rows lasts before another relay may take them.
    pub claim_lease: Duration,
    /// How long a queue delivery stays leased to its consumer without a heartbeat before it is
    /// given to another consumer. Consumers renew it while alive.
    pub visibility_timeout: Duration,
    /// How often idle consumers and catch-up readers look for rows written by other
    /// processes (URL `poll_interval` in ms; default 100 ms). Writers in the same process wake
    /// them at once; SQLite has no cross-process notification.
    pub poll_interval: Duration,
    /// Largest queue payload accepted, in bytes.
    pub max_payload: usize,
}

impl SqliteConfig {
    /// Defaults for the database file `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        SqliteConfig {
            url: SecretUrl::new(format!("sqlite://{}", path.display())),
            path,
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Normal,
            read_only: false,
            max_connections: 4,
            migrate: true,
            outbox: true,
            claim_lease: Duration::from_secs(30),
            visibility_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            max_payload: 16 * 1024 * 1024,
        }
    }

    /// Parses `sqlite://path/to/file.db?busy_timeout=..&synchronous=..&mode=ro&migrate=..&outbox=..&max_connections=..&poll_interval=..`.
    /// The path is taken as written (no percent-decoding); a URL with a user, password or
    /// host (`@`) is refused.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let bad = |what: &str| Error::Config(format!("{BACKEND}: {what}"));
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sqlite") => rest,
            _ => return Err(bad("expected a sqlite://path/to/file.db URL")),
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, q),
            None => (rest, ""),
        };
        let first = path.split('/').next().unwrap_or("");
        if first.contains('@') || first.contains('[') {
            // Never echo it: what looks like user info may be a password.
            return Err(bad(
                "a sqlite:// URL names a file path; it has no user, password or host",
            ));
        }
        if path.is_empty() {
            return Err(bad("the URL names no file (sqlite://path/to/file.db)"));
        }
        let mut config = SqliteConfig::new(path);
        config.url = SecretUrl::new(url);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let millis = || {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| bad(&format!("{key} must be whole milliseconds")))
            };
            match key {
                "busy_timeout" => config.busy_timeout = millis()?,
                "poll_interval" => config.poll_interval = millis()?.max(Duration::from_millis(1)),
                "synchronous" => config.synchronous = value.parse()?,
                "mode" => {
                    config.read_only = match value {
                        "ro" => true,
                        "rw" | "rwc" => false,
                        _ => return Err(bad("mode must be ro, rw or rwc")),
                    }
                }
                "max_connections" => {
                    config.max_connections = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("max_connections must be a positive integer"))?
                }
                "migrate" => {
                    config.migrate =
                        parse_bool(value).ok_or_else(|| bad("migrate must be true or false"))?
                }
                "outbox" => {
                    config.outbox =
                        parse_bool(value).ok_or_else(|| bad("outbox must be true or false"))?
                }
                _ => {
                    let key: String = key.chars().take(40).collect();
                    return Err(bad(&format!("unknown URL parameter {key:?}")));
                }
            }
        }
        Ok(config)
    }

    /// Sets the busy timeout.
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets the commit durability.
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Opens the file read-only.
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Sets whether appends fill the outbox.
    pub fn with_outbox(mut self, outbox: bool) -> Self {
        self.outbox = outbox;
        self
    }

    /// Sets the queue visibility timeout.
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// Sets the outbox claim lease.
    pub fn with_claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = lease;
        self
    }

    /// Sets the cross-process poll interval.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let c = SqliteConfig::from_url("sqlite://orders.db").unwrap();
        assert_eq!(c.path, PathBuf::from("orders.db"));
        assert_eq!(c.synchronous, Synchronous::Normal);
        let c = SqliteConfig::from_url(
            "sqlite:///tmp/a/b.db?busy_timeout=250&synchronous=FULL&mode=ro&outbox=false",
        )
        .unwrap();
        assert_eq!(c.path, PathBuf::from("/tmp/a/b.db"));
        assert_eq!(c.busy_timeout, Duration::from_millis(250));
        assert_eq!(c.synchronous, Synchronous::Full);
        assert!(c.read_only && !c.outbox);
        for bad in [
            "sqlite://",
            "postgres://h/db",
            "sqlite://x.db?synchronous=off",
            "sqlite://x.db?busy_timeout=soon",
            "sqlite://x.db?nope=1",
        ] {
            assert!(
                matches!(SqliteConfig::from_url(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
        let e = SqliteConfig::from_url("sqlite://u:hunter2@[::1/").unwrap_err();
        assert!(matches!(e, Error::Config(_)));
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }
}
