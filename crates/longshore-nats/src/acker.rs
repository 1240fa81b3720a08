//! Settling deliveries: `+ACK`, `-NAK` (with delay), `+TERM` after a dead letter was stored,
//! `+WPI` (in progress) for deliveries a handler holds long, `-NAK` for an acker dropped
//! unsettled; and the ledger of one consumer's unsettled deliveries that bounds its prefetch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage as Publish;
use async_trait::async_trait;
use bytes::Bytes;
use longshore_core::{dead_letter_message, dead_letter_topic, Acker, DeadLetter, Error, Message};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::Client;
use crate::confirm::{confirm, prepare_letter};
use crate::error::NatsError;
use crate::mapping::marker_subject;
use crate::BACKEND;

/// What one consumer and the ackers of its deliveries share: its unsettled deliveries.
pub(crate) struct Ledger {
    pub client: Arc<Client>,
    pub subscription: String,
    /// Deliveries handed out and not yet settled.
    pub in_flight: AtomicUsize,
    /// Woken (one permit) when a delivery settles and prefetch room frees up.
    pub freed: Notify,
    /// Unsettled deliveries: token → (ack subject, delivered at), for in-progress acks.
    progress: Mutex<HashMap<u64, (String, Instant)>>,
    next_token: AtomicU64,
}

impl Ledger {
    /// A ledger for subscription `subscription`, with its in-progress ticker running.
    pub(crate) fn start(client: Arc<Client>, subscription: String) -> Arc<Ledger> {
        let ledger = Arc::new(Ledger {
            client,
            subscription,
            in_flight: AtomicUsize::new(0),
            freed: Notify::new(),
            progress: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
        });
        spawn_progress_ticker(&ledger);
        ledger
    }

    /// Counts a delivery acked on `reply` as unsettled; its acker settles it.
    pub(crate) fn track(self: &Arc<Self>, reply: String, stream_seq: u64) -> NatsAcker {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, (reply.clone(), Instant::now()));
        NatsAcker {
            ledger: self.clone(),
            reply: Some(reply),
            token,
            stream_seq,
        }
    }

    fn release(&self, token: u64) {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }
}

/// Sends `+WPI` for deliveries unsettled for a third of `ack_wait`, every third of
/// `ack_wait`, so long handlers keep their messages. Ends when the consumer and all its
/// ackers are gone.
fn spawn_progress_ticker(ledger: &Arc<Ledger>) {
    let weak = Arc::downgrade(ledger);
    let period = (ledger.client.config.ack_wait / 3).max(Duration::from_millis(300));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(ledger) = weak.upgrade() else { break };
            let now = Instant::now();
            let due: Vec<String> = ledger
                .progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|(_, since)| now.duration_since(*since) >= period)
                .map(|(reply, _)| reply.clone())
                .collect();
            let nats = ledger.client.nats.clone();
            drop(ledger);
            for reply in due {
                if let Err(e) = nats.publish(reply, Bytes::from_static(b"+WPI")).await {
                    tracing::debug!(error = %e, "in-progress ack failed");
                }
            }
        }
    });
}

/// Settles one delivery on the server.
pub(crate) struct NatsAcker {
    ledger: Arc<Ledger>,
    /// The `$JS.ACK` subject; `None` once settled.
    reply: Option<String>,
    token: u64,
    stream_seq: u64,
}

impl NatsAcker {
    fn take(&mut self) -> Option<String> {
        let reply = self.reply.take()?;
        self.ledger.release(self.token);
        Some(reply)
    }

    async fn send(&self, reply: String, body: Bytes) -> Result<(), Error> {
        self.ledger
            .client
            .nats
            .publish(reply, body)
            .await
            .map_err(|e| Error::Connection {
                backend: BACKEND,
                message: format!("settling a delivery: {e}"),
                source: None,
            })
    }

    /// Stores the dead-letter marker of message `id`: it tells publishers that a later
    /// publish of this id is a replay.
    async fn mark_dead(&self, id: &str) -> Result<(), Error> {
        let client = &self.ledger.client;
        let marker = marker_subject(&client.config.subject_prefix, id);
        let ack = client
            .js
            .send_publish(marker, Publish::build().payload(Bytes::new()))
            .await;
        let marked = match ack {
            Ok(fut) => fut.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        marked.map_err(|e| {
            NatsError::Unreachable {
                url: client.config.url.redacted(),
                reason: format!("dead-letter marker not stored: {e}"),
            }
            .into()
        })
    }
}

impl Drop for NatsAcker {
    fn drop(&mut self) {
        if let Some(reply) = self.take() {
            let nats = self.ledger.client.nats.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                // Counted before the task runs, so the broker's `close` sends it first.
                let tracked = self.ledger.client.outstanding.track();
                handle.spawn(async move {
                    let _ = nats.publish(reply, Bytes::from_static(b"-NAK")).await;
                    drop(tracked);
                });
            }
        }
    }
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        match self.take() {
            Some(reply) => self.send(reply, Bytes::from_static(b"+ACK")).await,
            None => Ok(()),
        }
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let Some(reply) = self.take() else {
            return Ok(());
        };
        let body = match delay {
            Some(d) if !d.is_zero() => Bytes::from(format!(
                "-NAK {{\"delay\": {}}}",
                d.as_nanos().min(u128::from(u64::MAX))
            )),
            _ => Bytes::from_static(b"-NAK"),
        };
        self.send(reply, body).await
    }

    /// The broker keeps the message until it is settled: nothing to hold.
    fn hold(&mut self, _message: Message) {}

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let client = self.ledger.client.clone();
        let subscription = self.ledger.subscription.clone();
        let dlq = dead_letter_topic(&subscription);
        let id = message.id.clone();
        let letter = dead_letter_message(message, topic, &subscription, &dead);
        // A deduplication id of its own: the original id is already taken by the original
        // message; a retry of this same dead-lettering still deduplicates.
        let dedup = format!("{id}~dl~{}~{}", self.stream_seq, dead.attempts);
        let prepared = prepare_letter(&client, &dlq, letter, dedup)?;
        if let Some((_, Err(e))) = confirm(&client, vec![prepared], false).await.pop() {
            // Not settled: the drop nacks it and the message comes back.
            return Err(e);
        }
        self.mark_dead(&id).await?;
        match self.take() {
            Some(reply) => self.send(reply, Bytes::from_static(b"+TERM")).await,
            None => Ok(()),
        }
    }
}
