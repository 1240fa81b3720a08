//! Connecting from the command line: the URL flags, and what `memory://` cannot do here.

use longshore::{Config, Longshore};

use crate::error::CliError;

/// The URLs the command line names.
#[derive(Clone, Debug, Default)]
pub struct Urls {
    /// `--url` / `LONGSHORE_URL`.
    pub url: Option<String>,
    /// `--store-url` / `LONGSHORE_STORE_URL`.
    pub store_url: Option<String>,
}

/// Connects to the broker the URLs name. Without a URL, or with `memory://`, explains that
/// the tool cannot reach another process's in-memory backend.
pub async fn connect(urls: &Urls) -> Result<Longshore, CliError> {
    let url = urls
        .url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "memory://".to_string());
    if url.trim().to_ascii_lowercase().starts_with("memory:") {
        return Err(CliError::MemoryBackend);
    }
    let mut config = Config::new(url);
    if let Some(store) = urls.store_url.clone().filter(|u| !u.trim().is_empty()) {
        config = config.with_store_url(store);
    }
    longshore::connect_with(&config)
        .await
        .map_err(|source| CliError::Connect {
            url: config.redacted_url(),
            source,
        })
}

/// Closes the connection's publisher and subscriber (a close failure after the work was done
/// is not the command's failure).
pub async fn close(ls: &Longshore) {
    let _ = ls.publisher.close().await;
    let _ = ls.subscriber.close().await;
}
