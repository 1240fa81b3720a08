//! Shared setup of the integration tests: a broker on `NATS_URL` (default
//! `nats://127.0.0.1:4222`) with a test stream of its own.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use longshore_core::{async_trait, Publisher, Subscriber};
use longshore_nats::{NatsBroker, NatsConfig};
use longshore_testkit::BrokerFactory;

pub fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

/// The test configuration: stream `LONGSHORE_TEST` on subjects `lstest.>`, messages kept
/// one hour so repeated runs do not fill the server's disk.
pub fn config() -> NatsConfig {
    let mut c = NatsConfig::from_url(&url()).expect("NATS_URL");
    c.stream = "LONGSHORE_TEST".into();
    c.subject_prefix = "lstest".into();
    c.max_age = Duration::from_secs(3600);
    c
}

pub struct Nats(pub NatsBroker);

#[async_trait]
impl BrokerFactory for Nats {
    async fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(self.0.publisher())
    }
    async fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(self.0.subscriber())
    }
}

/// A connected broker, or `None` (skip, reason printed) when NATS is unreachable outside CI.
pub async fn broker_with(config: NatsConfig) -> Option<NatsBroker> {
    let url = config.url.expose().to_string();
    longshore_testkit::require_broker("nats", &url, NatsBroker::connect(config).await)
}

pub async fn factory() -> Option<Nats> {
    broker_with(config()).await.map(Nats)
}
