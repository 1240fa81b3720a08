//! Publishing with PubAcks, shared by publishers and dead letters: messages are validated and
//! built for the wire ([`prepare`]), sent pipelined, and retried under the same
//! `Nats-Msg-Id` until `publish_timeout` ([`confirm`]). A duplicate PubAck for a message
//! dead-lettered since is a replay and is sent again under a deduplication id of its own.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::publish::PublishAck;
use async_nats::{HeaderMap, Subject};
use longshore_core::topic::validate_topic;
use longshore_core::{fit_dead_letter, Error, Message};
use serde::Deserialize;

use crate::client::Client;
use crate::mapping::{headers_of, marker_subject, subject_of};
use crate::BACKEND;

/// One message ready to send: its subject, its deduplication id (`Nats-Msg-Id`) and the
/// message itself.
pub(crate) struct Prepared {
    pub subject: Subject,
    pub dedup_id: String,
    pub message: Message,
    /// The NATS headers for the next send, moved into it: a publish is sent once in the
    /// common case, and copying a header map per send cost a fifth of a publish's CPU
    /// (BENCHMARKS.md, "NATS: headers"). A send again builds them anew from `message`.
    headers: Option<HeaderMap>,
}

impl Prepared {
    /// Whether this is a replay of a dead letter, sent under a deduplication id of its own.
    fn is_replay(&self) -> bool {
        self.dedup_id != self.message.id
    }

    /// The headers for one send: those built by [`prepare`] the first time, new ones after.
    fn take_headers(&mut self) -> Result<HeaderMap, Error> {
        match self.headers.take() {
            Some(headers) => Ok(headers),
            None => headers_of(&self.message, &self.dedup_id).map(|(headers, _)| headers),
        }
    }
}

/// A message [`prepare`] refused, given back with the reason.
pub(crate) struct Refused {
    pub error: Error,
    pub message: Message,
}

/// Validates `message` for `topic` and builds what goes on the wire, under its own id as the
/// deduplication id. A refusal gives the message back, boxed (refusals are rare and a
/// `Message` is large).
pub(crate) fn prepare(
    client: &Client,
    topic: &str,
    message: Message,
) -> Result<Prepared, Box<Refused>> {
    let built = validate_topic(topic)
        .and_then(|()| message.check_limits(client.capabilities.max_payload))
        .and_then(|()| headers_of(&message, &message.id));
    let (headers, header_bytes) = match built {
        Ok(built) => built,
        Err(error) => return Err(Box::new(Refused { error, message })),
    };
    if header_bytes + message.payload.len() > client.server_max_payload {
        let error = Error::HeadersTooLarge(format!(
            "{header_bytes} bytes of headers plus {} bytes of payload exceed the server's max_payload of {}",
            message.payload.len(),
            client.server_max_payload
        ));
        return Err(Box::new(Refused { error, message }));
    }
    Ok(Prepared {
        subject: Subject::from(subject_of(&client.config.subject_prefix, topic)),
        dedup_id: message.id.clone(),
        message,
        headers: Some(headers),
    })
}

/// Builds a dead letter for the wire. Publisher limits do not apply: the broker already holds
/// the original, so only the server's `max_payload` counts, and a letter over it is cut to
/// fit ([`fit_dead_letter`]) rather than refused (a refused dead letter would be redelivered
/// without end).
pub(crate) fn prepare_letter(
    client: &Client,
    topic: &str,
    letter: Message,
    dedup_id: String,
) -> Result<Prepared, Error> {
    validate_topic(topic)?;
    // Room for the id, key and dedup headers the mapping adds.
    let room = client
        .server_max_payload
        .saturating_sub(LETTER_MAPPING_ROOM + dedup_id.len() + letter.id.len())
        .saturating_sub(letter.key.as_ref().map_or(0, String::len));
    let letter = fit_dead_letter(letter, room);
    let (headers, _) = headers_of(&letter, &dedup_id)?;
    Ok(Prepared {
        subject: Subject::from(subject_of(&client.config.subject_prefix, topic)),
        dedup_id,
        message: letter,
        headers: Some(headers),
    })
}

/// Bytes of NATS header framing and of the mapping's own headers, besides the ids.
const LETTER_MAPPING_ROOM: usize = 256;

/// Sends every message and waits for its PubAck, keeping up to `max_acks_in_flight` in
/// flight; retries what failed retryably (same `Nats-Msg-Id`) until `publish_timeout`.
/// `replays` enables the dead-letter replay check on duplicate acks (see
/// [`resolve_duplicate`]). Returns each message with its result, in order.
pub(crate) async fn confirm(
    client: &Client,
    items: Vec<Prepared>,
    replays: bool,
) -> Vec<(Message, Result<(), Error>)> {
    let started = Instant::now();
    let mut run = Confirmation {
        client,
        replays,
        started,
        deadline: started + client.config.publish_timeout,
        results: (0..items.len()).map(|_| None).collect(),
        items,
    };
    run.until_settled().await;
    run.finish()
}

/// The state of one [`confirm`] call.
struct Confirmation<'a> {
    client: &'a Client,
    items: Vec<Prepared>,
    replays: bool,
    started: Instant,
    deadline: Instant,
    /// The final result of each item, once it has one.
    results: Vec<Option<Result<(), Error>>>,
}

impl Confirmation<'_> {
    /// Rounds of sending until every item has a result or the deadline passed.
    async fn until_settled(&mut self) {
        let mut todo: Vec<usize> = (0..self.items.len()).collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Err(e) = self.client.ensure_stream().await {
                if !e.is_retryable() || Instant::now() >= self.deadline {
                    for &i in &todo {
                        self.results[i] = Some(Err(e.copy()));
                    }
                    return;
                }
            } else {
                todo = self.round(&todo).await;
                if todo.is_empty() {
                    return;
                }
                if todo.iter().all(|&i| self.items[i].is_replay()) {
                    // Only replays left: send at once.
                    continue;
                }
            }
            if Instant::now() >= self.deadline {
                let timeout = self.timeout();
                for &i in &todo {
                    self.results[i].get_or_insert_with(|| Err(timeout.copy()));
                }
                return;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if self.client.link().connected {
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            } else {
                // Retry as soon as the connection is back, not after a backoff that grew
                // while it was away.
                let _ = tokio::time::timeout(left, self.client.reconnected()).await;
                backoff = Duration::from_millis(100);
            }
        }
    }

    /// One pipelined pass over `todo`: records the items that are done, returns (sorted) the
    /// ones to send again.
    async fn round(&mut self, todo: &[usize]) -> Vec<usize> {
        let outcome = pass(self.client, &mut self.items, todo).await;
        let mut retry = Vec::new();
        let mut duplicates = Vec::new();
        for (i, r) in outcome {
            match r {
                Ok(ack) if ack.duplicate && self.replays && !self.items[i].is_replay() => {
                    duplicates.push((i, ack.sequence))
                }
                Ok(_) => self.results[i] = Some(Ok(())),
                Err((kind, text)) => {
                    let e = publish_error(self.client, kind, &text, self.started);
                    if e.is_retryable() && Instant::now() < self.deadline {
                        if kind == PublishErrorKind::StreamNotFound {
                            self.client.stream_maybe_gone();
                        }
                        retry.push(i);
                    } else {
                        self.results[i] = Some(Err(e));
                    }
                }
            }
        }
        for (i, seq) in duplicates {
            match resolve_duplicate(self.client, &self.items[i], seq).await {
                None => self.results[i] = Some(Ok(())),
                Some(replay_id) => {
                    // A dead-lettered message published again: a replay, not a duplicate.
                    // Send it under a deduplication id of its own.
                    // The next send builds headers with the new id (and the message's own).
                    self.items[i].dedup_id = replay_id;
                    retry.push(i);
                }
            }
        }
        retry.sort_unstable();
        retry
    }

    fn timeout(&self) -> Error {
        Error::Timeout {
            operation: "JetStream publish (PubAck)",
            after: self.client.config.publish_timeout,
        }
    }

    fn finish(self) -> Vec<(Message, Result<(), Error>)> {
        let timeout = self.timeout();
        self.items
            .into_iter()
            .zip(self.results)
            .map(|(p, r)| (p.message, r.unwrap_or_else(|| Err(timeout.copy()))))
            .collect()
    }
}

/// What one send of one item came to: its PubAck, or the error kind and text.
type Sent = Result<PublishAck, (PublishErrorKind, String)>;

/// A publish sent and waiting for its PubAck: the item, the answer to come, when it was sent
/// and how often the connection had dropped by then.
struct InFlight {
    item: usize,
    ack: PublishAckFuture,
    sent: Instant,
    drops: u64,
}

/// One pipelined pass over `todo`.
async fn pass(client: &Client, items: &mut [Prepared], todo: &[usize]) -> Vec<(usize, Sent)> {
    let window = client.config.max_acks_in_flight;
    let mut out = Vec::with_capacity(todo.len());
    let mut in_flight = VecDeque::with_capacity(window.min(todo.len()));
    for &i in todo {
        if in_flight.len() >= window {
            if let Some(f) = in_flight.pop_front() {
                out.push(await_ack(client, f).await);
            }
        }
        let p = &mut items[i];
        let headers = match p.take_headers() {
            Ok(headers) => headers,
            // Validated by `prepare`; only a replay's new id could fail here.
            Err(e) => {
                out.push((i, Err((PublishErrorKind::Other, e.to_string()))));
                continue;
            }
        };
        let publish = Publish::build()
            .payload(p.message.payload.clone())
            .headers(headers);
        // Read before sending: a drop noticed after this may have lost the publish.
        let drops = client.link().drops;
        match client.js.send_publish(p.subject.clone(), publish).await {
            Ok(ack) => in_flight.push_back(InFlight {
                item: i,
                ack,
                sent: Instant::now(),
                drops,
            }),
            Err(e) => out.push((i, Err((e.kind(), e.to_string())))),
        }
    }
    while let Some(f) = in_flight.pop_front() {
        out.push(await_ack(client, f).await);
    }
    out
}

/// Waits for one PubAck, at most until `request_timeout` after it was sent, and no longer
/// than the connection it was sent on: an answer lost with a dropped connection never comes,
/// so the publish is retried (same `Nats-Msg-Id`) instead of waiting out the timeout. The
/// client's own timeout starts only when a future is awaited; bounding each by its send time
/// keeps a lost connection from costing one full timeout per message of the window, one
/// after the other.
async fn await_ack(client: &Client, f: InFlight) -> (usize, Sent) {
    let limit = client.config.request_timeout;
    let deadline = tokio::time::Instant::from_std(f.sent + limit);
    let answer = tokio::time::timeout_at(deadline, f.ack.into_future());
    let sent = tokio::select! {
        // An answer already in counts, even if the connection dropped since.
        biased;
        r = answer => match r {
            Ok(r) => r.map_err(|e| (e.kind(), e.to_string())),
            Err(_) => Err((
                PublishErrorKind::TimedOut,
                format!("no PubAck within {limit:?}"),
            )),
        },
        () = client.dropped_after(f.drops) => Err((
            PublishErrorKind::BrokenPipe,
            "connection lost before the PubAck".to_string(),
        )),
    };
    (f.item, sent)
}

fn publish_error(client: &Client, kind: PublishErrorKind, text: &str, started: Instant) -> Error {
    if let Some(v) = client.violations.since(started) {
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
                client.config.stream
            ),
            retryable: true,
        },
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            rejected(false)
        }
        PublishErrorKind::MaxPayloadExceeded => Error::PayloadTooLarge {
            size: 0,
            limit: client.server_max_payload,
        },
        // A JetStream error answer (storage full, ...): 503-ish ones may pass later.
        _ => rejected(text.contains("not ready") || text.contains("unavailable")),
    }
}

/// After a duplicate PubAck for the message stored at `seq`: if that message was
/// dead-lettered since (a marker newer than `seq` exists), this publish is a replay and
/// gets the deduplication id `<id>~r<marker seq>`; otherwise it is a plain duplicate.
async fn resolve_duplicate(client: &Client, p: &Prepared, seq: u64) -> Option<String> {
    #[derive(Deserialize)]
    struct Got {
        message: Stored,
    }
    #[derive(Deserialize)]
    struct Stored {
        seq: u64,
    }
    let subject = marker_subject(&client.config.subject_prefix, &p.message.id);
    let request = serde_json::json!({ "last_by_subj": subject });
    let found = client
        .api::<Got, _>(
            "dead-letter marker lookup",
            format!("STREAM.MSG.GET.{}", client.config.stream),
            &request,
        )
        .await;
    match found {
        Ok(Ok(got)) if got.message.seq > seq => {
            Some(format!("{}~r{}", p.message.id, got.message.seq))
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "dead-letter marker lookup failed; treating the publish as a duplicate");
            None
        }
    }
}
