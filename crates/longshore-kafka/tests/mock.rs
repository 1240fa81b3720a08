//! Fast in-process tests on librdkafka's mock cluster (no broker needed): failures a real
//! broker does not produce on demand.

use std::time::Duration;

use longshore_core::{Broker, Message};
use longshore_kafka::{KafkaBroker, KafkaConfig};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

async fn mock_broker(bootstrap: String) -> KafkaBroker {
    let mut config = KafkaConfig::new(bootstrap);
    // The mock cluster's admin API times out: its topics are made with `create_topic`.
    config.create_topics = false;
    config.delivery_timeout = Duration::from_secs(10);
    config.request_timeout = Duration::from_secs(5);
    KafkaBroker::connect(config)
        .await
        .expect("connect to the mock cluster")
}

/// A fatal error of the idempotent producer (here: the broker answers the head-of-line
/// produce request with OUT_OF_ORDER_SEQUENCE_NUMBER, which librdkafka treats as a fatal
/// sequence desynchronisation) fails that publish; the next publish goes through a new
/// producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_producer_error_recreates_the_producer() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("fatal", 1, 1).expect("topic");
    let b = mock_broker(mock.bootstrap_servers()).await;
    let p = b.publisher();
    p.publish("fatal.x", Message::new(&b"warm"[..]))
        .await
        .expect("first publish");
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let e = p
        .publish("fatal.x", Message::new(&b"boom"[..]))
        .await
        .expect_err("fatal error");
    assert!(
        e.is_retryable(),
        "a fatal producer error is retryable on a new producer: {e:?}"
    );
    assert_eq!(b.producers_replaced(), 1);
    p.publish("fatal.x", Message::new(&b"after"[..]))
        .await
        .expect("publish on the new producer");
    p.close().await.expect("close");
}
