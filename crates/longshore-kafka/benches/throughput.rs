//! Throughput of the adapter beside raw rdkafka doing identical work in the same run.
//!
//! `cargo bench -p longshore-kafka --bench throughput` (broker at `KAFKA_BROKERS`, default
//! 127.0.0.1:9092). Not a test: it prints msg/s and ratios, and fails only if the broker is
//! missing.
//!
//! Both sides use the same producer settings (`acks=all`, idempotence, murmur2 partitioner,
//! `linger.ms=5`), the same records (256-byte payload, a key out of 64, the adapter's four
//! headers) and, for consuming, the same at-least-once pattern (auto-commit of offsets stored
//! after each message is handled). Each scenario alternates the two sides and keeps the best of
//! `ROUNDS`:
//! 1. publish one by one, awaiting each delivery report;
//! 2. publish in batches of `BATCH` (all enqueued, reports awaited together);
//! 3. consume and ack `CONSUME` messages already in the topic, timed from the first message
//!    (so the group join, which is the broker's business, is not counted).

use std::time::{Duration, Instant};

use futures::future::join_all;
use longshore_core::{Message, Publisher, Subscriber, Subscription};
use longshore_kafka::{KafkaBroker, KafkaConfig};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const ONE_BY_ONE: usize = 500;
const BATCHED: usize = 20_000;
const BATCH: usize = 100;
const CONSUME: usize = 20_000;
const PREFETCH: u16 = 500;
const ROUNDS: usize = 3;
const PAYLOAD: usize = 256;

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

fn messages(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(vec![b'x'; PAYLOAD])
                .with_key(format!("agg-{}", i % 64))
                .with_header("content-type", "application/octet-stream")
                .with_header("seq", i.to_string())
        })
        .collect()
}

fn raw_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("client.id", "raw-bench")
        .set("message.max.bytes", "1048588")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.timeout.ms", "30000")
        .set("partitioner", "murmur2_random")
        .set("sticky.partitioning.linger.ms", "0")
        .set("linger.ms", "5")
        .create()
        .expect("raw producer")
}

/// The record the adapter would send for `m`, built by hand.
fn raw_record<'a>(
    kafka_topic: &'a str,
    topic: &'a str,
    m: &'a Message,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut h = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "longshore-id",
            value: Some(m.id.as_str()),
        })
        .insert(Header {
            key: "longshore-topic",
            value: Some(topic),
        });
    for (k, v) in &m.headers {
        h = h.insert(Header {
            key: k.as_str(),
            value: Some(v.as_str()),
        });
    }
    let mut r = FutureRecord::to(kafka_topic)
        .payload(&m.payload[..])
        .headers(h);
    if let Some(k) = &m.key {
        r = r.key(k.as_bytes());
    }
    r
}

async fn raw_send_all(p: &FutureProducer, kafka_topic: &str, topic: &str, batch: &[Message]) {
    let mut futures = Vec::with_capacity(batch.len());
    for m in batch {
        loop {
            match p.send_result(raw_record(kafka_topic, topic, m)) {
                Ok(f) => {
                    futures.push(f);
                    break;
                }
                Err((e, _)) => {
                    assert!(
                        e.rdkafka_error_code() == Some(rdkafka::error::RDKafkaErrorCode::QueueFull),
                        "{e}"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }
    for r in join_all(futures).await {
        r.expect("report").expect("delivered");
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn report(name: &str, ours: f64, raw: f64) {
    println!(
        "{name:<28} longshore {ours:>10.0} msg/s   raw rdkafka {raw:>10.0} msg/s   ratio {:.3}",
        ours / raw
    );
}

fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..10])
}

#[tokio::main]
async fn main() {
    let mut config = KafkaConfig::new(brokers());
    config.session_timeout = Duration::from_millis(
        std::env::var("KAFKA_SESSION_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6000),
    );
    let broker = match KafkaBroker::connect(config.clone()).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("kafka at {} is unreachable: {e}", brokers());
            std::process::exit(1);
        }
    };
    let raw = raw_producer();
    println!(
        "kafka throughput at {} (best of {ROUNDS} rounds)",
        brokers()
    );

    // `BENCH=publish|batch|consume` runs one scenario only.
    let only = std::env::var("BENCH").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only == name;

    // 1. One by one.
    let (mut ours, mut theirs) = (0f64, 0f64);
    for round in 0..if run("publish") { ROUNDS } else { 0 } {
        let k = unique("bone");
        let topic = format!("{k}.evt");
        broker.ensure_topics(&[&topic]).await.expect("topic");
        let batch = messages(ONE_BY_ONE);
        let publisher = broker.publisher();
        // Warm both (topic metadata, connections) outside the timing.
        publisher
            .publish(&topic, messages(1).remove(0))
            .await
            .expect("warm");
        raw_send_all(&raw, &k, &topic, &messages(1)).await;
        for side in [round % 2, 1 - round % 2] {
            let t = Instant::now();
            if side == 0 {
                for m in batch.clone() {
                    publisher.publish(&topic, m).await.expect("publish");
                }
                ours = ours.max(rate(ONE_BY_ONE, t.elapsed()));
            } else {
                for m in &batch {
                    raw.send_result(raw_record(&k, &topic, m))
                        .map_err(|(e, _)| e)
                        .expect("enqueue")
                        .await
                        .expect("report")
                        .expect("delivered");
                }
                theirs = theirs.max(rate(ONE_BY_ONE, t.elapsed()));
            }
        }
        publisher.close().await.expect("close");
    }
    if run("publish") {
        report("publish, one by one", ours, theirs);
    }

    // 2. Batches.
    let (mut ours, mut theirs) = (0f64, 0f64);
    for round in 0..if run("batch") { ROUNDS } else { 0 } {
        let k = unique("bbat");
        let topic = format!("{k}.evt");
        broker.ensure_topics(&[&topic]).await.expect("topic");
        let all = messages(BATCHED);
        let publisher = broker.publisher();
        publisher
            .publish(&topic, messages(1).remove(0))
            .await
            .expect("warm");
        raw_send_all(&raw, &k, &topic, &messages(1)).await;
        for side in [round % 2, 1 - round % 2] {
            let t = Instant::now();
            if side == 0 {
                for chunk in all.chunks(BATCH) {
                    publisher
                        .publish_batch(&topic, chunk.to_vec())
                        .await
                        .expect("batch");
                }
                ours = ours.max(rate(BATCHED, t.elapsed()));
            } else {
                for chunk in all.chunks(BATCH) {
                    raw_send_all(&raw, &k, &topic, chunk).await;
                }
                theirs = theirs.max(rate(BATCHED, t.elapsed()));
            }
        }
        publisher.close().await.expect("close");
    }
    if run("batch") {
        report(&format!("publish, batches of {BATCH}"), ours, theirs);
    }

    // 3. Consume + ack.
    let (mut ours, mut theirs) = (0f64, 0f64);
    for round in 0..if run("consume") { ROUNDS } else { 0 } {
        let k = unique("bcon");
        let topic = format!("{k}.evt");
        broker.ensure_topics(&[&topic]).await.expect("topic");
        raw_send_all(&raw, &k, &topic, &messages(CONSUME)).await;
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let subscriber = broker.subscriber();
                let sub =
                    Subscription::new(format!("{k}-ours"), [topic.clone()]).with_prefetch(PREFETCH);
                let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
                use futures::StreamExt;
                let first = stream.next().await.expect("first").expect("delivery");
                let t = Instant::now();
                first.ack().await.expect("ack");
                for _ in 1..CONSUME {
                    let d = stream.next().await.expect("more").expect("delivery");
                    d.ack().await.expect("ack");
                }
                ours = ours.max(rate(CONSUME - 1, t.elapsed()));
                subscriber.close().await.expect("close");
            } else {
                let c: StreamConsumer = ClientConfig::new()
                    .set("bootstrap.servers", brokers())
                    .set("group.id", format!("{k}-raw"))
                    .set("enable.auto.commit", "true")
                    .set("auto.commit.interval.ms", "1000")
                    .set("enable.auto.offset.store", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("enable.partition.eof", "false")
                    .set(
                        "session.timeout.ms",
                        config.session_timeout.as_millis().to_string(),
                    )
                    .set(
                        "heartbeat.interval.ms",
                        (config.session_timeout.as_millis() / 3).to_string(),
                    )
                    .set("fetch.wait.max.ms", "100")
                    .create()
                    .expect("raw consumer");
                c.subscribe(&[&k]).expect("subscribe");
                let first = c.recv().await.expect("first");
                let t = Instant::now();
                c.store_offset_from_message(&first).expect("store");
                drop(first);
                for _ in 1..CONSUME {
                    let m = c.recv().await.expect("message");
                    // What a handler would look at: the same header decoding the adapter does.
                    use rdkafka::message::Headers as _;
                    use rdkafka::Message as _;
                    let mut headers = std::collections::BTreeMap::new();
                    if let Some(hs) = m.headers() {
                        for h in hs.iter() {
                            headers.insert(
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            );
                        }
                    }
                    let payload = bytes::Bytes::copy_from_slice(m.payload().unwrap_or_default());
                    std::hint::black_box((headers, payload));
                    c.store_offset_from_message(&m).expect("store");
                }
                theirs = theirs.max(rate(CONSUME - 1, t.elapsed()));
                // Close off the async threads (librdkafka's close blocks).
                tokio::task::spawn_blocking(move || drop(c))
                    .await
                    .expect("drop");
            }
        }
    }
    if run("consume") {
        report(
            &format!("consume + ack (prefetch {PREFETCH})"),
            ours,
            theirs,
        );
    }
}
