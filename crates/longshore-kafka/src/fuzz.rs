//! Fuzz targets for what a Kafka peer or a user controls: records as librdkafka hands them
//! over (any bytes in payload, key, id, topic and headers), topics and patterns as Kafka
//! names, and URLs. Property tests: `PROPTEST_CASES` inputs each (see `scripts/fuzz.sh`).

use proptest::prelude::*;

use crate::config::KafkaConfig;
use crate::mapping::{Packed, Parts, TopicMap};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #[test]
    fn fuzz_kafka_record(
        payload in bytes(512),
        key in prop::option::of(bytes(64)),
        id in prop::option::of(bytes(64)),
        topic in prop::option::of(bytes(64)),
        headers in prop::collection::vec((".{0,24}", prop::option::of(bytes(64))), 0..80),
        partition in any::<i32>(),
        offset in any::<i64>(),
    ) {
        let parts = Parts {
            kafka_topic: "orders",
            partition,
            offset,
            payload: &payload,
            key: key.as_deref(),
            id: id.as_deref(),
            topic: topic.as_deref(),
        };
        let (message, longshore_topic) = Packed::pack(
            &parts,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
        )
        .unpack();
        prop_assert_eq!(&message.payload[..], &payload[..]);
        prop_assert!(!message.id.is_empty());
        prop_assert!(!longshore_topic.is_empty());
        prop_assert!(message.headers.len() <= headers.len());
    }

    #[test]
    fn fuzz_kafka_names(topic in ".{0,60}|[a-z0-9_.*#-]{0,60}", words in 0usize..6) {
        let map = TopicMap::new(words);
        if let Ok(kafka) = map.kafka_topic(&topic) {
            prop_assert!(!kafka.is_empty() && kafka.len() <= crate::mapping::MAX_KAFKA_TOPIC);
            prop_assert!(map.may_route_to(&topic, &kafka), "{topic} -> {kafka}");
        }
        let _ = map.resolve(&topic);
        let _ = TopicMap::dead_letter_topic(&topic);
    }

    #[test]
    fn fuzz_kafka_url(url in "kafka://.{0,80}|.{0,80}") {
        if let Ok(config) = KafkaConfig::from_url(&url) {
            prop_assert!(!config.bootstrap_servers.is_empty());
        }
    }
}
