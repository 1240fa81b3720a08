//! The README's example: a service write, its event and the outbox row in one transaction,
//! relayed to the Postgres queue, then read back in global order.
//!
//! `cargo run -p longshore-postgres --example outbox` (server at `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`).
use longshore_core::{Broker, Event, EventStore, ExpectedVersion, OutboxRelay};
use longshore_postgres::{sqlx, PgBroker};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
        + "?schema=orders";
    // One URL, one pool: the queue, the store, the outbox and the inbox all use it.
    // Migrations run on connect.
    let broker = PgBroker::connect_url(&url).await?;
    let store = broker.store();

    // A service's own write, its event and the outbox row commit in one transaction.
    let order = uuid::Uuid::now_v7().to_string();
    let mut uow = store.begin().await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS orders.orders (id text PRIMARY KEY)")
        .execute(uow.connection())
        .await?;
    sqlx::query("INSERT INTO orders.orders (id) VALUES ($1)")
        .bind(&order)
        .execute(uow.connection())
        .await?;
    let stream = format!("order-{order}");
    let created = Event::new("order_created", serde_json::json!({"order_id": order}))
        .with_aggregate_id(&stream);
    uow.append(&stream, ExpectedVersion::NoStream, vec![created])
        .await?;
    uow.commit().await?;

    // The relay moves outbox rows to any publisher (here: the Postgres queue itself).
    let relay = OutboxRelay::new("relay-1", Arc::new(store.clone()), broker.publisher());
    relay.run_once().await?;

    for recorded in store.read_all(0, 100).await? {
        println!(
            "{} {} {}",
            recorded.position, recorded.stream_id, recorded.event.event_type
        );
    }
    broker.close().await?;
    Ok(())
}
