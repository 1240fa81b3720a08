//! Shared helpers of the integration tests: the URL of the broker at `KAFKA_BROKERS` with the
//! test settings, and connecting with a configuration of a test's own.
#![allow(dead_code)]

pub mod raw;

use longshore_kafka::{KafkaBroker, KafkaConfig};

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// The URL of the broker under test, carrying the test settings:
/// `session_timeout_ms` from `KAFKA_SESSION_TIMEOUT_MS` (default 6000, Kafka's minimum), which
/// bounds how long group joins take on brokers that wait for it, and librdkafka's `debug`
/// contexts from `KAFKA_DEBUG` when set.
///
/// It also installs the testkit's global metrics recorder and tracing subscriber (idempotent):
/// the observability scenarios need them to be the global ones, and they print the logs
/// `RUST_LOG` selects (`RUST_LOG=longshore_kafka=debug`) in test output.
pub fn url() -> String {
    init_logs();
    let session: u64 = std::env::var("KAFKA_SESSION_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let mut url = format!("kafka://{}?session_timeout_ms={session}", brokers());
    if let Ok(d) = std::env::var("KAFKA_DEBUG") {
        url.push_str("&debug=");
        url.push_str(&encode(&d));
    }
    url
}

/// Percent-encodes the characters that would end a URL option value.
fn encode(v: &str) -> String {
    v.replace('%', "%25")
        .replace('&', "%26")
        .replace('#', "%23")
}

/// The test configuration: [`url`] parsed.
pub fn config() -> KafkaConfig {
    KafkaConfig::from_url(&url()).expect("the test URL parses")
}

/// Installs the testkit's global metrics recorder and tracing subscriber (see [`url`]).
pub fn init_logs() {
    longshore_testkit::observe::install();
}

/// Connects with `config`; `None` (after printing why) when the broker is unreachable outside
/// CI.
pub async fn connect_with(config: KafkaConfig) -> Option<KafkaBroker> {
    init_logs();
    let url = format!("kafka://{}", brokers());
    longshore_testkit::require_broker("kafka", &url, KafkaBroker::connect(config).await)
}
