//! Inventory: a whole service in one file. It consumes placed orders, reserves stock in an
//! event-sourced `Stock` aggregate, publishes what happened through the transactional outbox,
//! and answers one health for all of it (`/health`, `/ready` with `health-server`, in `full`).
//! The same code on every backend, by URL:
//!     cargo run --example inventory_service
//!     LONGSHORE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --features postgres --example inventory_service
//! A broker without an event store (RabbitMQ, NATS, Kafka) takes one from LONGSHORE_STORE_URL.

use std::sync::Arc;
use std::time::Duration;

use longshore::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub sku: String,
    pub qty: i64,
}
#[derive(Serialize, Deserialize)]
pub struct StockReceived {
    pub sku: String,
    pub qty: i64,
}
#[derive(Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: String,
    pub sku: String,
    pub qty: i64,
}
#[derive(Serialize, Deserialize)]
pub struct StockShort {
    pub order_id: String,
    pub sku: String,
}
impl DomainEvent for OrderPlaced {
    const EVENT_TYPE: &'static str = "order_placed";
}
impl DomainEvent for StockReceived {
    const EVENT_TYPE: &'static str = "stock_received";
}
impl DomainEvent for StockReserved {
    const EVENT_TYPE: &'static str = "stock_reserved";
}
impl DomainEvent for StockShort {
    const EVENT_TYPE: &'static str = "stock_short";
}

/// One SKU's stock: the fold of its stream `stock-<sku>`.
#[derive(Default)]
struct Stock {
    on_hand: i64,
}

impl Aggregate for Stock {
    const CATEGORY: &'static str = "stock";
    fn apply(&mut self, event: &Event) -> Result<(), BoxError> {
        match event.event_type.as_str() {
            StockReceived::EVENT_TYPE => self.on_hand += event.to_typed::<StockReceived>()?.qty,
            StockReserved::EVENT_TYPE => self.on_hand -= event.to_typed::<StockReserved>()?.qty,
            _ => {} // a shortage changes nothing on hand
        }
        Ok(())
    }
}

/// The rule: reserve what is on hand, else record the shortage. The event's id derives from
/// the order's, so a redelivered order appends nothing twice.
fn reserve(stock: &Stock, order: &OrderPlaced, cause: &Event) -> Result<Vec<Event>, BoxError> {
    if order.qty <= 0 {
        return Err(format!("{} reserves nothing", order.order_id).into()); // permanent
    }
    let (order_id, sku, qty) = (order.order_id.clone(), order.sku.clone(), order.qty);
    let event = match stock.on_hand >= qty {
        true => Event::from_typed(&StockReserved { order_id, sku, qty })?,
        false => Event::from_typed(&StockShort { order_id, sku })?,
    };
    Ok(vec![event.caused_by(cause).with_id_derived_from(cause, 0)])
}

/// What the handlers share.
struct App {
    store: Arc<dyn EventStore>,
    /// This instance's SKUs start with it (other runs share the broker).
    shop: String,
}

/// What a run saw: order ids by outcome, and whether everything was healthy.
#[derive(Debug)]
pub struct Report {
    pub backend: &'static str,
    pub reserved: Vec<String>,
    pub short: Vec<String>,
    /// Events in the SKU's stream: received, 2 reserved, 1 short (no copy of o-1's).
    pub stock_version: u64,
    pub ready: bool,
}

pub async fn run(config: &Config, shop: &str) -> Result<Report, BoxError> {
    let ls = longshore::connect_with(config).await?;
    let store = ls.store()?; // where the backend has none, the error names LONGSHORE_STORE_URL
    let app = Arc::new(App {
        store: store.clone(),
        shop: shop.to_string(),
    });
    // Orders in: each runs the Stock rule (load, decide, append; retried on a conflict).
    let sub = Subscription::new(format!("inventory-{shop}"), ["events.order_placed"]);
    let orders = Consumer::new(ls.subscriber.clone(), sub)
        .with_state(app.clone())
        .on(|app, order: OrderPlaced, ctx| async move {
            if order.sku.starts_with(&app.shop) {
                let decide = |s: &Stock| reserve(s, &order, &ctx.event);
                app.store.execute(&order.sku, decide).await?;
            }
            Ok(())
        })
        .start()
        .await?;
    ls.watch_consumer("orders", &orders);
    // The outbox's events, as a downstream service sees them (subscribed before the relay runs).
    let topics = ["events.stock_reserved", "events.stock_short"];
    let sub = Subscription::new(format!("inventory-out-{shop}"), topics);
    let (tx, mut outcomes) = mpsc::unbounded_channel();
    let watcher = Consumer::new(ls.subscriber.clone(), sub)
        .with_state(tx)
        .on(|tx, r: StockReserved, _| async move { Ok(tx.send((r.sku, r.order_id, true))?) })
        .on(|tx, s: StockShort, _| async move { Ok(tx.send((s.sku, s.order_id, false))?) })
        .start()
        .await?;
    ls.watch_consumer("outcomes", &watcher);
    let relay = ls.spawn_relay(format!("inventory-relay-{shop}"))?; // outbox -> broker, watched
    #[cfg(feature = "health-server")] // GET /health, /ready, /metrics
    let http = ls.serve_health(([127, 0, 0, 1], 0).into()).await?;
    // Stock arrives, then three orders of 2 from 5 on hand, the first one delivered twice.
    let sku = format!("{shop}-kettle");
    let received = Event::new(StockReceived::EVENT_TYPE, json!({ "sku": sku, "qty": 5 }));
    let seed = |_: &Stock| Ok(vec![received.clone()]);
    store.execute(&sku, seed).await?;
    let events = EventPublisher::new(ls.publisher.clone());
    for n in ["o-1", "o-2", "o-3"] {
        let (order_id, sku, qty) = (format!("{shop}-{n}"), sku.clone(), 2);
        let order = OrderPlaced { order_id, sku, qty };
        let event = Event::from_typed(&order)?.with_aggregate_id(&order.order_id);
        events.publish(&event).await?;
        if n == "o-1" {
            events.publish(&event).await?; // at-least-once: the same message again
        }
    }
    let (mut reserved, mut short) = (Vec::new(), Vec::new());
    while reserved.len() + short.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(60), outcomes.recv()).await;
        let next = next.map_err(|_| "no outcome within 60 s")?;
        match next.ok_or("watcher stopped")? {
            (of, order, true) if of == sku => reserved.push(order),
            (of, order, false) if of == sku => short.push(order),
            _ => {} // another shop's
        }
    }
    let ready = ls.health().await.is_ready(); // broker, store, the watched consumers and relay
    #[cfg(feature = "health-server")]
    let ready = ready && http_ready(http.local_addr()).await?;
    orders.shutdown(Duration::from_secs(10)).await;
    watcher.shutdown(Duration::from_secs(10)).await;
    relay.shutdown(Duration::from_secs(10)).await;
    let stock_version = store.load::<Stock>(&sku).await?.version;
    ls.close().await?;
    Ok(Report {
        backend: ls.backend,
        reserved,
        short,
        stock_version,
        ready,
    })
}

/// Asks the health endpoint, as a load balancer would.
#[cfg(feature = "health-server")]
async fn http_ready(addr: std::net::SocketAddr) -> Result<bool, BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /ready HTTP/1.0\r\n\r\n").await?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await?;
    Ok(answer.split_whitespace().nth(1) == Some("200"))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let shop = Uuid::new_v4().simple().to_string()[..8].to_string();
    let report = run(&Config::from_env(), &shop).await?;
    println!("{report:?}");
    if report.reserved.len() != 2 || report.short.len() != 1 || report.stock_version != 4 {
        return Err("unexpected outcome".into());
    }
    Ok(())
}
