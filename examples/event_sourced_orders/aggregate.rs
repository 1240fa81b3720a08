//! The write model: an `Order` aggregate (its state is the fold of its stream) and the
//! business rules that turn commands into events. Loading, appending with the expected
//! version and retrying on a conflict are `store.execute::<Order>(id, decide)`.

use longshore::prelude::*;
use longshore::BoxError;

use super::events::{OrderConfirmed, OrderLineAdded, OrderOpened};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderLine {
    sku: String,
    quantity: u32,
    unit_cents: u64,
}

/// The write model: whatever its stream says, at `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Order {
    pub customer: Option<String>,
    pub lines: Vec<OrderLine>,
    confirmed: bool,
    /// Events folded in: the stream version this state reflects (0: no stream yet).
    pub version: u64,
}

impl Aggregate for Order {
    /// Order `id` lives in stream `order-<id>`.
    const CATEGORY: &'static str = "order";

    fn apply(&mut self, event: &Event) -> Result<(), BoxError> {
        match event.event_type.as_str() {
            OrderOpened::EVENT_TYPE => {
                self.customer = Some(event.to_typed::<OrderOpened>()?.customer);
            }
            OrderLineAdded::EVENT_TYPE => {
                let line = event.to_typed::<OrderLineAdded>()?;
                self.lines.push(OrderLine {
                    sku: line.sku,
                    quantity: line.quantity,
                    unit_cents: line.unit_cents,
                });
            }
            OrderConfirmed::EVENT_TYPE => self.confirmed = true,
            other => return Err(format!("order stream holds an unknown event {other:?}").into()),
        }
        // Versions are contiguous from 1, so counting the events gives the version.
        self.version += 1;
        Ok(())
    }
}

impl Order {
    pub fn total_cents(&self) -> u64 {
        self.lines
            .iter()
            .map(|l| u64::from(l.quantity) * l.unit_cents)
            .sum()
    }

    pub fn status(&self) -> &'static str {
        match (&self.customer, self.confirmed) {
            (None, _) => "none",
            (Some(_), false) => "open",
            (Some(_), true) => "confirmed",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Command {
    Place {
        customer: &'static str,
    },
    AddLine {
        sku: &'static str,
        quantity: u32,
        unit_cents: u64,
    },
    Confirm,
}

impl Command {
    /// Adds `quantity` of `sku` at `unit_cents` each.
    pub fn add_line(sku: &'static str, quantity: u32, unit_cents: u64) -> Command {
        Command::AddLine {
            sku,
            quantity,
            unit_cents,
        }
    }
}

/// The business rules: what a command means for the order as it stands. A pure function of
/// the state, so `execute` can run it again after a conflict.
pub fn decide(order: &Order, stream: &str, command: &Command) -> Result<Vec<Event>, BoxError> {
    let event = match command {
        Command::Place { customer } => {
            if order.version > 0 {
                return Err(format!("{stream} was already placed").into());
            }
            Event::from_typed(&OrderOpened {
                order_id: stream.into(),
                customer: (*customer).into(),
            })?
        }
        Command::AddLine {
            sku,
            quantity,
            unit_cents,
        } => {
            if order.customer.is_none() || order.confirmed {
                return Err(format!("{stream} takes no more lines ({})", order.status()).into());
            }
            Event::from_typed(&OrderLineAdded {
                order_id: stream.into(),
                sku: (*sku).into(),
                quantity: *quantity,
                unit_cents: *unit_cents,
            })?
        }
        Command::Confirm => {
            if order.lines.is_empty() || order.confirmed {
                return Err(format!("{stream} cannot be confirmed ({})", order.status()).into());
            }
            Event::from_typed(&OrderConfirmed {
                order_id: stream.into(),
                total_cents: order.total_cents(),
            })?
        }
    };
    Ok(vec![event])
}

/// Runs `command` against order `id` on behalf of `who`; returns the new state.
pub async fn execute(
    store: &dyn EventStore,
    id: &str,
    command: &Command,
    who: &str,
) -> Result<Order, BoxError> {
    let stream = Order::stream_id(id);
    let done = store
        .execute::<Order>(id, |order| decide(order, &stream, command))
        .await?;
    println!("{who}: {command:?} -> {stream} v{}", done.version);
    Ok(done.state)
}

/// What `execute` does on a conflict, spelled out for a clerk who decided on a state read
/// earlier (`read`): the append with that version is refused when someone appended since,
/// and the clerk decides again on the fresh state. Returns the conflicts met.
pub async fn execute_on(
    store: &dyn EventStore,
    id: &str,
    read: &Order,
    command: &Command,
    who: &str,
) -> Result<u32, BoxError> {
    let stream = Order::stream_id(id);
    let events = decide(read, &stream, command)?.into_iter();
    let events = events.map(|e| e.with_aggregate_id(&stream)).collect();
    let expected = ExpectedVersion::Exact(read.version);
    match store.append(&stream, expected, events).await {
        Ok(done) => {
            println!(
                "{who}: {command:?} -> {stream} v{} ({expected:?})",
                done.version
            );
            Ok(0)
        }
        Err(longshore::StoreError::WrongExpectedVersion { actual, .. }) => {
            println!(
                "{who}: concurrency conflict on {stream}: read v{}, stream is at v{actual}; deciding again",
                read.version
            );
            execute(store, id, command, who).await?;
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}
