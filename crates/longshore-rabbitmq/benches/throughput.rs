//! Throughput of the adapter beside raw lapin doing identical work in the same run.
//!
//! `cargo bench -p longshore-rabbitmq --bench throughput` (broker at `AMQP_URL`, default the
//! local one). Not a test: it prints msg/s and ratios, and fails only if the broker is missing.
//!
//! Scenarios (persistent messages with a message id and two headers, 256-byte payload,
//! `mandatory`, publisher confirms; each run alternates longshore and raw lapin and keeps the
//! best of `ROUNDS`):
//! 1. confirmed publish one by one (await each confirm);
//! 2. confirmed publish in batches of `BATCH` (confirms pipelined);
//! 3. publish → consume → ack: a batched publisher and one consumer (prefetch `PREFETCH`)
//!    running together until every message is acked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use longshore_core::{Message, Publisher, Subscriber, Subscription};
use longshore_rabbitmq::{queue_arguments, RabbitBroker, RabbitConfig, DEFAULT_URL};

const ONE_BY_ONE: usize = 2_000;
const BATCHED: usize = 20_000;
const BATCH: usize = 100;
const PIPELINE: usize = 20_000;
const PREFETCH: u16 = 200;
const ROUNDS: usize = 5;
const PAYLOAD: usize = 256;

fn messages(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(vec![b'x'; PAYLOAD])
                .with_header("content-type", "application/octet-stream")
                .with_header("seq", i.to_string())
        })
        .collect()
}

/// What the adapter puts on the wire for `m`, built by hand for raw lapin.
fn raw_properties(m: &Message) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("seq"),
        AMQPValue::LongString(LongString::from(m.headers["seq"].as_bytes())),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(m.id.as_str()))
        .with_content_type(ShortString::from("application/octet-stream"))
        .with_headers(headers)
}

struct Raw {
    channel: Channel,
    exchange: String,
}

impl Raw {
    async fn publish(&self, topic: &str, m: &Message) -> lapin::PublisherConfirm {
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                topic.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &m.payload,
                raw_properties(m),
            )
            .await
            .expect("raw publish")
    }

    async fn one_by_one(&self, topic: &str, batch: &[Message]) {
        for m in batch {
            let c = self.publish(topic, m).await.await.expect("confirm");
            assert!(matches!(c, Confirmation::Ack(None)), "{c:?}");
        }
    }

    async fn batched(&self, topic: &str, all: &[Message]) {
        for chunk in all.chunks(BATCH) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for m in chunk {
                confirms.push(self.publish(topic, m).await);
            }
            for c in join_all(confirms).await {
                assert!(matches!(c.expect("confirm"), Confirmation::Ack(None)));
            }
        }
    }
}

async fn purge(channel: &Channel, queue: &str) {
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .expect("purge");
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

struct Pair {
    name: &'static str,
    ours: f64,
    raw: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let config = RabbitConfig::from_url(&url).expect("url");
    let exchange = config.exchange.clone();
    let broker = match RabbitBroker::connect(config).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "bench needs RabbitMQ at {}: {e}",
                longshore_core::url::redact_url(&url)
            );
            std::process::exit(1);
        }
    };
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("raw connection");
    let admin = conn.create_channel().await.expect("channel");
    let raw_channel = conn.create_channel().await.expect("channel");
    raw_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let raw = Raw {
        channel: raw_channel,
        exchange: exchange.clone(),
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let topic = format!("bench{}.publish", &run[..8]);
    let queue = format!("bench{}-publish", &run[..8]);
    // The same queue as a subscription would declare, bound to the bench topic.
    admin
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            queue_arguments(&queue),
        )
        .await
        .expect("queue");
    admin
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            topic.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let publisher = broker.publisher();
    // Warm up both paths (channel creation, exchange declaration).
    publisher
        .publish_batch(&topic, messages(BATCH))
        .await
        .expect("warm-up");
    raw.batched(&topic, &messages(BATCH)).await;
    purge(&admin, &queue).await;

    let mut pairs = Vec::new();

    // 1. One by one.
    let (mut ours, mut theirs) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        let batch = messages(ONE_BY_ONE);
        let t = Instant::now();
        for m in batch {
            publisher.publish(&topic, m).await.expect("publish");
        }
        ours = ours.max(rate(ONE_BY_ONE, t.elapsed()));
        purge(&admin, &queue).await;
        let batch = messages(ONE_BY_ONE);
        let t = Instant::now();
        raw.one_by_one(&topic, &batch).await;
        theirs = theirs.max(rate(ONE_BY_ONE, t.elapsed()));
        purge(&admin, &queue).await;
    }
    pairs.push(Pair {
        name: "confirmed publish, one by one",
        ours,
        raw: theirs,
    });

    // 2. Batched.
    let (mut ours, mut theirs) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        let all = messages(BATCHED);
        let t = Instant::now();
        let mut it = all.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<Message> = it.by_ref().take(BATCH).collect();
            publisher.publish_batch(&topic, chunk).await.expect("batch");
        }
        ours = ours.max(rate(BATCHED, t.elapsed()));
        purge(&admin, &queue).await;
        let all = messages(BATCHED);
        let t = Instant::now();
        raw.batched(&topic, &all).await;
        theirs = theirs.max(rate(BATCHED, t.elapsed()));
        purge(&admin, &queue).await;
    }
    pairs.push(Pair {
        name: "confirmed publish, batches of 100",
        ours,
        raw: theirs,
    });
    let batched_over_single = pairs[1].ours / pairs[0].ours;

    // 3. Publish → consume → ack, both running at once.
    let (mut ours, mut theirs) = (0f64, 0f64);
    let subscriber = Arc::new(broker.subscriber());
    for round in 0..ROUNDS {
        let t = Instant::now();
        let mut stream = subscriber
            .subscribe(&Subscription::new(queue.clone(), [topic.clone()]).with_prefetch(PREFETCH))
            .await
            .expect("subscribe");
        let consume = tokio::spawn(async move {
            for _ in 0..PIPELINE {
                let d = stream.next().await.expect("stream").expect("delivery");
                d.ack().await.expect("ack");
            }
        });
        let all = messages(PIPELINE);
        let mut it = all.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<Message> = it.by_ref().take(BATCH).collect();
            publisher.publish_batch(&topic, chunk).await.expect("batch");
        }
        consume.await.expect("consumer");
        ours = ours.max(rate(PIPELINE, t.elapsed()));
        purge(&admin, &queue).await;

        let t = Instant::now();
        let consumer_channel = conn.create_channel().await.expect("channel");
        consumer_channel
            .basic_qos(PREFETCH, BasicQosOptions { global: false })
            .await
            .expect("qos");
        let mut consumer = consumer_channel
            .basic_consume(
                queue.as_str().into(),
                format!("raw-{round}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let consume = tokio::spawn(async move {
            for _ in 0..PIPELINE {
                let d = consumer.next().await.expect("stream").expect("delivery");
                d.acker.ack(BasicAckOptions::default()).await.expect("ack");
            }
            let _ = consumer_channel.close(200, "OK".into()).await;
        });
        let all = messages(PIPELINE);
        raw.batched(&topic, &all).await;
        consume.await.expect("consumer");
        theirs = theirs.max(rate(PIPELINE, t.elapsed()));
        purge(&admin, &queue).await;
    }
    pairs.push(Pair {
        name: "publish → consume → ack",
        ours,
        raw: theirs,
    });

    println!("\nlongshore-rabbitmq vs raw lapin (best of {ROUNDS}, {PAYLOAD}-byte persistent messages)\n");
    println!("| scenario | longshore msg/s | raw lapin msg/s | ratio |");
    println!("|---|---:|---:|---:|");
    for p in &pairs {
        println!(
            "| {} | {:.0} | {:.0} | {:.2}× |",
            p.name,
            p.ours,
            p.raw,
            p.ours / p.raw
        );
    }
    println!("\nbatched / one-by-one (longshore): {batched_over_single:.1}×");
    admin
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete queue");
    let dlq = format!("dlq.{queue}");
    let _ = admin
        .queue_delete(dlq.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = broker.close().await;
}
