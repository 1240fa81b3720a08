//! Postgres as a queue: [`PgBroker`] with a [`Publisher`] and a [`Subscriber`].
//!
//! A subscription is a row in `queue_subscriptions` (its patterns, and the same patterns as
//! anchored regular expressions over `'.' || topic`). Publishing inserts one row per matching
//! subscription into `queue_messages` in a single statement (one round trip per batch) and
//! commits: `Ok` means committed. Consumers lease rows with `FOR UPDATE SKIP LOCKED`, so
//! competing consumers never receive the same row; a lease (`locked_until`) is renewed while
//! the consumer holds the delivery and expires if the process dies, which makes the row
//! available again (the visibility timeout). `nack` with a delay sets `available_at`;
//! dead letters move to the subscription `dlq.<name>` in the same statement that removes the
//! original. `LISTEN/NOTIFY` wakes consumers at once; they also poll, so a lost notification
//! only costs latency.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream;
use longshore_core::error::FailedMessage;
use longshore_core::observe::Health;
use longshore_core::subscriber::{dead_letter_message, dead_letter_topic};
use longshore_core::topic::validate_topic;
use longshore_core::{
    Acker, BatchError, Capabilities, DeadLetter, Delivery, DeliveryStream, Error, Message,
    Publisher, Subscriber, Subscription,
};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{AssertSqlSafe, Postgres, Row, SqlSafeStr, SqlStr};
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::PgConfig;
use crate::error::map_error;
use crate::hub::Hub;
use crate::store::{connect_pool, migrate, PgStore};
use crate::BACKEND;

/// The anchored regular expression (PostgreSQL ARE) matching `'.' || topic` for an AMQP-style
/// pattern: `*` is one word, `#` zero or more. Words are `[A-Za-z0-9_-]` (validated), so they
/// contain no regex metacharacters.
pub fn pattern_regex(pattern: &str) -> String {
    let mut r = String::from("^");
    for word in pattern.split('.') {
        match word {
            "#" => r.push_str(r"(?:\.[^.]+)*"),
            "*" => r.push_str(r"\.[^.]+"),
            w => {
                r.push_str(r"\.");
                r.push_str(w);
            }
        }
    }
    r.push('$');
    r
}

struct Sql {
    publish: SqlStr,
    ensure: SqlStr,
    fetch: SqlStr,
    ack: SqlStr,
    nack: SqlStr,
    dead_letter: SqlStr,
    heartbeat: SqlStr,
}

fn sql(s: String) -> SqlStr {
    AssertSqlSafe(s).into_sql_str()
}

impl Sql {
    fn new(config: &PgConfig) -> Self {
        let subs = config.schema.table("queue_subscriptions");
        let msgs = config.schema.table("queue_messages");
        Sql {
            // $1 topic, $2..$5 message columns, $6 channel.
            publish: sql(format!(
                "WITH subs AS (
  SELECT name FROM {subs} WHERE ('.' || $1) ~ ANY (regexes)
), ins AS (
  INSERT INTO {msgs} (subscription, topic, message_id, message_key, headers, payload)
  SELECT s.name, $1, m.mid, m.mkey, m.hdr::jsonb, m.payload
  FROM unnest($2::text[], $3::text[], $4::text[], $5::bytea[])
       WITH ORDINALITY AS m(mid, mkey, hdr, payload, ord)
  CROSS JOIN subs s
  ORDER BY m.ord, s.name
  RETURNING 1
), nt AS (
  SELECT pg_notify($6, s.name) FROM subs s WHERE EXISTS (SELECT 1 FROM ins)
)
SELECT (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM nt) AS notified"
            )),
            ensure: sql(format!(
                "INSERT INTO {subs} AS s (name, patterns, regexes) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
  SET patterns = ARRAY(SELECT DISTINCT unnest(s.patterns || EXCLUDED.patterns)),
      regexes = ARRAY(SELECT DISTINCT unnest(s.regexes || EXCLUDED.regexes))
  WHERE NOT (s.patterns @> EXCLUDED.patterns)"
            )),
            // $1 subscription, $2 limit, $3 consumer, $4 lease.
            fetch: sql(format!(
                "WITH picked AS (
  SELECT id FROM {msgs}
  WHERE subscription = $1 AND available_at <= now()
    AND (locked_until IS NULL OR locked_until < now())
  ORDER BY id
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)
UPDATE {msgs} m SET locked_by = $3, locked_until = now() + $4::interval, attempts = m.attempts + 1
FROM picked WHERE m.id = picked.id
RETURNING m.id, m.topic, m.message_id, m.message_key, m.headers::text AS headers, m.payload, m.attempts"
            )),
            ack: sql(format!(
                "DELETE FROM {msgs} WHERE id = $1 AND locked_by = $2 AND attempts = $3"
            )),
            // $4 delay, $5 channel, $6 notify now.
            nack: sql(format!(
                "WITH u AS (
  UPDATE {msgs} SET locked_by = NULL, locked_until = NULL, available_at = now() + $4::interval
  WHERE id = $1 AND locked_by = $2 AND attempts = $3
  RETURNING subscription
), nt AS (
  SELECT pg_notify($5, subscription) FROM u WHERE $6
)
SELECT (SELECT count(*) FROM u) AS updated, (SELECT count(*) FROM nt) AS notified"
            )),
            // $4 dlq topic, $5..$8 message, $9 channel.
            dead_letter: sql(format!(
                "WITH d AS (
  DELETE FROM {msgs} WHERE id = $1 AND locked_by = $2 AND attempts = $3 RETURNING id
), subs AS (
  SELECT name FROM {subs} WHERE ('.' || $4) ~ ANY (regexes)
), ins AS (
  INSERT INTO {msgs} (subscription, topic, message_id, message_key, headers, payload)
  SELECT s.name, $4, $5, $6, $7::jsonb, $8 FROM subs s WHERE EXISTS (SELECT 1 FROM d)
  RETURNING subscription
), nt AS (
  SELECT pg_notify($9, subscription) FROM ins
)
SELECT (SELECT count(*) FROM d) AS deleted, (SELECT count(*) FROM nt) AS notified"
            )),
            heartbeat: sql(format!(
                "UPDATE {msgs} SET locked_until = now() + $3::interval \
                 WHERE id = ANY($1) AND locked_by = $2"
            )),
        }
    }
}

struct Inner {
    pool: PgPool,
    config: PgConfig,
    sql: Sql,
    hub: Arc<Hub>,
    channel: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.hub.stop();
    }
}

impl Inner {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::new(BACKEND, self.config.max_payload);
        caps.native_delay = true;
        caps.delivery_count = true;
        caps.ordered_by_key = true;
        caps
    }
}

/// Postgres as a message broker. Cheap to clone; all clones share one pool.
#[derive(Clone)]
pub struct PgBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBroker")
            .field("schema", &self.inner.config.schema.name())
            .field("url", &self.inner.config.url)
            .finish()
    }
}

impl PgBroker {
    /// Connects (failing fast if the server is unreachable) and applies the migrations unless
    /// [`PgConfig::migrate`] is off.
    pub async fn connect(config: PgConfig) -> Result<Self, Error> {
        let pool = connect_pool(&config).await?;
        Self::from_pool(pool, config).await
    }

    /// A broker on an existing pool.
    pub async fn from_pool(pool: PgPool, config: PgConfig) -> Result<Self, Error> {
        if config.migrate {
            migrate(&pool, &config.schema).await?;
        }
        let hub = Hub::new(config.connect_options()?, config.schema.queue_channel());
        Ok(PgBroker {
            inner: Arc::new(Inner {
                sql: Sql::new(&config),
                channel: config.schema.queue_channel(),
                pool,
                config,
                hub,
            }),
        })
    }

    /// A publisher handle.
    pub fn publisher(&self) -> PgPublisher {
        PgPublisher {
            inner: self.inner.clone(),
            closed: AtomicBool::new(false),
        }
    }

    /// A subscriber handle.
    pub fn subscriber(&self) -> PgSubscriber {
        PgSubscriber {
            inner: self.inner.clone(),
            closed: Arc::new(Closed {
                flag: AtomicBool::new(false),
                notify: Notify::new(),
            }),
        }
    }

    /// The event store in the same database and schema (sharing the pool).
    pub async fn store(&self) -> Result<PgStore, Error> {
        let mut config = self.inner.config.clone();
        config.migrate = false;
        PgStore::from_pool(self.inner.pool.clone(), config).await
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// What this backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    /// Whether the server answers (within a short timeout) and the schema is migrated; see
    /// [`Health`].
    pub async fn health(&self) -> Health {
        crate::health::check(&self.inner.pool, &self.inner.config, None).await
    }
}

/// Publishing handle of a [`PgBroker`]: `Ok` means the rows are committed.
pub struct PgPublisher {
    inner: Arc<Inner>,
    closed: AtomicBool,
}

impl std::fmt::Debug for PgPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPublisher").finish_non_exhaustive()
    }
}

/// A copy of an error for each message of a failed batch (errors are not `Clone`).
fn replicate(e: &Error) -> Error {
    match e {
        Error::Connection { message, .. } => Error::connection(BACKEND, message.clone()),
        Error::Closed(what) => Error::Closed(what),
        Error::Unauthorized { message, .. } => Error::Unauthorized {
            backend: BACKEND,
            message: message.clone(),
        },
        other => Error::Backend {
            backend: BACKEND,
            message: other.to_string(),
            retryable: other.is_retryable(),
            source: None,
        },
    }
}

impl PgPublisher {
    async fn insert(&self, topic: &str, messages: &[&Message]) -> Result<(), Error> {
        let n = messages.len();
        let mut ids = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut headers = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        for m in messages {
            ids.push(m.id.clone());
            keys.push(m.key.clone());
            headers.push(
                serde_json::to_string(&m.headers).map_err(|e| Error::backend(BACKEND, false, e))?,
            );
            payloads.push(m.payload.to_vec());
        }
        sqlx::query::<Postgres>(self.inner.sql.publish.clone())
            .bind(topic)
            .bind(ids)
            .bind(keys)
            .bind(headers)
            .bind(payloads)
            .bind(&self.inner.channel)
            .execute(&self.inner.pool)
            .instrument(tracing::debug_span!(
                "longshore.publish",
                backend = BACKEND,
                topic,
                messages = n
            ))
            .await
            .map_err(map_error)?;
        Ok(())
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed("postgres publisher"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Publisher for PgPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.check_open()?;
        validate_topic(topic)?;
        message.check_limits(self.inner.config.max_payload)?;
        self.insert(topic, &[&message]).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        if messages.is_empty() {
            return Ok(());
        }
        let total = messages.len();
        if let Err(e) = self.check_open().and_then(|()| validate_topic(topic)) {
            return Err(BatchError::all(messages, || replicate(&e)));
        }
        let mut failed = Vec::new();
        let mut ok = Vec::with_capacity(total);
        for (index, message) in messages.into_iter().enumerate() {
            match message.check_limits(self.inner.config.max_payload) {
                Ok(()) => ok.push((index, message)),
                Err(error) => failed.push(FailedMessage {
                    index,
                    message,
                    error,
                }),
            }
        }
        if !ok.is_empty() {
            let refs: Vec<&Message> = ok.iter().map(|(_, m)| m).collect();
            if let Err(e) = self.insert(topic, &refs).await {
                failed.extend(ok.into_iter().map(|(index, message)| FailedMessage {
                    index,
                    message,
                    error: replicate(&e),
                }));
                failed.sort_by_key(|f| f.index);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BatchError { total, failed })
        }
    }

    async fn close(&self) -> Result<(), Error> {
        // Every publish commits before it returns: nothing to flush.
        self.closed.store(true, Ordering::Release);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    /// Not ready once closed; otherwise see [`PgBroker::health`].
    async fn health(&self) -> Health {
        let closed = self.closed.load(Ordering::Acquire);
        crate::health::check(
            &self.inner.pool,
            &self.inner.config,
            closed.then_some("postgres publisher"),
        )
        .await
    }
}

struct Closed {
    flag: AtomicBool,
    notify: Notify,
}

/// Subscribing handle of a [`PgBroker`].
pub struct PgSubscriber {
    inner: Arc<Inner>,
    closed: Arc<Closed>,
}

impl std::fmt::Debug for PgSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSubscriber").finish_non_exhaustive()
    }
}

impl PgSubscriber {
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
            sqlx::query::<Postgres>(self.inner.sql.ensure.clone())
                .bind(&name)
                .bind(&patterns)
                .bind(regexes)
                .execute(&self.inner.pool)
                .await
                .map_err(map_error)?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by one consumer's stream, its ackers and its lease heartbeat.
struct Consumer {
    inner: Arc<Inner>,
    subscription: String,
    id: Uuid,
    prefetch: usize,
    /// Deliveries handed out (or buffered) and not settled.
    in_flight: AtomicUsize,
    /// Row ids whose lease the heartbeat renews.
    leased: Mutex<HashSet<i64>>,
    /// Woken when a delivery is settled (a prefetch slot freed up).
    settled: Notify,
    stream_alive: AtomicBool,
}

impl Consumer {
    fn finish(&self, row: i64) {
        lock(&self.leased).remove(&row);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.settled.notify_waiters();
    }

    async fn fetch(self: &Arc<Self>, room: usize) -> Result<Vec<Delivery>, Error> {
        let rows = sqlx::query::<Postgres>(self.inner.sql.fetch.clone())
            .bind(&self.subscription)
            .bind(room as i64)
            .bind(self.id)
            .bind(self.inner.config.visibility_timeout)
            .fetch_all(&self.inner.pool)
            .instrument(tracing::debug_span!(
                "longshore.receive",
                backend = BACKEND,
                subscription = %self.subscription,
                room
            ))
            .await
            .map_err(map_error)?;
        let mut decoded = Vec::with_capacity(rows.len());
        for row in &rows {
            match decode_row(row) {
                Ok(d) => decoded.push(d),
                Err(e) => {
                    // Cannot happen with rows we wrote; leave the row to expire and report.
                    tracing::warn!(error = %e, "undecodable queue row");
                }
            }
        }
        decoded.sort_by_key(|d| d.0);
        let mut out = Vec::with_capacity(decoded.len());
        {
            let mut leased = lock(&self.leased);
            for (row, _, _, _) in &decoded {
                leased.insert(*row);
            }
        }
        for (row, attempts, topic, message) in decoded {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            let acker = PgAcker {
                consumer: self.clone(),
                row,
                attempts,
                settled: false,
            };
            out.push(Delivery::new(
                message,
                topic,
                u32::try_from(attempts).unwrap_or(1),
                Box::new(acker),
            ));
        }
        Ok(out)
    }
}

fn decode_row(row: &PgRow) -> Result<(i64, i32, String, Message), sqlx::Error> {
    let headers: String = row.try_get("headers")?;
    let headers = serde_json::from_str(&headers).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let payload: Vec<u8> = row.try_get("payload")?;
    Ok((
        row.try_get("id")?,
        row.try_get("attempts")?,
        row.try_get("topic")?,
        Message {
            id: row.try_get("message_id")?,
            key: row.try_get("message_key")?,
            headers,
            payload: Bytes::from(payload),
        },
    ))
}

/// Marks the stream gone when the stream (and so this state) is dropped.
struct StreamState {
    consumer: Arc<Consumer>,
    buffer: VecDeque<Delivery>,
    closed: Arc<Closed>,
    wake: Arc<Notify>,
    failures: u32,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.consumer.stream_alive.store(false, Ordering::Release);
        // Buffered deliveries are dropped with the state: their ackers give them back.
    }
}

impl StreamState {
    async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        let poll = self.consumer.inner.config.poll_interval;
        loop {
            let wake = self.wake.clone();
            let consumer = self.consumer.clone();
            let closed = self.closed.clone();
            let woken = wake.notified();
            let settled = consumer.settled.notified();
            let closing = closed.notify.notified();
            tokio::pin!(woken, settled, closing);
            woken.as_mut().enable();
            settled.as_mut().enable();
            closing.as_mut().enable();
            if self.closed.flag.load(Ordering::Acquire) {
                return None;
            }
            if let Some(d) = self.buffer.pop_front() {
                return Some(Ok(d));
            }
            let held = consumer.in_flight.load(Ordering::Acquire);
            if held < consumer.prefetch {
                // Fetch in a task of its own: if this future is dropped mid-fetch (a caller's
                // timeout or select), the task still finishes and its deliveries, dropped
                // unsettled, are given back at once instead of waiting out their lease.
                let room = consumer.prefetch - held;
                let fetcher = consumer.clone();
                let fetched = tokio::spawn(async move { fetcher.fetch(room).await })
                    .await
                    .unwrap_or_else(|e| Err(Error::backend(BACKEND, true, e)));
                match fetched {
                    Ok(batch) if !batch.is_empty() => {
                        self.failures = 0;
                        self.buffer.extend(batch);
                        continue;
                    }
                    Ok(_) => self.failures = 0,
                    Err(e) => {
                        self.failures = self.failures.saturating_add(1);
                        let backoff =
                            Duration::from_millis(100u64 << self.failures.min(5)).min(poll * 4);
                        tokio::select! {
                            _ = &mut closing => return None,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        return Some(Err(e));
                    }
                }
            }
            tokio::select! {
                _ = &mut woken => {}
                _ = &mut settled => {}
                _ = &mut closing => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// Renews the leases of a consumer's unsettled deliveries until the stream is gone and
/// nothing is left in flight.
async fn heartbeat(consumer: Arc<Consumer>) {
    let lease = consumer.inner.config.visibility_timeout;
    let every = (lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let ids: Vec<i64> = lock(&consumer.leased).iter().copied().collect();
        if ids.is_empty() {
            if !consumer.stream_alive.load(Ordering::Acquire) {
                return;
            }
            continue;
        }
        if let Err(e) = sqlx::query::<Postgres>(consumer.inner.sql.heartbeat.clone())
            .bind(ids)
            .bind(consumer.id)
            .bind(lease)
            .execute(&consumer.inner.pool)
            .await
        {
            tracing::warn!(subscription = %consumer.subscription, error = %e, "renewing queue leases failed");
        }
    }
}

#[async_trait]
impl Subscriber for PgSubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        if self.closed.flag.load(Ordering::Acquire) {
            return Err(Error::Closed("postgres subscriber"));
        }
        self.declare(subscription).await?;
        self.inner.hub.ensure_listening().await;
        let consumer = Arc::new(Consumer {
            inner: self.inner.clone(),
            subscription: subscription.name.clone(),
            id: Uuid::new_v4(),
            prefetch: usize::from(subscription.prefetch.max(1)),
            in_flight: AtomicUsize::new(0),
            leased: Mutex::new(HashSet::new()),
            settled: Notify::new(),
            stream_alive: AtomicBool::new(true),
        });
        tokio::spawn(heartbeat(consumer.clone()));
        let state = StreamState {
            wake: self.inner.hub.keyed(&subscription.name),
            consumer,
            buffer: VecDeque::new(),
            closed: self.closed.clone(),
            failures: 0,
        };
        Ok(Box::pin(stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })))
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        self.declare(subscription).await
    }

    async fn close(&self) -> Result<(), Error> {
        self.closed.flag.store(true, Ordering::Release);
        self.closed.notify.notify_waiters();
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    /// Not ready once closed; otherwise see [`PgBroker::health`].
    async fn health(&self) -> Health {
        let closed = self.closed.flag.load(Ordering::Acquire);
        crate::health::check(
            &self.inner.pool,
            &self.inner.config,
            closed.then_some("postgres subscriber"),
        )
        .await
    }

    /// Rows of the subscription not acknowledged yet (waiting, delayed or leased); a
    /// subscription that does not exist is [`Error::InvalidName`].
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        crate::health::lag(&self.inner.pool, &self.inner.config, subscription)
            .await
            .map(Some)
    }
}

struct PgAcker {
    consumer: Arc<Consumer>,
    row: i64,
    attempts: i32,
    settled: bool,
}

impl PgAcker {
    async fn nack_row(
        consumer: &Consumer,
        row: i64,
        attempts: i32,
        delay: Duration,
    ) -> Result<(), Error> {
        let now = delay.is_zero();
        sqlx::query::<Postgres>(consumer.inner.sql.nack.clone())
            .bind(row)
            .bind(consumer.id)
            .bind(attempts)
            .bind(delay)
            .bind(&consumer.inner.channel)
            .bind(now)
            .execute(&consumer.inner.pool)
            .await
            .map_err(map_error)?;
        if !now {
            // Wake this process's consumers when the delay is over (others poll).
            let wake = consumer.inner.hub.keyed(&consumer.subscription);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                wake.notify_waiters();
            });
        }
        Ok(())
    }
}

impl Drop for PgAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped unsettled: give the message back now rather than after the lease.
        let consumer = self.consumer.clone();
        let (row, attempts) = (self.row, self.attempts);
        lock(&consumer.leased).remove(&row);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = PgAcker::nack_row(&consumer, row, attempts, Duration::ZERO).await {
                        tracing::warn!(error = %e, "returning an unsettled delivery failed; it comes back when its lease expires");
                    }
                    consumer.in_flight.fetch_sub(1, Ordering::AcqRel);
                    consumer.settled.notify_waiters();
                });
            }
            Err(_) => {
                consumer.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

#[async_trait]
impl Acker for PgAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        // Settled from here on, even if this future is dropped: the row stays leased by us
        // until the delete commits, and comes back after its lease if it never does.
        self.settled = true;
        let c = self.consumer.clone();
        c.finish(self.row);
        let result = sqlx::query::<Postgres>(c.inner.sql.ack.clone())
            .bind(self.row)
            .bind(c.id)
            .bind(self.attempts)
            .execute(&c.inner.pool)
            .await;
        match result {
            Ok(r) if r.rows_affected() == 0 => {
                tracing::warn!(subscription = %c.subscription, "ack after the lease expired; the message was redelivered");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        self.settled = true;
        let c = self.consumer.clone();
        c.finish(self.row);
        PgAcker::nack_row(&c, self.row, self.attempts, delay.unwrap_or(Duration::ZERO)).await
    }

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let c = self.consumer.clone();
        let dlq = dead_letter_topic(&c.subscription);
        let letter = dead_letter_message(message, topic, &c.subscription, &dead);
        let headers = serde_json::to_string(&letter.headers)
            .map_err(|e| Error::backend(BACKEND, false, e))?;
        let result = sqlx::query::<Postgres>(c.inner.sql.dead_letter.clone())
            .bind(self.row)
            .bind(c.id)
            .bind(self.attempts)
            .bind(&dlq)
            .bind(&letter.id)
            .bind(&letter.key)
            .bind(headers)
            .bind(letter.payload.to_vec())
            .bind(&c.inner.channel)
            .execute(&c.inner.pool)
            .await;
        match result {
            Ok(_) => {
                // Moved (or the lease was lost and another consumer has it).
                self.settled = true;
                c.finish(self.row);
                Ok(())
            }
            // Not settled: the drop gives the message back for another try.
            Err(e) => Err(map_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pattern_regex;

    #[test]
    fn regexes() {
        assert_eq!(pattern_regex("a.*.#"), r"^\.a\.[^.]+(?:\.[^.]+)*$");
        assert_eq!(pattern_regex("#"), r"^(?:\.[^.]+)*$");
    }
}
