//! The subscriber: one durable pull consumer per subscription ([`crate::durable`]), each
//! `subscribe` a consumer on it ([`crate::puller`]) whose deliveries settle through
//! [`crate::acker`]; dead letters go to `dlq.<subscription>`.

use std::sync::Arc;

use async_trait::async_trait;
use longshore_core::{Capabilities, DeliveryStream, Error, Health, Subscriber, Subscription};
use tokio::sync::watch;

use crate::client::Client;
use crate::durable::declare;

/// Opens durable pull consumers on the stream. Made by [`crate::NatsBroker`] through
/// [`longshore_core::Broker::subscriber`].
pub struct NatsSubscriber {
    client: Arc<Client>,
    /// Shared with every stream, so a stream never waits on a dropped sender (whose
    /// `changed()` returns at once, forever) when this handle goes away without `close`.
    closed: Arc<watch::Sender<bool>>,
}

impl NatsSubscriber {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        NatsSubscriber {
            client,
            closed: Arc::new(watch::channel(false).0),
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if *self.closed.borrow() {
            Err(Error::Closed("nats subscriber"))
        } else if self.client.is_closed() {
            Err(Error::Closed("nats broker"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Subscriber for NatsSubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        self.check_open()?;
        let plan = declare(&self.client, subscription).await?;
        crate::puller::open(self.client.clone(), subscription, plan, self.closed.clone()).await
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        self.check_open()?;
        declare(&self.client, subscription).await.map(|_| ())
    }

    async fn close(&self) -> Result<(), Error> {
        self.closed.send_replace(true);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        self.client.capabilities.clone()
    }

    /// Connected, with the stream in place (created if missing); not ready once closed.
    async fn health(&self) -> Health {
        let closed = *self.closed.borrow();
        crate::health::report(&self.client, closed.then_some("nats subscriber")).await
    }

    /// The durable's `num_pending` (matching messages not yet delivered) plus
    /// `num_ack_pending` (delivered, not yet acknowledged). An unknown subscription is
    /// [`Error::InvalidName`].
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        self.check_open()?;
        crate::health::lag(&self.client, subscription).await
    }

    /// Deletes the durables of the subscription and of its dead letters (the messages stay
    /// in the stream, bounded by its limits); one already gone is not an error.
    async fn remove_subscription(&self, subscription: &str) -> Result<(), Error> {
        self.check_open()?;
        longshore_core::topic::validate_name("subscription", subscription)?;
        let stream = &self.client.config.stream;
        for name in [
            subscription.to_string(),
            longshore_core::dead_letter_topic(subscription),
        ] {
            let durable = crate::mapping::durable_of(&name);
            let deleted = self
                .client
                .api::<serde_json::Value, _>(
                    "consumer delete",
                    format!("CONSUMER.DELETE.{stream}.{durable}"),
                    &serde_json::json!({}),
                )
                .await?;
            match deleted {
                Ok(_) => {}
                Err(e) if e.error_code().0 == crate::error::CONSUMER_NOT_FOUND => {}
                Err(e) => return Err(crate::error::api_error("consumer delete", &e).into()),
            }
        }
        Ok(())
    }
}
