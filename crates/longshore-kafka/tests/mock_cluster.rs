//! The multi-broker Kafka cell of the fault matrix (RELIABILITY.md): a 3-broker cluster from
//! librdkafka's in-process mock (the CI broker, tansu, does not form a multi-broker cluster),
//! the broker leading the run's partitions taken down mid-run and its partitions' leadership
//! moved to another broker, as a controller's election would.
//!
//! What this proves, and what not: the client side. The producer (acks=all, idempotent) and
//! the consumer group follow the new leader, retry what the down broker never answered, and
//! lose no confirmed message. The mock keeps one log per partition, shared by its replicas,
//! so it says nothing about a real broker's replication (unclean elections, `min.insync`).

use std::time::Duration;

use longshore_core::{Broker, Publisher};
use longshore_kafka::{KafkaBroker, KafkaConfig};
use longshore_testkit::fault;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;

/// How long the leading broker stays down.
const DOWN: Duration = Duration::from_secs(2);

/// Every partition of every non-internal topic as (topic, partition, leader), read from the
/// cluster's metadata.
fn leaders(bootstrap: &str) -> Vec<(String, i32, i32)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("a metadata client");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("the mock cluster's metadata");
    metadata
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__"))
        .flat_map(|t| {
            t.partitions()
                .iter()
                .map(|p| (t.name().to_string(), p.id(), p.leader()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leading_broker_down_loses_no_confirmed_message() {
    let mock = MockCluster::new(3).expect("a 3-broker mock cluster");
    let bootstrap = mock.bootstrap_servers();
    let mut config = KafkaConfig::new(bootstrap.clone());
    // The mock has no CreateTopics API; it creates a topic (replication 3) on first use.
    config.create_topics = false;
    config.request_timeout = Duration::from_secs(5);
    let broker = KafkaBroker::connect(config)
        .await
        .expect("connect to the mock cluster");
    let publisher: std::sync::Arc<dyn Publisher> = broker.publisher();

    let count = fault::message_count();
    let report = tokio::time::timeout(
        fault::RUN_LIMIT + fault::SETTLE + Duration::from_secs(60),
        fault::run(
            "kafka",
            "broker-down-of-3",
            publisher,
            broker.subscriber(),
            count,
            || async {
                let partitions = tokio::task::spawn_blocking({
                    let bootstrap = bootstrap.clone();
                    move || leaders(&bootstrap)
                })
                .await
                .expect("read the leaders");
                let (_, _, victim) = partitions
                    .iter()
                    .find(|(_, _, leader)| *leader >= 1)
                    .cloned()
                    .expect("the run's topic has a leader");
                let heir = victim % 3 + 1;
                let mut moved = 0;
                for (topic, partition, leader) in &partitions {
                    if *leader == victim {
                        mock.partition_leader(topic, *partition, Some(heir))
                            .expect("move the leadership");
                        moved += 1;
                    }
                }
                mock.broker_down(victim).expect("take the broker down");
                eprintln!(
                    "broker {victim} down, {moved} partitions now led by broker {heir}, for {DOWN:?}"
                );
                tokio::time::sleep(DOWN).await;
                mock.broker_up(victim).expect("bring the broker back");
            },
        ),
    )
    .await
    .expect("the fault run finished in time");
    eprintln!("{report:?}");
    report.record();
    report.assert_nothing_lost();
    assert!(
        report.confirmed > count / 2,
        "publishing never resumed after the broker went down: {report:?}"
    );
    let _ = broker.close().await;
}
