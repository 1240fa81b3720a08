//! A small service and its tests with `longshore::testing`: three handlers chained (billing →
//! warehouse → shipping), each publishing the next event.
//!
//! Run the service (memory by default, any broker with `LONGSHORE_URL`):
//!     cargo run --example testing
//! Run its tests (`tests/testing_example.rs`), in memory or on a broker by URL:
//!     cargo test --features testing --test testing_example
//!     LONGSHORE_TEST_URL=nats://127.0.0.1:4222 cargo test --features full,testing --test testing_example

mod service;

use std::time::Duration;

use futures::StreamExt;
use longshore::prelude::*;
use longshore::{Codec, JsonCodec};
use service::{OrderPlaced, OrderShipped, Service};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ls = longshore::connect_with(&longshore::Config::from_env()).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    // Watches the end of the pipeline, so the run knows when its order shipped.
    let mut shipped = ls
        .subscriber
        .subscribe(&Subscription::new(
            format!("audit-{}", &run[..10]),
            ["events.order_shipped"],
        ))
        .await?;
    let service = Service::start(ls.publisher.clone(), ls.subscriber.clone()).await?;
    let order_id = format!("o-{}", &run[..6]);
    EventPublisher::new(ls.publisher.clone())
        .publish_typed(
            &OrderPlaced {
                order_id: order_id.clone(),
                total_cents: 1250,
            },
            Some(&order_id),
        )
        .await?;
    loop {
        let delivery = tokio::time::timeout(Duration::from_secs(60), shipped.next())
            .await?
            .ok_or("the subscription closed")??;
        let event = JsonCodec.decode(delivery.message())?;
        delivery.ack().await?;
        if event.to_typed::<OrderShipped>()?.order_id == order_id {
            break;
        }
    }
    println!("{} shipped order {order_id}", ls.backend);
    service.shutdown().await;
    Ok(())
}
