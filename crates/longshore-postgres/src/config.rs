//! Configuration: the URL (never printed with its password), the schema and the tuning knobs.

use std::str::FromStr;
use std::time::Duration;

use longshore_core::url::SecretUrl;
use longshore_core::Error;
use sqlx::postgres::PgConnectOptions;

use crate::BACKEND;

/// Default schema holding longshore's tables.
pub const DEFAULT_SCHEMA: &str = "longshore";

/// Longest schema name accepted (so that derived channel names stay under Postgres' 63 bytes).
pub const MAX_SCHEMA_LEN: usize = 40;

/// A validated schema name: 1 to 40 bytes of `[a-z0-9_]`, starting with a letter or `_`,
/// not starting with `pg_`. Interpolated into SQL only double-quoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema(String);

impl Schema {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidName {
            kind: "schema",
            value: name.chars().take(64).collect(),
            reason,
        };
        if name.is_empty() || name.len() > MAX_SCHEMA_LEN {
            return Err(invalid("must be 1 to 40 bytes"));
        }
        let first = name.as_bytes()[0];
        if !(first.is_ascii_lowercase() || first == b'_') {
            return Err(invalid("must start with a lowercase letter or `_`"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid("may only contain [a-z0-9_]"));
        }
        if name.starts_with("pg_") {
            return Err(invalid("`pg_` names are reserved by PostgreSQL"));
        }
        Ok(Schema(name.to_string()))
    }

    /// The bare name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The double-quoted identifier, safe to interpolate (the name cannot contain quotes).
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// `"schema".table` for one of longshore's fixed table names.
    pub(crate) fn table(&self, table: &'static str) -> String {
        format!("\"{}\".{table}", self.0)
    }

    /// NOTIFY channel for appended events.
    pub(crate) fn events_channel(&self) -> String {
        format!("longshore_events_{}", self.0)
    }

    /// NOTIFY channel for queue messages.
    pub(crate) fn queue_channel(&self) -> String {
        format!("longshore_queue_{}", self.0)
    }
}

/// Settings of the Postgres adapter. `Debug` never shows the password.
///
/// ```
/// use longshore_postgres::PgConfig;
/// let config = PgConfig::from_url("postgres://app:secret@db:5432/orders?schema=billing").unwrap();
/// assert_eq!(config.schema.name(), "billing");
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PgConfig {
    /// The connection URL as sqlx understands it (longshore's own query parameters removed).
    pub url: SecretUrl,
    /// Schema of longshore's tables (URL parameter `schema`; default `longshore`).
    pub schema: Schema,
    /// Most pooled connections (URL parameter `max_connections`; default 10).
    pub max_connections: u32,
    /// How long to wait for a connection (URL parameter `connect_timeout` in seconds; default 10 s).
    pub connect_timeout: Duration,
    /// Run the embedded migrations on connect (default true; URL `migrate=false` to skip).
    pub migrate: bool,
    /// Appends write outbox rows in the same transaction (default true; URL `outbox=false`).
    pub outbox: bool,
    /// How long a relay's claim on outbox rows lasts before another relay may take them.
    pub claim_lease: Duration,
    /// How long a queue delivery stays leased to its consumer without a heartbeat before it is
    /// given to another consumer (the visibility timeout). Consumers renew it while alive.
    pub visibility_timeout: Duration,
    /// Longest wait between polls when no notification arrives (NOTIFY is only a hint).
    pub poll_interval: Duration,
    /// How long `read_all` waits, at most, when its page is not full and committed events are
    /// held back by the watermark (an older transaction is still running somewhere on the
    /// server). It returns as soon as they are released; see the crate docs. Default 1 s.
    pub read_settle: Duration,
    /// Largest queue payload accepted, in bytes.
    pub max_payload: usize,
    /// `application_name` of the adapter's connections (shown in `pg_stat_activity`).
    pub application_name: String,
}

impl PgConfig {
    /// Defaults for a URL without longshore parameters.
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: SecretUrl::new(url),
            schema: Schema(DEFAULT_SCHEMA.to_string()),
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
            migrate: true,
            outbox: true,
            claim_lease: Duration::from_secs(30),
            visibility_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            read_settle: Duration::from_secs(1),
            max_payload: 16 * 1024 * 1024,
            application_name: "longshore".to_string(),
        }
    }

    /// Parses `postgres://user:pass@host:port/db?schema=..&max_connections=..&migrate=..&outbox=..`.
    /// Other query parameters (`sslmode`, `application_name` ...) are passed to sqlx.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let bad = |what: &str| {
            Error::Config(format!(
                "{what} in {}",
                longshore_core::url::redact_url(url)
            ))
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad("expected a postgres:// or postgresql:// URL"));
        }
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let mut config = PgConfig::new(base);
        let mut passed = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "schema" => config.schema = Schema::new(value)?,
                "max_connections" => {
                    config.max_connections = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("max_connections must be a positive integer"))?
                }
                "connect_timeout" => {
                    config.connect_timeout = Duration::from_secs(
                        value
                            .parse()
                            .map_err(|_| bad("connect_timeout must be whole seconds"))?,
                    )
                }
                "migrate" => {
                    config.migrate =
                        parse_bool(value).ok_or_else(|| bad("migrate must be true or false"))?
                }
                "outbox" => {
                    config.outbox =
                        parse_bool(value).ok_or_else(|| bad("outbox must be true or false"))?
                }
                _ => passed.push(pair),
            }
        }
        let for_sqlx = if passed.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        config.url = SecretUrl::rewritten(url, for_sqlx);
        // Fail early on what sqlx cannot parse, without echoing the URL.
        config.connect_options()?;
        Ok(config)
    }

    /// Reads `DATABASE_URL`, defaulting to `postgres://postgres@127.0.0.1:5432/test`.
    pub fn from_env() -> Result<Self, Error> {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        Self::from_url(&url)
    }

    /// Sets the schema (validated).
    pub fn with_schema(mut self, schema: &str) -> Result<Self, Error> {
        self.schema = Schema::new(schema)?;
        Ok(self)
    }

    /// Sets whether appends fill the outbox.
    pub fn with_outbox(mut self, outbox: bool) -> Self {
        self.outbox = outbox;
        self
    }

    /// Sets the outbox claim lease.
    pub fn with_claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = lease;
        self
    }

    /// Sets the queue visibility timeout.
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// Sets the poll interval.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets how long `read_all` waits for events held back by older running transactions.
    pub fn with_read_settle(mut self, settle: Duration) -> Self {
        self.read_settle = settle;
        self
    }

    /// Sets the pool size.
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets the `application_name` of the adapter's connections.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// sqlx connect options for this URL.
    pub fn connect_options(&self) -> Result<PgConnectOptions, Error> {
        PgConnectOptions::from_str(self.url.expose())
            .map(|o| o.application_name(&self.application_name))
            .map_err(|e| {
                // sqlx's parse errors may quote the URL: keep only the kind of problem.
                let kind = match e {
                    sqlx::Error::Configuration(_) => "invalid connection URL",
                    _ => "invalid connection settings",
                };
                Error::Config(format!("{BACKEND}: {kind}: {}", self.url.redacted()))
            })
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
    fn schema_names() {
        assert!(Schema::new("longshore").is_ok());
        assert!(Schema::new("_t1").is_ok());
        for bad in [
            "",
            "A",
            "1a",
            "a-b",
            "a\"b",
            "a b",
            "pg_x",
            "a;drop",
            &"a".repeat(41),
        ] {
            assert!(Schema::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Schema::new("x1").unwrap().quoted(), "\"x1\"");
    }

    #[test]
    fn url_parameters() {
        let c = PgConfig::from_url(
            "postgres://u:pw@h:5432/db?schema=s1&sslmode=disable&max_connections=3&outbox=false",
        )
        .unwrap();
        assert_eq!(c.schema.name(), "s1");
        assert_eq!(c.max_connections, 3);
        assert!(!c.outbox);
        assert_eq!(c.url.expose(), "postgres://u:pw@h:5432/db?sslmode=disable");
        assert!(!format!("{c:?}").contains("pw"));
        assert!(PgConfig::from_url("postgres://h/db?schema=Bad").is_err());
        assert!(PgConfig::from_url("mysql://h/db").is_err());
        let e = PgConfig::from_url("amqp://u:pw@h").unwrap_err().to_string();
        assert!(!e.contains("pw"), "{e}");
    }
}
