//! Throughput of the adapter beside raw async-nats doing the same work, in the same run.
//!
//! `cargo bench -p longshore-nats --bench throughput` (needs the server at `NATS_URL`,
//! default `nats://127.0.0.1:4222`). `BENCH_MESSAGES` (default 20000) and `BENCH_ROUNDS`
//! (default 3) tune it. Publish: N messages of 256 bytes, each with a `Nats-Msg-Id`, up to
//! 1024 PubAcks in flight. Consume: a durable pull consumer, batches of 256, each message acked.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage as Publish};
use futures::StreamExt;
use longshore_core::{Message, Publisher, Subscriber, Subscription};
use longshore_nats::{NatsBroker, NatsConfig};

const WINDOW: usize = 1024;
const BATCH: usize = 256;
const STREAM: &str = "LONGSHORE_BENCH";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn raw_publish(
    js: &jetstream::Context,
    subject: &str,
    msgs: &[(String, bytes::Bytes)],
) -> Duration {
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(WINDOW);
    for (id, payload) in msgs {
        if in_flight.len() >= WINDOW {
            let fut: jetstream::context::PublishAckFuture = in_flight.pop_front().expect("front");
            fut.await.expect("raw puback");
        }
        let ack = js
            .send_publish(
                subject.to_string(),
                Publish::build().payload(payload.clone()).message_id(id),
            )
            .await
            .expect("raw publish");
        in_flight.push_back(ack);
    }
    for fut in in_flight {
        fut.await.expect("raw puback");
    }
    started.elapsed()
}

async fn raw_consume(consumer: &consumer::PullConsumer, n: usize) -> Duration {
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .messages()
        .await
        .expect("raw messages");
    for _ in 0..n {
        let m = messages.next().await.expect("raw message").expect("raw ok");
        m.ack().await.expect("raw ack");
    }
    started.elapsed()
}

async fn longshore_publish(p: &dyn Publisher, topic: &str, msgs: Vec<Message>) -> Duration {
    let started = Instant::now();
    p.publish_batch(topic, msgs).await.expect("longshore batch");
    started.elapsed()
}

async fn longshore_consume(s: &dyn Subscriber, sub: &Subscription, n: usize) -> Duration {
    let started = Instant::now();
    let mut stream = s.subscribe(sub).await.expect("subscribe");
    for _ in 0..n {
        let d = stream.next().await.expect("delivery").expect("delivery ok");
        d.ack().await.expect("ack");
    }
    started.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let n = env_usize("BENCH_MESSAGES", 20_000);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let mut config = NatsConfig::from_url(&url).expect("url");
    config.stream = STREAM.into();
    config.subject_prefix = "lsbench".into();
    config.max_age = Duration::from_secs(600);
    config.max_acks_in_flight = WINDOW;
    let broker = NatsBroker::connect(config)
        .await
        .expect("connect longshore");
    broker.ensure_stream().await.expect("stream");
    let publisher = broker.publisher();
    let subscriber = broker.subscriber();

    let client = async_nats::connect(url.as_str())
        .await
        .expect("connect raw");
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(1 << 20)
        .backpressure_on_inflight(true)
        .build(client);
    let stream = js.get_stream(STREAM).await.expect("raw stream");

    println!(
        "nats-server {}; {n} messages of 256 bytes, {rounds} rounds, window {WINDOW}, batch {BATCH}",
        broker.server_version()
    );
    let mut pub_ratio = Vec::new();
    let mut con_ratio = Vec::new();
    for round in 0..rounds {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let raw_subject = format!("lsbench.raw{}", &run_id[..12]);
        let ls_topic = format!("ls{}", &run_id[..12]);
        let raw_consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(format!("raw{}", &run_id[..12])),
                filter_subject: raw_subject.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await
            .expect("raw consumer");
        let sub = Subscription::new(format!("ls{}", &run_id[..12]), [ls_topic.clone()])
            .with_prefetch(BATCH as u16);
        subscriber.ensure_subscription(&sub).await.expect("ensure");

        let payload = bytes::Bytes::from(vec![b'x'; 256]);
        let raw_msgs: Vec<(String, bytes::Bytes)> = (0..n)
            .map(|_| (uuid::Uuid::now_v7().to_string(), payload.clone()))
            .collect();
        let ls_msgs: Vec<Message> = (0..n).map(|_| Message::new(payload.clone())).collect();

        // Alternate who goes first, so neither always gets a warm server.
        let (raw_pub, ls_pub) = if round % 2 == 0 {
            let r = raw_publish(&js, &raw_subject, &raw_msgs).await;
            (r, longshore_publish(&publisher, &ls_topic, ls_msgs).await)
        } else {
            let l = longshore_publish(&publisher, &ls_topic, ls_msgs).await;
            (raw_publish(&js, &raw_subject, &raw_msgs).await, l)
        };
        let (raw_con, ls_con) = if round % 2 == 0 {
            let r = raw_consume(&raw_consumer, n).await;
            (r, longshore_consume(&subscriber, &sub, n).await)
        } else {
            let l = longshore_consume(&subscriber, &sub, n).await;
            (raw_consume(&raw_consumer, n).await, l)
        };
        let pr = rate(n, ls_pub) / rate(n, raw_pub);
        let cr = rate(n, ls_con) / rate(n, raw_con);
        println!(
            "round {round}: publish raw {:>8.0}/s longshore {:>8.0}/s ratio {pr:.3} | consume raw {:>8.0}/s longshore {:>8.0}/s ratio {cr:.3}",
            rate(n, raw_pub),
            rate(n, ls_pub),
            rate(n, raw_con),
            rate(n, ls_con)
        );
        pub_ratio.push(pr);
        con_ratio.push(cr);
        let _ = stream
            .delete_consumer(&format!("raw{}", &run_id[..12]))
            .await;
    }
    pub_ratio.sort_by(f64::total_cmp);
    con_ratio.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    println!(
        "median ratio (longshore / raw): publish {:.3} (target >= 0.95), consume {:.3} (target >= 0.90)",
        median(&pub_ratio),
        median(&con_ratio)
    );
}
