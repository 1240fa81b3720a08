//! rdkafka as a peer that is not longshore: produces straight to the topic's Kafka topic,
//! past every limit longshore's publisher keeps, for the suite's bad-input scenarios.

use std::sync::Arc;
use std::time::Duration;

use longshore_core::async_trait;
use longshore_kafka::mapping::{HEADER_ID, HEADER_TOPIC};
use longshore_kafka::KafkaConfig;
use longshore_testkit::RawPublisher;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// librdkafka's own default `message.max.bytes`, which this producer keeps.
const PRODUCER_MAX_MESSAGE: usize = 1_000_000;

/// A producer of its own with acks from all in-sync replicas.
pub struct RawKafka {
    producer: FutureProducer,
    config: KafkaConfig,
}

/// Opens the raw client on `url` (the suite's `raw:` hook).
pub async fn raw(url: &str) -> Arc<dyn RawPublisher> {
    let config = KafkaConfig::from_url(url).expect("the suite's Kafka URL");
    let producer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("acks", "all")
        .create()
        .expect("raw Kafka producer");
    Arc::new(RawKafka { producer, config })
}

#[async_trait]
impl RawPublisher for RawKafka {
    async fn publish_raw(
        &self,
        topic: &str,
        id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), String> {
        let kafka_topic = self
            .config
            .topic_map
            .kafka_topic(topic)
            .map_err(|e| e.to_string())?;
        let mut h = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(topic),
            })
            .insert(Header {
                key: HEADER_ID,
                value: Some(id),
            });
        for (name, value) in headers {
            h = h.insert(Header {
                key: name.as_str(),
                value: Some(value.as_str()),
            });
        }
        let record = FutureRecord::<(), [u8]>::to(&kafka_topic)
            .payload(body)
            .headers(h);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }

    /// librdkafka's message limit less room for the record's framing and headers.
    fn largest_body(&self, longshore_limit: usize) -> usize {
        (longshore_limit + 1).min(PRODUCER_MAX_MESSAGE - 4096)
    }
}
