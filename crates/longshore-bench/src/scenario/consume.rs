//! transport, end-to-end and drain-backlog: publishing and consuming together, or draining a
//! backlog, until every message is acknowledged.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longshore::Longshore;
use longshore_core::memory::{MemoryBroker, MemoryConfig};
use longshore_core::{
    Broker, Consumer, ConsumerHandle, HandlerError, Publisher, Subscriber, Subscription,
};

use super::side::{batches, publish_batch, sub_and_topic, wait_limit, Side};
use crate::backend::{Backend, Env};
use crate::measure::{parse_stamp, Recorder, Sample, Timed, SENT_HEADER};
use crate::raw::{Consume, ConsumerTask};
use crate::work::{self, CONCURRENCY, EVENT_TYPE, PREFETCH};

/// Prefetch of the transport scenario's one consumer (below every backend's maximum).
const TRANSPORT_PREFETCH: u16 = 1000;

/// Publish → consume → ack at the transport level: batches of [`crate::work::BATCH`] published
/// while one consumer (prefetch [`TRANSPORT_PREFETCH`]) acks every delivery in turn, with no
/// consumer runtime and no decoding; rate from the first publish to the last ack.
///
/// `bare`: `publisher` and `subscriber` are a bare memory broker's, without the facade's
/// observability layer, so the messages carry the `traceparent` that layer would add.
pub async fn transport(
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
    let batches = batches(msgs);
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
            let prefetch = usize::from(TRANSPORT_PREFETCH);
            env.raw
                .start_consumer(Consume::new(&sub, &topic, n, prefetch, 1, &rec))
                .await?
        }
    };
    let t = Timed::start();
    let done: crate::Result<()> = async {
        for b in batches {
            publish_batch(env, side, &**publisher, &topic, b).await?;
        }
        rec.wait(wait_limit(env)).await
    }
    .await;
    let sample = t.finish(n, Vec::new());
    join(task, done.is_ok()).await?;
    done?;
    env.raw.cleanup(&sub).await?;
    Ok(sample)
}

/// A batched publisher and a consumer running together until all `n` are handled; latency
/// from the send stamp to the handler.
/// `best`: the raw side is the raw consumer at its best ([`Consume::at_best`]).
pub async fn end_to_end(
    env: &Env,
    ls: &Longshore,
    side: Side,
    n: usize,
    best: bool,
) -> crate::Result<Sample> {
    let (sub, topic) = sub_and_topic();
    ls.subscriber.ensure_subscription(&sub).await?;
    env.raw.prepare(&sub).await?;
    let mut all = work::event_messages(n)?;
    if side == Side::Raw {
        all = work::traced(all);
    }
    let batches = batches(all);
    let rec = Recorder::new(n, true);
    let running = Running::start(env, side, &ls.subscriber, &sub, &topic, n, &rec, best).await?;
    let t = Timed::start();
    let published: crate::Result<()> = async {
        for mut b in batches {
            work::stamp(&mut b);
            publish_batch(env, side, &*ls.publisher, &topic, b).await?;
        }
        rec.wait(wait_limit(env)).await
    }
    .await;
    let sample = t.finish(n, rec.take_latencies());
    running.stop(published.is_ok()).await?;
    published?;
    env.raw.cleanup(&sub).await?;
    Ok(sample)
}

/// Keys of [`drain_ordered`]'s backlog and its consumers' concurrency (issue #17's case).
const ORDERED_KEYS: usize = 1_000;
const ORDERED_CONCURRENCY: usize = 64;

/// The publisher and subscriber a drain of `n` uses: on memory a broker deep enough to hold
/// the whole backlog (when longshore's runtime consumes), else the facade's.
fn drain_broker(
    env: &Env,
    ls: &Longshore,
    n: usize,
    deep: bool,
) -> (Arc<dyn Publisher>, Arc<dyn Subscriber>) {
    if env.backend == Backend::Memory && deep {
        let broker = MemoryBroker::new(MemoryConfig {
            max_queue_depth: n + 1,
            ..MemoryConfig::default()
        });
        (broker.publisher(), broker.subscriber())
    } else {
        (ls.publisher.clone(), ls.subscriber.clone())
    }
}

/// Drains a backlog of `n` events over [`ORDERED_KEYS`] keys with [`ORDERED_CONCURRENCY`]
/// handlers, both sides through longshore's runtime: `Side::Longshore` keeps each key's
/// order (`ordered_by_key`), `Side::Raw` runs unordered. Rate from the first message handled
/// to the last.
pub async fn drain_ordered(
    env: &Env,
    ls: &Longshore,
    side: Side,
    n: usize,
) -> crate::Result<Sample> {
    let (publisher, subscriber) = drain_broker(env, ls, n, true);
    let (sub, topic) = sub_and_topic();
    subscriber.ensure_subscription(&sub).await?;
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        publisher
            .publish_batch(&topic, work::keyed_event_messages(k, ORDERED_KEYS)?)
            .await?;
        left -= k;
    }
    let rec = Recorder::new(n, false);
    let t = Timed::start();
    let ordered = side == Side::Longshore;
    let consumer = runtime(subscriber.clone(), &sub, rec.clone()).concurrency(ORDERED_CONCURRENCY);
    let consumer = if ordered {
        consumer.ordered_by_key()
    } else {
        consumer
    };
    let handle = consumer.start().await?;
    let waited = rec.wait(wait_limit(env)).await;
    let sample = drained(t, &rec, n);
    handle.shutdown(Duration::from_secs(10)).await;
    waited?;
    if !Arc::ptr_eq(&subscriber, &ls.subscriber) {
        let _ = subscriber.close().await;
    }
    Ok(sample)
}

/// Consumes a backlog of `n` messages; rate from the first message handled to the last, RSS
/// over the whole drain (the consumer must not grow with the backlog). `best`: the raw side is
/// the raw consumer at its best ([`Consume::at_best`]).
pub async fn drain(
    env: &Env,
    ls: &Longshore,
    side: Side,
    n: usize,
    best: bool,
) -> crate::Result<Sample> {
    let (publisher, subscriber) = drain_broker(env, ls, n, side == Side::Longshore);
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
    let running = Running::start(env, side, &subscriber, &sub, &topic, n, &rec, best).await?;
    let waited = rec.wait(wait_limit(env)).await;
    let sample = drained(t, &rec, n);
    running.stop(waited.is_ok()).await?;
    waited?;
    env.raw.cleanup(&sub).await?;
    if !Arc::ptr_eq(&subscriber, &ls.subscriber) {
        let _ = subscriber.close().await;
    }
    Ok(sample)
}

/// A drain's sample: the rate from the first message handled to the last.
fn drained(t: Timed, rec: &Recorder, n: usize) -> Sample {
    let mut sample = t.finish(n, Vec::new());
    if let Some(span) = rec.span() {
        sample.elapsed = span;
        sample.items = n.saturating_sub(1).max(1);
    }
    sample
}

/// The consuming side of an end-to-end or drain round.
enum Running {
    /// longshore's consumer runtime.
    Longshore(ConsumerHandle),
    /// The raw client's consumer.
    Raw(ConsumerTask),
}

impl Running {
    /// Starts `side`'s consumer of `sub`: longshore's runtime (default concurrency) on
    /// `subscriber`, or the raw client's with [`PREFETCH`] and [`CONCURRENCY`] handlers (or at its
    /// best, `best`); both record into `rec`.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        env: &Env,
        side: Side,
        subscriber: &Arc<dyn Subscriber>,
        sub: &Subscription,
        topic: &str,
        n: usize,
        rec: &Arc<Recorder>,
        best: bool,
    ) -> crate::Result<Running> {
        Ok(match side {
            Side::Longshore => {
                Running::Longshore(start_consumer(subscriber.clone(), sub, rec.clone()).await?)
            }
            Side::Raw => {
                let c = Consume::new(sub, topic, n, PREFETCH, CONCURRENCY, rec);
                let c = if best { c.at_best() } else { c };
                Running::Raw(env.raw.start_consumer(c).await?)
            }
        })
    }

    /// Stops it once the round is over (`ok`: every message was handled).
    async fn stop(self, ok: bool) -> crate::Result<()> {
        match self {
            Running::Longshore(c) => {
                c.shutdown(Duration::from_secs(10)).await;
                Ok(())
            }
            Running::Raw(task) => join(task, ok).await,
        }
    }
}

/// Joins a consuming task if the round went well (its error then counts), else aborts it.
async fn join(task: ConsumerTask, ok: bool) -> crate::Result<()> {
    if ok {
        task.await?
    } else {
        task.abort();
        Ok(())
    }
}

/// Starts longshore's consumer runtime (default concurrency) recording into `rec`.
async fn start_consumer(
    subscriber: Arc<dyn Subscriber>,
    sub: &Subscription,
    rec: Arc<Recorder>,
) -> crate::Result<ConsumerHandle> {
    Ok(runtime(subscriber, sub, rec).start().await?)
}

/// longshore's consumer runtime of `sub`, its handler recording into `rec`; not started.
fn runtime(subscriber: Arc<dyn Subscriber>, sub: &Subscription, rec: Arc<Recorder>) -> Consumer {
    Consumer::new(subscriber, sub.clone()).on_event(EVENT_TYPE, move |ctx| {
        rec.record(parse_stamp(
            ctx.event
                .metadata
                .headers
                .get(SENT_HEADER)
                .map(String::as_str),
        ));
        async { Ok::<(), HandlerError>(()) }
    })
}
