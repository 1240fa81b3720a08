//! The JetStream publisher: every publish awaits its PubAck, `Nats-Msg-Id` deduplicates
//! retries, batches keep many PubAcks in flight.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::publish::PublishAck;
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use async_trait::async_trait;
use bytes::Bytes;
use longshore_core::error::FailedMessage;
use longshore_core::topic::validate_topic;
use longshore_core::{BatchError, Capabilities, Error, Message, Publisher};
use serde::Deserialize;

use crate::broker::Inner;
use crate::error::BACKEND;
use crate::subject::{marker_subject, subject_of};

/// Header carrying the message key.
pub const HEADER_KEY: &str = "Longshore-Key";
/// Header carrying the message id when the deduplication id (`Nats-Msg-Id`) differs from it
/// (dead letters, replays of dead letters).
pub const HEADER_ID: &str = "Longshore-Msg-Id";
/// JetStream's deduplication header.
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// One message ready to send: subject, headers (with `Nats-Msg-Id`) and payload.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub subject: String,
    pub id: String,
    pub dedup_id: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

fn header_error(name: &str, why: &'static str) -> Error {
    Error::InvalidName {
        kind: "header",
        value: name.chars().take(64).collect(),
        reason: why,
    }
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), Error> {
    let n: HeaderName = name
        .parse()
        .map_err(|_| header_error(name, "not a valid NATS header name"))?;
    let v: HeaderValue = value
        .parse()
        .map_err(|_| header_error(name, "value holds characters NATS headers cannot carry"))?;
    headers.insert(n, v);
    Ok(())
}

impl Inner {
    /// Validates `message` for `topic` and builds what goes on the wire.
    pub(crate) fn prepare(
        &self,
        topic: &str,
        message: &Message,
        dedup_id: Option<String>,
    ) -> Result<Prepared, Error> {
        validate_topic(topic)?;
        message.check_limits(self.capabilities.max_payload)?;
        let mut headers = HeaderMap::new();
        let mut header_bytes = 12usize;
        for (name, value) in &message.headers {
            if [NATS_MSG_ID, HEADER_ID, HEADER_KEY]
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name))
            {
                return Err(header_error(name, "reserved by the NATS adapter"));
            }
            insert(&mut headers, name, value)?;
            header_bytes += name.len() + value.len() + 4;
        }
        if let Some(key) = &message.key {
            insert(&mut headers, HEADER_KEY, key)?;
            header_bytes += HEADER_KEY.len() + key.len() + 4;
        }
        let dedup_id = dedup_id.unwrap_or_else(|| message.id.clone());
        insert(&mut headers, NATS_MSG_ID, &dedup_id)
            .map_err(|_| header_error("message id", "not valid in a NATS header"))?;
        header_bytes += NATS_MSG_ID.len() + dedup_id.len() + 4;
        if dedup_id != message.id {
            insert(&mut headers, HEADER_ID, &message.id)?;
            header_bytes += HEADER_ID.len() + message.id.len() + 4;
        }
        if header_bytes + message.payload.len() > self.server_max_payload {
            return Err(Error::HeadersTooLarge(format!(
                "{header_bytes} bytes of headers plus {} bytes of payload exceed the server's max_payload of {}",
                message.payload.len(),
                self.server_max_payload
            )));
        }
        Ok(Prepared {
            subject: subject_of(&self.config.subject_prefix, topic),
            id: message.id.clone(),
            dedup_id,
            headers,
            payload: message.payload.clone(),
        })
    }

    /// Sends every message and waits for its PubAck, keeping up to `max_acks_in_flight` in
    /// flight; retries what failed retryably (same `Nats-Msg-Id`) until `publish_timeout`.
    /// `replays` enables the dead-letter replay check on duplicate acks (see
    /// [`Inner::resolve_duplicates`]). Returns one result per message, in order.
    pub(crate) async fn confirm(
        &self,
        mut items: Vec<Prepared>,
        replays: bool,
    ) -> Vec<Result<(), Error>> {
        let started = Instant::now();
        let deadline = started + self.config.publish_timeout;
        let mut results: Vec<Option<Result<(), Error>>> = (0..items.len()).map(|_| None).collect();
        let mut todo: Vec<usize> = (0..items.len()).collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Err(e) = self.ensure_stream().await {
                if !e.is_retryable() || Instant::now() >= deadline {
                    let text = e.to_string();
                    for i in todo {
                        results[i] = Some(Err(clone_error(&e, &text)));
                    }
                    break;
                }
            } else {
                let outcome = self.pass(&items, &todo).await;
                let mut retry = Vec::new();
                let mut duplicates = Vec::new();
                for (i, r) in outcome {
                    match r {
                        Ok(ack) if ack.duplicate && replays && items[i].dedup_id == items[i].id => {
                            duplicates.push((i, ack.sequence))
                        }
                        Ok(_) => results[i] = Some(Ok(())),
                        Err((kind, text)) => {
                            let e = self.publish_error(kind, &text, started);
                            if e.is_retryable() && Instant::now() < deadline {
                                if kind == PublishErrorKind::StreamNotFound {
                                    self.stream_maybe_gone();
                                }
                                retry.push(i);
                            } else {
                                results[i] = Some(Err(e));
                            }
                        }
                    }
                }
                for (i, seq) in duplicates {
                    match self.resolve_duplicates(&items[i], seq).await {
                        None => results[i] = Some(Ok(())),
                        Some(replay_id) => {
                            // A dead-lettered message published again: a replay, not a
                            // duplicate. Send it under a deduplication id of its own.
                            let p = &mut items[i];
                            p.dedup_id = replay_id;
                            let _ = insert(&mut p.headers, NATS_MSG_ID, &p.dedup_id);
                            let id = p.id.clone();
                            let _ = insert(&mut p.headers, HEADER_ID, &id);
                            retry.push(i);
                        }
                    }
                }
                if retry.is_empty() {
                    break;
                }
                retry.sort_unstable();
                todo = retry;
                if todo.iter().all(|i| items[*i].dedup_id != items[*i].id) {
                    // Only replays left: send at once.
                    continue;
                }
            }
            if Instant::now() >= deadline {
                for i in &todo {
                    results[*i].get_or_insert_with(|| {
                        Err(Error::Timeout {
                            operation: "JetStream publish (PubAck)",
                            after: self.config.publish_timeout,
                        })
                    });
                }
                break;
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or(Err(Error::Timeout {
                    operation: "JetStream publish (PubAck)",
                    after: self.config.publish_timeout,
                }))
            })
            .collect()
    }

    /// One pipelined pass over `todo`.
    async fn pass(
        &self,
        items: &[Prepared],
        todo: &[usize],
    ) -> Vec<(usize, Result<PublishAck, (PublishErrorKind, String)>)> {
        let window = self.config.max_acks_in_flight;
        let mut out = Vec::with_capacity(todo.len());
        let mut in_flight = VecDeque::with_capacity(window.min(todo.len()));
        for &i in todo {
            if in_flight.len() >= window {
                if let Some((j, fut, sent)) = in_flight.pop_front() {
                    out.push((j, await_ack(fut, sent, self.config.request_timeout).await));
                }
            }
            let p = &items[i];
            let publish = Publish::build()
                .payload(p.payload.clone())
                .headers(p.headers.clone());
            match self.js.send_publish(p.subject.clone(), publish).await {
                Ok(fut) => in_flight.push_back((i, fut, Instant::now())),
                Err(e) => out.push((i, Err((e.kind(), e.to_string())))),
            }
        }
        while let Some((j, fut, sent)) = in_flight.pop_front() {
            out.push((j, await_ack(fut, sent, self.config.request_timeout).await));
        }
        out
    }

    fn publish_error(&self, kind: PublishErrorKind, text: &str, started: Instant) -> Error {
        if let Some(v) = self.violations.since(started) {
            return Error::Unauthorized {
                backend: BACKEND,
                message: format!("publish refused: {v}"),
            };
        }
        let rejected = |retryable| Error::Rejected {
            backend: BACKEND,
            message: text.to_string(),
            retryable,
        };
        match kind {
            PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending => Error::Connection {
                backend: BACKEND,
                message: format!("no PubAck: {text}"),
                source: None,
            },
            PublishErrorKind::StreamNotFound => Error::Rejected {
                backend: BACKEND,
                message: format!(
                    "no stream captures the subject (stream {} missing or JetStream not ready): {text}",
                    self.config.stream
                ),
                retryable: true,
            },
            PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
                rejected(false)
            }
            PublishErrorKind::MaxPayloadExceeded => Error::PayloadTooLarge {
                size: 0,
                limit: self.server_max_payload,
            },
            // A JetStream error answer (storage full, ...): 503-ish ones may pass later.
            _ => rejected(text.contains("not ready") || text.contains("unavailable")),
        }
    }

    /// After a duplicate PubAck for the message stored at `seq`: if that message was
    /// dead-lettered since (a marker newer than `seq` exists), this publish is a replay and
    /// gets the deduplication id `<id>~r<marker seq>`; otherwise it is a plain duplicate.
    async fn resolve_duplicates(&self, p: &Prepared, seq: u64) -> Option<String> {
        #[derive(Deserialize)]
        struct Got {
            message: Stored,
        }
        #[derive(Deserialize)]
        struct Stored {
            seq: u64,
        }
        let subject = marker_subject(&self.config.subject_prefix, &p.id);
        let request = serde_json::json!({ "last_by_subj": subject });
        match self
            .api::<Got, _>(
                "dead-letter marker lookup",
                format!("STREAM.MSG.GET.{}", self.config.stream),
                &request,
            )
            .await
        {
            Ok(Ok(got)) if got.message.seq > seq => Some(format!("{}~r{}", p.id, got.message.seq)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter marker lookup failed; treating the publish as a duplicate");
                None
            }
        }
    }
}

/// Waits for one PubAck, at most until `sent + limit`. The client's own timeout starts only
/// when a future is awaited; bounding each by its send time keeps a lost connection from
/// costing one full timeout per message of the window, one after the other.
async fn await_ack(
    fut: async_nats::jetstream::context::PublishAckFuture,
    sent: Instant,
    limit: Duration,
) -> Result<PublishAck, (PublishErrorKind, String)> {
    let deadline = tokio::time::Instant::from_std(sent + limit);
    match tokio::time::timeout_at(deadline, fut.into_future()).await {
        Ok(r) => r.map_err(|e| (e.kind(), e.to_string())),
        Err(_) => Err((
            PublishErrorKind::TimedOut,
            format!("no PubAck within {limit:?}"),
        )),
    }
}

fn clone_error(e: &Error, text: &str) -> Error {
    match e {
        Error::Unauthorized { backend, message } => Error::Unauthorized {
            backend,
            message: message.clone(),
        },
        Error::Unsupported { backend, operation } => Error::Unsupported { backend, operation },
        Error::Config(m) => Error::Config(m.clone()),
        Error::Timeout { operation, after } => Error::Timeout {
            operation,
            after: *after,
        },
        other => Error::Backend {
            backend: BACKEND,
            message: text.to_string(),
            retryable: other.is_retryable(),
            source: None,
        },
    }
}

/// Publishes to JetStream; see the crate docs for the subject mapping.
pub struct NatsPublisher {
    inner: Arc<Inner>,
    closed: AtomicBool,
}

impl NatsPublisher {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        NatsPublisher {
            inner,
            closed: AtomicBool::new(false),
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed("nats publisher"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Publisher for NatsPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.check_open()?;
        let prepared = self.inner.prepare(topic, &message, None)?;
        let mut results = self.inner.confirm(vec![prepared], true).await;
        results.pop().unwrap_or(Ok(()))
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        let total = messages.len();
        if let Err(e) = self.check_open() {
            drop(e);
            return Err(BatchError::all(messages, || {
                Error::Closed("nats publisher")
            }));
        }
        let mut failed = Vec::new();
        let mut sent = Vec::with_capacity(total);
        let mut prepared = Vec::with_capacity(total);
        for (index, message) in messages.into_iter().enumerate() {
            match self.inner.prepare(topic, &message, None) {
                Ok(p) => {
                    prepared.push(p);
                    sent.push((index, message));
                }
                Err(error) => failed.push(FailedMessage {
                    index,
                    message,
                    error,
                }),
            }
        }
        if !prepared.is_empty() {
            let results = self.inner.confirm(prepared, true).await;
            for ((index, message), result) in sent.into_iter().zip(results) {
                if let Err(error) = result {
                    failed.push(FailedMessage {
                        index,
                        message,
                        error,
                    });
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            failed.sort_by_key(|f| f.index);
            Err(BatchError { total, failed })
        }
    }

    async fn close(&self) -> Result<(), Error> {
        // Every publish has its PubAck before it returns: nothing is buffered. Flush the
        // connection so acks and the like sent through it are on the wire.
        self.closed.store(true, Ordering::Release);
        let _ = tokio::time::timeout(self.inner.config.request_timeout, self.inner.client.flush())
            .await;
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    /// Connected, with the stream in place (created if missing); not ready once closed.
    async fn health(&self) -> longshore_core::Health {
        let closed = self.closed.load(Ordering::Acquire);
        crate::health::report(&self.inner, closed.then_some("nats publisher")).await
    }
}
