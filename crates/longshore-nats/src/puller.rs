//! The pull loop of one consumer: keeps pull requests for at most `prefetch` minus the
//! unsettled deliveries outstanding, renews requests that went silent, and turns messages
//! into deliveries (dead-lettering those delivered more than `max_deliver` times).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::StatusCode;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use longshore_core::{Acker, DeadLetter, Delivery, DeliveryStream, Error, Subscription};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::acker::Ledger;
use crate::client::Client;
use crate::durable::Plan;
use crate::mapping::{ack_info, is_internal, matches_any, message_of, topic_of};
use crate::BACKEND;

/// Opens a consumer of `subscription` on its durable (`plan`): the pull inbox, the ledger of
/// unsettled deliveries, and the stream of deliveries, which ends once `close` is set to true.
pub(crate) async fn open(
    client: Arc<Client>,
    subscription: &Subscription,
    plan: Plan,
    close: Arc<watch::Sender<bool>>,
) -> Result<DeliveryStream, Error> {
    let inbox = client.nats.new_inbox();
    let sub = client
        .nats
        .subscribe(inbox.clone())
        .await
        .map_err(|e| Error::Connection {
            backend: BACKEND,
            message: format!("subscribe to the pull inbox: {e}"),
            source: None,
        })?;
    let expires = client.config.pull_expires;
    let next_subject = format!(
        "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
        client.config.stream, plan.durable
    );
    let puller = Puller {
        ledger: Ledger::start(client, subscription.name.clone()),
        sub: Some(sub),
        inbox,
        next_subject,
        prefetch: usize::from(subscription.prefetch.max(1)),
        requests: VecDeque::new(),
        last_activity: Instant::now(),
        heartbeat: expires / 4,
        expires,
        patterns: plan.patterns,
        client_match: plan.client_match,
        closed: close.subscribe(),
        _close: close,
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

/// How often a dropped consumer's drain checks whether the client is closing (while no
/// message arrives).
const DRAIN_CHECK: Duration = Duration::from_millis(50);

/// One consumer's pull requests and the messages they bring.
struct Puller {
    ledger: Arc<Ledger>,
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
    /// Held so that `closed` never sees a dropped sender.
    _close: Arc<watch::Sender<bool>>,
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
        let in_flight = self.ledger.in_flight.load(Ordering::Acquire);
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
            .ledger
            .client
            .nats
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
                tracing::debug!(subscription = %self.ledger.subscription, "pull requests went silent; renewing");
                self.requests.clear();
            }
            self.top_up().await;
            let mut wake = now + self.heartbeat;
            if let Some(t) = self.pause_until {
                wake = wake.min(t);
            }
            let sub = self.sub.as_mut()?;
            let freed = self.ledger.freed.notified();
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
                return self.on_status(status, m.description.as_deref().unwrap_or(""));
            }
        }
        let reply = m.reply.as_ref()?.to_string();
        if !reply.starts_with("$JS.ACK.") {
            return None;
        }
        self.take_one();
        self.deliver(&m, reply).await
    }

    /// A status message on the inbox (heartbeat, ended or failed pull request).
    fn on_status(&mut self, status: StatusCode, desc: &str) -> Option<Result<Delivery, Error>> {
        match status {
            StatusCode::IDLE_HEARTBEAT => {}
            StatusCode::NO_RESPONDERS => {
                tracing::warn!(subscription = %self.ledger.subscription, "JetStream did not answer a pull request; retrying");
                self.requests.clear();
                self.pause_until = Some(Instant::now() + Duration::from_millis(500));
            }
            StatusCode::REQUEST_TERMINATED if desc.contains("Consumer Deleted") => {
                self.requests.clear();
                return Some(Err(Error::Backend {
                    backend: BACKEND,
                    message: format!(
                        "the durable consumer of subscription {:?} was deleted",
                        self.ledger.subscription
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
        None
    }

    /// A message from the stream, to be acked on `reply`: a delivery, or `None` when it is not
    /// for this subscription (acked unseen) or was dead-lettered over `max_deliver`.
    async fn deliver(
        &mut self,
        m: &async_nats::Message,
        reply: String,
    ) -> Option<Result<Delivery, Error>> {
        let (delivered, stream_seq) = ack_info(&reply);
        let client = &self.ledger.client;
        let topic = topic_of(&client.config.subject_prefix, m.subject.as_str()).to_string();
        if is_internal(&topic) || (self.client_match && !matches_any(&self.patterns, &topic)) {
            // Selected by a wider server-side filter but not by the patterns: not ours.
            let _ = client
                .nats
                .publish(reply, Bytes::from_static(b"+ACK"))
                .await;
            return None;
        }
        let message = message_of(m, &client.config.stream, stream_seq);
        let max_deliver = client.config.max_deliver;
        let acker = self.ledger.track(reply, stream_seq);
        if let Some(max) = max_deliver {
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
    ///
    /// The task is counted as the client's outstanding work, so the broker's `close` waits for
    /// it: uncounted, a close right after dropping the stream drained the connection before
    /// the nacks were sent, and those messages waited out `ack_wait` (the conformance
    /// scenario `buffered_at_close_come_back_at_once` caught it). Once the client is closing,
    /// the task nacks what has arrived and stops instead of waiting for the requests to
    /// expire, so `close` waits at most one [`DRAIN_CHECK`] more.
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
        let client = self.ledger.client.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let tracked = client.outstanding.track();
        handle.spawn(async move {
            loop {
                let step = (Instant::now() + DRAIN_CHECK).min(until);
                match tokio::time::timeout_at(step, sub.next()).await {
                    Ok(Some(m)) => {
                        if let Some(reply) = m.reply.filter(|r| r.starts_with("$JS.ACK.")) {
                            let _ = client
                                .nats
                                .publish(reply, Bytes::from_static(b"-NAK"))
                                .await;
                        }
                    }
                    Ok(None) => break,
                    Err(_) if Instant::now() >= until || client.is_closed() => break,
                    Err(_) => {}
                }
            }
            let _ = sub.unsubscribe().await;
            drop(tracked);
        });
    }
}

impl Drop for Puller {
    fn drop(&mut self) {
        self.drain();
    }
}
