//! The README example: `cargo run -p longshore-kafka --example quickstart` (broker at
//! 127.0.0.1:9092, e.g. `bash scripts/kafka-broker.sh install && bash scripts/kafka-broker.sh start`).

use futures::StreamExt;
use longshore_core::{Broker, Message, Subscription};
use longshore_kafka::KafkaBroker;

#[tokio::main]
async fn main() -> Result<(), longshore_core::Error> {
    let broker = KafkaBroker::connect_url("kafka://127.0.0.1:9092").await?;
    let (publisher, subscriber) = (broker.publisher(), broker.subscriber());
    // A consumer group `billing` reading Kafka topic `orders`, keeping `orders.created` and
    // `orders.paid` in publish order per key.
    let mut deliveries = subscriber
        .subscribe(&Subscription::new("billing", ["orders.#"]))
        .await?;
    let event = Message::new(&b"{}"[..]).with_key("order-42"); // key = aggregate id
    publisher.publish("orders.created", event).await?; // Ok = delivery report, acks=all
    if let Some(Ok(delivery)) = deliveries.next().await {
        delivery.ack().await?;
    }
    subscriber.close().await?;
    publisher.close().await?;
    broker.close().await?;
    Ok(())
}
