//! The subscriber: one consumer group per subscription, one group member per `subscribe`.
//!
//! Each consumer runs a librdkafka `BaseConsumer` on a thread of its own, which polls,
//! serves rebalances, stores offsets and closes the consumer; the async side only sees a
//! channel of deliveries, settles offsets in the shared group state and sends nacks back.
//! That keeps librdkafka's blocking calls (and its destroy, which can hang on some brokers)
//! off the async runtime.
//!
//! Offsets: `enable.auto.offset.store=false`; the thread stores (and librdkafka auto-commits)
//! a partition's position only up to the first unsettled message of that partition
//! ([`crate::offsets`]), so a failing message in the middle is never skipped by the commit of
//! later ones. A nack without a delay is a local redelivery: the message goes back to this
//! consumer's queue and its offset stays unsettled; should the partition move to another
//! consumer first, that one reads it again from the committed position. A nack with a delay
//! is durable: the message is copied to the subscription's delay topic, which its
//! consumers read too, and the original settled ([`crate::delay`]). On a revoke the
//! partition's in-flight work is forgotten (nothing of it is stored), so the next owner
//! redelivers it.

mod group;
mod held;
mod members;
mod plan;
mod stream;
mod task;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use longshore_core::{Capabilities, DeliveryStream, Error, Health, Subscriber, Subscription};
use tokio::sync::{mpsc as tmpsc, oneshot, watch, OnceCell};

use self::members::{leaving_members, register_member};
use self::plan::{refresh_topics, Plan};
use self::stream::StreamState;
use self::task::ConsumerTask;
use crate::acker::AckCtx;
use crate::client::{lock, Client};
use crate::command::{Cmd, Pending, Slots};
use crate::group_state::GroupState;
use crate::health::Probes;
use crate::mapping::TopicMap;
use crate::publisher::KafkaPublisher;
use crate::BACKEND;

/// Opens consumers on subscriptions (see the module docs for the offset rules).
pub struct KafkaSubscriber {
    client: Arc<Client>,
    producer: Arc<OnceCell<KafkaPublisher>>,
    consumers: Mutex<Vec<Control>>,
    closed: AtomicBool,
    /// The latest plan of every subscription subscribed or ensured here, for `lag`.
    plans: Mutex<HashMap<String, Plan>>,
    probes: Probes,
}

impl std::fmt::Debug for KafkaSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscriber")
            .field("url", &self.client.config.url)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// The subscriber's hold on one of its consumers: how to close it and when it is done.
struct Control {
    cmd: mpsc::Sender<Cmd>,
    done: watch::Receiver<bool>,
}

/// A consumer thread just started, before it joined its group.
struct Started {
    cmd: mpsc::Sender<Cmd>,
    out: tmpsc::UnboundedReceiver<Result<Pending, Error>>,
    joined: oneshot::Receiver<Result<(), Error>>,
    leaving: Arc<AtomicBool>,
    state: Arc<Mutex<GroupState>>,
    slots: Arc<Slots>,
}

impl KafkaSubscriber {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        KafkaSubscriber {
            probes: Probes::new(client.clone()),
            client,
            producer: Arc::new(OnceCell::new()),
            consumers: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(Closed)` once this subscriber or its broker is closed.
    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) || self.client.is_closed() {
            Err(Error::Closed("kafka subscriber"))
        } else {
            Ok(())
        }
    }

    /// Plans the subscription (creating its topics) and remembers the plan for `lag`.
    async fn plan(&self, subscription: &Subscription) -> Result<Plan, Error> {
        let plan = Plan::new(&self.client, subscription).await?;
        lock(&self.plans).insert(subscription.name.clone(), plan.clone());
        Ok(plan)
    }

    fn prune(&self) {
        lock(&self.consumers).retain(|c| !*c.done.borrow());
    }

    /// A consumer of this group in this process that is leaving it right now would make the
    /// new one join twice; on some brokers (tansu) a leader leaving during a join even wedges
    /// the group. Lets it finish leaving first (bounded by the close timeout).
    async fn await_leaving(&self, group_key: &str) {
        for mut done in leaving_members(group_key) {
            let _ =
                tokio::time::timeout(self.client.config.close_timeout, done.wait_for(|d| *d)).await;
        }
    }

    /// Starts the consumer thread of `plan` on `topics` (and, for wildcard patterns, the task
    /// that refreshes its topics).
    fn start(&self, plan: Plan, topics: Vec<String>, group_key: &str) -> Result<Started, Error> {
        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>();
        let (out_tx, out_rx) = tmpsc::unbounded_channel();
        let (joined_tx, joined_rx) = oneshot::channel();
        let (done_tx, done_rx) = watch::channel(false);
        let leaving = Arc::new(AtomicBool::new(false));
        let prefetch = usize::from(plan.subscription.prefetch.max(1));
        let state = Arc::new(Mutex::new(GroupState::new(
            plan.subscription.name.clone(),
            joined_tx,
        )));
        let slots = Arc::new(Slots::new(prefetch));
        let task = ConsumerTask {
            leaving: leaving.clone(),
            client: self.client.clone(),
            subscription: plan.subscription.clone(),
            prefetch,
            state: state.clone(),
            slots: slots.clone(),
            cmd_tx: cmd_tx.clone(),
            out: Some(out_tx),
            matches: HashMap::new(),
            delay_topic: TopicMap::delay_topic(&plan.subscription.name)?,
        };
        std::thread::Builder::new()
            .name(format!("longshore-kafka-{}", plan.subscription.name))
            .spawn(move || task.run(topics, cmd_rx, done_tx))
            .map_err(|e| Error::backend(BACKEND, true, e))?;
        register_member(group_key, leaving.clone(), done_rx.clone());
        lock(&self.consumers).push(Control {
            cmd: cmd_tx.clone(),
            done: done_rx.clone(),
        });
        if plan.discover {
            tokio::spawn(refresh_topics(
                self.client.clone(),
                plan,
                cmd_tx.clone(),
                done_rx,
            ));
        }
        Ok(Started {
            cmd: cmd_tx,
            out: out_rx,
            joined: joined_rx,
            leaving,
            state,
            slots,
        })
    }

    /// Waits for the first assignment so that the caller starts from a settled group (no
    /// rebalance right after). Returning early loses nothing: new groups read their topics
    /// from the beginning.
    async fn await_joined(
        &self,
        joined: oneshot::Receiver<Result<(), Error>>,
        subscription: &str,
    ) -> Result<(), Error> {
        match tokio::time::timeout(self.client.config.join_timeout, joined).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Backend {
                backend: BACKEND,
                message: "consumer thread ended before joining its group".into(),
                retryable: true,
                source: None,
            }),
            Err(_) => {
                tracing::warn!(subscription = %subscription, "kafka: no partition assignment within the join timeout; consuming anyway");
                Ok(())
            }
        }
    }
}

#[async_trait]
impl Subscriber for KafkaSubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        self.check_open()?;
        let plan = self.plan(subscription).await?;
        self.prune();
        let group_key = format!(
            "{}/{}",
            self.client.config.bootstrap_servers, subscription.name
        );
        self.await_leaving(&group_key).await;
        let topics = plan.current_topics(&self.client).await?;
        let started = self.start(plan, topics, &group_key)?;
        self.await_joined(started.joined, &subscription.name)
            .await?;
        let state = StreamState {
            rx: started.out,
            ctx: Arc::new(AckCtx {
                cmd: started.cmd,
                group: started.state,
                slots: started.slots,
                subscription: subscription.name.clone(),
                client: self.client.clone(),
                producer: self.producer.clone(),
            }),
            leaving: started.leaving,
        };
        Ok(state.into_stream())
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        self.check_open()?;
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
        let limit = self.client.config.close_timeout + Duration::from_secs(1);
        for mut c in consumers {
            let _ = tokio::time::timeout(limit, c.done.wait_for(|d| *d)).await;
        }
        self.probes.close();
        if let Some(producer) = self.producer.get() {
            longshore_core::Publisher::close(producer).await?;
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.client.capabilities()
    }

    /// Not ready once closed (or its broker is); otherwise as the broker's health.
    async fn health(&self) -> Health {
        let closed = self.closed.load(Ordering::Acquire);
        crate::health::check(&self.client, closed.then_some("kafka subscriber")).await
    }

    /// Records behind the group's committed offsets over the subscription's Kafka topics (a
    /// partition without a committed offset counts from its first record; README, "Health and
    /// lag"). Only for subscriptions subscribed or ensured through this subscriber, as their
    /// Kafka topics are known only here: any other name is [`Error::InvalidName`].
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        self.check_open()?;
        let plan = lock(&self.plans).get(subscription).cloned();
        let Some(plan) = plan else {
            return Err(Error::InvalidName {
                kind: "subscription",
                value: subscription.to_string(),
                reason: "unknown to this subscriber: subscribe or ensure_subscription it first",
            });
        };
        let topics = plan.current_topics(&self.client).await?;
        self.probes.lag(subscription, topics).await.map(Some)
    }

    /// Deletes the consumer groups of the subscription and of its dead letters (their
    /// committed offsets); the topics and their records stay. This process's consumers of
    /// them finish leaving first: a group with members cannot be deleted.
    async fn remove_subscription(&self, subscription: &str) -> Result<(), Error> {
        self.check_open()?;
        longshore_core::topic::validate_name("subscription", subscription)?;
        let groups = [
            subscription.to_string(),
            longshore_core::dead_letter_topic(subscription),
        ];
        for group in &groups {
            let key = format!("{}/{group}", self.client.config.bootstrap_servers);
            self.await_leaving(&key).await;
        }
        let names: Vec<&str> = groups.iter().map(String::as_str).collect();
        let options = rdkafka::admin::AdminOptions::new()
            .request_timeout(Some(self.client.config.request_timeout));
        let results = self
            .client
            .admin
            .delete_groups(&names, &options)
            .await
            .map_err(|e| crate::error::map("delete consumer groups", e))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, rdkafka::types::RDKafkaErrorCode::GroupIdNotFound)) => {}
                Err((group, code)) => {
                    return Err(Error::Backend {
                        backend: BACKEND,
                        message: format!("delete consumer group {group}: {code}"),
                        retryable: true,
                        source: None,
                    })
                }
            }
        }
        lock(&self.plans).remove(subscription);
        Ok(())
    }
}
