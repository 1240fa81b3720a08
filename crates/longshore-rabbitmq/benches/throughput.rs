//! Throughput of the adapter beside raw lapin doing identical work in the same run.
//!
//! `cargo bench -p longshore-rabbitmq --bench throughput` (broker at `AMQP_URL`, default the
//! local one). Not a test: it prints msg/s and ratios, and fails only if the broker is missing.
//!
//! Scenarios (persistent messages with a message id and two headers, 256-byte payload,
//! `mandatory`, publisher confirms; `ROUNDS` rounds alternate which side goes first; it prints
//! the best rate of each side and the median of the per-round ratios):
//! 1. confirmed publish one by one (await each confirm);
//! 2. confirmed publish in batches of `BATCH` (confirms pipelined);
//! 3. publish → consume → ack: a batched publisher and one consumer (prefetch `PREFETCH`)
//!    running together until every message is acked.

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
use longshore_rabbitmq::{
    queue_arguments, RabbitBroker, RabbitConfig, RabbitPublisher, RabbitSubscriber, DEFAULT_URL,
};

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
    ours: Vec<f64>,
    raw: Vec<f64>,
}

#[derive(Clone, Copy)]
enum Scenario {
    OneByOne,
    Batched,
    Pipeline,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::OneByOne => "confirmed publish, one by one",
            Scenario::Batched => "confirmed publish, batches of 100",
            Scenario::Pipeline => "publish → consume → ack",
        }
    }

    /// One round through the adapter; msg/s.
    async fn ours(
        self,
        publisher: &RabbitPublisher,
        subscriber: &RabbitSubscriber,
        queue: &str,
        topic: &str,
    ) -> f64 {
        match self {
            Scenario::OneByOne => {
                let batch = messages(ONE_BY_ONE);
                let t = Instant::now();
                for m in batch {
                    publisher.publish(topic, m).await.expect("publish");
                }
                rate(ONE_BY_ONE, t.elapsed())
            }
            Scenario::Batched => {
                let all = messages(BATCHED);
                let t = Instant::now();
                publish_batches(publisher, topic, all).await;
                rate(BATCHED, t.elapsed())
            }
            Scenario::Pipeline => {
                let all = messages(PIPELINE);
                let t = Instant::now();
                let mut stream = subscriber
                    .subscribe(
                        &Subscription::new(queue.to_string(), [topic.to_string()])
                            .with_prefetch(PREFETCH),
                    )
                    .await
                    .expect("subscribe");
                let consume = tokio::spawn(async move {
                    for _ in 0..PIPELINE {
                        let d = stream.next().await.expect("stream").expect("delivery");
                        d.ack().await.expect("ack");
                    }
                });
                publish_batches(publisher, topic, all).await;
                consume.await.expect("consumer");
                rate(PIPELINE, t.elapsed())
            }
        }
    }

    /// The same round with raw lapin; msg/s.
    async fn raw(
        self,
        raw: &Raw,
        conn: &Connection,
        queue: &str,
        topic: &str,
        round: usize,
    ) -> f64 {
        match self {
            Scenario::OneByOne => {
                let batch = messages(ONE_BY_ONE);
                let t = Instant::now();
                raw.one_by_one(topic, &batch).await;
                rate(ONE_BY_ONE, t.elapsed())
            }
            Scenario::Batched => {
                let all = messages(BATCHED);
                let t = Instant::now();
                raw.batched(topic, &all).await;
                rate(BATCHED, t.elapsed())
            }
            Scenario::Pipeline => {
                let all = messages(PIPELINE);
                let t = Instant::now();
                let consumer_channel = conn.create_channel().await.expect("channel");
                consumer_channel
                    .basic_qos(PREFETCH, BasicQosOptions { global: false })
                    .await
                    .expect("qos");
                let mut consumer = consumer_channel
                    .basic_consume(
                        queue.into(),
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
                raw.batched(topic, &all).await;
                consume.await.expect("consumer");
                rate(PIPELINE, t.elapsed())
            }
        }
    }
}

async fn publish_batches(publisher: &RabbitPublisher, topic: &str, all: Vec<Message>) {
    let mut it = all.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<Message> = it.by_ref().take(BATCH).collect();
        publisher.publish_batch(topic, chunk).await.expect("batch");
    }
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

    let subscriber = broker.subscriber();
    let mut pairs = Vec::new();
    for scenario in [Scenario::OneByOne, Scenario::Batched, Scenario::Pipeline] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Alternate who goes first, so that drifting machine load hits both alike.
            for side in if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            } {
                let r = if side {
                    scenario.ours(&publisher, &subscriber, &queue, &topic).await
                } else {
                    scenario.raw(&raw, &conn, &queue, &topic, round).await
                };
                purge(&admin, &queue).await;
                if side {
                    ours.push(r)
                } else {
                    theirs.push(r)
                }
            }
        }
        pairs.push(Pair {
            name: scenario.name(),
            ours,
            raw: theirs,
        });
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0f64, f64::max);
    let batched_over_single = best(&pairs[1].ours) / best(&pairs[0].ours);

    println!("\nlongshore-rabbitmq vs raw lapin ({ROUNDS} alternating rounds, {PAYLOAD}-byte persistent messages)\n");
    println!("| scenario | longshore msg/s (best) | raw lapin msg/s (best) | ratio of bests | median of per-round ratios |");
    println!("|---|---:|---:|---:|---:|");
    for p in &pairs {
        let mut ratios: Vec<f64> = p.ours.iter().zip(&p.raw).map(|(a, b)| a / b).collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "| {} | {:.0} | {:.0} | {:.2}× | {:.2}× |",
            p.name,
            best(&p.ours),
            best(&p.raw),
            best(&p.ours) / best(&p.raw),
            ratios[ratios.len() / 2]
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
