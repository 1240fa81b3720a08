//! [`PgPublisher`]: one statement inserts a batch's rows for every matching subscription and
//! notifies their consumers; `Ok` means committed. Concurrent single publishes share
//! statements ([`GroupCommit`]): many request handlers publishing one event each commit
//! together instead of queueing behind each other's commits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use longshore_core::topic::validate_topic;
use longshore_core::{
    topic_runs, BatchError, Capabilities, Error, FailedMessage, GroupCommit, Health, Message,
    Publisher, ScheduleId,
};
use sqlx::Postgres;
use tracing::Instrument;

use crate::client::Client;
use crate::error::{retry_lost, PgError};
use crate::mapping::MessageColumns;
use crate::BACKEND;

/// Most messages one statement carries: a shared one of concurrent single publishes, or one
/// of a `publish_batch`.
const GROUP_MAX_ROWS: usize = 1_000;

/// Shared writes of concurrent `publish` calls at once, at most (and at most half the pool).
/// More writes at once carry fewer rows each, and commits that notify wait for each other in
/// the server: with 512 callers on the test machine, 1 to 3 writes at once reached
/// 54,000–55,000 msg/s, 5 reached 36,000 and 10 reached 30,000 (BENCHMARKS.md, "Concurrent
/// publishers …" and "Postgres at 512 callers"). Each write takes its share of the callers
/// (`GroupCommit`), so the writes run side by side; with shares, 4 writes at once were still
/// slower than 2 (BENCHMARKS.md, "Group commit: each write takes its share").
const GROUP_WRITERS: usize = 2;

/// Publishing handle of a [`crate::PgBroker`]: `Ok` means the rows are committed.
pub struct PgPublisher {
    client: Arc<Client>,
    closed: AtomicBool,
    /// Concurrent `publish` calls, written together.
    group: GroupCommit<(String, Message)>,
}

impl std::fmt::Debug for PgPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPublisher").finish_non_exhaustive()
    }
}

impl PgPublisher {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        // At most half the pool for shared writes: the rest stays free for consumers and the
        // store.
        let flushers = GROUP_WRITERS
            .min(client.config.max_connections as usize / 2)
            .max(1);
        PgPublisher {
            group: GroupCommit::new(BACKEND, flushers, GROUP_MAX_ROWS),
            client,
            closed: AtomicBool::new(false),
        }
    }
}

/// Inserts the rows; after a lost connection once more, skipping rows already stored.
async fn insert(client: &Client, topic: &str, messages: &[&Message]) -> Result<(), Error> {
    let columns = MessageColumns::build(messages)?;
    retry_lost("publish", client.config.connect_timeout, |retry| {
        let sql = if retry {
            &client.sql.publish_retry
        } else {
            &client.sql.publish
        };
        sqlx::query::<Postgres>(sql.clone())
            .bind(topic)
            .bind(&columns.ids)
            .bind(&columns.keys)
            .bind(&columns.headers)
            .bind(&columns.payloads)
            .bind(&client.channel)
            .bind(&columns.visible)
            .execute(&client.pool)
    })
    .instrument(tracing::debug_span!(
        "longshore.publish",
        backend = BACKEND,
        topic,
        messages = messages.len()
    ))
    .await
    .map_err(PgError::from)?;
    Ok(())
}

/// Writes the single publishes [`GroupCommit`] gathered: one statement per run of one topic;
/// one outcome per message.
async fn insert_group(client: &Client, items: Vec<(String, Message)>) -> Vec<Result<(), Error>> {
    let mut results = Vec::with_capacity(items.len());
    for (topic, messages) in topic_runs(&items) {
        let run = messages.len();
        match insert(client, topic, &messages).await {
            Ok(()) => results.extend((0..run).map(|_| Ok(()))),
            // One caller gets the error with its source (`PgError::of` finds it), the
            // others a copy.
            Err(e) => {
                results.extend((1..run).map(|_| Err(e.copy())));
                results.push(Err(e));
            }
        }
    }
    results
}

impl PgPublisher {
    /// Which handle was closed, if this one or its broker was.
    fn closed(&self) -> Option<&'static str> {
        if self.closed.load(Ordering::Acquire) {
            Some("postgres publisher")
        } else if self.client.is_closed() {
            Some("postgres broker")
        } else {
            None
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        match self.closed() {
            Some(what) => Err(Error::Closed(what)),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Publisher for PgPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.check_open()?;
        validate_topic(topic)?;
        message.check_limits(self.client.config.max_payload)?;
        let client = self.client.clone();
        self.group
            .submit((topic.to_string(), message), move |items| {
                let client = client.clone();
                async move { insert_group(&client, items).await }
            })
            .await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        if messages.is_empty() {
            return Ok(());
        }
        let total = messages.len();
        if let Err(e) = self.check_open().and_then(|()| validate_topic(topic)) {
            return Err(BatchError::all(messages, || e.copy()));
        }
        let mut failed = Vec::new();
        let mut ok = Vec::with_capacity(total);
        for (index, message) in messages.into_iter().enumerate() {
            match message.check_limits(self.client.config.max_payload) {
                Ok(()) => ok.push((index, message)),
                Err(error) => failed.push(FailedMessage {
                    index,
                    message,
                    error,
                }),
            }
        }
        // Statements of at most GROUP_MAX_ROWS, one after another: a batch of any size holds
        // one statement's arrays at a time and keeps its order; a failed statement names its
        // own messages.
        let mut rest = ok.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<(usize, Message)> = rest.by_ref().take(GROUP_MAX_ROWS).collect();
            let refs: Vec<&Message> = chunk.iter().map(|(_, m)| m).collect();
            if let Err(e) = insert(&self.client, topic, &refs).await {
                failed.extend(chunk.into_iter().map(|(index, message)| FailedMessage {
                    index,
                    message,
                    error: e.copy(),
                }));
            }
        }
        BatchError::check(total, failed)
    }

    /// Deletes the message's rows that are still waiting for their time, in every
    /// subscription; `true` if there were any.
    async fn cancel(&self, id: &ScheduleId) -> Result<bool, Error> {
        self.check_open()?;
        let done = sqlx::query::<Postgres>(self.client.sql.cancel.clone())
            .bind(&id.0)
            .execute(&self.client.pool)
            .await
            .map_err(PgError::from)?;
        Ok(done.rows_affected() > 0)
    }

    async fn close(&self) -> Result<(), Error> {
        // Every publish commits before it returns: nothing to flush.
        self.closed.store(true, Ordering::Release);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.client.capabilities()
    }

    /// Not ready once closed; otherwise see [`crate::PgBroker`]'s health.
    async fn health(&self) -> Health {
        crate::health::check(&self.client.pool, &self.client.config, self.closed()).await
    }
}
