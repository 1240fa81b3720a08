//! The scenarios, each run by longshore and by the raw client in alternating order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use longshore::Longshore;
use longshore_core::memory::{MemoryBroker, MemoryConfig};
use longshore_core::{
    Consumer, EventStore, ExpectedVersion, HandlerError, Message, OutboxRelay, Publisher,
    Subscriber, Subscription,
};

use futures::StreamExt;

use crate::backend::{close, Backend, Env};
use crate::cli::Args;
use crate::measure::{median, parse_stamp, Recorder, Sample, SideStats, Timed, SENT_HEADER};
use crate::raw::RawClient;
use crate::report::{self, Row};
use crate::store::{raw_append, raw_read_all, raw_relay_pass, store_read_all};
use crate::work::{self, unique, BATCH, CONCURRENCY, EVENT_TYPE};

/// One workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    PublishOne,
    PublishBatch,
    Transport,
    EndToEnd,
    StoreAppend1,
    StoreAppend10,
    ReadAll,
    Relay,
    DrainBacklog,
}

/// Events per page of `read_all`, and rows per relay pass.
const PAGE: usize = 500;
const RELAY_BATCH: usize = 100;
/// The memory transport variant measuring the broker without the facade's observability layer.
const BARE_MEMORY: &str = "the bare memory broker, without the facade's tracing and metrics layer";
/// Prefetch of the transport scenario's one consumer (below every backend's maximum).
const TRANSPORT_PREFETCH: u16 = 1000;

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::PublishOne,
        Scenario::PublishBatch,
        Scenario::Transport,
        Scenario::EndToEnd,
        Scenario::StoreAppend1,
        Scenario::StoreAppend10,
        Scenario::ReadAll,
        Scenario::Relay,
        Scenario::DrainBacklog,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::PublishOne => "publish-one",
            Scenario::PublishBatch => "publish-batch",
            Scenario::Transport => "transport",
            Scenario::EndToEnd => "end-to-end",
            Scenario::StoreAppend1 => "store-append-1",
            Scenario::StoreAppend10 => "store-append-10",
            Scenario::ReadAll => "read-all",
            Scenario::Relay => "relay",
            Scenario::DrainBacklog => "drain-backlog",
        }
    }

    pub fn from_name(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }

    fn applies(self, b: Backend) -> bool {
        match self {
            Scenario::StoreAppend1 | Scenario::StoreAppend10 | Scenario::ReadAll => b.has_store(),
            _ => true,
        }
    }

    /// What the latency columns measure.
    pub fn latency_of(self) -> &'static str {
        match self {
            Scenario::PublishOne => "one confirmed publish",
            Scenario::PublishBatch => "one batch of 100",
            Scenario::EndToEnd => "publish → handled",
            Scenario::StoreAppend1 | Scenario::StoreAppend10 => "one transaction",
            Scenario::ReadAll => "one page of 500",
            Scenario::Relay => "one relay pass (100 rows)",
            Scenario::Transport | Scenario::DrainBacklog => "–",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Scenario::StoreAppend1 | Scenario::StoreAppend10 | Scenario::ReadAll => "events/s",
            _ => "msg/s",
        }
    }

    /// Items per side and round (messages, or transactions for appends).
    fn count(self, b: Backend, quick: bool) -> usize {
        use Backend::*;
        if quick {
            return match (self, b) {
                (Scenario::PublishOne, Kafka) => 5,
                (Scenario::PublishOne, _) => 20,
                (Scenario::StoreAppend1, _) => 20,
                (Scenario::StoreAppend10, _) => 5,
                _ => 200,
            };
        }
        match (self, b) {
            // Below the memory broker's default depth (100,000): nothing consumes here.
            (Scenario::PublishOne, Memory) => 90_000,
            (Scenario::PublishOne, Kafka) => 300,
            (Scenario::PublishOne, _) => 2_000,
            (Scenario::PublishBatch, Memory) => 90_000,
            (Scenario::PublishBatch, Nats) => 50_000,
            (Scenario::PublishBatch, _) => 20_000,
            (Scenario::Transport, Memory) => 1_000_000,
            (Scenario::Transport, Rabbitmq | Postgres) => 10_000,
            (Scenario::Transport, _) => 50_000,
            (Scenario::EndToEnd, Memory) => 1_000_000,
            (Scenario::EndToEnd, Postgres) => 5_000,
            (Scenario::EndToEnd, _) => 20_000,
            (Scenario::StoreAppend1, Memory) => 50_000,
            (Scenario::StoreAppend1, _) => 1_000,
            (Scenario::StoreAppend10, Memory) => 10_000,
            (Scenario::StoreAppend10, _) => 300,
            (Scenario::ReadAll, Memory) => 200_000,
            (Scenario::ReadAll, _) => 20_000,
            (Scenario::Relay, Memory) => 20_000,
            (Scenario::Relay, _) => 10_000,
            (Scenario::DrainBacklog, Memory) => 1_000_000,
            (Scenario::DrainBacklog, Rabbitmq) => 50_000,
            (Scenario::DrainBacklog, Postgres) => 20_000,
            (Scenario::DrainBacklog, _) => 100_000,
        }
    }
}

/// Which side runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Longshore,
    Raw,
}

/// Runs every selected scenario on every selected backend; returns the failures.
pub async fn run_all(args: &Args) -> Vec<String> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let (mut rows, mut failures, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for &backend in &args.backends {
        let env = match Env::open(backend, args.quick, args.rounds).await {
            Ok(env) => env,
            Err(e) if ci => {
                failures.push(format!(
                    "{}: unreachable under CI=true: {e}",
                    backend.name()
                ));
                continue;
            }
            Err(e) => {
                println!("SKIPPED {}: {e}", backend.name());
                skipped.push(format!("{}: {e}", backend.name()));
                continue;
            }
        };
        for &scenario in &args.scenarios {
            if !scenario.applies(backend) {
                continue;
            }
            println!("== {} on {}", scenario.name(), backend.name());
            let t = Instant::now();
            match run_scenario(&env, scenario).await {
                Ok(new) => {
                    for r in &new {
                        println!(
                            "   {}  ({:.1} s)",
                            report::one_line(r),
                            t.elapsed().as_secs_f64()
                        );
                    }
                    rows.extend(new);
                }
                Err(e) => {
                    eprintln!("   FAILED: {e}");
                    failures.push(format!("{} on {}: {e}", scenario.name(), backend.name()));
                }
            }
        }
        env.close().await;
    }
    println!("\nall done in {:.1} s", started.elapsed().as_secs_f64());
    if let Err(e) = report::write(args, &rows, &skipped, &failures) {
        failures.push(format!("writing the report: {e}"));
    }
    failures
}

fn sub_and_topic() -> (Subscription, String) {
    let name = unique("lsb");
    let topic = format!("{name}.evt");
    (Subscription::new(name, [topic.clone()]), topic)
}

fn row(
    env: &Env,
    scenario: Scenario,
    variant: Option<&str>,
    items: usize,
    ours: &[Sample],
    raw: &[Sample],
) -> Row {
    let ratios: Vec<f64> = ours
        .iter()
        .zip(raw)
        .map(|(a, b)| a.rate() / b.rate().max(1e-9))
        .collect();
    Row {
        scenario: scenario.name().to_string(),
        backend: env.backend.name().to_string(),
        variant: variant.map(str::to_string),
        raw_client: env.backend.raw_name().to_string(),
        unit: scenario.unit().to_string(),
        latency_of: scenario.latency_of().to_string(),
        items,
        longshore: SideStats::of(ours),
        raw: SideStats::of(raw),
        ratio: (!ratios.is_empty()).then(|| median(&ratios)),
    }
}

/// The order of the two sides in round `round`: alternating, so drifting load hits both.
fn order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) {
        [Side::Longshore, Side::Raw]
    } else {
        [Side::Raw, Side::Longshore]
    }
}

fn wait_limit(env: &Env) -> Duration {
    Duration::from_secs(if env.quick { 60 } else { 900 })
}

async fn run_scenario(env: &Env, scenario: Scenario) -> crate::Result<Vec<Row>> {
    let n = scenario.count(env.backend, env.quick);
    // The memory store and relay have no raw counterpart.
    let has_raw = env.backend != Backend::Memory
        || !(scenario.unit() == "events/s" || scenario == Scenario::Relay);
    let rounds = match scenario {
        Scenario::DrainBacklog if !env.quick => env.rounds.min(2),
        _ => env.rounds,
    };
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let mut extra: Vec<(String, Vec<Sample>)> = Vec::new();
    // Connections kept for the whole scenario (memory: fresh per side, see `publish`).
    let (ls, schema) = match scenario {
        Scenario::StoreAppend1 | Scenario::StoreAppend10 | Scenario::ReadAll | Scenario::Relay => {
            env.connect_with_store().await?
        }
        _ => (env.connect().await?, None),
    };
    if scenario == Scenario::ReadAll {
        fill_store(&*ls.store()?, n).await?;
    }
    let result: crate::Result<()> = async {
        for round in 0..rounds {
            for side in order(round) {
                if side == Side::Raw && !has_raw {
                    continue;
                }
                let s = match scenario {
                    Scenario::PublishOne | Scenario::PublishBatch => {
                        publish(env, &ls, side, scenario == Scenario::PublishBatch, n).await?
                    }
                    Scenario::Transport => {
                        transport(env, &ls.publisher, &ls.subscriber, side, n, false).await?
                    }
                    Scenario::EndToEnd => end_to_end(env, &ls, side, n).await?,
                    Scenario::StoreAppend1 => append(env, &ls, side, n, 1).await?,
                    Scenario::StoreAppend10 => append(env, &ls, side, n, 10).await?,
                    Scenario::ReadAll => read_all(env, &ls, schema.as_deref(), side, n).await?,
                    Scenario::Relay => relay(env, &ls, schema.as_deref(), side, n).await?,
                    Scenario::DrainBacklog => drain(env, &ls, side, n).await?,
                };
                match side {
                    Side::Longshore => ours.push(s),
                    Side::Raw => raw.push(s),
                }
            }
            // Variants measured in the same rounds, compared with the same longshore samples.
            if scenario == Scenario::ReadAll && env.backend == Backend::Postgres {
                let pg = env.pg.as_ref().ok_or("no raw pool")?;
                let s = schema.as_deref().ok_or("no schema")?;
                let t = Timed::start();
                let read = raw_read_all(&pg.pool, s, PAGE as i64, false).await?;
                push_extra(
                    &mut extra,
                    "raw reads without the watermark (may skip in-flight events)",
                    t.finish(read, Vec::new()),
                );
            }
            if env.backend == Backend::Memory && scenario == Scenario::Transport {
                let broker = MemoryBroker::new(MemoryConfig::default());
                let (p, s): (Arc<dyn Publisher>, Arc<dyn Subscriber>) =
                    (Arc::new(broker.publisher()), Arc::new(broker.subscriber()));
                let sample = transport(env, &p, &s, Side::Longshore, n, true).await?;
                let _ = s.close().await;
                push_extra(&mut extra, BARE_MEMORY, sample);
            }
            if env.backend == Backend::Rabbitmq
                && matches!(scenario, Scenario::PublishOne | Scenario::PublishBatch)
            {
                let transient = env.transient.clone().ok_or("no transient client")?;
                let s = raw_publish(env, &ls, &*transient, scenario == Scenario::PublishBatch, n)
                    .await?;
                push_extra(
                    &mut extra,
                    "raw lapin, transient messages (delivery mode 1)",
                    s,
                );
            }
        }
        Ok(())
    }
    .await;
    close(&ls).await;
    result?;
    let items = if scenario == Scenario::StoreAppend10 {
        n * 10
    } else {
        n
    };
    let mut rows = vec![row(env, scenario, None, items, &ours, &raw)];
    for (variant, samples) in extra {
        let mut r = row(env, scenario, Some(&variant), items, &ours, &samples);
        if variant == BARE_MEMORY {
            r.raw_client = "MemoryBroker".to_string();
        }
        rows.push(r);
    }
    Ok(rows)
}

fn push_extra(extra: &mut Vec<(String, Vec<Sample>)>, name: &str, s: Sample) {
    match extra.iter_mut().find(|(v, _)| v == name) {
        Some((_, v)) => v.push(s),
        None => extra.push((name.to_string(), vec![s])),
    }
}

/// Memory keeps what is published: a fresh broker per side lets it go again.
async fn fresh_if_memory(env: &Env, ls: &Longshore) -> crate::Result<Longshore> {
    if env.backend == Backend::Memory {
        env.connect().await
    } else {
        Ok(ls.clone())
    }
}

async fn publish(
    env: &Env,
    ls: &Longshore,
    side: Side,
    batched: bool,
    n: usize,
) -> crate::Result<Sample> {
    if side == Side::Raw {
        return raw_publish(env, ls, &*env.raw, batched, n).await;
    }
    let ls = fresh_if_memory(env, ls).await?;
    let (sub, topic) = sub_and_topic();
    ls.subscriber.ensure_subscription(&sub).await?;
    env.raw.prepare(&sub).await?;
    // Warm up (channel, topic metadata) outside the timing.
    ls.publisher
        .publish(&topic, work::payload_messages(1).remove(0))
        .await?;
    let mut lat = Vec::new();
    let t = if batched {
        let mut batches = Vec::new();
        let mut all = work::payload_messages(n).into_iter();
        loop {
            let b: Vec<Message> = all.by_ref().take(BATCH).collect();
            if b.is_empty() {
                break;
            }
            batches.push(b);
        }
        let t = Timed::start();
        for b in batches {
            let s = Instant::now();
            ls.publisher.publish_batch(&topic, b).await?;
            lat.push(s.elapsed().as_micros() as u64);
        }
        t
    } else {
        let msgs = work::payload_messages(n);
        let t = Timed::start();
        for m in msgs {
            let s = Instant::now();
            ls.publisher.publish(&topic, m).await?;
            lat.push(s.elapsed().as_micros() as u64);
        }
        t
    };
    let sample = t.finish(n, lat);
    env.raw.cleanup(&sub).await?;
    if env.backend == Backend::Memory {
        close(&ls).await;
    }
    Ok(sample)
}

async fn raw_publish(
    env: &Env,
    ls: &Longshore,
    raw: &dyn RawClient,
    batched: bool,
    n: usize,
) -> crate::Result<Sample> {
    let (sub, topic) = sub_and_topic();
    ls.subscriber.ensure_subscription(&sub).await?;
    env.raw.prepare(&sub).await?;
    raw.publish(&topic, &work::traced(work::payload_messages(1))[0])
        .await?;
    let msgs = work::traced(work::payload_messages(n));
    let mut lat = Vec::new();
    let t = Timed::start();
    if batched {
        for b in msgs.chunks(BATCH) {
            let s = Instant::now();
            raw.publish_batch(&topic, b).await?;
            lat.push(s.elapsed().as_micros() as u64);
        }
    } else {
        for m in &msgs {
            let s = Instant::now();
            raw.publish(&topic, m).await?;
            lat.push(s.elapsed().as_micros() as u64);
        }
    }
    let sample = t.finish(n, lat);
    env.raw.cleanup(&sub).await?;
    Ok(sample)
}

/// Publish → consume → ack at the transport level: batches of [`BATCH`] published while one
/// consumer (prefetch [`TRANSPORT_PREFETCH`]) acks every delivery in turn, with no consumer
/// runtime and no decoding; rate from the first publish to the last ack.
///
/// `bare`: `publisher` and `subscriber` are a bare memory broker's, without the facade's
/// observability layer, so the messages carry the `traceparent` that layer would add.
async fn transport(
    env: &Env,
    publisher: &Arc<dyn Publisher>,
    subscriber: &Arc<dyn Subscriber>,
    side: Side,
    n: usize,
    bare: bool,
) -> crate::Result<Sample> {
    let (sub, topic) = sub_and_topic();
    let sub = sub.with_prefetch(TRANSPORT_PREFETCH);
    subscriber.ensure_subscription(&sub).await?;
    env.raw.prepare(&sub).await?;
    let mut msgs = work::payload_messages(n);
    if side == Side::Raw || bare {
        msgs = work::traced(msgs);
    }
    let mut batches = Vec::with_capacity(n.div_ceil(BATCH));
    let mut all = msgs.into_iter();
    loop {
        let b: Vec<Message> = all.by_ref().take(BATCH).collect();
        if b.is_empty() {
            break;
        }
        batches.push(b);
    }
    let rec = Recorder::transport(n);
    let task = match side {
        Side::Longshore => {
            let mut stream = subscriber.subscribe(&sub).await?;
            let rec = rec.clone();
            tokio::spawn(async move {
                for _ in 0..n {
                    let d = stream.next().await.ok_or("delivery stream ended")??;
                    d.ack().await?;
                    rec.record(None);
                }
                Ok::<(), crate::BoxError>(())
            })
        }
        Side::Raw => {
            env.raw
                .start_consumer(
                    &sub,
                    &topic,
                    n,
                    usize::from(TRANSPORT_PREFETCH),
                    1,
                    rec.clone(),
                )
                .await?
        }
    };
    let t = Timed::start();
    let done: crate::Result<()> = async {
        for b in batches {
            match side {
                Side::Longshore => publisher.publish_batch(&topic, b).await?,
                Side::Raw => env.raw.publish_batch(&topic, &b).await?,
            }
        }
        rec.wait(wait_limit(env)).await
    }
    .await;
    let sample = t.finish(n, Vec::new());
    if done.is_ok() {
        task.await??;
    } else {
        task.abort();
    }
    done?;
    env.raw.cleanup(&sub).await?;
    Ok(sample)
}

/// Starts longshore's consumer runtime (default concurrency) recording into `rec`.
async fn start_consumer(
    subscriber: Arc<dyn Subscriber>,
    sub: &Subscription,
    rec: Arc<Recorder>,
) -> crate::Result<longshore_core::ConsumerHandle> {
    Ok(Consumer::new(subscriber, sub.clone())
        .on_event(EVENT_TYPE, move |ctx| {
            rec.record(parse_stamp(
                ctx.event
                    .metadata
                    .headers
                    .get(SENT_HEADER)
                    .map(String::as_str),
            ));
            async { Ok::<(), HandlerError>(()) }
        })
        .start()
        .await?)
}

async fn end_to_end(env: &Env, ls: &Longshore, side: Side, n: usize) -> crate::Result<Sample> {
    let (sub, topic) = sub_and_topic();
    ls.subscriber.ensure_subscription(&sub).await?;
    env.raw.prepare(&sub).await?;
    let mut batches = Vec::new();
    let mut all = work::event_messages(n)?;
    if side == Side::Raw {
        all = work::traced(all);
    }
    let mut all = all.into_iter();
    loop {
        let b: Vec<Message> = all.by_ref().take(BATCH).collect();
        if b.is_empty() {
            break;
        }
        batches.push(b);
    }
    let rec = Recorder::new(n, true);
    let (mut consumer, mut task) = (None, None);
    match side {
        Side::Longshore => {
            consumer = Some(start_consumer(ls.subscriber.clone(), &sub, rec.clone()).await?)
        }
        Side::Raw => {
            task = Some(
                env.raw
                    .start_consumer(&sub, &topic, n, CONCURRENCY, CONCURRENCY, rec.clone())
                    .await?,
            )
        }
    }
    let t = Timed::start();
    let published: crate::Result<()> = async {
        for mut b in batches {
            work::stamp(&mut b);
            match side {
                Side::Longshore => ls.publisher.publish_batch(&topic, b).await?,
                Side::Raw => env.raw.publish_batch(&topic, &b).await?,
            }
        }
        rec.wait(wait_limit(env)).await
    }
    .await;
    let sample = t.finish(n, rec.take_latencies());
    if let Some(c) = consumer {
        c.shutdown(Duration::from_secs(10)).await;
    }
    if let Some(task) = task {
        if published.is_ok() {
            task.await??;
        } else {
            task.abort();
        }
    }
    published?;
    env.raw.cleanup(&sub).await?;
    Ok(sample)
}

/// Consumes a backlog of `n` messages; rate from the first message handled to the last, RSS
/// over the whole drain (the consumer must not grow with the backlog).
async fn drain(env: &Env, ls: &Longshore, side: Side, n: usize) -> crate::Result<Sample> {
    // Memory: a broker deep enough to hold the whole backlog.
    let (publisher, subscriber): (Arc<dyn Publisher>, Arc<dyn Subscriber>) =
        if env.backend == Backend::Memory && side == Side::Longshore {
            let broker = MemoryBroker::new(MemoryConfig {
                max_queue_depth: n + 1,
                ..MemoryConfig::default()
            });
            (Arc::new(broker.publisher()), Arc::new(broker.subscriber()))
        } else {
            (ls.publisher.clone(), ls.subscriber.clone())
        };
    let (sub, topic) = sub_and_topic();
    subscriber.ensure_subscription(&sub).await?;
    env.raw.prepare(&sub).await?;
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let b = work::event_messages(k)?;
        match side {
            Side::Longshore => publisher.publish_batch(&topic, b).await?,
            Side::Raw => env.raw.publish_batch(&topic, &work::traced(b)).await?,
        }
        left -= k;
    }
    let rec = Recorder::new(n, false);
    let t = Timed::start();
    let (mut consumer, mut task) = (None, None);
    match side {
        Side::Longshore => {
            consumer = Some(start_consumer(subscriber.clone(), &sub, rec.clone()).await?)
        }
        Side::Raw => {
            task = Some(
                env.raw
                    .start_consumer(&sub, &topic, n, CONCURRENCY, CONCURRENCY, rec.clone())
                    .await?,
            )
        }
    }
    let waited = rec.wait(wait_limit(env)).await;
    let mut sample = t.finish(n, Vec::new());
    if let Some(span) = rec.span() {
        sample.elapsed = span;
        sample.items = n.saturating_sub(1).max(1);
    }
    if let Some(c) = consumer {
        c.shutdown(Duration::from_secs(10)).await;
    }
    if let Some(task) = task {
        if waited.is_ok() {
            task.await??;
        } else {
            task.abort();
        }
    }
    waited?;
    env.raw.cleanup(&sub).await?;
    if !Arc::ptr_eq(&subscriber, &ls.subscriber) {
        let _ = subscriber.close().await;
    }
    Ok(sample)
}

async fn append(
    env: &Env,
    ls: &Longshore,
    side: Side,
    txs: usize,
    per_tx: usize,
) -> crate::Result<Sample> {
    let batches: Vec<(String, Vec<longshore_core::Event>)> = (0..txs)
        .map(|i| {
            let s = format!("order-{}", i % 100);
            let e = work::events(per_tx, &s, "order_created");
            (s, e)
        })
        .collect();
    let store = ls.store()?;
    let mut lat = Vec::with_capacity(txs);
    let t = Timed::start();
    for (stream, events) in batches {
        let s = Instant::now();
        match side {
            Side::Longshore => {
                store.append(&stream, ExpectedVersion::Any, events).await?;
            }
            Side::Raw => {
                let pg = env.pg.as_ref().ok_or("no raw pool")?;
                raw_append(&pg.pool, &pg.schema, &stream, &events).await?;
            }
        }
        lat.push(s.elapsed().as_micros() as u64);
    }
    Ok(t.finish(txs * per_tx, lat))
}

/// Appends `n` events (10 per transaction) for `read_all` to read.
async fn fill_store(store: &dyn EventStore, n: usize) -> crate::Result<()> {
    let mut left = n;
    let mut i = 0;
    while left > 0 {
        let k = left.min(10);
        let stream = format!("read-{}", i % 100);
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                work::events(k, &stream, "order_created"),
            )
            .await?;
        left -= k;
        i += 1;
    }
    Ok(())
}

async fn read_all(
    env: &Env,
    ls: &Longshore,
    schema: Option<&str>,
    side: Side,
    n: usize,
) -> crate::Result<Sample> {
    let store = ls.store()?;
    let t = Timed::start();
    let (read, lat) = match side {
        Side::Longshore => store_read_all(&*store, PAGE).await?,
        Side::Raw => {
            let pg = env.pg.as_ref().ok_or("no raw pool")?;
            let start = Instant::now();
            let read =
                raw_read_all(&pg.pool, schema.ok_or("no schema")?, PAGE as i64, true).await?;
            // One number for the whole read: per page is in the longshore column.
            let pages = read.div_ceil(PAGE).max(1) as u64;
            (read, vec![start.elapsed().as_micros() as u64 / pages])
        }
    };
    if read != n {
        return Err(format!("read {read} events, expected {n}").into());
    }
    Ok(t.finish(read, lat))
}

async fn relay(
    env: &Env,
    ls: &Longshore,
    schema: Option<&str>,
    side: Side,
    n: usize,
) -> crate::Result<Sample> {
    let event_type = unique("relay");
    let topic = format!("events.{event_type}");
    let sub = Subscription::new(unique("lsb"), [topic.clone()]);
    ls.subscriber.ensure_subscription(&sub).await?;
    env.raw.prepare(&sub).await?;
    let store = ls.store()?;
    let mut left = n;
    let mut i = 0;
    while left > 0 {
        let k = left.min(10);
        let stream = format!("relay-{}", i % 100);
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                work::events(k, &stream, &event_type),
            )
            .await?;
        left -= k;
        i += 1;
    }
    let mut lat = Vec::new();
    let mut sent = 0;
    let t = Timed::start();
    match side {
        Side::Longshore => {
            let outbox = ls.outbox().ok_or("no outbox")?;
            let relay = OutboxRelay::new(unique("relay"), outbox, ls.publisher.clone())
                .batch_size(RELAY_BATCH);
            loop {
                let s = Instant::now();
                let r = relay.run_once().await?;
                lat.push(s.elapsed().as_micros() as u64);
                sent += r.sent;
                if r.claimed == 0 {
                    break;
                }
            }
        }
        Side::Raw => {
            let pg = env.pg.as_ref().ok_or("no raw pool")?;
            let schema = schema.ok_or("no schema")?;
            loop {
                let s = Instant::now();
                let k = raw_relay_pass(&pg.pool, schema, &*env.raw, RELAY_BATCH as i64).await?;
                lat.push(s.elapsed().as_micros() as u64);
                sent += k;
                if k == 0 {
                    break;
                }
            }
        }
    }
    let sample = t.finish(sent, lat);
    if sent != n {
        return Err(format!("relayed {sent} of {n}").into());
    }
    env.raw.cleanup(&sub).await?;
    Ok(sample)
}
