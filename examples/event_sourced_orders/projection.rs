//! The read model: order summaries built from the broker's events by a consumer whose inbox
//! skips message ids it already handled.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use longshore::prelude::*;
use longshore::{ConsumerHandle, Inbox, Longshore, StoreError};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::events::{OrderConfirmed, OrderLineAdded, OrderOpened};
use super::BoxError;

/// One order as the projection sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderSummary {
    pub customer: String,
    pub lines: usize,
    pub total_cents: u64,
    pub status: &'static str,
    /// Events applied.
    pub version: u64,
}

#[derive(Default)]
pub struct ProjectionState {
    pub orders: BTreeMap<String, OrderSummary>,
    /// Times each event was applied: must end at exactly one.
    pub applied: HashMap<Uuid, u32>,
    /// Events of other runs' orders seen and ignored.
    pub ignored: u64,
}

/// Builds order summaries from the events of this run's orders (streams starting with
/// `prefix`); everything else on `events.#` is acknowledged and ignored.
pub struct Projection {
    prefix: String,
    state: Mutex<ProjectionState>,
    applied_tx: mpsc::UnboundedSender<Uuid>,
}

impl Projection {
    pub fn state(&self) -> MutexGuard<'_, ProjectionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply<T>(
        &self,
        ctx: &HandlerContext,
        event: T,
        update: fn(&mut OrderSummary, T),
    ) -> Result<(), HandlerError> {
        let mut state = self.state();
        let order = match ctx.event.metadata.aggregate_id.as_deref() {
            Some(order) if order.starts_with(&self.prefix) => order,
            _ => {
                state.ignored += 1;
                return Ok(());
            }
        };
        let summary = state.orders.entry(order.to_string()).or_default();
        update(summary, event);
        summary.version += 1;
        println!(
            "projection: {} {} -> {} lines, {} cents, {}",
            ctx.event.event_type, order, summary.lines, summary.total_cents, summary.status
        );
        *state.applied.entry(ctx.event.id).or_default() += 1;
        let _ = self.applied_tx.send(ctx.event.id);
        Ok(())
    }
}

/// A typed handler that applies `update` through the projection.
fn project<T: DomainEvent>(
    projection: &Arc<Projection>,
    update: fn(&mut OrderSummary, T),
) -> impl Fn(T, HandlerContext) -> std::future::Ready<Result<(), HandlerError>> + Send + Sync + 'static
{
    let projection = projection.clone();
    move |event, ctx| std::future::ready(projection.apply(&ctx, event, update))
}

/// The projection's inbox, watched: reports each message id it recognises as already handled,
/// so the run can show (and wait for) the duplicates being skipped.
struct WatchedInbox {
    inner: Arc<dyn Inbox>,
    duplicates: mpsc::UnboundedSender<String>,
}

#[longshore::async_trait]
impl Inbox for WatchedInbox {
    async fn is_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        let seen = self.inner.is_processed(consumer, message_id).await?;
        if seen {
            let _ = self.duplicates.send(message_id.to_string());
        }
        Ok(seen)
    }

    async fn mark_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        self.inner.mark_processed(consumer, message_id).await
    }
}

/// The projection consuming: its state, its consumer and what they report.
pub struct Running {
    pub projection: Arc<Projection>,
    pub consumer: ConsumerHandle,
    /// Ids of the events the projection applied.
    pub applied: mpsc::UnboundedReceiver<Uuid>,
    /// Message ids the inbox recognised as already handled.
    pub duplicates: mpsc::UnboundedReceiver<String>,
}

/// Subscribes the projection `name` to `events.#` for this run's orders (`prefix`).
///
/// It subscribes before anything is relayed, so the durable subscription exists and keeps
/// every event. One handler at a time: events of one order are applied in order, and a copy
/// is only checked against the inbox after the original was recorded.
pub async fn start(ls: &Longshore, name: &str, prefix: &str) -> Result<Running, BoxError> {
    let (applied_tx, applied) = mpsc::unbounded_channel();
    let (dup_tx, duplicates) = mpsc::unbounded_channel();
    let projection = Arc::new(Projection {
        prefix: prefix.to_string(),
        state: Mutex::new(ProjectionState::default()),
        applied_tx,
    });
    let inbox = Arc::new(WatchedInbox {
        inner: ls.inbox()?,
        duplicates: dup_tx,
    });
    let consumer = Consumer::new(ls.subscriber.clone(), Subscription::new(name, ["events.#"]))
        .concurrency(1)
        .inbox(inbox)
        .on_unknown(UnknownEventPolicy::Ack)
        .retry(RetryPolicy::exponential(3, Duration::from_millis(50)))
        .on(project(&projection, |s, e: OrderOpened| {
            s.customer = e.customer;
            s.status = "open";
        }))
        .on(project(&projection, |s, e: OrderLineAdded| {
            s.lines += 1;
            s.total_cents += u64::from(e.quantity) * e.unit_cents;
        }))
        .on(project(&projection, |s, e: OrderConfirmed| {
            s.total_cents = e.total_cents;
            s.status = "confirmed";
        }))
        .start()
        .await?;
    println!("projection {name:?} subscribed to events.#");
    Ok(Running {
        projection,
        consumer,
        applied,
        duplicates,
    })
}
