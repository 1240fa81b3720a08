//! Durable pull consumers: one durable per subscription, explicit acks, nak with delay,
//! in-progress acks for long handlers, dead letters to `dlq.<subscription>`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::StatusCode;
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use longshore_core::subscriber::{dead_letter_message, dead_letter_topic};
use longshore_core::topic::validate_topic;
use longshore_core::{
    Acker, Capabilities, DeadLetter, Delivery, DeliveryStream, Error, Headers, Health, Message,
    Subscriber, Subscription,
};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::broker::{api_error, Inner};
use crate::error::{NatsError, BACKEND};
use crate::publisher::{HEADER_ID, HEADER_KEY, NATS_MSG_ID};
use crate::subject::{durable_of, is_internal, marker_subject, matches_any, plan, topic_of};

/// JetStream error code: consumer not found.
pub(crate) const CONSUMER_NOT_FOUND: u64 = 10014;
/// Marks the patterns kept in a durable's description.
const DESCRIPTION_TAG: &str = "longshore patterns: ";

/// Opens durable pull consumers on the stream.
pub struct NatsSubscriber {
    inner: Arc<Inner>,
    closed: watch::Sender<bool>,
}

/// What a consumer needs to know about its durable.
struct Plan {
    durable: String,
    patterns: Vec<String>,
    client_match: bool,
}

impl NatsSubscriber {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        NatsSubscriber {
            inner,
            closed: watch::channel(false).0,
        }
    }

    async fn declare(&self, sub: &Subscription) -> Result<Plan, Error> {
        sub.validate()?;
        let dlq = dead_letter_topic(&sub.name);
        validate_topic(&dlq).map_err(|_| Error::InvalidName {
            kind: "subscription",
            value: sub.name.clone(),
            reason: "dlq.<name> must be a valid topic (no empty words)",
        })?;
        self.inner.ensure_stream().await?;
        let deliver_all = sub.is_dead_letter_queue();
        let plan = self
            .ensure_consumer(&sub.name, &sub.patterns, deliver_all)
            .await?;
        if !deliver_all {
            // The dead-letter subscription exists from the start, like a DLQ queue.
            self.ensure_consumer(&dlq, std::slice::from_ref(&dlq), true)
                .await?;
        }
        Ok(plan)
    }

    async fn ensure_consumer(
        &self,
        name: &str,
        patterns: &[String],
        deliver_all: bool,
    ) -> Result<Plan, Error> {
        let inner = &self.inner;
        let durable = durable_of(name);
        if durable.len() > 200 {
            return Err(Error::InvalidName {
                kind: "subscription",
                value: name.to_string(),
                reason: "too long once `.` and `_` are escaped for a durable name",
            });
        }
        let stream = &inner.config.stream;
        let info = inner
            .api::<consumer::Info, _>(
                "consumer info",
                format!("CONSUMER.INFO.{stream}.{durable}"),
                &serde_json::json!({}),
            )
            .await?;
        let existing = match info {
            Ok(info) => Some(info),
            Err(e) if e.error_code().0 == CONSUMER_NOT_FOUND => None,
            Err(e) => return Err(api_error("consumer info", &e).into()),
        };
        let mut union: Vec<String> = existing
            .as_ref()
            .and_then(|i| i.config.description.as_deref())
            .and_then(|d| d.strip_prefix(DESCRIPTION_TAG))
            .and_then(|j| serde_json::from_str::<Vec<String>>(j).ok())
            .unwrap_or_default();
        let before = union.clone();
        for p in patterns {
            if !union.contains(p) {
                union.push(p.clone());
            }
        }
        let wanted = plan(&inner.config.subject_prefix, &union, inner.multi_filter);
        if let Some(info) = &existing {
            if union == before {
                let mut actual: Vec<String> = if info.config.filter_subjects.is_empty() {
                    vec![info.config.filter_subject.clone()]
                } else {
                    info.config.filter_subjects.clone()
                };
                actual.sort();
                let exact = !wanted.client_match && actual == wanted.filters;
                return Ok(Plan {
                    durable,
                    patterns: union,
                    client_match: !exact,
                });
            }
        }
        let description = format!(
            "{DESCRIPTION_TAG}{}",
            serde_json::to_string(&union).unwrap_or_default()
        );
        if description.len() > 4000 {
            return Err(Error::InvalidName {
                kind: "subscription",
                value: name.to_string(),
                reason: "too many patterns for one NATS durable",
            });
        }
        let mut config = consumer::Config {
            durable_name: Some(durable.clone()),
            description: Some(description),
            deliver_policy: match (&existing, deliver_all) {
                (Some(info), _) => info.config.deliver_policy,
                (None, true) => DeliverPolicy::All,
                (None, false) => DeliverPolicy::New,
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: inner.config.ack_wait,
            max_deliver: -1,
            max_ack_pending: inner.config.max_ack_pending,
            ..Default::default()
        };
        if wanted.filters.len() == 1 {
            config.filter_subject = wanted.filters[0].clone();
        } else {
            config.filter_subjects = wanted.filters.clone();
        }
        let request = serde_json::json!({ "stream_name": stream, "config": config });
        match inner
            .api::<consumer::Info, _>(
                "consumer create",
                format!("CONSUMER.CREATE.{stream}.{durable}"),
                &request,
            )
            .await?
        {
            Ok(_) => Ok(Plan {
                durable,
                patterns: union,
                client_match: wanted.client_match,
            }),
            Err(e) if existing.is_some() => Err(Error::Config(format!(
                "subscription {name:?} exists with patterns {before:?}; the server refused to add {patterns:?} ({}); delete the durable {durable:?} to change its patterns",
                e
            ))),
            Err(e) => Err(api_error("consumer create", &e).into()),
        }
    }
}

#[async_trait]
impl Subscriber for NatsSubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        if *self.closed.borrow() {
            return Err(Error::Closed("nats subscriber"));
        }
        let plan = self.declare(subscription).await?;
        let inner = self.inner.clone();
        let inbox = inner.client.new_inbox();
        let sub = inner
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| Error::Connection {
                backend: BACKEND,
                message: format!("subscribe to the pull inbox: {e}"),
                source: None,
            })?;
        let shared = Arc::new(Shared {
            inner: inner.clone(),
            subscription: subscription.name.clone(),
            in_flight: AtomicUsize::new(0),
            freed: Notify::new(),
            progress: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
        });
        spawn_progress_ticker(&shared);
        let expires = inner.config.pull_expires;
        let puller = Puller {
            next_subject: format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                inner.config.stream, plan.durable
            ),
            shared,
            sub: Some(sub),
            inbox,
            prefetch: usize::from(subscription.prefetch.max(1)),
            requests: VecDeque::new(),
            last_activity: Instant::now(),
            heartbeat: expires / 4,
            expires,
            patterns: plan.patterns,
            client_match: plan.client_match,
            closed: self.closed.subscribe(),
            pause_until: None,
        };
        Ok(Box::pin(futures::stream::unfold(
            puller,
            |mut p| async move {
                let item = p.next().await?;
                Some((item, p))
            },
        )))
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        if *self.closed.borrow() {
            return Err(Error::Closed("nats subscriber"));
        }
        self.declare(subscription).await.map(|_| ())
    }

    async fn close(&self) -> Result<(), Error> {
        self.closed.send_replace(true);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    /// Connected, with the stream in place (created if missing); not ready once closed.
    async fn health(&self) -> Health {
        let closed = *self.closed.borrow();
        crate::health::report(&self.inner, closed.then_some("nats subscriber")).await
    }

    /// The durable's `num_pending` (matching messages not yet delivered) plus
    /// `num_ack_pending` (delivered, not yet acknowledged). An unknown subscription is
    /// [`Error::InvalidName`].
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        if *self.closed.borrow() {
            return Err(Error::Closed("nats subscriber"));
        }
        crate::health::lag(&self.inner, subscription).await
    }
}

/// State shared by one consumer and the ackers of its deliveries.
struct Shared {
    inner: Arc<Inner>,
    subscription: String,
    in_flight: AtomicUsize,
    /// Woken (one permit) when a delivery settles and prefetch room frees up.
    freed: Notify,
    /// Unsettled deliveries: token → (ack subject, delivered at), for in-progress acks.
    progress: Mutex<HashMap<u64, (String, Instant)>>,
    next_token: AtomicU64,
}

impl Shared {
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
fn spawn_progress_ticker(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let period = (shared.inner.config.ack_wait / 3).max(Duration::from_millis(300));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(shared) = weak.upgrade() else { break };
            let now = Instant::now();
            let due: Vec<String> = shared
                .progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|(_, since)| now.duration_since(*since) >= period)
                .map(|(reply, _)| reply.clone())
                .collect();
            let client = shared.inner.client.clone();
            drop(shared);
            for reply in due {
                if let Err(e) = client.publish(reply, Bytes::from_static(b"+WPI")).await {
                    tracing::debug!(error = %e, "in-progress ack failed");
                }
            }
        }
    });
}

/// The pull loop of one consumer: keeps pull requests for at most `prefetch` minus the
/// unsettled deliveries outstanding, and turns messages into deliveries.
struct Puller {
    shared: Arc<Shared>,
    sub: Option<async_nats::Subscriber>,
    inbox: String,
    next_subject: String,
    prefetch: usize,
    /// Outstanding pull requests, oldest first: (messages still owed, expiry).
    requests: VecDeque<(usize, Instant)>,
    last_activity: Instant,
    heartbeat: Duration,
    expires: Duration,
    patterns: Vec<String>,
    client_match: bool,
    closed: watch::Receiver<bool>,
    pause_until: Option<Instant>,
}

impl Puller {
    fn owed(&self) -> usize {
        self.requests.iter().map(|(n, _)| n).sum()
    }

    fn take_one(&mut self) {
        if let Some(front) = self.requests.front_mut() {
            front.0 = front.0.saturating_sub(1);
            if front.0 == 0 {
                self.requests.pop_front();
            }
        }
    }

    async fn top_up(&mut self) {
        if self.pause_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.pause_until = None;
        let in_flight = self.shared.in_flight.load(Ordering::Acquire);
        let room = self
            .prefetch
            .saturating_sub(in_flight)
            .saturating_sub(self.owed());
        if room == 0 || (!self.requests.is_empty() && room < self.prefetch.div_ceil(2)) {
            return;
        }
        let body = serde_json::json!({
            "batch": room,
            "expires": self.expires.as_nanos() as u64,
            "idle_heartbeat": self.heartbeat.as_nanos() as u64,
        });
        let body = Bytes::from(body.to_string());
        match self
            .shared
            .inner
            .client
            .publish_with_reply(self.next_subject.clone(), self.inbox.clone(), body)
            .await
        {
            Ok(()) => {
                if self.requests.is_empty() {
                    self.last_activity = Instant::now();
                }
                self.requests
                    .push_back((room, Instant::now() + self.expires + Duration::from_secs(1)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "pull request failed; retrying");
                self.pause_until = Some(Instant::now() + Duration::from_millis(250));
            }
        }
    }

    async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        loop {
            if *self.closed.borrow() {
                self.drain();
                return None;
            }
            // Whatever already arrived comes first (also heartbeats: they keep the liveness
            // check below honest when the stream was not polled for a while).
            let buffered = self.sub.as_mut()?.next().now_or_never();
            match buffered {
                Some(None) => return None,
                Some(Some(m)) => {
                    self.last_activity = Instant::now();
                    if let Some(d) = self.handle(m).await {
                        return Some(d);
                    }
                    continue;
                }
                None => {}
            }
            let now = Instant::now();
            while self.requests.front().is_some_and(|(_, exp)| *exp <= now) {
                self.requests.pop_front();
            }
            // No message and no heartbeat for three heartbeats: the requests were lost (a
            // server restart, a reconnect). Forget them and ask again.
            if !self.requests.is_empty()
                && now.duration_since(self.last_activity) > self.heartbeat * 3
            {
                tracing::debug!(subscription = %self.shared.subscription, "pull requests went silent; renewing");
                self.requests.clear();
            }
            self.top_up().await;
            let mut wake = now + self.heartbeat;
            if let Some(t) = self.pause_until {
                wake = wake.min(t);
            }
            let sub = self.sub.as_mut()?;
            let freed = self.shared.freed.notified();
            tokio::select! {
                m = sub.next() => match m {
                    None => return None,
                    Some(m) => {
                        self.last_activity = Instant::now();
                        if let Some(d) = self.handle(m).await {
                            return Some(d);
                        }
                    }
                },
                _ = freed => {}
                _ = self.closed.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn handle(&mut self, m: async_nats::Message) -> Option<Result<Delivery, Error>> {
        if let Some(status) = m.status {
            if status != StatusCode::OK {
                let desc = m.description.as_deref().unwrap_or("");
                match status {
                    StatusCode::IDLE_HEARTBEAT => {}
                    StatusCode::NO_RESPONDERS => {
                        tracing::warn!(subscription = %self.shared.subscription, "JetStream did not answer a pull request; retrying");
                        self.requests.clear();
                        self.pause_until = Some(Instant::now() + Duration::from_millis(500));
                    }
                    StatusCode::REQUEST_TERMINATED if desc.contains("Consumer Deleted") => {
                        self.requests.clear();
                        return Some(Err(Error::Backend {
                            backend: BACKEND,
                            message: format!(
                                "the durable consumer of subscription {:?} was deleted",
                                self.shared.subscription
                            ),
                            retryable: false,
                            source: None,
                        }));
                    }
                    StatusCode::REQUEST_TERMINATED
                        if desc.contains("Leadership") || desc.contains("Shutdown") =>
                    {
                        self.requests.clear();
                    }
                    _ => {
                        tracing::debug!(%status, desc, "pull request ended");
                        self.requests.pop_front();
                    }
                }
                return None;
            }
        }
        let reply = m.reply.as_ref()?.to_string();
        if !reply.starts_with("$JS.ACK.") {
            return None;
        }
        self.take_one();
        let (delivered, stream_seq) = ack_info(&reply);
        let inner = &self.shared.inner;
        let topic = topic_of(&inner.config.subject_prefix, m.subject.as_str()).to_string();
        if is_internal(&topic) || (self.client_match && !matches_any(&self.patterns, &topic)) {
            // Selected by a wider server-side filter but not by the patterns: not ours.
            let _ = inner
                .client
                .publish(reply, Bytes::from_static(b"+ACK"))
                .await;
            return None;
        }
        let message = decode(&m, &inner.config.stream, stream_seq);
        let token = self.shared.next_token.fetch_add(1, Ordering::Relaxed);
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        self.shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, (reply.clone(), Instant::now()));
        let acker = NatsAcker {
            shared: self.shared.clone(),
            reply: Some(reply),
            token,
            stream_seq,
        };
        if let Some(max) = inner.config.max_deliver {
            if delivered > max {
                let reason = format!("delivered {delivered} times, more than max_deliver {max}");
                let dead = DeadLetter::new(reason, delivered);
                if let Err(e) = Box::new(acker).dead_letter(message, &topic, dead).await {
                    tracing::warn!(error = %e, "dead-lettering a message over max_deliver failed");
                }
                return None;
            }
        }
        Some(Ok(Delivery::new(
            message,
            topic,
            delivered,
            Box::new(acker),
        )))
    }

    /// Stops consuming: messages already on their way to this consumer (pulled but not
    /// handed out) are nacked so others get them at once.
    fn drain(&mut self) {
        let Some(mut sub) = self.sub.take() else {
            return;
        };
        let until = self
            .requests
            .iter()
            .map(|(_, exp)| *exp)
            .max()
            .unwrap_or_else(Instant::now)
            .max(Instant::now() + Duration::from_millis(200));
        self.requests.clear();
        let client = self.shared.inner.client.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            while let Ok(Some(m)) = tokio::time::timeout_at(until, sub.next()).await {
                if let Some(reply) = m.reply.filter(|r| r.starts_with("$JS.ACK.")) {
                    let _ = client.publish(reply, Bytes::from_static(b"-NAK")).await;
                }
            }
            let _ = sub.unsubscribe().await;
        });
    }
}

impl Drop for Puller {
    fn drop(&mut self) {
        self.drain();
    }
}

/// Delivery count and stream sequence from a `$JS.ACK` subject (v1: 9 tokens, v2: 12+).
fn ack_info(reply: &str) -> (u32, u64) {
    let tokens: Vec<&str> = reply.split('.').collect();
    // v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    // v2: $JS.ACK.<domain>.<acchash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<token>
    let base = if tokens.len() >= 12 { 6 } else { 4 };
    let delivered = tokens
        .get(base)
        .and_then(|t| t.parse::<u32>().ok())
        .unwrap_or(1);
    let seq = tokens
        .get(base + 1)
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    (delivered.max(1), seq)
}

fn decode(m: &async_nats::Message, stream: &str, seq: u64) -> Message {
    let mut headers = Headers::new();
    let mut id = None;
    let mut dedup = None;
    let mut key = None;
    if let Some(h) = &m.headers {
        for (name, values) in h.iter() {
            let Some(value) = values.last().map(|v| v.as_str().to_string()) else {
                continue;
            };
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case(HEADER_ID) {
                id = Some(value);
            } else if name.eq_ignore_ascii_case(NATS_MSG_ID) {
                dedup = Some(value);
            } else if name.eq_ignore_ascii_case(HEADER_KEY) {
                key = Some(value);
            } else {
                headers.insert(name.to_string(), value);
            }
        }
    }
    Message {
        id: id.or(dedup).unwrap_or_else(|| format!("{stream}-{seq}")),
        key,
        headers,
        payload: m.payload.clone(),
    }
}

/// Settles one delivery on the server.
struct NatsAcker {
    shared: Arc<Shared>,
    /// The `$JS.ACK` subject; `None` once settled.
    reply: Option<String>,
    token: u64,
    stream_seq: u64,
}

impl NatsAcker {
    fn take(&mut self) -> Option<String> {
        let reply = self.reply.take()?;
        self.shared.release(self.token);
        Some(reply)
    }

    async fn send(&self, reply: String, body: Bytes) -> Result<(), Error> {
        self.shared
            .inner
            .client
            .publish(reply, body)
            .await
            .map_err(|e| Error::Connection {
                backend: BACKEND,
                message: format!("settling a delivery: {e}"),
                source: None,
            })
    }
}

impl Drop for NatsAcker {
    fn drop(&mut self) {
        if let Some(reply) = self.take() {
            let client = self.shared.inner.client.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = client.publish(reply, Bytes::from_static(b"-NAK")).await;
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

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let inner = self.shared.inner.clone();
        let subscription = self.shared.subscription.clone();
        let dlq = dead_letter_topic(&subscription);
        let id = message.id.clone();
        let letter = dead_letter_message(message, topic, &subscription, &dead);
        // A deduplication id of its own: the original id is already taken by the original
        // message; a retry of this same dead-lettering still deduplicates.
        let dedup = format!("{id}~dl~{}~{}", self.stream_seq, dead.attempts);
        let prepared = inner.prepare(&dlq, &letter, Some(dedup))?;
        if let Some(Err(e)) = inner.confirm(vec![prepared], false).await.pop() {
            // Not settled: the drop nacks it and the message comes back.
            return Err(e);
        }
        // The marker tells publishers that a later publish of this id is a replay.
        let marker = marker_subject(&inner.config.subject_prefix, &id);
        let ack = inner
            .js
            .send_publish(marker, Publish::build().payload(Bytes::new()))
            .await;
        let marked = match ack {
            Ok(fut) => fut.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = marked {
            return Err(NatsError::Unreachable {
                url: inner.config.url.redacted(),
                reason: format!("dead-letter marker not stored: {e}"),
            }
            .into());
        }
        match self.take() {
            Some(reply) => self.send(reply, Bytes::from_static(b"+TERM")).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ack_subjects() {
        assert_eq!(ack_info("$JS.ACK.S.C.3.42.7.1700000000.0"), (3, 42));
        assert_eq!(
            ack_info("$JS.ACK.dom.hash.S.C.2.9.1.1700000000.0.tok"),
            (2, 9)
        );
        assert_eq!(ack_info("$JS.ACK.garbage"), (1, 0));
    }
}
