//! The seed's `EventStream`, done right: forwards a stream of events to a publisher in batches,
//! and never drops an event whose publish failed.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::codec::{Codec, JsonCodec};
use crate::error::Error;
use crate::event::Event;
use crate::publisher::Publisher;
use crate::retry::RetryPolicy;

/// The forwarding stopped: `unsent` holds every event of the failed batch that was not
/// confirmed, in order. Events after it were not read from the input stream.
#[derive(Debug, thiserror::Error)]
#[error("event stream stopped after {sent} events; {} unsent: {error}", unsent.len())]
pub struct EventStreamError {
    /// Events confirmed before the failure.
    pub sent: u64,
    /// Events not confirmed, returned to the caller.
    pub unsent: Vec<Event>,
    /// The last error.
    pub error: Error,
}

/// Forwards events in batches of up to `batch_size`, flushing a partial batch after
/// `max_wait`. Each event goes to `events.<event_type>` unless a topic function is set.
pub struct EventStream {
    publisher: Arc<dyn Publisher>,
    codec: Arc<dyn Codec>,
    batch_size: usize,
    max_wait: Duration,
    retry: RetryPolicy,
    topic: Arc<dyn Fn(&Event) -> String + Send + Sync>,
}

impl EventStream {
    /// Batches of 100, flushed at least every second, 5 attempts per batch.
    pub fn new(publisher: Arc<dyn Publisher>) -> Self {
        EventStream {
            publisher,
            codec: Arc::new(JsonCodec),
            batch_size: 100,
            max_wait: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            topic: Arc::new(Event::default_topic),
        }
    }

    /// Sets the batch size.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Sets the longest time a partial batch waits for more events.
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// Sets the retry policy for failed publishes (retryable errors only).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Routes each event with `f` instead of `events.<event_type>`.
    pub fn topic_fn(mut self, f: impl Fn(&Event) -> String + Send + Sync + 'static) -> Self {
        self.topic = Arc::new(f);
        self
    }

    /// Forwards every event of `events`; returns how many were confirmed.
    pub async fn forward<S>(&self, events: S) -> Result<u64, EventStreamError>
    where
        S: Stream<Item = Event> + Send,
    {
        let mut events = std::pin::pin!(events);
        let mut sent = 0u64;
        loop {
            let Some(first) = events.next().await else {
                return Ok(sent);
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.max_wait;
            while batch.len() < self.batch_size {
                match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(Some(event)) => batch.push(event),
                    Ok(None) | Err(_) => break,
                }
            }
            sent += self.send(batch, sent).await?;
        }
    }

    /// Sends one batch in order: consecutive events with the same topic go as one pipelined
    /// `publish_batch`; failures are retried (only the unconfirmed events) with backoff.
    async fn send(&self, batch: Vec<Event>, sent_before: u64) -> Result<u64, EventStreamError> {
        let mut sent = 0u64;
        let mut pending: std::collections::VecDeque<Event> = batch.into();
        while let Some(first) = pending.front() {
            let topic = (self.topic)(first);
            let run = pending
                .iter()
                .take_while(|e| (self.topic)(e) == topic)
                .count();
            let mut group: Vec<Event> = pending.drain(..run).collect();
            let mut attempt = 1;
            loop {
                let encoded: Result<Vec<_>, _> =
                    group.iter().map(|e| self.codec.encode(e)).collect();
                let messages = match encoded {
                    Ok(m) => m,
                    Err(e) => return Err(self.fail(sent_before + sent, group, pending, e.into())),
                };
                let Err(e) = self.publisher.publish_batch(&topic, messages).await else {
                    sent += group.len() as u64;
                    break;
                };
                let failed: std::collections::HashSet<usize> =
                    e.failed.iter().map(|f| f.index).collect();
                sent += (group.len() - failed.len()) as u64;
                let retryable = e.is_retryable();
                group = group
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| failed.contains(i))
                    .map(|(_, ev)| ev)
                    .collect();
                if !retryable || attempt >= self.retry.max_attempts {
                    return Err(self.fail(sent_before + sent, group, pending, e.into()));
                }
                tracing::warn!(attempt, unsent = group.len(), error = %e, "event batch publish failed; retrying");
                tokio::time::sleep(self.retry.backoff(attempt)).await;
                attempt += 1;
            }
        }
        Ok(sent)
    }

    fn fail(
        &self,
        sent: u64,
        group: Vec<Event>,
        rest: std::collections::VecDeque<Event>,
        error: Error,
    ) -> EventStreamError {
        let mut unsent = group;
        unsent.extend(rest);
        EventStreamError {
            sent,
            unsent,
            error,
        }
    }
}
