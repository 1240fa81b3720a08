//! Shared helpers of the integration tests: a factory for the broker at `KAFKA_BROKERS`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use longshore_core::{async_trait, Publisher, Subscriber};
use longshore_kafka::{KafkaBroker, KafkaConfig};
use longshore_testkit::BrokerFactory;

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// The test configuration. `KAFKA_SESSION_TIMEOUT_MS` (default 6000, Kafka's minimum) bounds
/// how long group joins take on brokers that wait for it.
pub fn config() -> KafkaConfig {
    let mut c = KafkaConfig::new(brokers());
    let session = std::env::var("KAFKA_SESSION_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    c.session_timeout = Duration::from_millis(session);
    c.request_timeout = Duration::from_secs(10);
    if let Ok(d) = std::env::var("KAFKA_DEBUG") {
        c = c.with_property("debug", d);
    }
    c
}

pub struct Kafka(pub KafkaBroker);

#[async_trait]
impl BrokerFactory for Kafka {
    async fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(self.0.publisher())
    }
    async fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(self.0.subscriber())
    }
}

/// Installs the testkit's global metrics recorder and tracing subscriber, which the
/// observability scenarios need to be the global ones; it also prints logs filtered by
/// `RUST_LOG` (`RUST_LOG=longshore_kafka=debug` shows the adapter's logs in test output).
pub fn init_logs() {
    longshore_testkit::observe::install();
}

pub async fn connect_with(config: KafkaConfig) -> Option<KafkaBroker> {
    init_logs();
    let url = format!("kafka://{}", brokers());
    longshore_testkit::require_broker("kafka", &url, KafkaBroker::connect(config).await)
}

pub async fn factory() -> Option<Kafka> {
    connect_with(config()).await.map(Kafka)
}
