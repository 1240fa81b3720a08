//! store-append-1, store-append-10, read-all and relay: the event store and its outbox.

use std::time::Instant;

use longshore::Longshore;
use longshore_core::{Event, EventStore, ExpectedVersion, OutboxRelay, Subscription};

use super::side::Side;
use crate::backend::{Backend, Env};
use crate::measure::{Sample, Timed};
use crate::raw::sqlite::writer;
use crate::store::{postgres, sqlite, store_read_all};
use crate::work::{self, unique};

/// Events per page of `read_all`.
pub const PAGE: usize = 500;
/// Rows per relay pass.
const RELAY_BATCH: usize = 100;

/// `txs` transactions of `per_tx` events each, over 100 streams; latency per transaction.
pub async fn append(
    env: &Env,
    ls: &Longshore,
    side: Side,
    txs: usize,
    per_tx: usize,
) -> crate::Result<Sample> {
    let batches: Vec<(String, Vec<Event>)> = (0..txs)
        .map(|i| {
            let s = format!("order-{}", i % 100);
            let e = work::events(per_tx, &s, "order_created");
            (s, e)
        })
        .collect();
    let store = ls.store()?;
    let mut lat = Vec::with_capacity(txs);
    let t = Timed::start();
    for (stream, events) in batches {
        let s = Instant::now();
        match side {
            Side::Longshore => {
                store.append(&stream, ExpectedVersion::Any, events).await?;
            }
            Side::Raw if env.backend == Backend::Sqlite => {
                let lite = env.lite.as_ref().ok_or("no raw sqlite client")?;
                sqlite::raw_append(&lite.writer, &stream, &events).await?;
            }
            Side::Raw => {
                let pg = env.pg.as_ref().ok_or("no raw pool")?;
                postgres::raw_append(&pg.pool, &pg.schema, &stream, &events).await?;
            }
        }
        lat.push(s.elapsed().as_micros() as u64);
    }
    Ok(t.finish(txs * per_tx, lat))
}

/// Appends `n` events of `event_type` (10 per transaction) to the streams `<prefix>-0` to
/// `<prefix>-99` in turn: what `read_all` reads and the relay publishes.
pub async fn fill_store(
    store: &dyn EventStore,
    n: usize,
    prefix: &str,
    event_type: &str,
) -> crate::Result<()> {
    let mut left = n;
    let mut i = 0;
    while left > 0 {
        let k = left.min(10);
        let stream = format!("{prefix}-{}", i % 100);
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                work::events(k, &stream, event_type),
            )
            .await?;
        left -= k;
        i += 1;
    }
    Ok(())
}

/// Reads the whole store (filled with `n` events) in pages of [`PAGE`]. `schema`: the
/// store's Postgres schema, or its SQLite file.
pub async fn read_all(
    env: &Env,
    ls: &Longshore,
    schema: Option<&str>,
    side: Side,
    n: usize,
) -> crate::Result<Sample> {
    let store = ls.store()?;
    // The raw SQLite side's connection to the store's file, opened before the timing.
    let lite = match (side, env.backend) {
        (Side::Raw, Backend::Sqlite) => {
            let path = std::path::Path::new(schema.ok_or("no sqlite file")?);
            Some(writer(path, env.full).await?)
        }
        _ => None,
    };
    let t = Timed::start();
    let (read, lat) = match side {
        Side::Longshore => store_read_all(&*store, PAGE).await?,
        Side::Raw => {
            let start = Instant::now();
            let read = match &lite {
                Some(pool) => sqlite::raw_read_all(pool, PAGE as i64).await?,
                None => {
                    let pg = env.pg.as_ref().ok_or("no raw pool")?;
                    let schema = schema.ok_or("no schema")?;
                    postgres::raw_read_all(&pg.pool, schema, PAGE as i64, true).await?
                }
            };
            // One number for the whole read: per page is in the longshore column.
            let pages = read.div_ceil(PAGE).max(1) as u64;
            (read, vec![start.elapsed().as_micros() as u64 / pages])
        }
    };
    let sample = t.finish(read, lat);
    if let Some(pool) = lite {
        pool.close().await;
    }
    if read != n {
        return Err(format!("read {read} events, expected {n}").into());
    }
    Ok(sample)
}

/// Relays `n` freshly appended outbox rows to the broker in passes of [`RELAY_BATCH`].
pub async fn relay(
    env: &Env,
    ls: &Longshore,
    schema: Option<&str>,
    side: Side,
    n: usize,
) -> crate::Result<Sample> {
    let event_type = unique("relay");
    let topic = format!("events.{event_type}");
    let sub = Subscription::new(unique("lsb"), [topic.clone()]);
    ls.subscriber.ensure_subscription(&sub).await?;
    env.raw.prepare(&sub).await?;
    fill_store(&*ls.store()?, n, "relay", &event_type).await?;
    // The raw SQLite relay's connection to the store's file, opened before the timing.
    let lite = match (side, env.backend) {
        (Side::Raw, Backend::Sqlite) => {
            let path = std::path::Path::new(schema.ok_or("no sqlite file")?);
            Some(writer(path, env.full).await?)
        }
        _ => None,
    };
    let mut lat = Vec::new();
    let mut sent = 0;
    let t = Timed::start();
    match side {
        Side::Longshore => {
            let outbox = ls.outbox()?;
            let relay = OutboxRelay::new(unique("relay"), outbox, ls.publisher.clone())
                .batch_size(RELAY_BATCH);
            loop {
                let s = Instant::now();
                let r = relay.run_once().await?;
                lat.push(s.elapsed().as_micros() as u64);
                sent += r.sent;
                if r.claimed == 0 {
                    break;
                }
            }
        }
        Side::Raw => loop {
            let s = Instant::now();
            let k = match &lite {
                Some(pool) => sqlite::raw_relay_pass(pool, &*env.raw, RELAY_BATCH as i64).await?,
                None => {
                    let pg = env.pg.as_ref().ok_or("no raw pool")?;
                    let schema = schema.ok_or("no schema")?;
                    postgres::raw_relay_pass(&pg.pool, schema, &*env.raw, RELAY_BATCH as i64)
                        .await?
                }
            };
            lat.push(s.elapsed().as_micros() as u64);
            sent += k;
            if k == 0 {
                break;
            }
        },
    }
    let sample = t.finish(sent, lat);
    if let Some(pool) = lite {
        pool.close().await;
    }
    if sent != n {
        return Err(format!("relayed {sent} of {n}").into());
    }
    env.raw.cleanup(&sub).await?;
    Ok(sample)
}
