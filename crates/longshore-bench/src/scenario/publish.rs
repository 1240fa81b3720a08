//! The publish scenarios, nothing consuming: confirmed publishes one at a time
//! (publish-one), in batches of [`BATCH`] (publish-batch), from C concurrent tasks one at a
//! time each (publish-concurrent-C), or as one `publish_batch` of the whole round
//! (publish-stream).
//!
//! The raw side of publish-one and publish-batch does the same as longshore (the
//! same-pattern rows); that of publish-concurrent and publish-stream is the raw client at its
//! best ([`RawClient::publish_best`]), the rate a service could get from the broker.
//! publish-concurrent has two more raw rows: [`raw_same_callers`], the raw client called by
//! the same C tasks, each awaiting its own confirm, and [`raw_best_within`], the raw client
//! at its best with no more than C messages unconfirmed at once. They tell the cost of C
//! callers' pattern (at most C in flight: Little's law) from the cost of longshore.

use std::sync::Arc;
use std::time::Instant;

use longshore::Longshore;
use longshore_core::{Message, Publisher};

use super::side::{batches, fresh_if_memory, sub_and_topic, Side};
use crate::backend::{close, Backend, Env};
use crate::measure::{Sample, Timed};
use crate::raw::{RawClient, UNBOUNDED};
use crate::work::{self, BATCH};

/// How one side publishes a round's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// One `publish` after another.
    One,
    /// `publish_batch` of [`BATCH`], one after another.
    Batch,
    /// This many tasks, each one `publish` after another.
    Concurrent(usize),
    /// One `publish_batch` of everything.
    Stream,
}

/// One side's publishes of `n` messages as `pattern` says (the raw side of
/// [`Pattern::Concurrent`] and [`Pattern::Stream`] publishes at its best), with latencies.
pub async fn publish(
    env: &Env,
    ls: &Longshore,
    side: Side,
    pattern: Pattern,
    n: usize,
) -> crate::Result<Sample> {
    if side == Side::Raw {
        return raw_publish(env, ls, &*env.raw, pattern, n).await;
    }
    let ls = fresh_if_memory(env, ls).await?;
    let (sub, topic) = sub_and_topic();
    ls.subscriber.ensure_subscription(&sub).await?;
    env.raw.prepare(&sub).await?;
    // Warm up (channel, topic metadata) outside the timing.
    ls.publisher
        .publish(&topic, work::payload_messages(1).remove(0))
        .await?;
    let msgs = work::payload_messages(n);
    let (t, lat) = match pattern {
        Pattern::One => {
            let t = Timed::start();
            let lat = one_by_one(&*ls.publisher, &topic, msgs).await?;
            (t, lat)
        }
        Pattern::Batch => {
            let batches = batches(msgs);
            let t = Timed::start();
            let mut lat = Vec::with_capacity(batches.len());
            for b in batches {
                let s = Instant::now();
                ls.publisher.publish_batch(&topic, b).await?;
                lat.push(s.elapsed().as_micros() as u64);
            }
            (t, lat)
        }
        Pattern::Concurrent(callers) => {
            let shares = deal(msgs, callers);
            let t = Timed::start();
            let lat = concurrently(&ls.publisher, &topic, shares).await?;
            (t, lat)
        }
        Pattern::Stream => {
            let t = Timed::start();
            let s = Instant::now();
            ls.publisher.publish_batch(&topic, msgs).await?;
            (t, vec![s.elapsed().as_micros() as u64])
        }
    };
    let sample = t.finish(n, lat);
    env.raw.cleanup(&sub).await?;
    if env.backend == Backend::Memory {
        close(&ls).await;
    }
    Ok(sample)
}

/// `publish` for each message in turn; the latency of each.
async fn one_by_one(
    publisher: &dyn Publisher,
    topic: &str,
    msgs: Vec<Message>,
) -> crate::Result<Vec<u64>> {
    let mut lat = Vec::with_capacity(msgs.len());
    for m in msgs {
        let s = Instant::now();
        publisher.publish(topic, m).await?;
        lat.push(s.elapsed().as_micros() as u64);
    }
    Ok(lat)
}

/// `msgs` dealt round-robin into `callers` shares (built before a timing starts).
fn deal(msgs: Vec<Message>, callers: usize) -> Vec<Vec<Message>> {
    let callers = callers.clamp(1, msgs.len().max(1));
    let mut shares: Vec<Vec<Message>> = (0..callers)
        .map(|_| Vec::with_capacity(msgs.len() / callers + 1))
        .collect();
    for (i, m) in msgs.into_iter().enumerate() {
        shares[i % callers].push(m);
    }
    shares
}

/// One task per share, each publishing its messages one at a time, as concurrent request
/// handlers of a web service would; the latency of every publish.
async fn concurrently(
    publisher: &Arc<dyn Publisher>,
    topic: &str,
    shares: Vec<Vec<Message>>,
) -> crate::Result<Vec<u64>> {
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (publisher, topic) = (publisher.clone(), topic.to_string());
            tokio::spawn(async move { one_by_one(&*publisher, &topic, share).await })
        })
        .collect();
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await.map_err(|e| format!("publishing task: {e}"))??);
    }
    Ok(lat)
}

/// The raw side: the same publishes by `raw` (the raw client, or RabbitMQ's transient one),
/// carrying the `traceparent` longshore's publisher adds. [`Pattern::Concurrent`] and
/// [`Pattern::Stream`] publish everything at the client's best.
pub async fn raw_publish(
    env: &Env,
    ls: &Longshore,
    raw: &dyn RawClient,
    pattern: Pattern,
    n: usize,
) -> crate::Result<Sample> {
    let (sub, topic) = raw_ready(env, ls, raw).await?;
    let msgs = work::traced(work::payload_messages(n));
    let mut lat = Vec::new();
    let t = Timed::start();
    match pattern {
        Pattern::Batch => {
            for b in msgs.chunks(BATCH) {
                let s = Instant::now();
                raw.publish_batch(&topic, b).await?;
                lat.push(s.elapsed().as_micros() as u64);
            }
        }
        Pattern::One => {
            for m in &msgs {
                let s = Instant::now();
                raw.publish(&topic, m).await?;
                lat.push(s.elapsed().as_micros() as u64);
            }
        }
        Pattern::Concurrent(_) | Pattern::Stream => {
            let s = Instant::now();
            raw.publish_best(&topic, &msgs, UNBOUNDED).await?;
            lat.push(s.elapsed().as_micros() as u64);
        }
    }
    let sample = t.finish(n, lat);
    env.raw.cleanup(&sub).await?;
    Ok(sample)
}

/// The raw client called as longshore's publish-concurrent calls longshore: `callers` tasks,
/// each publishing its share one message at a time and awaiting each confirmation (at most
/// `callers` in flight, as for longshore). With the raw client at its best in the same run, it
/// splits a miss into what the pattern costs on this broker (Little's law: `callers` divided
/// by a confirm's latency bounds the rate) and what longshore adds.
pub async fn raw_same_callers(
    env: &Env,
    ls: &Longshore,
    callers: usize,
    n: usize,
) -> crate::Result<Sample> {
    let (sub, topic) = raw_ready(env, ls, &*env.raw).await?;
    let shares = deal(work::traced(work::payload_messages(n)), callers);
    let t = Timed::start();
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| tokio::spawn(raw_one_by_one(env.raw.clone(), topic.clone(), share)))
        .collect();
    let mut lat = Vec::with_capacity(n);
    for task in tasks {
        lat.extend(
            task.await
                .map_err(|e| format!("raw publishing task: {e}"))??,
        );
    }
    let sample = t.finish(n, lat);
    env.raw.cleanup(&sub).await?;
    Ok(sample)
}

/// The raw client's `publish` for each message of `share` in turn; the latency of each.
async fn raw_one_by_one(
    raw: Arc<dyn RawClient>,
    topic: String,
    share: Vec<Message>,
) -> crate::Result<Vec<u64>> {
    let mut lat = Vec::with_capacity(share.len());
    for m in &share {
        let s = Instant::now();
        raw.publish(&topic, m).await?;
        lat.push(s.elapsed().as_micros() as u64);
    }
    Ok(lat)
}

/// The raw client at its best ([`RawClient::publish_best`]) with at most `callers` messages
/// unconfirmed at once: what the broker gives any client holding as many in flight as
/// `callers` one-at-a-time publishers do.
pub async fn raw_best_within(
    env: &Env,
    ls: &Longshore,
    callers: usize,
    n: usize,
) -> crate::Result<Sample> {
    let (sub, topic) = raw_ready(env, ls, &*env.raw).await?;
    let msgs = work::traced(work::payload_messages(n));
    let t = Timed::start();
    let s = Instant::now();
    env.raw.publish_best(&topic, &msgs, callers).await?;
    let sample = t.finish(n, vec![s.elapsed().as_micros() as u64]);
    env.raw.cleanup(&sub).await?;
    Ok(sample)
}

/// A fresh subscription (declared by longshore, prepared for `raw`) and its topic, with one
/// message published by `raw` outside the timing (connection, topic metadata).
async fn raw_ready(
    env: &Env,
    ls: &Longshore,
    raw: &dyn RawClient,
) -> crate::Result<(longshore_core::Subscription, String)> {
    let (sub, topic) = sub_and_topic();
    ls.subscriber.ensure_subscription(&sub).await?;
    env.raw.prepare(&sub).await?;
    raw.publish(&topic, &work::traced(work::payload_messages(1))[0])
        .await?;
    Ok((sub, topic))
}
