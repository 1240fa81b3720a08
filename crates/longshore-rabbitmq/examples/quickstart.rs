//! The README example: `cargo run -p longshore-rabbitmq --example quickstart` (RabbitMQ at
//! 127.0.0.1:5672 with the guest account, e.g. `bash scripts/rabbitmq-broker.sh`).

use futures::StreamExt;
use longshore_core::{Broker, Message, Subscription};
use longshore_rabbitmq::RabbitBroker;

#[tokio::main]
async fn main() -> Result<(), longshore_core::Error> {
    // Add `?queue_type=quorum` for Raft-replicated quorum queues (see Guarantees).
    let broker = RabbitBroker::connect_url("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
    let (publisher, subscriber) = (broker.publisher(), broker.subscriber());
    // A durable queue `quickstart-billing` bound to `orders.#` on the topic exchange
    // `longshore`; its dead letters go to the queue `dlq.quickstart-billing`.
    let mut deliveries = subscriber
        .subscribe(&Subscription::new("quickstart-billing", ["orders.#"]))
        .await?;
    let event = Message::new(&b"{}"[..]).with_key("order-42"); // key = aggregate id
    publisher.publish("orders.created", event).await?; // Ok = the broker's publisher confirm
    if let Some(Ok(delivery)) = deliveries.next().await {
        println!("received {} on {}", delivery.message().id, delivery.topic);
        delivery.ack().await?;
    }
    subscriber.close().await?;
    publisher.close().await?;
    broker.close().await?;
    Ok(())
}
