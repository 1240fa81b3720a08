//! The consumer thread: one librdkafka `BaseConsumer` (one group member) that polls, serves
//! rebalances, hands deliveries to the stream within the prefetch, takes nacks back, stores
//! the offsets its ackers settled, and finally closes the consumer. See the module docs of the
//! subscriber for the offset rules.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use longshore_core::{Error, Subscription};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::Message as _;
use tokio::sync::{mpsc as tmpsc, watch};

use super::group::{
    flush_stores, pause_assigned, pause_everything, resume, GroupConsumer, GroupContext,
};
use super::held::HeldQueue;
use crate::client::{lock, Client};
use crate::command::{Cmd, Pending, Slots};
use crate::delay::pack_delayed;
use crate::error::map;
use crate::group_state::GroupState;
use crate::mapping::{Packed, Parts, HEADER_ID, HEADER_TOPIC};
use crate::offsets::Tp;

/// How long the consumer thread blocks in one poll or wait, at most.
const TICK: Duration = Duration::from_millis(50);
/// While every prefetch slot is taken, the thread still polls this often (to serve
/// rebalances and stay in the group); a message fetched meanwhile pauses the partitions.
const SERVE_EVERY: Duration = Duration::from_millis(500);
/// Most messages taken from librdkafka in one go.
const BURST: usize = 256;
/// Most longshore topics whose match against the subscription is cached.
const MATCH_CACHE_LIMIT: usize = 10_000;

/// One group member's thread (see the module docs).
pub(super) struct ConsumerTask {
    pub client: Arc<Client>,
    /// Set once the member is on its way out of the group.
    pub leaving: Arc<AtomicBool>,
    pub subscription: Subscription,
    pub prefetch: usize,
    /// The offsets, shared with the rebalance callbacks and the ackers.
    pub state: Arc<Mutex<GroupState>>,
    /// The prefetch slots, shared with the ackers.
    pub slots: Arc<Slots>,
    /// A sender of the thread's own command channel (to put a `Close` back).
    pub cmd_tx: mpsc::Sender<Cmd>,
    /// Whether a longshore topic matches the subscription, cached.
    pub matches: HashMap<String, bool>,
    /// The subscription's delay topic: its records are delayed nacks ([`crate::delay`]).
    pub delay_topic: String,
    /// `None` once the stream was ended by `close`.
    pub out: Option<tmpsc::UnboundedSender<Result<Pending, Error>>>,
}

/// The consumer thread's own bookkeeping.
struct Local {
    /// Fetched or nacked messages waiting for a prefetch slot, in delivery order.
    ready: VecDeque<Pending>,
    /// Held until their due time: nacked with a delay locally (the copy to the delay topic
    /// failed), or read from the delay topic before their time (offset unsettled meanwhile).
    delayed: HeldQueue,
    /// Partitions paused for backpressure.
    paused: bool,
    blocked_since: Option<Instant>,
    last_serve: Instant,
    /// Interned Kafka topic names.
    topics: HashSet<Arc<str>>,
}

impl Local {
    fn new() -> Self {
        Local {
            ready: VecDeque::new(),
            delayed: HeldQueue::default(),
            paused: false,
            blocked_since: None,
            last_serve: Instant::now(),
            topics: HashSet::new(),
        }
    }

    /// Moves delayed redeliveries that are due to the ready queue.
    fn release_due(&mut self) {
        let now = Instant::now();
        while let Some(p) = self.delayed.pop_due(now) {
            self.ready.push_back(p);
        }
    }

    /// How long the next wait may block: a tick, or less when a delayed message is due sooner.
    fn tick(&self) -> Duration {
        self.delayed
            .until_next(Instant::now())
            .map_or(TICK, |left| left.min(TICK))
    }

    /// The interned name of Kafka topic `name`.
    fn intern(&mut self, name: &str) -> Arc<str> {
        match self.topics.get(name) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = name.into();
                self.topics.insert(t.clone());
                t
            }
        }
    }
}

impl ConsumerTask {
    fn consumer_config(&self) -> rdkafka::ClientConfig {
        let config = &self.client.config;
        let session = config.session_timeout.as_millis().max(1);
        let mut cc = config.client_config();
        cc.set("group.id", &self.subscription.name)
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                config.commit_interval.as_millis().max(1).to_string(),
            )
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 3).max(1).to_string())
            .set("fetch.wait.max.ms", "100")
            // librdkafka pre-fetches up to 64 MiB by default, so draining a backlog grew the
            // process by ~70 MiB. 4 MiB keeps the pipeline full on a local broker; the short
            // backoff matters more: with the default (1 s) a full queue stalls fetching and
            // the drain lost 40% (BENCHMARKS.md, "Kafka pre-fetch"). Properties given on the
            // config still win.
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.queue.backoff.ms", "10");
        config.apply_properties(&mut cc);
        cc
    }

    /// The thread's body: subscribes to `topics`, reports joining (through the group state),
    /// consumes until told to close (or the stream and every acker are gone), then closes the
    /// consumer and sets `done`.
    pub fn run(
        mut self,
        topics: Vec<String>,
        cmd_rx: mpsc::Receiver<Cmd>,
        done: watch::Sender<bool>,
    ) {
        let state = self.state.clone();
        let created: Result<GroupConsumer, Error> = self
            .consumer_config()
            .create_with_context(GroupContext {
                state: state.clone(),
            })
            .map_err(|e| map("create consumer", e));
        let consumer = match created {
            Ok(c) => c,
            Err(e) => {
                lock(&state).report_joined(Err(e));
                let _ = done.send(true);
                return;
            }
        };
        self.set_topics(&consumer, &state, &topics);
        let mut local = Local::new();
        self.pump(&consumer, &state, &cmd_rx, &mut local);
        self.finish(&consumer, &state, &mut local);
        self.close(consumer, done);
    }

    /// After the main loop: settlements made before the close still count, later ones are
    /// refused; then the stream and everything waiting for it is dropped.
    fn finish(&mut self, consumer: &GroupConsumer, state: &Mutex<GroupState>, local: &mut Local) {
        lock(state).closed = true;
        flush_stores(consumer, state);
        self.leaving.store(true, Ordering::Release);
        self.out = None;
        local.ready.clear();
        local.delayed.clear();
    }

    /// Closes the consumer: commits what is stored and leaves the group. Polling until
    /// `closed()` serves the final revoke; messages fetched meanwhile are dropped unstored.
    fn close(&self, consumer: GroupConsumer, done: watch::Sender<bool>) {
        let deadline = Instant::now() + self.client.config.close_timeout;
        match consumer.close_queue() {
            Ok(()) => {
                while !consumer.closed() && Instant::now() < deadline {
                    let _ = consumer.poll(TICK);
                }
            }
            Err(e) => tracing::warn!(error = %e, "kafka: closing consumer failed"),
        }
        if !consumer.closed() {
            tracing::warn!(subscription = %self.subscription.name, "kafka: consumer did not close in time; abandoning it");
            let _ = done.send(true);
            // Dropping would wait for the close again: leak it with this thread's exit.
            std::mem::forget(consumer);
            return;
        }
        let _ = done.send(true);
        drop(consumer);
    }

    fn set_topics(&self, consumer: &GroupConsumer, state: &Mutex<GroupState>, topics: &[String]) {
        if topics.is_empty() {
            consumer.unsubscribe();
            lock(state).report_joined(Ok(()));
            return;
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&names) {
            let e = map("subscribe", e);
            tracing::warn!(error = %e, "kafka: subscribe failed");
            lock(state).report_joined(Err(e));
        }
    }

    /// The main loop; returns when the consumer is to be closed.
    fn pump(
        &mut self,
        consumer: &GroupConsumer,
        state: &Mutex<GroupState>,
        cmd_rx: &mpsc::Receiver<Cmd>,
        local: &mut Local,
    ) {
        loop {
            if !self.take_commands(consumer, state, cmd_rx, local) {
                return;
            }
            flush_stores(consumer, state);
            local.release_due();
            if !self.out.as_ref().is_some_and(|o| !o.is_closed()) {
                if self.slots.taken() == 0 {
                    self.leaving.store(true, Ordering::Release);
                    return;
                }
                self.serve_ackers(consumer, state, cmd_rx, local);
                continue;
            }
            self.hand_out(state, local);
            if self.slots.taken() < self.prefetch && local.ready.is_empty() {
                self.fetch(consumer, state, local);
            } else {
                self.wait_for_slot(consumer, state, cmd_rx, local);
            }
        }
    }

    /// Handles every command waiting; `false` when the consumer is to be closed.
    fn take_commands(
        &mut self,
        consumer: &GroupConsumer,
        state: &Mutex<GroupState>,
        cmd_rx: &mpsc::Receiver<Cmd>,
        local: &mut Local,
    ) -> bool {
        loop {
            match cmd_rx.try_recv() {
                Ok(Cmd::Close) => return false,
                Ok(cmd) => self.handle(cmd, consumer, state, local),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// The stream is gone but deliveries are still out: stop fetching, serve their ackers.
    fn serve_ackers(
        &mut self,
        consumer: &GroupConsumer,
        state: &Mutex<GroupState>,
        cmd_rx: &mpsc::Receiver<Cmd>,
        local: &mut Local,
    ) {
        self.leaving.store(true, Ordering::Release);
        pause_everything(consumer, state);
        local.ready.clear();
        local.delayed.clear();
        self.wait(cmd_rx, consumer, state, local, TICK);
        if local.last_serve.elapsed() >= SERVE_EVERY {
            local.last_serve = Instant::now();
            // Anything fetched before the pause is dropped unstored.
            let _ = consumer.poll(Duration::ZERO);
        }
    }

    /// Hands out what is ready while prefetch allows.
    fn hand_out(&self, state: &Mutex<GroupState>, local: &mut Local) {
        while self.slots.taken() < self.prefetch {
            let Some(p) = local.ready.pop_front() else {
                break;
            };
            if !lock(state).offsets.is_current(&p.tp, p.epoch) {
                continue; // revoked meanwhile: the next owner redelivers it
            }
            self.deliver(p);
        }
    }

    /// A prefetch slot is free and nothing is ready: fetch (resuming paused partitions).
    fn fetch(&mut self, consumer: &GroupConsumer, state: &Mutex<GroupState>, local: &mut Local) {
        local.blocked_since = None;
        if local.paused {
            resume(consumer, state);
            local.paused = false;
        }
        let polled = consumer.poll(local.tick());
        local.last_serve = Instant::now();
        let mut got = polled.is_some();
        self.take(polled, state, local);
        // Take what is already fetched in one go: deliveries reach the stream in bursts, so
        // neither side wakes the other per message.
        let mut burst = 1;
        while got && burst < BURST && self.slots.taken() + local.ready.len() < self.prefetch {
            let polled = consumer.poll(Duration::ZERO);
            got = polled.is_some();
            self.take(polled, state, local);
            burst += 1;
        }
    }

    /// Every slot is taken (or messages wait for one): wait for slots to free up (the ackers
    /// wake the thread at the low-water mark), and stay in the group while the handlers are busy, pausing fetching so nothing piles up here.
    fn wait_for_slot(
        &mut self,
        consumer: &GroupConsumer,
        state: &Mutex<GroupState>,
        cmd_rx: &mpsc::Receiver<Cmd>,
        local: &mut Local,
    ) {
        let tick = local.tick();
        let since = *local.blocked_since.get_or_insert_with(Instant::now);
        self.wait(cmd_rx, consumer, state, local, tick);
        if since.elapsed() >= SERVE_EVERY && local.last_serve.elapsed() >= SERVE_EVERY {
            local.last_serve = Instant::now();
            if !local.paused {
                pause_assigned(consumer, state);
                local.paused = true;
            }
            let polled = consumer.poll(Duration::ZERO);
            self.take(polled, state, local);
        }
    }

    /// Waits up to `tick` for one command and handles it.
    fn wait(
        &mut self,
        cmd_rx: &mpsc::Receiver<Cmd>,
        consumer: &GroupConsumer,
        state: &Mutex<GroupState>,
        local: &mut Local,
        tick: Duration,
    ) {
        match cmd_rx.recv_timeout(tick) {
            Ok(Cmd::Close) => {
                // Put it back for the main loop to see first thing.
                let _ = self.cmd_tx.send(Cmd::Close);
            }
            Ok(cmd) => self.handle(cmd, consumer, state, local),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
    }

    fn handle(
        &mut self,
        cmd: Cmd,
        consumer: &GroupConsumer,
        state: &Mutex<GroupState>,
        local: &mut Local,
    ) {
        match cmd {
            Cmd::Wake => {}
            Cmd::Nack { mut pending, delay } => {
                self.slots.free();
                if !lock(state).offsets.is_current(&pending.tp, pending.epoch) {
                    return;
                }
                pending.attempt = pending.attempt.saturating_add(1);
                match delay.filter(|d| !d.is_zero()) {
                    Some(d) => local.delayed.push(Instant::now() + d, pending),
                    None => local.ready.push_front(pending),
                }
            }
            Cmd::Topics(topics) => {
                tracing::info!(subscription = %self.subscription.name, ?topics, "kafka: subscription topics changed");
                self.set_topics(consumer, state, &topics);
            }
            Cmd::Close => {}
        }
    }

    /// Turns a polled message into a pending delivery (or skips it).
    fn take(
        &mut self,
        polled: Option<Result<BorrowedMessage<'_>, rdkafka::error::KafkaError>>,
        state: &Mutex<GroupState>,
        local: &mut Local,
    ) {
        let m = match polled {
            None => return,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                let e = map("consume", e);
                tracing::warn!(subscription = %self.subscription.name, error = %e, "kafka: consumer error");
                if let Some(out) = &self.out {
                    // Reported on the stream; the consumer keeps going (librdkafka recovers).
                    let _ = out.send(Err(e));
                }
                return;
            }
        };
        let tp: Tp = (local.intern(m.topic()), m.partition());
        let offset = m.offset();
        let epoch = match lock(state).offsets.fetched(&tp, offset) {
            Some(e) => e,
            None => return, // not ours (any more)
        };
        match self.pack(&m) {
            Some((packed, attempt, hold)) => {
                let p = Pending {
                    tp,
                    epoch,
                    offset,
                    attempt,
                    packed,
                };
                match hold {
                    // A delayed nack read before its time: held here, its offset unsettled,
                    // so a restart reads it again and holds it again.
                    Some(hold) => local.delayed.push(Instant::now() + hold, p),
                    None => local.ready.push_back(p),
                }
            }
            // Another event type sharing the Kafka topic: done at once.
            None => {
                let _ = lock(state).settle(tp, epoch, offset);
            }
        }
    }

    /// The record packed for delivery with its attempt and how long it is to be held, or
    /// `None` when its longshore topic does not match the subscription.
    fn pack(&mut self, m: &BorrowedMessage<'_>) -> Option<(Packed, u32, Option<Duration>)> {
        let headers = m.headers();
        let header = |name: &str| {
            headers.and_then(|hs| {
                (0..hs.count())
                    .filter_map(|i| hs.try_get(i))
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
            })
        };
        let (id, topic) = (header(HEADER_ID), header(HEADER_TOPIC));
        let topic_str = topic
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or(m.topic());
        if !self.matches(topic_str) {
            return None;
        }
        let parts = Parts {
            kafka_topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            payload: m.payload().unwrap_or_default(),
            key: m.key(),
            id,
            topic,
        };
        let others = (0..headers.map_or(0, |hs| hs.count()))
            .filter_map(move |i| headers.and_then(|hs| hs.try_get(i)))
            .filter(|h| h.key != HEADER_ID && h.key != HEADER_TOPIC)
            .map(|h| (h.key, h.value));
        if m.topic() == self.delay_topic {
            // Delivered as a message of its original topic (the topic header above).
            return Some(pack_delayed(&parts, others, SystemTime::now()));
        }
        Some((Packed::pack(&parts, others), 1, None))
    }

    fn matches(&mut self, topic: &str) -> bool {
        if let Some(m) = self.matches.get(topic) {
            return *m;
        }
        let m = self.subscription.matches(topic);
        if self.matches.len() >= MATCH_CACHE_LIMIT {
            self.matches.clear();
        }
        self.matches.insert(topic.to_string(), m);
        m
    }

    fn deliver(&self, p: Pending) {
        let Some(out) = &self.out else { return };
        self.slots.take();
        // If the stream is gone the send fails and the pending message is dropped: it was
        // counted in flight, so count it back; its offset stays unsettled.
        if out.send(Ok(p)).is_err() {
            self.slots.free();
        }
    }
}
