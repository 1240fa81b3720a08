//! Event-sourced orders: an aggregate kept in the event store, the transactional outbox relayed
//! to the broker, and an idempotent projection fed by the broker.
//!
//! 1. An `Order` aggregate is rebuilt from its stream and every command appends with
//!    `ExpectedVersion::Exact(<the version it read>)`. Two clerks edit one order at once: the
//!    second append is refused as a concurrency conflict, the clerk re-reads and decides again.
//! 2. The store wrote an outbox row per event in the same transaction; `OutboxRelay` publishes
//!    them (topic `events.<event_type>`) and marks them sent only after the broker confirmed.
//! 3. A projection consumer builds an order summary from the broker, with the inbox skipping
//!    message ids it already handled. The events are then published a second time, as a relay
//!    that crashed between publish and "mark sent" would: the projection applies each event
//!    exactly once (on NATS JetStream the broker itself drops the copies: its dedup window).
//! 4. The projection must match the aggregates rebuilt from the store, or the run fails.
//!
//! Runs on the embedded in-memory backend by default:
//!     cargo run --example event_sourced_orders
//! Any broker by URL (one binary built with `full` runs them all); a broker without an event
//! store of its own uses `LONGSHORE_STORE_URL` or, unset, an in-memory store:
//!     LONGSHORE_URL=nats://127.0.0.1:4222 cargo run --features full --example event_sourced_orders
//!     LONGSHORE_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//!       LONGSHORE_STORE_URL=postgres://postgres@127.0.0.1:5432/test \
//!       cargo run --features full --example event_sourced_orders
//!
//! The projection's subscription is durable and named `order-projection` (change it with
//! `--projection NAME` or `ORDER_PROJECTION`). It subscribes to `events.#` and ignores the
//! orders of other runs, so every outbox row is routable and reruns never see each other's
//! orders.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use longshore::prelude::*;
use longshore::{Inbox, Outbox, OutboxRelay, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest any single awaited step may take before the run fails.
const WAIT: Duration = Duration::from_secs(60);
/// Conflicts a command tolerates before giving up.
const MAX_CONFLICTS: u32 = 5;

// ---- events ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderOpened {
    order_id: String,
    customer: String,
}
impl DomainEvent for OrderOpened {
    const EVENT_TYPE: &'static str = "order_opened";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderLineAdded {
    order_id: String,
    sku: String,
    quantity: u32,
    unit_cents: u64,
}
impl DomainEvent for OrderLineAdded {
    const EVENT_TYPE: &'static str = "order_line_added";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderConfirmed {
    order_id: String,
    total_cents: u64,
}
impl DomainEvent for OrderConfirmed {
    const EVENT_TYPE: &'static str = "order_confirmed";
}

// ---- the aggregate --------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OrderLine {
    sku: String,
    quantity: u32,
    unit_cents: u64,
}

/// The write model: whatever its stream says, at `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Order {
    customer: Option<String>,
    lines: Vec<OrderLine>,
    confirmed: bool,
    /// The stream version this state reflects (0: no stream yet).
    version: u64,
}

impl Order {
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
        Ok(())
    }

    fn total_cents(&self) -> u64 {
        self.lines
            .iter()
            .map(|l| u64::from(l.quantity) * l.unit_cents)
            .sum()
    }

    fn status(&self) -> &'static str {
        match (&self.customer, self.confirmed) {
            (None, _) => "none",
            (Some(_), false) => "open",
            (Some(_), true) => "confirmed",
        }
    }
}

/// Rebuilds an order from its stream, in version order.
async fn load(store: &dyn EventStore, stream: &str) -> Result<Order, BoxError> {
    const PAGE: usize = 100;
    let mut order = Order::default();
    loop {
        let page = store.read_stream(stream, order.version + 1, PAGE).await?;
        for recorded in &page {
            order.apply(&recorded.event)?;
            order.version = recorded.version;
        }
        if page.len() < PAGE {
            return Ok(order);
        }
    }
}

#[derive(Debug, Clone)]
enum Command {
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

/// The business rules: what a command means for the order as it stands.
fn decide(order: &Order, stream: &str, command: &Command) -> Result<Vec<Event>, BoxError> {
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
    Ok(vec![event.with_aggregate_id(stream)])
}

/// Runs `command` against `order` (the state `who` read), appending with the version it read.
/// A concurrency conflict means someone appended in between: re-read the stream and decide
/// again. Returns the new state and how many conflicts it took.
async fn execute(
    store: &dyn EventStore,
    stream: &str,
    mut order: Order,
    command: &Command,
    who: &str,
) -> Result<(Order, u32), BoxError> {
    let mut conflicts = 0;
    loop {
        let events = decide(&order, stream, command)?;
        let expected = match order.version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        };
        match store.append(stream, expected, events.clone()).await {
            Ok(done) => {
                for event in &events {
                    order.apply(event)?;
                }
                order.version = done.version;
                println!(
                    "{who}: {command:?} -> {stream} v{} (appended with {expected:?})",
                    done.version
                );
                return Ok((order, conflicts));
            }
            Err(StoreError::WrongExpectedVersion { actual, .. }) if conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                println!(
                    "{who}: concurrency conflict on {stream}: read v{}, stream is at v{actual}; re-reading and deciding again",
                    order.version
                );
                order = load(store, stream).await?;
            }
            Err(e) if e.is_retryable() && conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                println!("{who}: transient store conflict ({e}); re-reading and retrying");
                order = load(store, stream).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

// ---- the projection (read model) ------------------------------------------------------------

/// One order as the projection sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OrderSummary {
    customer: String,
    lines: usize,
    total_cents: u64,
    status: &'static str,
    /// Events applied.
    version: u64,
}

#[derive(Default)]
struct ProjectionState {
    orders: BTreeMap<String, OrderSummary>,
    /// Times each event was applied: must end at exactly one.
    applied: HashMap<Uuid, u32>,
    /// Events of other runs' orders seen and ignored.
    ignored: u64,
}

/// Builds order summaries from the events of this run's orders (streams starting with
/// `prefix`); everything else on `events.#` is acknowledged and ignored.
struct Projection {
    prefix: String,
    state: Mutex<ProjectionState>,
    applied_tx: mpsc::UnboundedSender<Uuid>,
}

impl Projection {
    fn state(&self) -> MutexGuard<'_, ProjectionState> {
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

// ---- the run --------------------------------------------------------------------------------

/// What a run observed (already checked by [`run`]).
#[derive(Debug)]
pub struct Report {
    /// Backend name.
    pub backend: &'static str,
    /// Conflicts clerk B ran into (1).
    pub conflicts: u32,
    /// Events of this run appended to the store.
    pub events: usize,
    /// Events of this run the projection applied (each exactly once).
    pub applied: usize,
    /// Re-published copies the inbox skipped (0 where the broker dedups by message id).
    pub duplicates_skipped: usize,
    /// Whether the broker dropped the re-published copies itself.
    pub broker_dedup: bool,
    /// Rows the relay published (this run's and any other pending ones).
    pub relayed: u64,
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> Result<T, BoxError> {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(format!("{what}: channel closed").into()),
        Err(_) => Err(format!("{what}: nothing within {WAIT:?}").into()),
    }
}

/// Runs the whole scenario on `config`'s backend with the projection subscription
/// `projection`, and checks the outcome.
pub async fn run(config: &longshore::Config, projection_name: &str) -> Result<Report, BoxError> {
    let ls = longshore::connect_with(config).await?;
    println!("backend: {} ({config})", ls.backend);

    let (store, outbox): (Arc<dyn EventStore>, Arc<dyn Outbox>) = match (ls.store(), ls.outbox()) {
        (Ok(store), Some(outbox)) => (store, outbox),
        (Ok(_), None) => {
            return Err(
                "the event store has no outbox (postgres ?outbox=false?): nothing to relay".into(),
            )
        }
        (Err(e), _) => {
            // This broker keeps no events and LONGSHORE_STORE_URL is not set: say so and keep
            // this run's store and outbox in memory.
            println!("note: {e}; using an in-memory store and outbox for this run");
            let memory = longshore::memory::MemoryStore::with_outbox();
            (Arc::new(memory.clone()), Arc::new(memory))
        }
    };

    let run = Uuid::new_v4().simple().to_string()[..8].to_string();
    let prefix = format!("order-{run}-");

    // The projection subscribes before anything is relayed, so the durable subscription
    // exists and keeps every event. One handler at a time: events of one order are applied in
    // order, and a copy is only checked against the inbox after the original was recorded.
    let (applied_tx, mut applied_rx) = mpsc::unbounded_channel();
    let (dup_tx, mut dup_rx) = mpsc::unbounded_channel();
    let projection = Arc::new(Projection {
        prefix: prefix.clone(),
        state: Mutex::new(ProjectionState::default()),
        applied_tx,
    });
    let inbox = Arc::new(WatchedInbox {
        inner: ls.inbox(),
        duplicates: dup_tx,
    });
    let consumer = Consumer::new(
        ls.subscriber.clone(),
        Subscription::new(projection_name, ["events.#"]),
    )
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
    println!("projection {projection_name:?} subscribed to events.#");

    // ---- write side: commands against the aggregates ----
    let (o1, o2) = (format!("{prefix}1"), format!("{prefix}2"));
    let store_ref = store.as_ref();
    let place = Command::Place { customer: "ada" };
    execute(store_ref, &o1, Order::default(), &place, "checkout").await?;
    let kettle = Command::AddLine {
        sku: "kettle",
        quantity: 1,
        unit_cents: 2500,
    };
    execute(store_ref, &o1, load(store_ref, &o1).await?, &kettle, "ada").await?;

    // Two clerks open the same order (both read v2) and each adds a line.
    let clerk_a = load(store_ref, &o1).await?;
    let clerk_b = load(store_ref, &o1).await?;
    println!("clerk A and clerk B both read {o1} at v{}", clerk_a.version);
    let mugs = Command::AddLine {
        sku: "mug",
        quantity: 2,
        unit_cents: 800,
    };
    let (_, a_conflicts) = execute(store_ref, &o1, clerk_a, &mugs, "clerk A").await?;
    let tea = Command::AddLine {
        sku: "tea",
        quantity: 3,
        unit_cents: 450,
    };
    let (_, conflicts) = execute(store_ref, &o1, clerk_b, &tea, "clerk B").await?;
    let (order1, _) = execute(
        store_ref,
        &o1,
        load(store_ref, &o1).await?,
        &Command::Confirm,
        "ada",
    )
    .await?;
    match decide(&order1, &o1, &kettle) {
        Err(e) => println!("rejected without appending: {e}"),
        Ok(_) => return Err("a confirmed order accepted another line".into()),
    }
    execute(
        store_ref,
        &o2,
        Order::default(),
        &Command::Place { customer: "grace" },
        "checkout",
    )
    .await?;
    let spoons = Command::AddLine {
        sku: "spoon",
        quantity: 4,
        unit_cents: 300,
    };
    execute(
        store_ref,
        &o2,
        load(store_ref, &o2).await?,
        &spoons,
        "grace",
    )
    .await?;

    // Every event of this run, as stored (ids and order intact).
    let mut stored = Vec::new();
    for stream in [&o1, &o2] {
        stored.extend(store.read_stream(stream, 1, 100).await?);
    }
    let ids: HashSet<Uuid> = stored.iter().map(|r| r.event.id).collect();
    println!("store: {} events in {o1} and {o2}", stored.len());

    // ---- the outbox relay: store -> broker ----
    // Passes run to completion: stopping between passes never leaves rows claimed and
    // published but unmarked (`OutboxRelay::run` would drop an in-flight pass on stop).
    let relay = OutboxRelay::new(
        format!("order-relay-{run}"),
        outbox.clone(),
        ls.publisher.clone(),
    );
    let (stop_relay, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            let idle = match relay.run_once().await {
                Ok(pass) => {
                    sent += pass.sent as u64;
                    (pass.claimed == 0).then_some(Duration::from_millis(50))
                }
                Err(e) => {
                    // Unconfirmed rows were released; they go out on a later pass.
                    println!("relay: pass failed ({e}); retrying");
                    Some(Duration::from_millis(500))
                }
            };
            if let Some(idle) = idle {
                tokio::select! {
                    _ = &mut stopped => return sent,
                    _ = tokio::time::sleep(idle) => {}
                }
            } else if stopped.try_recv().is_ok() {
                return sent;
            }
        }
    });

    let mut applied = HashSet::new();
    while applied.len() < ids.len() {
        let id = recv(&mut applied_rx, "projection").await?;
        if ids.contains(&id) {
            applied.insert(id);
        }
    }
    let _ = stop_relay.send(());
    let relayed = relay_task.await?;
    println!(
        "relay published {relayed} outbox rows; the projection applied all {} events",
        ids.len()
    );

    // ---- at-least-once: the same messages again ----
    // A relay that crashes after the broker confirmed but before marking the rows sent
    // publishes them again after restarting. Do exactly that with the stored events.
    let publisher = EventPublisher::new(ls.publisher.clone());
    for recorded in &stored {
        publisher.publish(&recorded.event).await?;
    }
    let broker_dedup = ls.publisher.capabilities().dedup_window;
    let mut skipped = HashSet::new();
    if broker_dedup {
        println!(
            "re-published {} events; {} drops copies of a message id inside its dedup window",
            stored.len(),
            ls.backend
        );
    } else {
        println!(
            "re-published {} events; waiting for the inbox to skip each copy",
            stored.len()
        );
        while skipped.len() < ids.len() {
            let id = recv(&mut dup_rx, "inbox duplicates").await?;
            if let Ok(id) = id.parse::<Uuid>() {
                if ids.contains(&id) {
                    skipped.insert(id);
                }
            }
        }
        println!("inbox skipped {} duplicate deliveries", skipped.len());
    }

    let stats = consumer.shutdown(Duration::from_secs(10)).await;
    println!(
        "consumer: received={} acked={} duplicates={} dead_lettered={}",
        stats.received, stats.acked, stats.duplicates, stats.dead_lettered
    );

    // ---- check: projection == aggregates rebuilt from the store; each event applied once ----
    let state = std::mem::take(&mut *projection.state());
    let mut problems = Vec::new();
    for stream in [&o1, &o2] {
        let order = load(store_ref, stream).await?;
        let expected = OrderSummary {
            customer: order.customer.clone().unwrap_or_default(),
            lines: order.lines.len(),
            total_cents: order.total_cents(),
            status: order.status(),
            version: order.version,
        };
        let got = state
            .orders
            .get(stream.as_str())
            .cloned()
            .unwrap_or_default();
        println!(
            "{stream}: store v{} {} {} lines {} cents | projection v{} {} {} lines {} cents",
            expected.version,
            expected.status,
            expected.lines,
            expected.total_cents,
            got.version,
            got.status,
            got.lines,
            got.total_cents
        );
        if got != expected {
            problems.push(format!("projection of {stream} differs from the store"));
        }
    }
    if let Some((id, n)) = state.applied.iter().find(|(_, n)| **n != 1) {
        problems.push(format!("event {id} applied {n} times"));
    }
    if state.applied.len() != ids.len() {
        problems.push(format!(
            "{} of {} events applied",
            state.applied.len(),
            ids.len()
        ));
    }
    if a_conflicts != 0 || conflicts != 1 {
        problems.push(format!(
            "expected clerk B (only) to hit one conflict, got A={a_conflicts} B={conflicts}"
        ));
    }
    if stored.len() != 7 || order1.version != 5 || order1.total_cents() != 5450 {
        problems.push("unexpected store contents".to_string());
    }
    if stats.dead_lettered > 0 {
        // Only events of other producers can get here (this run's were all applied once):
        // an event type of ours with a body our types cannot read.
        println!(
            "note: {} foreign events on events.# were dead-lettered to dlq.{projection_name}",
            stats.dead_lettered
        );
    }
    if state.ignored > 0 {
        println!(
            "projection ignored {} events of other orders on events.#",
            state.ignored
        );
    }
    ls.publisher.close().await?;
    ls.subscriber.close().await?;
    if !problems.is_empty() {
        return Err(format!("unexpected outcome: {}", problems.join("; ")).into());
    }
    println!("ok");
    Ok(Report {
        backend: ls.backend,
        conflicts,
        events: stored.len(),
        applied: state.applied.len(),
        duplicates_skipped: skipped.len(),
        broker_dedup,
        relayed,
    })
}

fn projection_name() -> Result<String, BoxError> {
    let mut args = std::env::args().skip(1);
    let mut name = std::env::var("ORDER_PROJECTION")
        .ok()
        .filter(|v| !v.trim().is_empty());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--projection" => name = Some(args.next().ok_or("--projection needs a name")?),
            "-h" | "--help" => {
                println!(
                    "usage: event_sourced_orders [--projection NAME]\n\
                     env: LONGSHORE_URL (broker, default memory://), LONGSHORE_STORE_URL (event store),\n\
                     ORDER_PROJECTION (projection subscription, default order-projection)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(name.unwrap_or_else(|| "order-projection".to_string()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let name = projection_name()?;
    run(&longshore::Config::from_env(), &name).await?;
    Ok(())
}
