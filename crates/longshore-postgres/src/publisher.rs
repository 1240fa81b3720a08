//! [`PgPublisher`]: one statement inserts a batch's rows for every matching subscription and
//! notifies their consumers; `Ok` means committed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use longshore_core::topic::validate_topic;
use longshore_core::{BatchError, Capabilities, Error, FailedMessage, Health, Message, Publisher};
use sqlx::Postgres;
use tracing::Instrument;

use crate::client::Client;
use crate::error::{retry_lost, PgError};
use crate::mapping::MessageColumns;
use crate::BACKEND;

/// Publishing handle of a [`crate::PgBroker`]: `Ok` means the rows are committed.
pub struct PgPublisher {
    client: Arc<Client>,
    closed: AtomicBool,
}

impl std::fmt::Debug for PgPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPublisher").finish_non_exhaustive()
    }
}

impl PgPublisher {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        PgPublisher {
            client,
            closed: AtomicBool::new(false),
        }
    }

    /// Inserts the rows; after a lost connection once more, skipping rows already stored.
    async fn insert(&self, topic: &str, messages: &[&Message]) -> Result<(), Error> {
        let columns = MessageColumns::build(messages)?;
        let client = &self.client;
        retry_lost("publish", |retry| {
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
        self.insert(topic, &[&message]).await
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
