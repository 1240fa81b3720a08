//! Durable delayed nacks on Kafka (the delay topic, `src/delay.rs`), against the broker at
//! `KAFKA_BROKERS`: a long delay does not hold back the original partition's commit, a
//! held copy is held again by the next consumer and comes back as its original topic with the
//! count carried on, and a hand-made record in the delay topic with garbage headers is
//! delivered at once as attempt 1.

mod common;

use std::time::{Duration, Instant};

use longshore_core::{Broker, Subscription, HEADER_DELIVER_AT};
use longshore_kafka::mapping::{HEADER_ID, HEADER_TOPIC};
use longshore_kafka::KafkaBroker;
use longshore_testkit::{expect_quiet, message, recv, Names};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

async fn broker() -> Option<KafkaBroker> {
    common::connect_with(common::config()).await
}

/// No header of the delay topic's own is ever shown.
fn assert_no_private_headers(headers: &longshore_core::Headers) {
    let private: Vec<&String> = headers
        .keys()
        .filter(|k| k.starts_with("x-longshore-"))
        .collect();
    assert!(private.is_empty(), "private headers shown: {private:?}");
}

/// A message nacked for a minute, then a later one acked: the consumer that comes next gets
/// neither (the original's offset was committed once its copy was stored, and the copy is not
/// due), where an in-process delay would have held back the commit of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_delay_does_not_hold_back_the_commit() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let topic = n.topic("long");
    let sub = Subscription::new(n.sub("long"), [topic.clone()]);
    let subscriber = b.subscriber();
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let publisher = b.publisher();
    let (first, second) = (message(1).with_key("k"), message(2).with_key("k"));
    publisher
        .publish(&topic, first.clone())
        .await
        .expect("publish");
    publisher
        .publish(&topic, second.clone())
        .await
        .expect("publish");
    let d = recv(&mut stream).await;
    assert_eq!(d.message().id, first.id);
    d.nack(Some(Duration::from_secs(60))).await.expect("nack");
    let d = recv(&mut stream).await;
    assert_eq!(d.message().id, second.id);
    d.ack().await.expect("ack");
    drop(stream);
    subscriber.close().await.expect("close commits");
    let again = b.subscriber();
    let mut stream = again.subscribe(&sub).await.expect("resubscribe");
    expect_quiet(&mut stream, "a delayed or acked message came back early").await;
    drop(stream);
    again.close().await.expect("close");
    publisher.close().await.expect("close");
}

/// A copy held by a consumer that goes away is held by the next one until due, and arrives as
/// a message of its original topic, with attempt 2, without the headers the delay added; a
/// second delayed nack goes on counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_copy_survives_its_consumer_and_keeps_counting() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let topic = n.topic("held.created");
    let sub = Subscription::new(n.sub("held"), [n.topic("held.#")]);
    let subscriber = b.subscriber();
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let publisher = b.publisher();
    let m = message(1).with_header("tenant", "acme");
    publisher.publish(&topic, m.clone()).await.expect("publish");
    let d = recv(&mut stream).await;
    assert_eq!(d.attempt, 1);
    let delay = Duration::from_secs(3);
    let nacked_at = Instant::now();
    d.nack(Some(delay)).await.expect("nack");
    drop(stream);
    subscriber.close().await.expect("close");

    let other = b.subscriber();
    let mut stream = other.subscribe(&sub).await.expect("resubscribe");
    let d = recv(&mut stream).await;
    assert!(nacked_at.elapsed() >= delay, "redelivered before its time");
    assert_eq!(
        (d.message().id.as_str(), d.topic.as_str()),
        (m.id.as_str(), topic.as_str())
    );
    assert_eq!(d.attempt, 2, "the count goes on across the delay");
    assert_eq!(
        d.message().headers,
        m.headers,
        "the delay's headers are gone"
    );
    assert_eq!(d.message().payload, m.payload);
    d.nack(Some(Duration::from_millis(200)))
        .await
        .expect("nack again");
    let d = recv(&mut stream).await;
    assert_eq!(d.attempt, 3);
    assert_no_private_headers(&d.message().headers);
    d.ack().await.expect("ack");
    expect_quiet(&mut stream, "a copy delivered twice").await;
    drop(stream);
    other.close().await.expect("close");
    publisher.close().await.expect("close");
}

/// A record someone else wrote to the delay topic, with a count and a due time that are no
/// number and no time: delivered at once, as attempt 1, its private headers removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_delay_topic_is_delivered_at_once() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let topic = n.topic("garbage");
    let sub = Subscription::new(n.sub("garbage"), [topic.clone()]);
    let subscriber = b.subscriber();
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .set("acks", "all")
        .create()
        .expect("raw producer");
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: HEADER_TOPIC,
            value: Some(topic.as_str()),
        })
        .insert(Header {
            key: HEADER_ID,
            value: Some("garbage-1"),
        })
        .insert(Header {
            key: "x-longshore-attempts",
            value: Some("-7 apples"),
        })
        .insert(Header {
            key: HEADER_DELIVER_AT,
            value: Some("tomorrow, maybe"),
        });
    let delay_topic = format!("longshore.delay.{}", sub.name);
    let record = FutureRecord::<(), [u8]>::to(&delay_topic)
        .payload(&b"{}"[..])
        .headers(headers);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("produce to the delay topic");
    let d = recv(&mut stream).await;
    assert_eq!(
        (d.message().id.as_str(), d.topic.as_str()),
        ("garbage-1", topic.as_str())
    );
    assert_eq!(d.attempt, 1);
    assert_no_private_headers(&d.message().headers);
    assert!(!d.message().headers.contains_key(HEADER_DELIVER_AT));
    d.ack().await.expect("ack");
    drop(stream);
    subscriber.close().await.expect("close");
}
