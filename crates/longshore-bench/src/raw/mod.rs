//! The raw clients: each backend's own client doing the same work as the adapter, by hand.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use longshore_core::{Message, Subscription};
use tokio::task::JoinHandle;

use crate::measure::Recorder;

pub mod kafka;
pub mod memory;
pub mod nats;
pub mod postgres;
pub mod rabbitmq;
pub mod sqlite;

/// A raw client's running consumer: resolves once it has handled its `n` messages.
pub type ConsumerTask = JoinHandle<crate::Result<()>>;

/// What a raw consumer is asked to do: take `n` messages of `sub` (topic `topic`), holding up
/// to `prefetch` unacknowledged deliveries, with `concurrency` handlers, each calling
/// [`Recorder::handle_raw`] then acknowledging.
pub struct Consume<'a> {
    pub sub: &'a Subscription,
    pub topic: &'a str,
    pub n: usize,
    pub prefetch: usize,
    pub concurrency: usize,
    pub rec: Arc<Recorder>,
    /// The consumer as the client's documentation recommends for throughput (see
    /// [`Consume::at_best`]) rather than the same pattern as longshore's runtime.
    pub best: bool,
}

/// Prefetch of a raw consumer at its best: lapin's prefetch and async-nats's pull batch of at
/// least 1,000 (issue #17); sqlx fetches that many rows at once.
pub const BEST_PREFETCH: usize = 1_000;

impl<'a> Consume<'a> {
    pub fn new(
        sub: &'a Subscription,
        topic: &'a str,
        n: usize,
        prefetch: usize,
        concurrency: usize,
        rec: &Arc<Recorder>,
    ) -> Self {
        Consume {
            sub,
            topic,
            n,
            prefetch,
            concurrency,
            rec: rec.clone(),
            best: false,
        }
    }

    /// The consumer at its best: a prefetch of [`BEST_PREFETCH`], and where the client can
    /// settle many at once (sqlx), one settlement per fetched batch.
    pub fn at_best(mut self) -> Self {
        self.prefetch = BEST_PREFETCH;
        self.best = true;
        self
    }
}

/// What every raw client does, with the adapter's durability and wire form.
#[async_trait]
pub trait RawClient: Send + Sync {
    /// Called after longshore's `ensure_subscription(sub)` declared the subscription, which
    /// both sides then use (same queue, durable consumer, Kafka topic).
    async fn prepare(&self, _sub: &Subscription) -> crate::Result<()> {
        Ok(())
    }
    /// Publishes one message and waits for the broker's confirmation.
    async fn publish(&self, topic: &str, m: &Message) -> crate::Result<()>;
    /// Publishes messages with their confirmations pipelined, waiting for all.
    async fn publish_batch(&self, topic: &str, ms: &[Message]) -> crate::Result<()>;
    /// Publishes `ms` the way the client's own documentation recommends for throughput (a
    /// window of confirms in flight, multi-row inserts), waiting for every confirmation: the
    /// rate longshore's publish rows are compared with. Never more than `most` messages are
    /// unconfirmed at once ([`UNBOUNDED`]: as many as the client's best window holds), so a
    /// row can ask what the client does at its best with no more in flight than C callers
    /// of longshore have. By default: batches of [`BEST_CHUNK`] (or `most`), one after
    /// another.
    async fn publish_best(&self, topic: &str, ms: &[Message], most: usize) -> crate::Result<()> {
        for chunk in ms.chunks(BEST_CHUNK.min(most).max(1)) {
            self.publish_batch(topic, chunk).await?;
        }
        Ok(())
    }
    /// Starts consuming as `consume` asks; returns once the consumer is attached.
    async fn start_consumer(&self, consume: Consume<'_>) -> crate::Result<ConsumerTask>;
    /// Removes what a round left behind for `sub`.
    async fn cleanup(&self, _sub: &Subscription) -> crate::Result<()> {
        Ok(())
    }
}

/// Rows per statement (SQL backends) or messages per call of a raw client's best publishing.
pub const BEST_CHUNK: usize = 1_000;

/// [`RawClient::publish_best`] without a cap of its own on messages in flight.
pub const UNBOUNDED: usize = usize::MAX;

/// Sends every message with `send` (which hands back the confirmation to wait for), keeping
/// at most `window` confirmations in flight: the pipelining each broker client recommends.
/// Confirmations resolve in the client's background, in send order, so the oldest is the
/// one to wait for when the window is full.
pub async fn in_window<'a, S, SF, C>(
    ms: &'a [Message],
    window: usize,
    mut send: S,
) -> crate::Result<()>
where
    S: FnMut(&'a Message) -> SF,
    SF: Future<Output = crate::Result<C>>,
    C: Future<Output = crate::Result<()>>,
{
    let mut in_flight = VecDeque::with_capacity(window);
    for m in ms {
        if in_flight.len() >= window {
            if let Some(oldest) = in_flight.pop_front() {
                oldest.await?;
            }
        }
        in_flight.push_back(send(m).await?);
    }
    for confirmed in in_flight {
        confirmed.await?;
    }
    Ok(())
}
