//! Throughput of the Postgres adapter beside raw sqlx doing the same work in the same run.
//!
//! `cargo bench -p longshore-postgres --bench throughput` (needs the server at `DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`). Not a timed test: it prints numbers.
//!
//! - append, 1 and 10 events per transaction, outbox on: `PgStore::append` vs. a hand-written
//!   transaction inserting the same rows (stream upsert, events, outbox rows) with plain
//!   `INSERT`s into an identical schema;
//! - read_all in pages of 500: `PgStore::read_all` (watermark, decoding into `RecordedEvent`)
//!   vs. the same `SELECT` without the watermark building the same `RecordedEvent`s, and vs. the
//!   `SELECT` only fetching the columns;
//! - relay: `OutboxRelay` draining the outbox into the in-memory broker.
//!
//! Adapter and raw alternate in small chunks (appends) or whole passes (reads), switching which
//! goes first, so both see the same load; the ratio is adapter / raw throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use longshore_core::memory::MemoryBroker;
use longshore_core::{Codec, Event, EventStore, ExpectedVersion, JsonCodec, OutboxRelay};
use longshore_postgres::sqlx::{self, PgPool, Row};
use longshore_postgres::{PgConfig, PgStore};

const STREAMS: usize = 100;
const ROUNDS: usize = 3;

fn schema(tag: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("lst_{secs}_bench_{tag}_{}", &id[..6])
}

fn events(n: usize, stream: &str) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::new(
                "order_created",
                serde_json::json!({"order_id": format!("o-{i}"), "total_cents": 1234, "lines": [1, 2, 3]}),
            )
            .with_aggregate_id(stream)
            .with_correlation_id("bench")
        })
        .collect()
}

/// The raw baseline: the same rows as `PgStore::append` writes, with plain statements.
async fn raw_append(pool: &PgPool, schema: &str, stream: &str, batch: &[Event]) {
    let mut tx = pool.begin().await.expect("begin");
    let version: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".streams AS s (stream_id, version) VALUES ($1, $2) \
         ON CONFLICT (stream_id) DO UPDATE SET version = s.version + $2 RETURNING s.version"
    )))
    .bind(stream)
    .bind(batch.len() as i64)
    .fetch_one(&mut *tx)
    .await
    .expect("stream upsert");
    let first = version - batch.len() as i64 + 1;
    let mut events = sqlx::QueryBuilder::new(format!(
        "INSERT INTO \"{schema}\".events (position, stream_id, version, event_id, event_type, data, \
         occurred_at, aggregate_id, correlation_id, causation_id, traceparent, headers) "
    ));
    events.push_values(batch.iter().enumerate(), |mut b, (i, e)| {
        b.push("((pg_current_xact_id()::text)::bigint << 16) + ")
            .push_bind_unseparated(i as i64)
            .push_bind(stream)
            .push_bind(first + i as i64)
            .push_bind(e.id)
            .push_bind(e.event_type.clone())
            .push_bind(serde_json::to_string(&e.data).expect("json"))
            .push_unseparated("::json")
            .push_bind(e.timestamp)
            .push_bind(e.metadata.aggregate_id.clone())
            .push_bind(e.metadata.correlation_id.clone())
            .push_bind(e.metadata.causation_id.clone())
            .push_bind(e.metadata.traceparent.clone())
            .push_bind(serde_json::to_string(&e.metadata.headers).expect("json"))
            .push_unseparated("::jsonb");
    });
    events.build().execute(&mut *tx).await.expect("events");
    let mut outbox = sqlx::QueryBuilder::new(format!(
        "INSERT INTO \"{schema}\".outbox (topic, message_id, message_key, headers, payload) "
    ));
    let messages: Vec<_> = batch
        .iter()
        .map(|e| (e.default_topic(), JsonCodec.encode(e).expect("encode")))
        .collect();
    outbox.push_values(messages, |mut b, (topic, m)| {
        b.push_bind(topic)
            .push_bind(m.id)
            .push_bind(m.key)
            .push_bind(serde_json::to_string(&m.headers).expect("json"))
            .push_unseparated("::jsonb")
            .push_bind(m.payload.to_vec());
    });
    outbox.build().execute(&mut *tx).await.expect("outbox");
    tx.commit().await.expect("commit");
}

async fn raw_read_all(pool: &PgPool, schema: &str, decode: bool, watermark: bool) -> usize {
    let bound = if watermark {
        " AND position < (SELECT ((pg_snapshot_xmin(pg_current_snapshot())::text)::bigint << 16))"
    } else {
        ""
    };
    let sql = format!(
        "SELECT position, stream_id, version, event_id, event_type, data::text AS data, occurred_at, \
         aggregate_id, correlation_id, causation_id, traceparent, headers::text AS headers \
         FROM \"{schema}\".events WHERE position > $1{bound} ORDER BY position LIMIT 500"
    );
    let mut after = 0_i64;
    let mut n = 0;
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(after)
            .fetch_all(pool)
            .await
            .expect("read");
        if rows.is_empty() {
            return n;
        }
        // Like `read_all`, a page comes back as one Vec of events.
        let mut page = Vec::with_capacity(rows.len());
        for row in &rows {
            after = row.get("position");
            let stream_id: String = row.get("stream_id");
            let version: i64 = row.get("version");
            let id: uuid::Uuid = row.get("event_id");
            let event_type: String = row.get("event_type");
            let data: String = row.get("data");
            let timestamp: chrono::DateTime<chrono::Utc> = row.get("occurred_at");
            let aggregate_id: Option<String> = row.get("aggregate_id");
            let correlation_id: Option<String> = row.get("correlation_id");
            let causation_id: Option<String> = row.get("causation_id");
            let traceparent: Option<String> = row.get("traceparent");
            let headers: String = row.get("headers");
            if decode {
                let event = longshore_core::RecordedEvent {
                    stream_id,
                    version: version as u64,
                    position: after as u64,
                    event: Event {
                        id,
                        event_type,
                        timestamp,
                        data: serde_json::from_str(&data).expect("data"),
                        metadata: longshore_core::Metadata {
                            aggregate_id,
                            correlation_id,
                            causation_id,
                            traceparent,
                            headers: serde_json::from_str(&headers).expect("headers"),
                        },
                    },
                };
                page.push(event);
            } else {
                std::hint::black_box((stream_id, version, id, event_type, data, timestamp));
                std::hint::black_box((
                    aggregate_id,
                    correlation_id,
                    causation_id,
                    traceparent,
                    headers,
                ));
            }
            n += 1;
        }
        std::hint::black_box(page);
    }
}

async fn store_read_all(store: &PgStore) -> usize {
    let mut after = 0;
    let mut n = 0;
    loop {
        let page = store.read_all(after, 500).await.expect("read_all");
        let Some(last) = page.last() else { return n };
        after = last.position;
        n += page.len();
    }
}

fn rate(items: usize, took: Duration) -> f64 {
    items as f64 / took.as_secs_f64()
}

struct Row2 {
    name: &'static str,
    unit: &'static str,
    adapter: f64,
    raw: Option<f64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let ours = schema("a");
    let raw = schema("r");
    let config = match PgConfig::from_url(&url).and_then(|c| c.with_schema(&ours)) {
        Ok(c) => c.with_max_connections(4),
        Err(e) => {
            eprintln!("bad DATABASE_URL: {e}");
            return;
        }
    };
    let store = match PgStore::connect(config.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "SKIPPED: PostgreSQL at {} unreachable: {e}",
                longshore_core::url::redact_url(&url)
            );
            return;
        }
    };
    let pool = store.pool().clone();
    let raw_schema = longshore_postgres::Schema::new(&raw).expect("schema");
    longshore_postgres::migrate(&pool, &raw_schema)
        .await
        .expect("migrate raw schema");

    let n1 = 2000;
    let n10 = 500;
    let mut results = Vec::new();
    for (name, per_tx, count) in [
        ("append, 1 event/tx", 1usize, n1),
        ("append, 10 events/tx", 10usize, n10),
    ] {
        // Adapter and raw alternate in chunks of 25 transactions (which one goes first
        // alternates too), so both see the same load on a shared machine.
        let batches: Vec<(String, Vec<Event>)> = (0..count)
            .map(|i| {
                let s = format!("order-{}", i % STREAMS);
                let e = events(per_tx, &s);
                (s, e)
            })
            .collect();
        let (mut took_a, mut took_r) = (Duration::ZERO, Duration::ZERO);
        for (chunk_no, chunk) in batches.chunks(25).enumerate() {
            for turn in 0..2 {
                let adapter_turn = (turn + chunk_no) % 2 == 0;
                let start = Instant::now();
                for (s, e) in chunk {
                    if adapter_turn {
                        store
                            .append(s, ExpectedVersion::Any, e.clone())
                            .await
                            .expect("append");
                    } else {
                        raw_append(&pool, &raw, s, e).await;
                    }
                }
                if adapter_turn {
                    took_a += start.elapsed();
                } else {
                    took_r += start.elapsed();
                }
            }
        }
        results.push(Row2 {
            name,
            unit: "events/s",
            adapter: rate(count * per_tx, took_a),
            raw: Some(rate(count * per_tx, took_r)),
        });
    }

    let mut took = [Duration::ZERO; 4];
    let mut n = 0;
    for round in 0..ROUNDS * 2 {
        let order = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [3, 2, 1, 0]
        };
        for which in order {
            let start = Instant::now();
            match which {
                0 => n = store_read_all(&store).await,
                1 => assert_eq!(raw_read_all(&pool, &raw, true, false).await, n),
                2 => {
                    raw_read_all(&pool, &raw, false, false).await;
                }
                _ => {
                    raw_read_all(&pool, &raw, true, true).await;
                }
            }
            took[which] += start.elapsed();
        }
    }
    let [took_a, took_r, took_c, took_w] = took;
    let reads = n * ROUNDS * 2;
    results.push(Row2 {
        name: "read_all, pages of 500 (raw decodes the same events)",
        unit: "events/s",
        adapter: rate(reads, took_a),
        raw: Some(rate(reads, took_r)),
    });
    results.push(Row2 {
        name: "read_all, pages of 500 (raw decodes, with the same watermark bound)",
        unit: "events/s",
        adapter: rate(reads, took_a),
        raw: Some(rate(reads, took_w)),
    });
    results.push(Row2 {
        name: "read_all, pages of 500 (raw only reads the columns)",
        unit: "events/s",
        adapter: rate(reads, took_a),
        raw: Some(rate(reads, took_c)),
    });

    // Relay: everything appended above is in the outbox.
    let pending = longshore_core::Outbox::pending(&store)
        .await
        .expect("pending") as usize;
    let broker = MemoryBroker::default();
    let relay = OutboxRelay::new(
        "bench",
        Arc::new(store.clone()),
        Arc::new(broker.publisher()),
    )
    .batch_size(500);
    let start = Instant::now();
    let mut sent = 0;
    while sent < pending {
        sent += relay.run_once().await.expect("relay").sent;
    }
    results.push(Row2 {
        name: "outbox relay → memory broker, batches of 500",
        unit: "msgs/s",
        adapter: rate(sent, start.elapsed()),
        raw: None,
    });

    println!();
    println!("| workload | adapter | raw sqlx | ratio |");
    println!("|---|---:|---:|---:|");
    for r in &results {
        match r.raw {
            Some(raw) => println!(
                "| {} | {:.0} {} | {:.0} {} | {:.2}x |",
                r.name,
                r.adapter,
                r.unit,
                raw,
                r.unit,
                r.adapter / raw
            ),
            None => println!("| {} | {:.0} {} | – | – |", r.name, r.adapter, r.unit),
        }
    }

    for s in [&ours, &raw] {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{s}\" CASCADE")))
            .execute(&pool)
            .await;
    }
}
