//! async-nats as a peer that is not longshore: publishes straight to the topic's subject with
//! JetStream, past every limit longshore's publisher keeps, for the bad-input scenarios.

use std::sync::Arc;

use longshore_core::async_trait;
use longshore_nats::async_nats::{self, jetstream, HeaderMap};
use longshore_nats::{NatsConfig, NATS_MSG_ID};
use longshore_testkit::RawPublisher;

/// A JetStream context on a connection of its own.
pub struct RawNats {
    js: jetstream::Context,
    prefix: String,
    server_max_payload: usize,
}

/// Opens the raw client on `url` (the suite's `raw:` hook).
pub async fn raw(url: &str) -> Arc<dyn RawPublisher> {
    let config = NatsConfig::from_url(url).expect("the suite's NATS URL");
    let server = url.split('?').next().unwrap_or(url);
    let client = async_nats::connect(server)
        .await
        .expect("raw NATS connection");
    let server_max_payload = client.server_info().max_payload;
    Arc::new(RawNats {
        server_max_payload,
        js: jetstream::new(client),
        prefix: config.subject_prefix,
    })
}

#[async_trait]
impl RawPublisher for RawNats {
    async fn publish_raw(
        &self,
        topic: &str,
        id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), String> {
        let mut map = HeaderMap::new();
        map.insert(NATS_MSG_ID, id);
        for (name, value) in headers {
            map.insert(name.as_str(), value.as_str());
        }
        let subject = format!("{}.{topic}", self.prefix);
        self.js
            .publish_with_headers(subject, map, body.to_vec().into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The server's `max_payload` less room for the raw message's own few headers.
    fn largest_body(&self, _longshore_limit: usize) -> usize {
        self.server_max_payload.saturating_sub(256)
    }
}
