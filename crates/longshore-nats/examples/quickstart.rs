//! The README example: `cargo run -p longshore-nats --example quickstart` (nats-server with
//! JetStream on 127.0.0.1:4222, e.g. `bash scripts/nats-broker.sh`).

use std::time::Duration;

use futures::StreamExt;
use longshore_core::{Broker, Message, Subscription};
use longshore_nats::NatsBroker;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The stream `LONGSHORE` (subjects `longshore.>`) is created on first use.
    let broker = NatsBroker::connect_url("nats://127.0.0.1:4222").await?;
    let (publisher, subscriber) = (broker.publisher(), broker.subscriber());

    // The durable pull consumer `billing`, filtering `longshore.orders` and `longshore.orders.>`.
    let mut deliveries = subscriber
        .subscribe(&Subscription::new("billing", ["orders.#"]))
        .await?;
    publisher
        .publish(
            "orders.created",
            Message::new(&b"{\"order_id\":\"o-1\"}"[..]),
        )
        .await?; // returns once JetStream stored it (PubAck)

    let first = tokio::time::timeout(Duration::from_secs(10), deliveries.next()).await;
    if let Ok(Some(delivery)) = first {
        let delivery = delivery?;
        println!(
            "{} on {} (attempt {})",
            delivery.message().id,
            delivery.topic,
            delivery.attempt
        );
        delivery.ack().await?;
    }
    broker.close().await?;
    Ok(())
}
