//! The bus's subscriber: moves subscriptions into the bus's namespace and records every
//! delivery and how it was settled, by wrapping each delivery's acker (so it works with any
//! consumer runtime, which only ever settles deliveries through the port).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::{
    async_trait, Acker, Capabilities, DeadLetter, DeliveryStream, Error, Health, Message,
    Subscriber, Subscription,
};

use super::ledger::Ledger;
use super::names::Namespace;
use super::record::Outcome;

/// Wraps the backend's subscriber; see [`TestBus`](crate::testing::TestBus).
pub(crate) struct TestSubscriber {
    pub(crate) inner: Arc<dyn Subscriber>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) names: Namespace,
}

/// Tells the ledger a consumer stream is gone when the stream is dropped.
struct ConsumerGuard {
    ledger: Arc<Ledger>,
    name: String,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        self.ledger.consumer_closed(&self.name);
    }
}

#[async_trait]
impl Subscriber for TestSubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        let stream = self
            .inner
            .subscribe(&self.names.subscription(subscription))
            .await?;
        self.ledger.subscribed(subscription);
        let guard = ConsumerGuard {
            ledger: self.ledger.clone(),
            name: subscription.name.clone(),
        };
        let names = self.names.clone();
        let ledger = self.ledger.clone();
        let name = subscription.name.clone();
        let recorded = stream.map(move |item| {
            let _open = &guard;
            let mut delivery = item?;
            // The service sees its own topic, and so does a dead letter's `x-original-topic`
            // (adapters use that argument for the header only), so replaying one through the
            // bus lands back in its namespace.
            delivery.topic = names.strip_topic(&delivery.topic);
            let index = ledger.delivered(
                &name,
                delivery.topic.clone(),
                delivery.attempt,
                delivery.message(),
            );
            let ledger = ledger.clone();
            Ok(delivery.map_acker(move |inner| {
                Box::new(TestAcker {
                    inner,
                    settle: Settle {
                        ledger,
                        index,
                        done: false,
                    },
                })
            }))
        });
        Ok(recorded.boxed())
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        // Not recorded: a subscription only declared stands for another service (it makes
        // publishes routable on RabbitMQ), and nothing in this test will consume it.
        self.inner
            .ensure_subscription(&self.names.subscription(subscription))
            .await
    }

    async fn close(&self) -> Result<(), Error> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        self.inner.lag(&self.names.name(subscription)).await
    }

    async fn remove_subscription(&self, subscription: &str) -> Result<(), Error> {
        self.inner
            .remove_subscription(&self.names.name(subscription))
            .await
    }
}

/// Records one delivery's settlement; dropped unsettled, it records `Dropped`.
struct Settle {
    ledger: Arc<Ledger>,
    index: usize,
    done: bool,
}

impl Settle {
    fn record(mut self, result: &Result<(), Error>, ok: Outcome) {
        self.done = true;
        let outcome = match result {
            Ok(()) => ok,
            Err(e) => Outcome::SettleFailed {
                error: e.to_string(),
            },
        };
        self.ledger.settled(self.index, outcome);
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.settled(self.index, Outcome::Dropped);
        }
    }
}

struct TestAcker {
    inner: Box<dyn Acker>,
    settle: Settle,
}

#[async_trait]
impl Acker for TestAcker {
    async fn ack(self: Box<Self>) -> Result<(), Error> {
        let TestAcker { inner, settle } = *self;
        let result = inner.ack().await;
        settle.record(&result, Outcome::Acked);
        result
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let TestAcker { inner, settle } = *self;
        let result = inner.nack(delay).await;
        settle.record(&result, Outcome::Nacked);
        result
    }

    fn hold(&mut self, message: Message) {
        self.inner.hold(message);
    }

    async fn dead_letter(
        self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let TestAcker { inner, settle } = *self;
        let reason = dead.reason.clone();
        let result = inner.dead_letter(message, topic, dead).await;
        settle.record(&result, Outcome::DeadLettered { reason });
        result
    }
}
