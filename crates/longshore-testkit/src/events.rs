//! The domain events the runtime scenarios publish and handle, and the settings they share.

use std::time::Duration;

use std::future::{ready, Ready};

use longshore_core::{DomainEvent, Event, HandlerContext, HandlerError, RetryPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

/// Test event: an order was created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// Order id.
    pub order_id: String,
    /// Total in cents.
    pub total_cents: u64,
}
impl DomainEvent for OrderCreated {
    const EVENT_TYPE: &'static str = "order_created";
}

/// Test event: an order was cancelled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// Order id.
    pub order_id: String,
    /// Why.
    pub reason: String,
}
impl DomainEvent for OrderCancelled {
    const EVENT_TYPE: &'static str = "order_cancelled";
}

/// How long a scenario gives a consumer to shut down.
pub(crate) const SHUTDOWN: Duration = Duration::from_secs(10);

/// Retries with millisecond backoffs, so retry scenarios finish quickly.
pub(crate) fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::exponential(attempts, Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(50))
}

/// Order `o-<i>` totalling `100 * i` cents.
pub(crate) fn created(i: u64) -> OrderCreated {
    OrderCreated {
        order_id: format!("o-{i}"),
        total_cents: 100 * i,
    }
}

/// Order `id` totalling 100 cents, as an event.
pub(crate) fn order(id: &str) -> Event {
    event_of(&OrderCreated {
        order_id: id.into(),
        total_cents: 100,
    })
}

/// `e` as an event.
pub(crate) fn event_of<T: DomainEvent>(e: &T) -> Event {
    Event::from_typed(e).expect("encode")
}

/// A handler that sends each order's id to `ids` and succeeds.
pub(crate) fn send_order_ids(
    ids: UnboundedSender<String>,
) -> impl Fn(OrderCreated, HandlerContext) -> Ready<Result<(), HandlerError>> + Send + Sync + 'static
{
    move |e, _| {
        let _ = ids.send(e.order_id);
        ready(Ok(()))
    }
}
