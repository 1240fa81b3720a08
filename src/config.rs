//! Backend selection by URL, from code or the environment.

use longshore_core::url::SecretUrl;
use serde::{Deserialize, Serialize};

/// Environment variable holding the broker URL.
pub const ENV_URL: &str = "LONGSHORE_URL";
/// Environment variable holding the event-store URL.
pub const ENV_STORE_URL: &str = "LONGSHORE_STORE_URL";
/// Environment variable holding the service name (see [`Config::service`]).
pub const ENV_SERVICE: &str = "LONGSHORE_SERVICE";

/// Where a service's messages and events live.
///
/// `Debug` and `Display` redact credentials; serde reads and writes the full URLs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Broker URL: `memory://`, `amqp://…`, `amqps://…`, `kafka://host:9092[,host2:9092]`,
    /// `nats://…`, `postgres://…`. `?codec=cloudevents` (or `cloudevents-structured`, and
    /// `&ce_source=…`) makes event publishers write CloudEvents ([`crate::cloudevents`]).
    pub url: String,
    /// Event-store URL. `None`: the broker's own store (`memory://`, `postgres://`);
    /// brokers without one have no store unless this is set.
    pub store_url: Option<String>,
    /// The service's name. On Postgres it is the default schema of the service's store
    /// (events, outbox, inbox, checkpoints), so two services on one database never claim each
    /// other's outbox rows; a store URL's own `?schema=` wins. A `postgres://` broker's queue
    /// stays in the URL's schema: services exchange messages there. Lowercased, other
    /// characters than `[a-z0-9_]` become `_`.
    pub service: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "memory://".to_string(),
            store_url: None,
            service: None,
        }
    }
}

impl Config {
    /// A config for one URL.
    pub fn new(url: impl Into<String>) -> Self {
        Config {
            url: url.into(),
            store_url: None,
            service: None,
        }
    }

    /// Sets the event-store URL.
    pub fn with_store_url(mut self, url: impl Into<String>) -> Self {
        self.store_url = Some(url.into());
        self
    }

    /// Sets the service name ([`Config::service`]).
    pub fn with_service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// Reads `LONGSHORE_URL` (default `memory://`), `LONGSHORE_STORE_URL` and
    /// `LONGSHORE_SERVICE`.
    pub fn from_env() -> Self {
        let get = |k| {
            std::env::var(k)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        Config {
            url: get(ENV_URL).unwrap_or_else(|| "memory://".to_string()),
            store_url: get(ENV_STORE_URL),
            service: get(ENV_SERVICE),
        }
    }

    /// The broker URL, redacted for printing.
    pub fn redacted_url(&self) -> String {
        SecretUrl::new(self.url.clone()).redacted()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &SecretUrl::new(self.url.clone()))
            .field("store_url", &self.store_url.clone().map(SecretUrl::new))
            .field("service", &self.service)
            .finish()
    }
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted_url())?;
        if let Some(store) = &self.store_url {
            write!(f, " (store {})", SecretUrl::new(store.clone()))?;
        }
        Ok(())
    }
}

/// The schema name a service name maps to: lowercase `[a-z0-9_]`, starting with a letter or
/// `_`, at most 40 bytes (Postgres' schema rule in `longshore-postgres`).
pub(crate) fn schema_of(service: &str) -> String {
    let mut s: String = service
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        s.insert(0, '_');
    }
    s.truncate(40);
    s
}

/// `url` with `schema=<service>` added when it is a Postgres URL without a schema of its own.
pub(crate) fn with_service_schema(url: &str, service: Option<&str>) -> String {
    let Some(service) = service.filter(|s| !s.trim().is_empty()) else {
        return url.to_string();
    };
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    if !["postgres", "postgresql"].contains(&scheme.to_ascii_lowercase().as_str()) {
        return url.to_string();
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if query
        .split('&')
        .any(|p| p.split('=').next() == Some("schema"))
    {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}schema={}", schema_of(service))
}

/// Says once per process that a Postgres URL without a service name or schema shares
/// longshore's tables with every other such service on the database.
pub(crate) fn warn_if_shared(url: &str, service: Option<&str>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let scheme = url
        .split_once("://")
        .map_or("", |(s, _)| s)
        .to_ascii_lowercase();
    let shared = ["postgres", "postgresql"].contains(&scheme.as_str())
        && service.map_or(true, |s| s.trim().is_empty())
        && !url.contains("schema=");
    if shared {
        ONCE.call_once(|| {
            tracing::warn!(
                "longshore's Postgres tables are in the shared schema `longshore`: another \
                 service on this database may claim this one's outbox and queue rows; name the \
                 service (LONGSHORE_SERVICE or Config::with_service) or set ?schema="
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{schema_of, with_service_schema};

    #[test]
    fn service_names_become_schemas() {
        assert_eq!(schema_of("billing"), "billing");
        assert_eq!(schema_of("Order-API v2"), "order_api_v2");
        assert_eq!(schema_of("9lives"), "_9lives");
        assert_eq!(schema_of(&"x".repeat(60)).len(), 40);
    }

    #[test]
    fn only_postgres_urls_without_a_schema_get_one() {
        let pg = "postgres://u:p@h/db";
        assert_eq!(
            with_service_schema(pg, Some("billing")),
            "postgres://u:p@h/db?schema=billing"
        );
        assert_eq!(
            with_service_schema("postgres://h/db?sslmode=disable", Some("billing")),
            "postgres://h/db?sslmode=disable&schema=billing"
        );
        assert_eq!(
            with_service_schema("postgres://h/db?schema=mine", Some("billing")),
            "postgres://h/db?schema=mine"
        );
        assert_eq!(with_service_schema(pg, None), pg);
        assert_eq!(with_service_schema("amqp://h", Some("billing")), "amqp://h");
    }
}
