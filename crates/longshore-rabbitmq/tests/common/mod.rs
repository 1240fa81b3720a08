//! Shared helpers of the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::sync::Arc;

use longshore_core::{async_trait, Publisher, Subscriber};
use longshore_rabbitmq::{RabbitBroker, RabbitConfig, DEFAULT_URL};
use longshore_testkit::{require_broker, BrokerFactory};

/// `AMQP_URL` or the local broker.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A broker on `AMQP_URL` with `config` applied, or `None` (skip, reason printed) when the
/// broker is unreachable outside CI.
pub async fn broker_with(
    config: impl FnOnce(RabbitConfig) -> RabbitConfig,
) -> Option<RabbitBroker> {
    let url = amqp_url();
    let attempt = match RabbitConfig::from_url(&url) {
        Ok(c) => RabbitBroker::connect(config(c)).await,
        Err(e) => Err(e),
    };
    require_broker("rabbitmq", &url, attempt)
}

/// The factory the conformance suite runs on.
pub struct Rabbit(pub RabbitBroker);

#[async_trait]
impl BrokerFactory for Rabbit {
    async fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(self.0.publisher())
    }
    async fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(self.0.subscriber())
    }
}

/// The suite runs with the default configuration (unroutable publishes are errors; the
/// scenarios keep every topic they publish to routable).
pub async fn suite_factory() -> Option<Rabbit> {
    broker_with(|c| c).await.map(Rabbit)
}
