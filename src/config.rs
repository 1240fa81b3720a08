//! Backend selection by URL, from code or the environment.

use longshore_core::url::SecretUrl;
use serde::{Deserialize, Serialize};

/// Environment variable holding the broker URL.
pub const ENV_URL: &str = "LONGSHORE_URL";
/// Environment variable holding the event-store URL.
pub const ENV_STORE_URL: &str = "LONGSHORE_STORE_URL";

/// Where a service's messages and events live.
///
/// `Debug` and `Display` redact credentials; serde reads and writes the full URLs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Broker URL: `memory://`, `amqp://…`, `amqps://…`, `kafka://host:9092[,host2:9092]`,
    /// `nats://…`, `postgres://…`.
    pub url: String,
    /// Event-store URL. `None`: the broker's own store (`memory://`, `postgres://`);
    /// brokers without one have no store unless this is set.
    pub store_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "memory://".to_string(),
            store_url: None,
        }
    }
}

impl Config {
    /// A config for one URL.
    pub fn new(url: impl Into<String>) -> Self {
        Config {
            url: url.into(),
            store_url: None,
        }
    }

    /// Sets the event-store URL.
    pub fn with_store_url(mut self, url: impl Into<String>) -> Self {
        self.store_url = Some(url.into());
        self
    }

    /// Reads `LONGSHORE_URL` (default `memory://`) and `LONGSHORE_STORE_URL`.
    pub fn from_env() -> Self {
        let get = |k| {
            std::env::var(k)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        Config {
            url: get(ENV_URL).unwrap_or_else(|| "memory://".to_string()),
            store_url: get(ENV_STORE_URL),
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
