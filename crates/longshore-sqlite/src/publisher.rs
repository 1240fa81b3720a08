//! [`SqlitePublisher`]: one write transaction inserts a batch's rows for every matching
//! subscription; `Ok` means committed. This process's consumers are woken at once.
//! Concurrent single publishes share one transaction ([`GroupCommit`]): with one writer and
//! a sync per commit, that is what lets many callers publish at the file's pace.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use longshore_core::topic::validate_topic;
use longshore_core::{
    topic_runs, BatchError, Capabilities, Error, FailedMessage, GroupCommit, Health, Message,
    Publisher, ScheduleId,
};
use tracing::Instrument;

use crate::client::Client;
use crate::error::SqliteError;
use crate::queue_sql::{route, CANCEL};
use crate::BACKEND;

/// Most messages one shared transaction of concurrent single publishes carries.
const GROUP_MAX_ROWS: usize = 1_000;

/// Publishing handle of a [`crate::SqliteBroker`]: `Ok` means the rows are committed.
pub struct SqlitePublisher {
    client: Arc<Client>,
    closed: AtomicBool,
    /// Concurrent `publish` calls, written together (one writer: one write at a time).
    group: GroupCommit<(String, Message)>,
}

impl std::fmt::Debug for SqlitePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlitePublisher").finish_non_exhaustive()
    }
}

impl SqlitePublisher {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        SqlitePublisher {
            client,
            closed: AtomicBool::new(false),
            group: GroupCommit::new(BACKEND, 1, GROUP_MAX_ROWS),
        }
    }

    /// Inserts the rows in one transaction, then wakes the subscriptions' consumers.
    async fn insert(&self, topic: &str, messages: &[&Message]) -> Result<(), Error> {
        let pools = &self.client.pools;
        let reached = async {
            let mut tx = pools.writer.begin_with("BEGIN IMMEDIATE").await?;
            let reached = route(&mut tx, topic, messages).await?;
            tx.commit().await?;
            Ok::<_, SqliteError>(reached)
        }
        .instrument(tracing::debug_span!(
            "longshore.publish",
            backend = BACKEND,
            topic,
            messages = messages.len()
        ))
        .await?;
        pools.wake.subscriptions(&reached);
        Ok(())
    }

    /// Which handle was closed, if this one or its broker was.
    fn closed(&self) -> Option<&'static str> {
        if self.closed.load(Ordering::Acquire) {
            Some("sqlite publisher")
        } else if self.client.is_closed() {
            Some("sqlite broker")
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

/// Writes the single publishes [`GroupCommit`] gathered in one transaction (each run of one
/// topic routed at once); one outcome, shared by every message.
async fn insert_group(client: &Client, items: Vec<(String, Message)>) -> Vec<Result<(), Error>> {
    let pools = &client.pools;
    let written = async {
        let mut tx = pools.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut reached = Vec::new();
        for (topic, messages) in topic_runs(&items) {
            reached.extend(route(&mut tx, topic, &messages).await?);
        }
        tx.commit().await?;
        Ok::<_, SqliteError>(reached)
    }
    .instrument(tracing::debug_span!(
        "longshore.publish",
        backend = BACKEND,
        messages = items.len()
    ))
    .await;
    match written {
        Ok(reached) => {
            pools.wake.subscriptions(&reached);
            items.iter().map(|_| Ok(())).collect()
        }
        // Each caller gets the typed error (a copy without the source where it wraps
        // another library's error, which cannot be cloned).
        Err(e) => {
            let others: Vec<Option<SqliteError>> =
                (1..items.len()).map(|_| e.replicate()).collect();
            let first = Error::from(e);
            let mut results: Vec<Result<(), Error>> = others
                .into_iter()
                .map(|own| Err(own.map_or_else(|| first.copy(), Error::from)))
                .collect();
            results.insert(0, Err(first));
            results
        }
    }
}

#[async_trait]
impl Publisher for SqlitePublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.check_open()?;
        validate_topic(topic)?;
        message.check_limits(self.client.config().max_payload)?;
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
            match message.check_limits(self.client.config().max_payload) {
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
        let done = sqlx::query(CANCEL)
            .bind(&id.0)
            .bind(crate::client::now_ms())
            .execute(&self.client.pools.writer)
            .await
            .map_err(SqliteError::from)?;
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

    /// Not ready once closed; otherwise see [`crate::SqliteBroker`]'s health.
    async fn health(&self) -> Health {
        crate::health::check(&self.client.pools, self.closed()).await
    }
}
