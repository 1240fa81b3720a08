//! Shared setup of the integration tests: the server on `NATS_URL` (default
//! `nats://127.0.0.1:4222`) with a test stream of its own.
#![allow(dead_code)]

pub mod raw;

use longshore_nats::{NatsBroker, NatsConfig};

/// What the tests add to `NATS_URL`: stream `LONGSHORE_TEST` on subjects `lstest.>`, messages
/// kept one hour so repeated runs do not fill the server's disk.
const TEST_STREAM: &str = "stream=LONGSHORE_TEST&prefix=lstest&max_age=1h";

/// `NATS_URL` as given, or the local server.
pub fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

/// [`url`] with the test stream's settings: what the conformance suite connects to.
pub fn nats_url() -> String {
    let base = url();
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{TEST_STREAM}")
}

/// The test configuration: [`nats_url`] parsed, for tests that change a field or two.
pub fn config() -> NatsConfig {
    NatsConfig::from_url(&nats_url()).expect("NATS_URL")
}

/// A connected broker, or `None` (skip, reason printed) when NATS is unreachable outside CI.
pub async fn broker_with(config: NatsConfig) -> Option<NatsBroker> {
    let url = config.url.expose().to_string();
    longshore_testkit::require_broker("nats", &url, NatsBroker::connect(config).await)
}
