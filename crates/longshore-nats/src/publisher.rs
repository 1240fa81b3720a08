//! The JetStream publisher: every publish awaits its PubAck, `Nats-Msg-Id` deduplicates
//! retries, batches keep many PubAcks in flight (see [`crate::confirm`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use longshore_core::{BatchError, Capabilities, Error, FailedMessage, Health, Message, Publisher};

use crate::client::Client;
use crate::confirm::{confirm, prepare, Refused};

/// Publishes to JetStream; see the crate docs for the subject mapping. Made by
/// [`crate::NatsBroker`] through [`longshore_core::Broker::publisher`].
pub struct NatsPublisher {
    client: Arc<Client>,
    closed: AtomicBool,
}

impl NatsPublisher {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        NatsPublisher {
            client,
            closed: AtomicBool::new(false),
        }
    }

    /// What refuses work, if anything: this publisher or its broker being closed.
    fn closed_as(&self) -> Option<&'static str> {
        if self.closed.load(Ordering::Acquire) {
            Some("nats publisher")
        } else if self.client.is_closed() {
            Some("nats broker")
        } else {
            None
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        match self.closed_as() {
            Some(what) => Err(Error::Closed(what)),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Publisher for NatsPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.check_open()?;
        let prepared = prepare(&self.client, topic, message).map_err(|r| r.error)?;
        let mut results = confirm(&self.client, vec![prepared], true).await;
        results.pop().map_or(Ok(()), |(_, result)| result)
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        if let Some(what) = self.closed_as() {
            return Err(BatchError::all(messages, || Error::Closed(what)));
        }
        let total = messages.len();
        let mut failed = Vec::new();
        let mut sent = Vec::with_capacity(total);
        let mut prepared = Vec::with_capacity(total);
        for (index, message) in messages.into_iter().enumerate() {
            match prepare(&self.client, topic, message) {
                Ok(p) => {
                    prepared.push(p);
                    sent.push(index);
                }
                Err(refused) => {
                    let Refused { error, message } = *refused;
                    failed.push(FailedMessage {
                        index,
                        message,
                        error,
                    })
                }
            }
        }
        if !prepared.is_empty() {
            let results = confirm(&self.client, prepared, true).await;
            let unconfirmed = sent
                .into_iter()
                .zip(results)
                .filter_map(|(index, (message, r))| {
                    r.err().map(|error| FailedMessage {
                        index,
                        message,
                        error,
                    })
                });
            failed.extend(unconfirmed);
        }
        BatchError::check(total, failed)
    }

    async fn close(&self) -> Result<(), Error> {
        // Every publish has its PubAck before it returns: nothing is buffered. Flush the
        // connection so acks and the like sent through it are on the wire.
        self.closed.store(true, Ordering::Release);
        let limit = self.client.config.request_timeout;
        let _ = tokio::time::timeout(limit, self.client.nats.flush()).await;
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.client.capabilities.clone()
    }

    /// Connected, with the stream in place (created if missing); not ready once closed.
    async fn health(&self) -> Health {
        let closed = self.closed.load(Ordering::Acquire);
        crate::health::report(&self.client, closed.then_some("nats publisher")).await
    }
}
