//! Orders that cancel themselves unless paid in time: a scheduled message per order.
//!
//! 1. Placing an order schedules a `PaymentDeadline` for it, N seconds ahead
//!    (`EventPublisher::publish_after`). `Ok` means the broker holds it: the process that
//!    scheduled it may stop, the deadline still comes.
//! 2. Half the orders are paid at once. Where the backend can withdraw a scheduled message
//!    (`Capabilities::cancel_schedule`: Postgres, SQLite, memory) the payment cancels the deadline;
//!    elsewhere the deadline arrives and the handler sees the order was paid.
//! 3. The deadline handler cancels every order still unpaid, publishing `OrderCancelled` for
//!    the notifications subscription, and never runs before the deadline. The run checks
//!    that exactly the unpaid orders were cancelled and announced, none early, and fails
//!    otherwise.
//!
//! Runs on the embedded in-memory backend by default (deadline 2 s):
//!     cargo run --example payment_timeout
//! Any backend by URL, the same code:
//!     LONGSHORE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --features full --example payment_timeout
//!     LONGSHORE_URL=nats://127.0.0.1:4222 PAYMENT_DEADLINE_SECS=5 cargo run --features full --example payment_timeout

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longshore::prelude::*;
use longshore::{Codec, JsonCodec};
use serde::{Deserialize, Serialize};

/// When an unpaid order is cancelled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaymentDeadline {
    order_id: String,
    due: DateTime<Utc>,
}
impl DomainEvent for PaymentDeadline {
    const EVENT_TYPE: &'static str = "payment_deadline";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderCancelled {
    order_id: String,
    reason: String,
}
impl DomainEvent for OrderCancelled {
    const EVENT_TYPE: &'static str = "order_cancelled";
}

/// What a run observed (already checked by [`run`]).
#[derive(Debug)]
pub struct Report {
    /// Backend name.
    pub backend: &'static str,
    /// Orders cancelled for want of payment (the unpaid ones, exactly).
    pub cancelled: Vec<String>,
    /// Deadlines withdrawn by a payment (0 where the backend cannot cancel).
    pub withdrawn: usize,
    /// Deadlines that arrived for orders already paid (ignored by the handler).
    pub paid_in_time: usize,
    /// How late the latest deadline ran, in milliseconds.
    pub latest_ms: i64,
}

/// The order book a real service keeps in its database.
#[derive(Default)]
struct Orders {
    paid: HashSet<String>,
    cancelled: Vec<String>,
    paid_in_time: usize,
    early: Vec<String>,
    latest_ms: i64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var(longshore::ENV_URL).unwrap_or_else(|_| "memory://".into());
    let secs = std::env::var("PAYMENT_DEADLINE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let report = run(&url, Duration::from_secs(secs)).await?;
    println!("{report:#?}");
    Ok(())
}

/// Places 6 orders with a payment deadline `deadline` ahead, pays half, and checks that exactly
/// the unpaid ones are cancelled, none before its deadline.
pub async fn run(url: &str, deadline: Duration) -> Result<Report, BoxError> {
    let ls = longshore::connect(url).await?;
    let can_cancel = ls.publisher.capabilities().cancel_schedule;
    println!("backend: {} (cancel: {can_cancel})", ls.backend);

    // Names of this run only, so runs against a shared broker never meet.
    let run = Uuid::new_v4().simple().to_string()[..8].to_string();
    let topic = format!("shop{run}.payments.deadline");
    let subscription = Subscription::new(format!("payment-timeouts-{run}"), [topic.clone()]);
    ls.subscriber.ensure_subscription(&subscription).await?;
    // Whoever tells customers: it gets every cancellation (and on RabbitMQ a publish nobody
    // is subscribed to is refused as unroutable, so the topic has a reader before it is used).
    let cancellations = format!("shop{run}.orders.cancelled");
    let notifications = Subscription::new(format!("notifications-{run}"), [cancellations.clone()]);
    ls.subscriber.ensure_subscription(&notifications).await?;

    let orders = Arc::new(Mutex::new(Orders::default()));
    let events = EventPublisher::new(ls.publisher.clone());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let consumer = Consumer::new(ls.subscriber.clone(), subscription)
        .with_state((orders.clone(), events.clone(), done_tx, cancellations))
        .on(
            |(orders, events, done, to), d: PaymentDeadline, _ctx| async move {
                let late = (Utc::now() - d.due).num_milliseconds();
                let unpaid = {
                    let mut o = orders.lock().unwrap_or_else(|e| e.into_inner());
                    o.latest_ms = o.latest_ms.max(late);
                    if late < 0 {
                        o.early.push(d.order_id.clone());
                    }
                    if o.paid.contains(&d.order_id) {
                        o.paid_in_time += 1;
                        false
                    } else {
                        o.cancelled.push(d.order_id.clone());
                        true
                    }
                };
                if unpaid {
                    let cancelled = Event::from_typed(&OrderCancelled {
                        order_id: d.order_id,
                        reason: "not paid in time".into(),
                    })
                    .permanent()?;
                    events.publish_to(&to, &cancelled).await.transient()?;
                }
                let _ = done.send(());
                Ok(())
            },
        )
        .start()
        .await?;

    // Place the orders: each schedules its own deadline, and every other one is paid as it
    // is placed. The payment is recorded before the deadline is scheduled, so a deadline can
    // never find a paid order unpaid, however slowly the broker confirms.
    let mut deadlines = 0;
    let mut withdrawn = 0;
    let mut expected_cancelled = Vec::new();
    for i in 0..6 {
        let order_id = format!("order-{run}-{i}");
        let paid = i % 2 == 0;
        if paid {
            let mut o = orders.lock().unwrap_or_else(|e| e.into_inner());
            o.paid.insert(order_id.clone());
        } else {
            expected_cancelled.push(order_id.clone());
        }
        let due = Utc::now() + chrono::Duration::from_std(deadline)?;
        let event = Event::from_typed(&PaymentDeadline {
            order_id: order_id.clone(),
            due,
        })?;
        let schedule = events.publish_at(&topic, &event, due).await?;
        deadlines += 1;
        // Where the backend can, the payment withdraws the deadline.
        if paid && can_cancel && events.cancel(&schedule).await? {
            withdrawn += 1;
        }
    }

    // Every deadline not withdrawn runs once.
    for _ in 0..deadlines - withdrawn {
        tokio::time::timeout(deadline + Duration::from_secs(60), done_rx.recv())
            .await
            .map_err(|_| "a payment deadline never came")?;
    }
    consumer.shutdown(Duration::from_secs(10)).await;
    let told = read_notifications(&ls, &notifications, expected_cancelled.len()).await?;
    if told != expected_cancelled {
        return Err(format!("customers told of {told:?}, expected {expected_cancelled:?}").into());
    }
    let report = {
        let o = orders.lock().unwrap_or_else(|e| e.into_inner());
        if !o.early.is_empty() {
            return Err(format!("deadlines ran early: {:?}", o.early).into());
        }
        let mut cancelled = o.cancelled.clone();
        cancelled.sort();
        if cancelled != expected_cancelled {
            return Err(format!("cancelled {cancelled:?}, expected {expected_cancelled:?}").into());
        }
        Report {
            backend: ls.backend,
            cancelled,
            withdrawn,
            paid_in_time: o.paid_in_time,
            latest_ms: o.latest_ms,
        }
    };
    ls.publisher.close().await?;
    ls.subscriber.close().await?;
    Ok(report)
}

/// The `OrderCancelled` events the notifications subscription got, as sorted order ids.
async fn read_notifications(
    ls: &longshore::Longshore,
    notifications: &Subscription,
    count: usize,
) -> Result<Vec<String>, BoxError> {
    use futures::StreamExt;
    let mut stream = ls.subscriber.subscribe(notifications).await?;
    let mut told = Vec::with_capacity(count);
    while told.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .map_err(|_| "a cancellation was never published")?
            .ok_or("the notifications stream ended")??;
        let event = JsonCodec.decode(delivery.message())?;
        let cancelled: OrderCancelled = event.to_typed()?;
        told.push(cancelled.order_id);
        delivery.ack().await?;
    }
    told.sort();
    Ok(told)
}
