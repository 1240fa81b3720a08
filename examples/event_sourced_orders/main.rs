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

mod aggregate;
mod events;
mod projection;
mod relay;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use longshore::prelude::*;

use aggregate::{execute, execute_on, Command, Order};
use projection::{OrderSummary, ProjectionState};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// Runs the whole scenario on `config`'s backend with the projection subscription
/// `projection`, and checks the outcome.
pub async fn run(config: &longshore::Config, projection_name: &str) -> Result<Report, BoxError> {
    let ls = longshore::connect_with(config).await?;
    println!("backend: {} ({config})", ls.backend);
    let (store, outbox) = store_and_outbox(&ls)?;

    let run = Uuid::new_v4().simple().to_string()[..8].to_string();
    let prefix = format!("order-{run}-");
    let mut projection = projection::start(&ls, projection_name, &prefix).await?;

    // ---- write side: commands against the aggregates ----
    let orders = write_orders(store.as_ref(), &run).await?;

    let (stored, ids) = stored_events(store.as_ref(), &orders).await?;

    // ---- the outbox relay: store -> broker ----
    let relayed = relay::until_applied(
        format!("order-relay-{run}"),
        outbox,
        ls.publisher.clone(),
        &ids,
        &mut projection.applied,
    )
    .await?;
    println!(
        "relay published {relayed} outbox rows; the projection applied all {} events",
        ids.len()
    );

    // ---- at-least-once: the same messages again ----
    let (broker_dedup, skipped) =
        relay::republish(&ls, &stored, &ids, &mut projection.duplicates).await?;

    let stats = projection.consumer.shutdown(Duration::from_secs(10)).await;
    println!(
        "consumer: received={} acked={} duplicates={} dead_lettered={}",
        stats.received, stats.acked, stats.duplicates, stats.dead_lettered
    );

    // ---- check: projection == aggregates rebuilt from the store; each event applied once ----
    let state = std::mem::take(&mut *projection.projection.state());
    let problems = check(store.as_ref(), &orders, &stored, &ids, &state).await?;
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
        conflicts: orders.conflicts,
        events: stored.len(),
        applied: state.applied.len(),
        duplicates_skipped: skipped.len(),
        broker_dedup,
        relayed,
    })
}

/// An event store and the outbox its appends fill.
type StoreAndOutbox = (Arc<dyn EventStore>, Arc<dyn Outbox>);

/// The event store and its outbox: the backend's, or, where it keeps no events and
/// `LONGSHORE_STORE_URL` is not set, an in-memory pair for this run.
fn store_and_outbox(ls: &Longshore) -> Result<StoreAndOutbox, BoxError> {
    match (ls.store(), ls.outbox()) {
        (Ok(store), Ok(outbox)) => Ok((store, outbox)),
        (Ok(_), Err(e)) => Err(format!("{e}: nothing to relay").into()),
        (Err(e), _) => {
            println!("note: {e}; using an in-memory store and outbox for this run");
            let memory = longshore::memory::MemoryStore::with_outbox();
            Ok((Arc::new(memory.clone()), Arc::new(memory)))
        }
    }
}

/// The write side's outcome.
struct Orders {
    /// The order ids (streams `order-<id>`): the one two clerks edit at once, and another.
    ids: [String; 2],
    o1: String,
    o2: String,
    /// `o1` once confirmed.
    order1: Order,
    /// Conflicts clerk A and clerk B ran into.
    a_conflicts: u32,
    conflicts: u32,
}

/// Places two orders of this run, with two clerks editing the first one at once.
async fn write_orders(store: &dyn EventStore, run: &str) -> Result<Orders, BoxError> {
    let ids = [format!("{run}-1"), format!("{run}-2")];
    let (o1, o2) = (Order::stream_id(&ids[0]), Order::stream_id(&ids[1]));
    let place = Command::Place { customer: "ada" };
    execute(store, &ids[0], &place, "checkout").await?;
    let kettle = Command::add_line("kettle", 1, 2500);
    execute(store, &ids[0], &kettle, "ada").await?;

    // Two clerks open the same order (both read v2) and each adds a line.
    let clerk_a = store.load::<Order>(&ids[0]).await?.state;
    let clerk_b = store.load::<Order>(&ids[0]).await?.state;
    println!("clerk A and clerk B both read {o1} at v{}", clerk_a.version);
    let mugs = Command::add_line("mug", 2, 800);
    let a_conflicts = execute_on(store, &ids[0], &clerk_a, &mugs, "clerk A").await?;
    let tea = Command::add_line("tea", 3, 450);
    let conflicts = execute_on(store, &ids[0], &clerk_b, &tea, "clerk B").await?;
    let order1 = execute(store, &ids[0], &Command::Confirm, "ada").await?;
    match execute(store, &ids[0], &kettle, "ada").await {
        Err(e) => println!("rejected without appending: {e}"),
        Ok(_) => return Err("a confirmed order accepted another line".into()),
    }
    let grace = Command::Place { customer: "grace" };
    execute(store, &ids[1], &grace, "checkout").await?;
    let spoons = Command::add_line("spoon", 4, 300);
    execute(store, &ids[1], &spoons, "grace").await?;
    Ok(Orders {
        ids,
        o1,
        o2,
        order1,
        a_conflicts,
        conflicts,
    })
}

/// Every event of this run, as stored (ids and order intact), and their ids.
async fn stored_events(
    store: &dyn EventStore,
    orders: &Orders,
) -> Result<(Vec<RecordedEvent>, HashSet<Uuid>), BoxError> {
    let mut stored = Vec::new();
    for stream in [&orders.o1, &orders.o2] {
        stored.extend(store.read_stream(stream, 1, 100).await?);
    }
    let ids: HashSet<Uuid> = stored.iter().map(|r| r.event.id).collect();
    println!(
        "store: {} events in {} and {}",
        stored.len(),
        orders.o1,
        orders.o2
    );
    Ok((stored, ids))
}

/// Compares the projection's `state` with the aggregates rebuilt from the store, printing
/// both, and checks each stored event was applied exactly once; returns what is wrong.
async fn check(
    store: &dyn EventStore,
    orders: &Orders,
    stored: &[RecordedEvent],
    ids: &HashSet<Uuid>,
    state: &ProjectionState,
) -> Result<Vec<String>, BoxError> {
    let mut problems = Vec::new();
    for (id, stream) in orders.ids.iter().zip([&orders.o1, &orders.o2]) {
        let order = store.load::<Order>(id).await?.state;
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
    let (a, b) = (orders.a_conflicts, orders.conflicts);
    if a != 0 || b != 1 {
        problems.push(format!(
            "expected clerk B (only) to hit one conflict, got A={a} B={b}"
        ));
    }
    let order1 = &orders.order1;
    if stored.len() != 7 || order1.version != 5 || order1.total_cents() != 5450 {
        problems.push("unexpected store contents".to_string());
    }
    Ok(problems)
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
