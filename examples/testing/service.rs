//! The service under test: an order pipeline of three handlers, each publishing the next
//! event. Billing takes payment for a placed order (and refuses empty orders for good), the
//! warehouse packs what was paid for, shipping ships what was packed.

use std::sync::Arc;
use std::time::Duration;

use longshore::prelude::*;
use longshore::ConsumerHandle;
use serde::{Deserialize, Serialize};

/// A customer placed an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub total_cents: u64,
}
impl DomainEvent for OrderPlaced {
    const EVENT_TYPE: &'static str = "order_placed";
}

/// Billing took the payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentTaken {
    pub order_id: String,
    pub cents: u64,
}
impl DomainEvent for PaymentTaken {
    const EVENT_TYPE: &'static str = "payment_taken";
}

/// The warehouse packed the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPacked {
    pub order_id: String,
}
impl DomainEvent for OrderPacked {
    const EVENT_TYPE: &'static str = "order_packed";
}

/// Shipping sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: String,
}
impl DomainEvent for OrderShipped {
    const EVENT_TYPE: &'static str = "order_shipped";
}

/// Why billing refuses an order (the dead letter's reason).
pub const EMPTY_ORDER: &str = "an empty order cannot be paid";

/// The running service: one consumer per handler.
pub struct Service {
    consumers: Vec<ConsumerHandle>,
}

impl Service {
    /// Starts the three handlers on `subscriber`, publishing through `publisher`.
    pub async fn start(
        publisher: Arc<dyn Publisher>,
        subscriber: Arc<dyn Subscriber>,
    ) -> Result<Service, longshore::Error> {
        let events = EventPublisher::new(publisher);
        let retry = RetryPolicy::exponential(3, Duration::from_millis(20));
        let out = events.clone();
        let billing = Consumer::new(
            subscriber.clone(),
            Subscription::new("billing", ["events.order_placed"]),
        )
        .retry(retry.clone())
        .on(move |o: OrderPlaced, _| {
            let out = out.clone();
            async move {
                if o.total_cents == 0 {
                    return Err(HandlerError::permanent(EMPTY_ORDER));
                }
                let paid = PaymentTaken {
                    order_id: o.order_id.clone(),
                    cents: o.total_cents,
                };
                out.publish_typed(&paid, Some(&o.order_id)).await?;
                Ok(())
            }
        })
        .start()
        .await?;
        let out = events.clone();
        let warehouse = Consumer::new(
            subscriber.clone(),
            Subscription::new("warehouse", ["events.payment_taken"]),
        )
        .retry(retry.clone())
        .on(move |p: PaymentTaken, _| {
            let out = out.clone();
            async move {
                let packed = OrderPacked {
                    order_id: p.order_id.clone(),
                };
                out.publish_typed(&packed, Some(&p.order_id)).await?;
                Ok(())
            }
        })
        .start()
        .await?;
        let out = events;
        let shipping = Consumer::new(
            subscriber,
            Subscription::new("shipping", ["events.order_packed"]),
        )
        .retry(retry)
        .on(move |p: OrderPacked, _| {
            let out = out.clone();
            async move {
                let shipped = OrderShipped {
                    order_id: p.order_id.clone(),
                };
                out.publish_typed(&shipped, Some(&p.order_id)).await?;
                Ok(())
            }
        })
        .start()
        .await?;
        Ok(Service {
            consumers: vec![billing, warehouse, shipping],
        })
    }

    /// Stops the handlers, letting in-flight work finish.
    pub async fn shutdown(self) {
        for consumer in self.consumers {
            consumer.shutdown(Duration::from_secs(10)).await;
        }
    }
}
