//! [`PgSubscriber`]: declares subscriptions (and their dead-letter subscriptions) and streams
//! leased rows as deliveries. `LISTEN/NOTIFY` wakes consumers at once; they also poll, so a
//! lost notification only costs latency.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream;
use longshore_core::{
    dead_letter_topic, Acker, Capabilities, DeadLetter, Delivery, DeliveryStream, Error, Health,
    Outstanding, Subscriber, Subscription, Tracked,
};
use sqlx::Postgres;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::acker::PgAcker;
use crate::client::{finish_outstanding, Client};
use crate::error::{retry_lost, PgError};
use crate::lease::{heartbeat, Fetcher};
use crate::mapping::{pattern_regex, QueueRow};
use crate::BACKEND;

/// A subscriber's closed flag, and the notifier that ends its streams' waits.
struct Closed {
    flag: AtomicBool,
    notify: Notify,
}

/// Subscribing handle of a [`crate::PgBroker`].
pub struct PgSubscriber {
    client: Arc<Client>,
    /// This handle's outstanding work, within the client's: what its `close` waits for.
    outstanding: Arc<Outstanding>,
    closed: Arc<Closed>,
}

impl std::fmt::Debug for PgSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSubscriber").finish_non_exhaustive()
    }
}

impl PgSubscriber {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        PgSubscriber {
            outstanding: Outstanding::within(&client.outstanding),
            client,
            closed: Arc::new(Closed {
                flag: AtomicBool::new(false),
                notify: Notify::new(),
            }),
        }
    }

    /// Which handle was closed, if this one or its broker was.
    fn closed(&self) -> Option<&'static str> {
        if self.closed.flag.load(Ordering::Acquire) {
            Some("postgres subscriber")
        } else if self.client.is_closed() {
            Some("postgres broker")
        } else {
            None
        }
    }

    /// Creates the subscription (or adds its patterns) and its dead-letter subscription.
    async fn declare(&self, subscription: &Subscription) -> Result<(), Error> {
        subscription.validate()?;
        let mut declare = vec![(subscription.name.clone(), subscription.patterns.clone())];
        if !subscription.is_dead_letter_queue() {
            // Dead letters are kept from the moment the subscription exists.
            let dlq = dead_letter_topic(&subscription.name);
            declare.push((dlq.clone(), vec![dlq]));
        }
        for (name, patterns) in declare {
            let regexes: Vec<String> = patterns.iter().map(|p| pattern_regex(p)).collect();
            retry_lost("declare", self.client.config.connect_timeout, |_| {
                sqlx::query::<Postgres>(self.client.sql.ensure.clone())
                    .bind(&name)
                    .bind(&patterns)
                    .bind(&regexes)
                    .execute(&self.client.pool)
            })
            .await
            .map_err(PgError::from)?;
        }
        Ok(())
    }
}

/// Deliveries of freshly leased rows, each with the acker that settles its row. A row that is
/// not a message (another writer of the table put it there) is dead-lettered here, with what
/// could be read of it, instead of being delivered; if that fails, its acker gives it back
/// and the next fetch tries again.
async fn deliveries(fetcher: &Arc<Fetcher>, rows: Vec<QueueRow>) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let acker = Box::new(PgAcker::new(fetcher.clone(), row.id, row.attempts));
        let attempt = row.attempt();
        match row.message {
            Ok(message) => out.push(Delivery::new(message, row.topic, attempt, acker)),
            Err(undecodable) => {
                let reason = format!("undecodable queue row: {}", undecodable.reason);
                tracing::warn!(subscription = %fetcher.subscription, %reason, "dead-lettering a queue row");
                let dead = DeadLetter::new(reason, attempt);
                if let Err(e) = acker.dead_letter(*undecodable.kept, &row.topic, dead).await {
                    tracing::warn!(error = %e, "dead-lettering an undecodable queue row failed");
                }
            }
        }
    }
    out
}

/// One stream's state; dropping it (the stream) marks the consumer gone.
struct StreamState {
    fetcher: Arc<Fetcher>,
    buffer: VecDeque<Delivery>,
    closed: Arc<Closed>,
    wake: Arc<Notify>,
    failures: u32,
    /// The fetch running ahead of the buffer, if any.
    ahead: Option<Ahead>,
}

/// A background fetch: the deliveries of the rows it leased, and, if the stream was dropped
/// before the fetch ended, its place in the handle's outstanding work (dropped after the
/// deliveries, so closing waits for their give-backs; `None` for a stream still open).
type Ahead = JoinHandle<Result<(Vec<Delivery>, Option<Tracked>), Error>>;

impl Drop for StreamState {
    fn drop(&mut self) {
        self.fetcher.stream_alive.store(false, Ordering::Release);
        // Buffered deliveries are dropped with the state, and those of a fetch still running
        // with its output: their ackers give them back.
    }
}

/// What one fetch attempt of a stream gave.
enum Fetched {
    /// Deliveries were buffered.
    Some,
    /// Nothing waiting.
    None,
    /// The stream ends (closed while backing off).
    End,
    /// The fetch failed; the stream reports it after backing off.
    Failed(Error),
}

impl StreamState {
    fn is_closed(&self) -> bool {
        self.closed.flag.load(Ordering::Acquire) || self.fetcher.client.is_closed()
    }

    async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        let poll = self.fetcher.client.config.poll_interval;
        loop {
            let (wake, fetcher, closed) =
                (self.wake.clone(), self.fetcher.clone(), self.closed.clone());
            let woken = wake.notified();
            let settled = fetcher.settled.notified();
            let closing = closed.notify.notified();
            tokio::pin!(woken, settled, closing);
            woken.as_mut().enable();
            settled.as_mut().enable();
            closing.as_mut().enable();
            if self.is_closed() {
                return None;
            }
            // Take in a fetch that has finished, or the one running when nothing is buffered.
            let mut idle = false;
            let due = |ahead: &Ahead| ahead.is_finished() || self.buffer.is_empty();
            if self.ahead.as_ref().is_some_and(due) {
                match self.take_fetched(closing.as_mut()).await {
                    Fetched::Some => {}
                    Fetched::None => idle = true,
                    Fetched::End => return None,
                    Fetched::Failed(e) => return Some(Err(e)),
                }
            }
            if !idle {
                self.fetch_ahead();
            }
            if let Some(d) = self.buffer.pop_front() {
                return Some(Ok(d));
            }
            if self.ahead.is_some() {
                continue;
            }
            tokio::select! {
                _ = &mut woken => {}
                _ = &mut settled => {}
                _ = &mut closing => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Starts fetching in the background once half the prefetch is free (or nothing is held),
    /// unless a fetch is running: one fetch of many rows rather than one per settled delivery,
    /// and its round trip overlaps the handling of what is buffered.
    fn fetch_ahead(&mut self) {
        if self.ahead.is_some() {
            return;
        }
        let fetcher = &self.fetcher;
        let held = fetcher.in_flight.load(Ordering::Acquire);
        let room = fetcher.prefetch.saturating_sub(held);
        if room == 0 || (held > 0 && room < fetcher.prefetch.div_ceil(2)) {
            return;
        }
        // A task of its own: if the stream is dropped mid-fetch, the task still finishes and
        // its deliveries, dropped unsettled, are given back at once instead of waiting out
        // their lease. Tracked until then, so closing waits for those give-backs. For a stream
        // still open the guard goes when the fetch ends: the deliveries are the stream's
        // buffer then, which a close does not wait for (an idle open stream would otherwise
        // hold a close for its whole limit).
        let fetcher = fetcher.clone();
        let tracked = fetcher.outstanding.track();
        self.ahead = Some(tokio::spawn(async move {
            let rows = fetcher.fetch(room).await?;
            let batch = deliveries(&fetcher, rows).await;
            let tracked = (!fetcher.stream_alive.load(Ordering::Acquire)).then_some(tracked);
            Ok::<_, Error>((batch, tracked))
        }));
    }

    /// Waits for the running fetch and buffers what it gave; after a failure, backs off
    /// (ending early when `closing` fires) before reporting it.
    async fn take_fetched(
        &mut self,
        closing: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Fetched {
        let Some(ahead) = self.ahead.take() else {
            return Fetched::None;
        };
        let fetched = ahead
            .await
            .unwrap_or_else(|e| Err(Error::backend(BACKEND, true, e)))
            .map(|(batch, _tracked)| batch);
        match fetched {
            Ok(batch) if !batch.is_empty() => {
                self.failures = 0;
                self.buffer.extend(batch);
                Fetched::Some
            }
            Ok(_) => {
                self.failures = 0;
                Fetched::None
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let poll = self.fetcher.client.config.poll_interval;
                let backoff = Duration::from_millis(100u64 << self.failures.min(5)).min(poll * 4);
                tokio::select! {
                    _ = closing => Fetched::End,
                    _ = tokio::time::sleep(backoff) => Fetched::Failed(e),
                }
            }
        }
    }
}

#[async_trait]
impl Subscriber for PgSubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        if let Some(what) = self.closed() {
            return Err(Error::Closed(what));
        }
        self.declare(subscription).await?;
        self.client.hub.ensure_listening().await;
        let prefetch = usize::from(subscription.prefetch.max(1));
        let fetcher = Arc::new(Fetcher::new(
            self.client.clone(),
            self.outstanding.clone(),
            &subscription.name,
            prefetch,
        ));
        tokio::spawn(heartbeat(fetcher.clone()));
        let state = StreamState {
            wake: self.client.hub.keyed(&subscription.name),
            fetcher,
            buffer: VecDeque::new(),
            closed: self.closed.clone(),
            failures: 0,
            ahead: None,
        };
        Ok(Box::pin(stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })))
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        self.declare(subscription).await
    }

    /// Ends this handle's streams and waits for queued acks to be written and dropped
    /// deliveries given back.
    async fn close(&self) -> Result<(), Error> {
        self.closed.flag.store(true, Ordering::Release);
        self.closed.notify.notify_waiters();
        finish_outstanding(&self.outstanding).await;
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.client.capabilities()
    }

    /// Not ready once closed; otherwise see [`crate::PgBroker`]'s health.
    async fn health(&self) -> Health {
        crate::health::check(&self.client.pool, &self.client.config, self.closed()).await
    }

    /// Rows of the subscription not acknowledged yet (waiting, delayed or leased); a
    /// subscription that does not exist is [`Error::InvalidName`].
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        crate::health::lag(&self.client.pool, &self.client.config, subscription)
            .await
            .map(Some)
    }

    /// Deletes the subscription, its dead-letter subscription and their rows, in one
    /// transaction: publishes that commit afterwards no longer route to them.
    async fn remove_subscription(&self, subscription: &str) -> Result<(), Error> {
        longshore_core::topic::validate_name("subscription", subscription)?;
        let names = vec![subscription.to_string(), dead_letter_topic(subscription)];
        let schema = &self.client.config.schema;
        let subs = format!(
            "DELETE FROM {} WHERE name = ANY($1)",
            schema.table("queue_subscriptions")
        );
        let msgs = format!(
            "DELETE FROM {} WHERE subscription = ANY($1)",
            schema.table("queue_messages")
        );
        let mut tx = self.client.pool.begin().await.map_err(PgError::from)?;
        for sql in [subs, msgs] {
            sqlx::query::<Postgres>(sqlx::AssertSqlSafe(sql))
                .bind(&names)
                .execute(&mut *tx)
                .await
                .map_err(PgError::from)?;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(())
    }
}
