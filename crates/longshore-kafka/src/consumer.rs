//! The subscriber: one consumer group per subscription, one group member per `subscribe`.
//!
//! Each consumer runs a librdkafka `BaseConsumer` on a thread of its own, which polls,
//! serves rebalances, stores offsets and closes the consumer; the async side only sees a
//! channel of deliveries and sends settlements back. That keeps librdkafka's blocking calls
//! (and its destroy, which can hang on some brokers) off the async runtime.
//!
//! Offsets: `enable.auto.offset.store=false`; the thread stores (and librdkafka auto-commits)
//! a partition's position only up to the first unsettled message of that partition
//! ([`crate::offsets`]), so a failing message in the middle is never skipped by the commit of
//! later ones. Nack = local redelivery: the message goes back to this consumer's queue (after
//! the delay, if any) and its offset stays unsettled; should the partition move to another
//! consumer first, that one reads it again from the committed position. On a revoke the
//! partition's in-flight work is forgotten (nothing of it is stored), so the next owner
//! redelivers it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream;
use longshore_core::observe::Health;
use longshore_core::{
    dead_letter_message, Acker, Capabilities, DeadLetter, Delivery, DeliveryStream, Error, Message,
    Subscriber, Subscription,
};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::sync::{mpsc as tmpsc, oneshot, watch, OnceCell};

use crate::broker::{lock, Shared};
use crate::error::{map, BACKEND};
use crate::lag::Probes;
use crate::mapping::{Resolved, TopicMap, HEADER_ID, HEADER_TOPIC};
use crate::offsets::{Offsets, Tp};
use crate::producer::KafkaPublisher;
use crate::record::{Packed, Parts};

/// How long the consumer thread blocks in one poll or wait, at most.
const TICK: Duration = Duration::from_millis(50);
/// While every prefetch slot is taken, the thread still polls this often (to serve
/// rebalances and stay in the group); a message fetched meanwhile pauses the partitions.
const SERVE_EVERY: Duration = Duration::from_millis(500);

/// Opens consumers on subscriptions (see the module docs for the offset rules).
pub struct KafkaSubscriber {
    shared: Arc<Shared>,
    dlq: Arc<OnceCell<KafkaPublisher>>,
    consumers: Mutex<Vec<Control>>,
    closed: AtomicBool,
    /// The latest plan of every subscription subscribed or ensured here, for `lag`.
    plans: Mutex<HashMap<String, Plan>>,
    probes: Probes,
}

impl std::fmt::Debug for KafkaSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscriber")
            .field("url", &self.shared.config.url)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

struct Control {
    cmd: mpsc::Sender<Cmd>,
    done: watch::Receiver<bool>,
}

enum Cmd {
    /// The delivery at this offset is done (acked or dead-lettered).
    Settle { tp: Tp, epoch: u64, offset: i64 },
    /// Redeliver (after `delay`).
    Nack {
        pending: Pending,
        delay: Option<Duration>,
    },
    /// The Kafka topics to read changed (wildcard patterns).
    Topics(Vec<String>),
    /// End the stream and close the consumer now.
    Close,
}

/// A fetched message that is not settled yet.
#[derive(Clone)]
struct Pending {
    tp: Tp,
    epoch: u64,
    offset: i64,
    attempt: u32,
    packed: Packed,
}

/// What every acker of one consumer shares.
struct AckCtx {
    cmd: mpsc::Sender<Cmd>,
    subscription: String,
    shared: Arc<Shared>,
    dlq: Arc<OnceCell<KafkaPublisher>>,
}

/// What the subscribe call needs to start a consumer.
#[derive(Clone)]
struct Plan {
    subscription: Subscription,
    fixed: Vec<String>,
    discover: bool,
}

impl KafkaSubscriber {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        KafkaSubscriber {
            probes: Probes::new(shared.clone()),
            shared,
            dlq: Arc::new(OnceCell::new()),
            consumers: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// Validates the subscription, works out its Kafka topics and creates the fixed ones
    /// (and the dead-letter topic).
    async fn plan(&self, subscription: &Subscription) -> Result<Plan, Error> {
        subscription.validate()?;
        let map: TopicMap = self.shared.config.topic_map;
        let mut fixed = Vec::new();
        let mut discover = false;
        for p in &subscription.patterns {
            match map.resolve(p)? {
                Resolved::Fixed(t) => {
                    if !fixed.contains(&t) {
                        fixed.push(t)
                    }
                }
                Resolved::Discover => discover = true,
            }
        }
        let mut create = fixed.clone();
        if !subscription.is_dead_letter_queue() {
            // Dead letters are kept from the moment the subscription exists.
            create.push(TopicMap::dead_letter_topic(&subscription.name)?);
        }
        self.shared.ensure_topics(&create).await?;
        let plan = Plan {
            subscription: subscription.clone(),
            fixed,
            discover,
        };
        lock(&self.plans).insert(subscription.name.clone(), plan.clone());
        Ok(plan)
    }

    fn prune(&self) {
        lock(&self.consumers).retain(|c| !*c.done.borrow());
    }
}

/// The Kafka topics a plan reads now.
async fn current_topics(shared: &Shared, plan: &Plan) -> Result<Vec<String>, Error> {
    let mut topics: Vec<String> = plan.fixed.clone();
    if plan.discover {
        let map = shared.config.topic_map;
        for t in shared.list_topics().await? {
            if !topics.contains(&t)
                && plan
                    .subscription
                    .patterns
                    .iter()
                    .any(|p| map.may_route_to(p, &t))
            {
                topics.push(t);
            }
        }
    }
    topics.sort();
    Ok(topics)
}

#[async_trait]
impl Subscriber for KafkaSubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("kafka subscriber"));
        }
        let plan = self.plan(subscription).await?;
        self.prune();
        // A consumer of this group in this process that is leaving it right now would make the
        // new one join twice; on some brokers (tansu) a leader leaving during a join even
        // wedges the group. Let it finish leaving first (bounded).
        let group_key = format!(
            "{}/{}",
            self.shared.config.bootstrap_servers, subscription.name
        );
        for mut done in leaving_members(&group_key) {
            let _ =
                tokio::time::timeout(self.shared.config.close_timeout, done.wait_for(|d| *d)).await;
        }
        let topics = current_topics(&self.shared, &plan).await?;

        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>();
        let (out_tx, out_rx) = tmpsc::unbounded_channel();
        let (joined_tx, joined_rx) = oneshot::channel();
        let (done_tx, done_rx) = watch::channel(false);
        let leaving = Arc::new(AtomicBool::new(false));
        let self_leaving = leaving.clone();
        let worker = Worker {
            leaving: leaving.clone(),
            shared: self.shared.clone(),
            subscription: plan.subscription.clone(),
            prefetch: usize::from(plan.subscription.prefetch.max(1)),
            cmd_tx: cmd_tx.clone(),
            out: Some(out_tx),
            matches: std::collections::HashMap::new(),
        };
        std::thread::Builder::new()
            .name(format!("longshore-kafka-{}", plan.subscription.name))
            .spawn(move || worker.run(topics, cmd_rx, joined_tx, done_tx))
            .map_err(|e| Error::backend(BACKEND, true, e))?;
        register_member(&group_key, leaving.clone(), done_rx.clone());
        lock(&self.consumers).push(Control {
            cmd: cmd_tx.clone(),
            done: done_rx.clone(),
        });

        if plan.discover {
            tokio::spawn(refresh_topics(
                self.shared.clone(),
                plan,
                cmd_tx.clone(),
                done_rx.clone(),
            ));
        }

        // Wait for the first assignment so that the caller starts from a settled group
        // (no rebalance right after). Returning early loses nothing: new groups read their
        // topics from the beginning.
        match tokio::time::timeout(self.shared.config.join_timeout, joined_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => {
                return Err(Error::Backend {
                    backend: BACKEND,
                    message: "consumer thread ended before joining its group".into(),
                    retryable: true,
                    source: None,
                })
            }
            Err(_) => {
                tracing::warn!(subscription = %subscription.name, "kafka: no partition assignment within the join timeout; consuming anyway");
            }
        }

        let state = StreamState {
            rx: out_rx,
            ctx: Arc::new(AckCtx {
                cmd: cmd_tx,
                subscription: subscription.name.clone(),
                shared: self.shared.clone(),
                dlq: self.dlq.clone(),
            }),
            leaving: self_leaving,
        };
        Ok(Box::pin(stream::unfold(state, |mut state| async move {
            let item = state.rx.recv().await?.map(|p: Pending| {
                // Unpacked here, on the consumer's task, not on the librdkafka thread.
                let (message, topic) = p.packed.unpack();
                let attempt = p.attempt;
                let acker = KafkaAcker {
                    ctx: state.ctx.clone(),
                    pending: Some(p),
                };
                Delivery::new(message, topic, attempt, Box::new(acker))
            });
            Some((item, state))
        })))
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("kafka subscriber"));
        }
        // A consumer group needs no creating: a new group reads its topics from the beginning,
        // so creating the topics is what keeps the messages published from now on.
        self.plan(subscription).await.map(|_| ())
    }

    async fn close(&self) -> Result<(), Error> {
        self.closed.store(true, Ordering::Release);
        let consumers: Vec<Control> = std::mem::take(&mut *lock(&self.consumers));
        for c in &consumers {
            let _ = c.cmd.send(Cmd::Close);
        }
        let limit = self.shared.config.close_timeout + Duration::from_secs(1);
        for mut c in consumers {
            let _ = tokio::time::timeout(limit, c.done.wait_for(|d| *d)).await;
        }
        self.probes.close();
        if let Some(dlq) = self.dlq.get() {
            longshore_core::Publisher::close(dlq).await?;
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.shared.capabilities()
    }

    /// Not ready once closed; otherwise see [`crate::KafkaBroker::health`].
    async fn health(&self) -> Health {
        let closed = self.closed.load(Ordering::Acquire);
        crate::health::check(&self.shared, closed.then_some("kafka subscriber")).await
    }

    /// Records behind the group's committed offsets over the subscription's Kafka topics (a
    /// partition without a committed offset counts from its first record; README, "Health and
    /// lag"). Only for subscriptions subscribed or ensured through this subscriber, as their
    /// Kafka topics are known only here: any other name is [`Error::InvalidName`].
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("kafka subscriber"));
        }
        let plan = lock(&self.plans).get(subscription).cloned();
        let Some(plan) = plan else {
            return Err(Error::InvalidName {
                kind: "subscription",
                value: subscription.to_string(),
                reason: "unknown to this subscriber: subscribe or ensure_subscription it first",
            });
        };
        let topics = current_topics(&self.shared, &plan).await?;
        self.probes.lag(subscription, topics).await.map(Some)
    }
}

impl Drop for KafkaSubscriber {
    fn drop(&mut self) {
        // Streams and ackers keep their consumers alive; nothing to do here.
    }
}

/// The receiving end of a consumer. It holds a command sender, so the thread never mistakes
/// "no ackers left" for "everyone is gone" while the stream lives. Dropping it marks the
/// member as leaving at once (before the thread notices) and hands every message still in
/// the channel back as a nack, so the thread's in-flight count drops to zero.
struct StreamState {
    rx: tmpsc::UnboundedReceiver<Result<Pending, Error>>,
    ctx: Arc<AckCtx>,
    leaving: Arc<AtomicBool>,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.leaving.store(true, Ordering::Release);
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Ok(pending) = item {
                let _ = self.ctx.cmd.send(Cmd::Nack {
                    pending,
                    delay: None,
                });
            }
        }
    }
}

type Member = (Arc<AtomicBool>, watch::Receiver<bool>);

/// Consumers of this process by `bootstrap/group`, to let a new member wait for one leaving.
fn members() -> &'static Mutex<std::collections::HashMap<String, Vec<Member>>> {
    static MEMBERS: std::sync::OnceLock<Mutex<std::collections::HashMap<String, Vec<Member>>>> =
        std::sync::OnceLock::new();
    MEMBERS.get_or_init(Default::default)
}

fn register_member(key: &str, leaving: Arc<AtomicBool>, done: watch::Receiver<bool>) {
    let mut all = lock(members());
    all.retain(|_, v| {
        v.retain(|(_, d)| !*d.borrow());
        !v.is_empty()
    });
    all.entry(key.to_string())
        .or_default()
        .push((leaving, done));
}

fn leaving_members(key: &str) -> Vec<watch::Receiver<bool>> {
    lock(members())
        .get(key)
        .map(|v| {
            v.iter()
                .filter(|(l, d)| l.load(Ordering::Acquire) && !*d.borrow())
                .map(|(_, d)| d.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Re-reads the topic list of a wildcard subscription and tells the consumer when it changed.
async fn refresh_topics(
    shared: Arc<Shared>,
    plan: Plan,
    cmd: mpsc::Sender<Cmd>,
    mut done: watch::Receiver<bool>,
) {
    let mut last: Option<Vec<String>> = None;
    loop {
        tokio::select! {
            _ = done.wait_for(|d| *d) => return,
            _ = tokio::time::sleep(shared.config.pattern_refresh) => {}
        }
        match current_topics(&shared, &plan).await {
            Ok(topics) => {
                if last.as_ref() != Some(&topics) {
                    last = Some(topics.clone());
                    if cmd.send(Cmd::Topics(topics)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "kafka: topic refresh failed"),
        }
    }
}

/// State shared by the consumer thread and its rebalance callbacks (same thread).
struct GroupState {
    offsets: Offsets,
    /// Positions to hand to the offset store at the next flush (one call for many acks).
    to_store: std::collections::HashMap<Tp, i64>,
    assigned: HashSet<Tp>,
    /// Every assigned partition is to stay paused (the stream is gone).
    paused_all: bool,
    joined: Option<oneshot::Sender<Result<(), Error>>>,
    name: String,
}

struct Ctx {
    state: Arc<Mutex<GroupState>>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::broker::log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "longshore_kafka::librdkafka", error = %error, "{reason}");
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut s = lock(&self.state);
            for e in tpl.elements() {
                let tp: Tp = (e.topic().into(), e.partition());
                s.offsets.revoke(&tp);
                s.to_store.remove(&tp);
                s.assigned.remove(&tp);
            }
            tracing::debug!(subscription = %s.name, partitions = tpl.count(), "kafka: partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut s = lock(&self.state);
        match rebalance {
            Rebalance::Assign(tpl) => {
                for e in tpl.elements() {
                    let tp: Tp = (e.topic().into(), e.partition());
                    s.offsets.assign(tp.clone());
                    s.assigned.insert(tp);
                }
                if s.paused_all && tpl.count() > 0 {
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::warn!(error = %e, "kafka: pausing new partitions failed");
                    }
                }
                tracing::debug!(subscription = %s.name, partitions = tpl.count(), "kafka: partitions assigned");
                if let Some(j) = s.joined.take() {
                    let _ = j.send(Ok(()));
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(subscription = %s.name, error = %e, "kafka: rebalance error")
            }
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    leaving: Arc<AtomicBool>,
    subscription: Subscription,
    prefetch: usize,
    cmd_tx: mpsc::Sender<Cmd>,
    /// Whether a longshore topic matches the subscription, cached.
    matches: std::collections::HashMap<String, bool>,
    /// `None` once the stream was ended by `close`.
    out: Option<tmpsc::UnboundedSender<Result<Pending, Error>>>,
}

/// The consumer thread's own bookkeeping.
struct Local {
    in_flight: usize,
    /// Fetched or nacked messages waiting for a prefetch slot, in delivery order.
    ready: VecDeque<Pending>,
    /// Nacked with a delay: due time and message.
    delayed: Vec<(Instant, Pending)>,
    /// Partitions paused for backpressure.
    paused: bool,
    blocked_since: Option<Instant>,
    last_serve: Instant,
    /// Interned Kafka topic names.
    topics: HashSet<Arc<str>>,
}

impl Worker {
    fn consumer_config(&self) -> rdkafka::ClientConfig {
        let config = &self.shared.config;
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
            .set("fetch.wait.max.ms", "100");
        config.apply_properties(&mut cc);
        cc
    }

    fn run(
        mut self,
        topics: Vec<String>,
        cmd_rx: mpsc::Receiver<Cmd>,
        joined: oneshot::Sender<Result<(), Error>>,
        done: watch::Sender<bool>,
    ) {
        let state = Arc::new(Mutex::new(GroupState {
            offsets: Offsets::default(),
            to_store: Default::default(),
            assigned: HashSet::new(),
            paused_all: false,
            joined: Some(joined),
            name: self.subscription.name.clone(),
        }));
        let created: Result<BaseConsumer<Ctx>, Error> = self
            .consumer_config()
            .create_with_context(Ctx {
                state: state.clone(),
            })
            .map_err(|e| map("create consumer", e));
        let consumer = match created {
            Ok(c) => c,
            Err(e) => {
                if let Some(j) = lock(&state).joined.take() {
                    let _ = j.send(Err(e));
                }
                let _ = done.send(true);
                return;
            }
        };
        self.set_topics(&consumer, &state, &topics);

        let mut local = Local {
            in_flight: 0,
            ready: VecDeque::new(),
            delayed: Vec::new(),
            paused: false,
            blocked_since: None,
            last_serve: Instant::now(),
            topics: HashSet::new(),
        };
        self.pump(&consumer, &state, &cmd_rx, &mut local);
        // Settlements that arrived with the close still count.
        while let Ok(cmd) = cmd_rx.try_recv() {
            if let Cmd::Settle { .. } = cmd {
                self.handle(cmd, &consumer, &state, &mut local);
            }
        }
        flush_stores(&consumer, &state);

        self.leaving.store(true, Ordering::Release);
        // Close: drop the stream, commit what is stored, leave the group. Polling until
        // `closed()` serves the final revoke; messages fetched meanwhile are dropped unstored.
        self.out = None;
        local.ready.clear();
        local.delayed.clear();
        let deadline = Instant::now() + self.shared.config.close_timeout;
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

    fn set_topics(
        &self,
        consumer: &BaseConsumer<Ctx>,
        state: &Mutex<GroupState>,
        topics: &[String],
    ) {
        if topics.is_empty() {
            consumer.unsubscribe();
            if let Some(j) = lock(state).joined.take() {
                let _ = j.send(Ok(()));
            }
            return;
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&names) {
            let e = map("subscribe", e);
            tracing::warn!(error = %e, "kafka: subscribe failed");
            if let Some(j) = lock(state).joined.take() {
                let _ = j.send(Err(e));
            }
        }
    }

    /// The main loop; returns when the consumer is to be closed.
    fn pump(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        state: &Mutex<GroupState>,
        cmd_rx: &mpsc::Receiver<Cmd>,
        local: &mut Local,
    ) {
        loop {
            // 1. Commands.
            loop {
                match cmd_rx.try_recv() {
                    Ok(Cmd::Close) => return,
                    Ok(cmd) => self.handle(cmd, consumer, state, local),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            flush_stores(consumer, state);
            // 2. Delayed redeliveries that are due.
            let now = Instant::now();
            if !local.delayed.is_empty() {
                let (due, later): (Vec<_>, Vec<_>) =
                    local.delayed.drain(..).partition(|(at, _)| *at <= now);
                local.delayed = later;
                local.ready.extend(due.into_iter().map(|(_, p)| p));
            }
            // 3. The stream is gone: stop fetching, serve ackers until none is left.
            let open = self.out.as_ref().is_some_and(|o| !o.is_closed());
            if !open {
                self.leaving.store(true, Ordering::Release);
                if local.in_flight == 0 {
                    return;
                }
                self.pause_everything(consumer, state);
                local.ready.clear();
                local.delayed.clear();
                self.wait(cmd_rx, consumer, state, local, TICK);
                if local.last_serve.elapsed() >= SERVE_EVERY {
                    local.last_serve = Instant::now();
                    // Anything fetched before the pause is dropped unstored.
                    let _ = consumer.poll(Duration::ZERO);
                }
                continue;
            }
            // 4. Hand out what is ready while prefetch allows.
            while local.in_flight < self.prefetch {
                let Some(p) = local.ready.pop_front() else {
                    break;
                };
                if !lock(state).offsets.is_current(&p.tp, p.epoch) {
                    continue; // revoked meanwhile: the next owner redelivers it
                }
                self.deliver(p, local);
            }
            // 5. Fetch, or wait for a free slot.
            let next_due = local.delayed.iter().map(|(at, _)| *at).min();
            let tick = next_due
                .map(|at| at.saturating_duration_since(Instant::now()).min(TICK))
                .unwrap_or(TICK);
            if local.in_flight < self.prefetch && local.ready.is_empty() {
                local.blocked_since = None;
                if local.paused {
                    self.resume(consumer, state);
                    local.paused = false;
                }
                let polled = consumer.poll(tick);
                local.last_serve = Instant::now();
                let mut got = polled.is_some();
                self.take(polled, state, local);
                // Take what is already fetched in one go: deliveries reach the stream in
                // bursts, so neither side wakes the other per message.
                let mut burst = 1;
                while got && burst < 256 && local.in_flight + local.ready.len() < self.prefetch {
                    let polled = consumer.poll(Duration::ZERO);
                    got = polled.is_some();
                    self.take(polled, state, local);
                    burst += 1;
                }
            } else {
                let since = *local.blocked_since.get_or_insert_with(Instant::now);
                self.wait(cmd_rx, consumer, state, local, tick);
                if since.elapsed() >= SERVE_EVERY && local.last_serve.elapsed() >= SERVE_EVERY {
                    // Stay in the group while the handlers are busy; pause fetching so
                    // nothing piles up here.
                    local.last_serve = Instant::now();
                    if !local.paused {
                        self.pause_assigned(consumer, state);
                        local.paused = true;
                    }
                    let polled = consumer.poll(Duration::ZERO);
                    self.take(polled, state, local);
                }
            }
        }
    }

    /// Waits up to `tick` for one command and handles it.
    fn wait(
        &mut self,
        cmd_rx: &mpsc::Receiver<Cmd>,
        consumer: &BaseConsumer<Ctx>,
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
        consumer: &BaseConsumer<Ctx>,
        state: &Mutex<GroupState>,
        local: &mut Local,
    ) {
        match cmd {
            Cmd::Settle { tp, epoch, offset } => {
                local.in_flight = local.in_flight.saturating_sub(1);
                let mut s = lock(state);
                if let Some(pos) = s.offsets.settled(&tp, epoch, offset) {
                    s.to_store.insert(tp, pos);
                }
            }
            Cmd::Nack { mut pending, delay } => {
                local.in_flight = local.in_flight.saturating_sub(1);
                if !lock(state).offsets.is_current(&pending.tp, pending.epoch) {
                    return;
                }
                pending.attempt = pending.attempt.saturating_add(1);
                match delay.filter(|d| !d.is_zero()) {
                    Some(d) => local.delayed.push((Instant::now() + d, pending)),
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
        polled: Option<Result<BorrowedMessage<'_>, KafkaError>>,
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
        let topic_name = match local.topics.get(m.topic()) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = m.topic().into();
                local.topics.insert(t.clone());
                t
            }
        };
        let tp: Tp = (topic_name, m.partition());
        let offset = m.offset();
        let epoch = match lock(state).offsets.fetched(&tp, offset) {
            Some(e) => e,
            None => return, // not ours (any more)
        };
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
            // Another event type sharing the Kafka topic: done at once.
            let mut s = lock(state);
            if let Some(pos) = s.offsets.settled(&tp, epoch, offset) {
                s.to_store.insert(tp, pos);
            }
            return;
        }
        let parts = Parts {
            kafka_topic: m.topic(),
            partition: m.partition(),
            offset,
            payload: m.payload().unwrap_or_default(),
            key: m.key(),
            id,
            topic,
        };
        let others = (0..headers.map_or(0, |hs| hs.count()))
            .filter_map(move |i| headers.and_then(|hs| hs.try_get(i)))
            .filter(|h| h.key != HEADER_ID && h.key != HEADER_TOPIC)
            .map(|h| (h.key, h.value));
        local.ready.push_back(Pending {
            tp,
            epoch,
            offset,
            attempt: 1,
            packed: Packed::pack(&parts, others),
        });
    }

    fn matches(&mut self, topic: &str) -> bool {
        if let Some(m) = self.matches.get(topic) {
            return *m;
        }
        let m = self.subscription.matches(topic);
        if self.matches.len() >= 10_000 {
            self.matches.clear();
        }
        self.matches.insert(topic.to_string(), m);
        m
    }

    fn deliver(&self, p: Pending, local: &mut Local) {
        let Some(out) = &self.out else { return };
        local.in_flight += 1;
        // If the stream is gone the send fails and the pending message is dropped: it was
        // counted in flight, so count it back; its offset stays unsettled.
        if out.send(Ok(p)).is_err() {
            local.in_flight -= 1;
        }
    }

    fn assigned_tpl(state: &Mutex<GroupState>) -> TopicPartitionList {
        let s = lock(state);
        let mut tpl = TopicPartitionList::with_capacity(s.assigned.len());
        for (t, p) in &s.assigned {
            tpl.add_partition(t, *p);
        }
        tpl
    }

    fn pause_assigned(&self, consumer: &BaseConsumer<Ctx>, state: &Mutex<GroupState>) {
        let tpl = Self::assigned_tpl(state);
        if tpl.count() > 0 {
            if let Err(e) = consumer.pause(&tpl) {
                tracing::warn!(error = %e, "kafka: pause failed");
            }
        }
    }

    fn pause_everything(&self, consumer: &BaseConsumer<Ctx>, state: &Mutex<GroupState>) {
        let first = {
            let mut s = lock(state);
            !std::mem::replace(&mut s.paused_all, true)
        };
        if first {
            self.pause_assigned(consumer, state);
        }
    }

    fn resume(&self, consumer: &BaseConsumer<Ctx>, state: &Mutex<GroupState>) {
        let tpl = Self::assigned_tpl(state);
        if tpl.count() > 0 {
            if let Err(e) = consumer.resume(&tpl) {
                tracing::warn!(error = %e, "kafka: resume failed");
            }
        }
    }
}

/// Hands the settled positions (next offset to read, per partition) to librdkafka's offset
/// store, from where auto-commit commits them.
fn flush_stores(consumer: &BaseConsumer<Ctx>, state: &Mutex<GroupState>) {
    let pending = {
        let mut s = lock(state);
        if s.to_store.is_empty() {
            return;
        }
        std::mem::take(&mut s.to_store)
    };
    let mut tpl = TopicPartitionList::with_capacity(pending.len());
    for ((topic, partition), pos) in &pending {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*pos)) {
            tracing::warn!(error = %e, "kafka: bad offset");
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Typically a partition was revoked a moment ago: the next owner redelivers.
        tracing::debug!(error = %e, "kafka: offsets not stored");
    }
}

struct KafkaAcker {
    ctx: Arc<AckCtx>,
    /// `Some` until settled; dropping it unsettled nacks.
    pending: Option<Pending>,
}

impl KafkaAcker {
    fn settle(&mut self) -> Result<(), Error> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        self.ctx
            .cmd
            .send(Cmd::Settle {
                tp: p.tp,
                epoch: p.epoch,
                offset: p.offset,
            })
            .map_err(|_| Error::Closed("kafka consumer"))
    }
}

impl Drop for KafkaAcker {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            let _ = self.ctx.cmd.send(Cmd::Nack {
                pending,
                delay: None,
            });
        }
    }
}

#[async_trait]
impl Acker for KafkaAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        self.settle()
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        // A closed consumer cannot redeliver, but the offset was never stored: the next
        // consumer of the subscription gets the message again.
        let _ = self.ctx.cmd.send(Cmd::Nack { pending, delay });
        Ok(())
    }

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let ctx = self.ctx.clone();
        let kafka_topic = TopicMap::dead_letter_topic(&ctx.subscription)?;
        let letter = dead_letter_message(message, topic, &ctx.subscription, &dead);
        let shared = ctx.shared.clone();
        let dlq = ctx
            .dlq
            .get_or_init(|| async move { KafkaPublisher::new(shared) })
            .await;
        // Publish first, settle after: if the dead-letter topic refuses, dropping `self`
        // nacks and the message is redelivered.
        dlq.publish_raw(&kafka_topic, &kafka_topic, &letter).await?;
        self.settle()
    }
}
