//! Kafka-specific behaviour against the broker at `KAFKA_BROKERS`: committed offsets across
//! restarts, partition split in a group, contiguous commits past a failing message, ordering
//! across event types, wildcard topic discovery.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_core::{Broker, Message, Subscription};
use longshore_kafka::KafkaBroker;
use longshore_testkit::{drain_ids, expect_quiet, message, recv, recv_n, within, Names, WAIT};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

async fn broker() -> Option<KafkaBroker> {
    common::connect_with(common::config()).await
}

/// The committed offsets of `group` on the Kafka topic, by partition (`None`: nothing
/// committed), read without joining the group.
async fn committed(group: &str, kafka_topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let (group, topic) = (group.to_string(), kafka_topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", common::brokers())
            .set("group.id", &group)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let got = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(
                |p| match got.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
            )
            .collect()
    })
    .await
    .expect("committed task")
}

/// Waits until `cond` holds for the committed offsets (bounded by [`WAIT`]).
async fn await_committed(
    group: &str,
    kafka_topic: &str,
    cond: impl Fn(&[Option<i64>]) -> bool,
) -> Vec<Option<i64>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = committed(group, kafka_topic, 3).await;
        if cond(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets never became right: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A consumer that acked the first half and was closed: a new consumer of the subscription
/// resumes at the first unacked message (committed offset), without the acked ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_committed_offsets() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let topic = n.topic("restart");
    let sub = Subscription::new(n.sub("restart"), [topic.clone()]).with_prefetch(20);
    let subscriber = b.subscriber();
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let batch: Vec<Message> = (0..10).map(|i| message(i).with_key("agg-1")).collect();
    let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
    b.publisher()
        .publish_batch(&topic, batch)
        .await
        .expect("batch");
    let got = recv_n(&mut stream, 10).await;
    let mut got = got.into_iter();
    for d in got.by_ref().take(5) {
        d.ack().await.expect("ack");
    }
    let unacked: Vec<_> = got.collect();
    subscriber.close().await.expect("close");
    drop(unacked);
    assert!(within("stream end after close", stream.next())
        .await
        .is_none());

    // One partition holds all ten (one key): its committed offset is the sixth message's.
    let offsets = committed(&sub.name, n.prefix(), 3).await;
    let set: Vec<i64> = offsets.iter().flatten().copied().collect();
    assert_eq!(set.len(), 1, "one partition committed: {offsets:?}");

    let again = b.subscriber();
    let mut stream = again.subscribe(&sub).await.expect("resubscribe");
    assert_eq!(drain_ids(&mut stream, 5).await, ids[5..].to_vec());
    expect_quiet(&mut stream, "acked messages must not come back").await;
    again.close().await.expect("close");
}

/// Two consumers of one subscription split the partitions and together get every message
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_split_partitions() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let topic = n.topic("split");
    let sub = Subscription::new(n.sub("split"), [topic.clone()]).with_prefetch(100);
    let (s1, s2) = (b.subscriber(), b.subscriber());
    let a = s1.subscribe(&sub).await.expect("subscribe a");
    let c = s2.subscribe(&sub).await.expect("subscribe b");
    // Distinct keys spread the messages over all partitions.
    let batch: Vec<Message> = (0..90)
        .map(|i| message(i).with_key(format!("agg-{i}")))
        .collect();
    let expected: BTreeSet<String> = batch.iter().map(|m| m.id.clone()).collect();
    b.publisher()
        .publish_batch(&topic, batch)
        .await
        .expect("batch");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (who, mut s) in [(0usize, a), (1, c)] {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = s.next().await {
                let id = d.message().id.clone();
                let key = d.message().key.clone().unwrap_or_default();
                d.ack().await.expect("ack");
                if tx.send((who, id, key)).is_err() {
                    break;
                }
            }
        });
    }
    let mut got = BTreeSet::new();
    let mut keys_by: [BTreeSet<String>; 2] = Default::default();
    while got.len() < expected.len() {
        let (who, id, key) = within("both consumers", rx.recv()).await.expect("alive");
        assert!(got.insert(id), "a message went to both consumers");
        keys_by[who].insert(key);
    }
    assert_eq!(got, expected);
    assert!(
        !keys_by[0].is_empty() && !keys_by[1].is_empty(),
        "both consumers take part: {} / {}",
        keys_by[0].len(),
        keys_by[1].len()
    );
    assert!(
        keys_by[0].is_disjoint(&keys_by[1]),
        "a key (partition) is owned by one consumer"
    );
    s1.close().await.expect("close");
    s2.close().await.expect("close");
}

/// A message that stays unsettled in the middle of a partition holds the committed offset at
/// its position while every later message is acked; after a restart it is delivered again
/// (with the later ones, at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_message_in_the_middle_is_not_skipped_by_later_commits() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let topic = n.topic("middle");
    let sub = Subscription::new(n.sub("middle"), [topic.clone()]).with_prefetch(20);
    let subscriber = b.subscriber();
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let batch: Vec<Message> = (0..10).map(|i| message(i).with_key("agg-1")).collect();
    let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
    b.publisher()
        .publish_batch(&topic, batch)
        .await
        .expect("batch");
    let mut held = None;
    for d in recv_n(&mut stream, 10).await {
        if d.message().id == ids[3] {
            held = Some(d); // the "failing" one: never settled
        } else {
            d.ack().await.expect("ack");
        }
    }
    // The acks of 0..=2 are committed; nothing past the held message ever is.
    let offsets = await_committed(&sub.name, n.prefix(), |c| c.iter().flatten().count() == 1).await;
    let partition = offsets.iter().position(Option::is_some).expect("partition");
    let at = offsets[partition].expect("offset");
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        let now = committed(&sub.name, n.prefix(), 3).await;
        assert_eq!(
            now[partition],
            Some(at),
            "commit moved past the unsettled message"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    subscriber.close().await.expect("close");
    drop(held);

    let again = b.subscriber();
    let mut stream = again.subscribe(&sub).await.expect("resubscribe");
    let first = recv(&mut stream).await;
    assert_eq!(
        first.message().id,
        ids[3],
        "the unsettled message comes first"
    );
    first.ack().await.expect("ack");
    // The later ones were acked but sit behind it in the partition: redelivered.
    assert_eq!(drain_ids(&mut stream, 6).await, ids[4..].to_vec());
    again.close().await.expect("close");
}

/// A handler that holds its only prefetch slot for longer than the consumer's pause threshold
/// (so the consumer pauses its partitions and keeps polling to stay in the group): after the
/// ack everything else arrives, in order, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_pauses_and_resumes_without_loss() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let topic = n.topic("slow");
    let sub = Subscription::new(n.sub("slow"), [topic.clone()]).with_prefetch(1);
    let subscriber = b.subscriber();
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let batch: Vec<Message> = (0..30).map(|i| message(i).with_key("k")).collect();
    let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
    b.publisher()
        .publish_batch(&topic, batch)
        .await
        .expect("batch");
    let first = recv(&mut stream).await;
    assert_eq!(first.message().id, ids[0]);
    // The slow handler: the scenario itself, not a stand-in for an event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.ack().await.expect("ack");
    assert_eq!(drain_ids(&mut stream, 29).await, ids[1..].to_vec());
    expect_quiet(&mut stream, "nothing twice").await;
    subscriber.close().await.expect("close");
}

/// One aggregate's events of different types share the Kafka topic (first word) and, by key,
/// the partition: a subscription to all of them sees them in publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_aggregate_stays_in_order_across_event_types() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let sub = Subscription::new(n.sub("agg"), [n.topic("orders.#")]).with_prefetch(50);
    let subscriber = b.subscriber();
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let publisher = b.publisher();
    let types = ["created", "paid", "shipped", "cancelled"];
    let mut expected = Vec::new();
    for i in 0..20 {
        let m = message(i).with_key("order-7");
        expected.push((n.topic(&format!("orders.{}", types[i % 4])), m.id.clone()));
        publisher.publish(&expected[i].0, m).await.expect("publish");
    }
    for (topic, id) in &expected {
        let d = recv(&mut stream).await;
        assert_eq!((&d.topic, &d.message().id), (topic, id));
        d.ack().await.expect("ack");
    }
    subscriber.close().await.expect("close");
}

/// With `topic_words = 2` a pattern with a wildcard in its second word reads every matching
/// Kafka topic, including one created after the subscription started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_kafka_topics_are_discovered() {
    let mut config = common::config().with_topic_words(2);
    config.pattern_refresh = Duration::from_millis(500);
    let Some(b) = common::connect_with(config).await else {
        return;
    };
    let n = Names::new();
    b.ensure_topics(&[&n.topic("orders.x")])
        .await
        .expect("topic");
    let sub = Subscription::new(n.sub("disc"), [n.topic("*.created")]);
    let subscriber = b.subscriber();
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let publisher = b.publisher();
    let (m1, m2) = (message(1), message(2));
    publisher
        .publish(&n.topic("orders.created"), m1.clone())
        .await
        .expect("publish");
    // A Kafka topic that did not exist when the consumer started.
    publisher
        .publish(&n.topic("invoices.created"), m2.clone())
        .await
        .expect("publish");
    publisher
        .publish(&n.topic("invoices.paid"), message(3))
        .await
        .expect("publish");
    let got: BTreeSet<String> = drain_ids(&mut stream, 2).await.into_iter().collect();
    assert_eq!(got, BTreeSet::from([m1.id, m2.id]));
    expect_quiet(&mut stream, "invoices.paid does not match").await;
    subscriber.close().await.expect("close");
}

/// An unreachable cluster is a typed, retryable connection error, and the URL form works.
#[tokio::test]
async fn unreachable_cluster_is_a_connection_error() {
    let mut config = longshore_kafka::KafkaConfig::from_url("kafka://127.0.0.1:1").expect("url");
    config.request_timeout = Duration::from_secs(2);
    let e = KafkaBroker::connect(config).await.expect_err("unreachable");
    assert!(
        matches!(e, longshore_core::Error::Connection { .. }) && e.is_retryable(),
        "{e:?}"
    );
}

/// Publishing after close fails; `close` on a subscriber ends its streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_close_ends_streams() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let subscriber = b.subscriber();
    let mut s1 = subscriber
        .subscribe(&Subscription::new(n.sub("c1"), [n.topic("a")]))
        .await
        .expect("subscribe");
    subscriber.close().await.expect("close");
    assert!(within("stream end", s1.next()).await.is_none());
    let r = subscriber
        .subscribe(&Subscription::new(n.sub("c2"), [n.topic("a")]))
        .await;
    assert!(matches!(r, Err(longshore_core::Error::Closed(_))));
}
