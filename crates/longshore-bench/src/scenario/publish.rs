//! publish-one and publish-batch: confirmed publishes, one at a time or in batches of
//! [`BATCH`], nothing consuming.

use std::time::Instant;

use longshore::Longshore;

use super::side::{batches, fresh_if_memory, sub_and_topic, Side};
use crate::backend::{close, Backend, Env};
use crate::measure::{Sample, Timed};
use crate::raw::RawClient;
use crate::work::{self, BATCH};

/// One side's publishes of `n` messages (in batches if `batched`), with per call latency.
pub async fn publish(
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
        let batches = batches(work::payload_messages(n));
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

/// The same publishes by `raw` (the raw client, or RabbitMQ's transient one), carrying the
/// `traceparent` longshore's publisher adds.
pub async fn raw_publish(
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
