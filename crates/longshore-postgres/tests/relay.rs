//! The outbox relay as a separate process killed with SIGKILL in the middle of a batch, and the
//! relay into the Postgres queue through the `Publisher` trait.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::{
    BatchError, Broker, Capabilities, Codec, Error, Event, EventStore, ExpectedVersion, JsonCodec,
    Message, Outbox, OutboxRelay, Publisher, Subscription,
};
use longshore_postgres::sqlx;
use longshore_postgres::PgBroker;

/// Set in the child process: the schema to relay.
const CHILD_ENV: &str = "LONGSHORE_PG_RELAY_CHILD_SCHEMA";
/// The child publishes this many messages, then hangs in the middle of its batch.
const HANG_AFTER: usize = 25;
const BATCH: usize = 10;
const AGGREGATES: usize = 3;
const PER_AGGREGATE: usize = 30;

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A publisher that publishes one message at a time and hangs forever after `limit` messages,
/// so the parent can kill the relay deterministically in the middle of a batch.
struct HangingPublisher {
    inner: Arc<dyn Publisher>,
    sent: AtomicUsize,
    limit: usize,
}

#[longshore_core::async_trait]
impl Publisher for HangingPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        if self.sent.fetch_add(1, Ordering::SeqCst) >= self.limit {
            std::future::pending::<()>().await;
        }
        self.inner.publish(topic, message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        for m in messages {
            self.publish(topic, m).await.map_err(|e| {
                BatchError::all(Vec::new(), || Error::connection("test", e.to_string()))
            })?;
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), Error> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

/// The child process: relays the outbox of the schema named in `CHILD_ENV` into the Postgres
/// queue until it is killed. Ignored in normal runs (and a no-op without the variable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by relay_killed_mid_batch_loses_nothing"]
async fn relay_child() {
    let Ok(schema) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut config = common::config(&schema).with_claim_lease(Duration::from_secs(2));
    config.migrate = false;
    let broker = PgBroker::connect(config).await.expect("child broker");
    let store = broker.store();
    let publisher = HangingPublisher {
        inner: broker.publisher(),
        sent: AtomicUsize::new(0),
        limit: HANG_AFTER,
    };
    let relay = OutboxRelay::new("relay-child", Arc::new(store), Arc::new(publisher))
        .batch_size(BATCH)
        .idle_wait(Duration::from_millis(20));
    relay.run(std::future::pending::<()>()).await;
}

/// Kills the child on drop, so a failing test never leaves it running.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn queued(broker: &PgBroker, schema: &str, subscription: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".queue_messages WHERE subscription = $1"
    )))
    .bind(subscription)
    .fetch_one(broker.pool())
    .await
    .expect("count queue")
}

/// A relay process SIGKILLed in the middle of a batch (some of its claimed rows published,
/// none marked sent): after a restart every event is delivered, in order per aggregate, and
/// only the interrupted batch's published part comes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_killed_mid_batch_loses_nothing() {
    if !common::reachable().await {
        return;
    }
    let schema = common::fresh_schema();
    let config = common::config(&schema).with_claim_lease(Duration::from_secs(2));
    let broker = PgBroker::connect(config).await.expect("broker");
    let store = broker.store();
    let sink = Subscription::new("sink", ["events.#"]).with_prefetch(1000);
    let subscriber = broker.subscriber();
    subscriber.ensure_subscription(&sink).await.expect("ensure");

    let mut expected: HashMap<String, Vec<uuid::Uuid>> = HashMap::new();
    let mut all = BTreeSet::new();
    for i in 0..PER_AGGREGATE {
        for a in 0..AGGREGATES {
            let stream = format!("order-{a}");
            let e =
                Event::new("order_updated", serde_json::json!({"i": i})).with_aggregate_id(&stream);
            expected.entry(stream.clone()).or_default().push(e.id);
            all.insert(e.id);
            store
                .append(&stream, ExpectedVersion::Any, vec![e])
                .await
                .expect("append");
        }
    }
    let total = AGGREGATES * PER_AGGREGATE;

    let exe = std::env::current_exe().expect("test binary");
    let child = Command::new(exe)
        .args([
            "relay_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &schema)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn relay child");
    let mut child = ChildGuard(child);
    within("the child to publish its first messages", async {
        while queued(&broker, &schema, "sink").await < HANG_AFTER as i64 {
            if let Some(status) = child.0.try_wait().expect("child status") {
                panic!("relay child exited early: {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // SIGKILL: no destructor, no cleanup, in the middle of its third batch.
    child.0.kill().expect("kill");
    child.0.wait().expect("reap");
    assert_eq!(queued(&broker, &schema, "sink").await, HANG_AFTER as i64);
    let full_batches = (HANG_AFTER / BATCH) * BATCH;
    assert_eq!(
        store.pending().await.expect("pending"),
        (total - full_batches) as u64,
        "the interrupted batch is still in the outbox"
    );
    let held: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".outbox WHERE claimed_by = 'relay-child'"
    )))
    .fetch_one(store.pool())
    .await
    .expect("claims");
    assert_eq!(
        held, BATCH as i64,
        "the dead relay's claims are still there"
    );

    // Restart under another name: the dead relay's aggregates wait for its claim lease.
    let relay = OutboxRelay::new(
        "relay-restarted",
        Arc::new(store.clone()),
        broker.publisher(),
    )
    .batch_size(BATCH);
    within("the restarted relay to drain the outbox", async {
        while store.pending().await.expect("pending") > 0 {
            let report = relay.run_once().await.expect("relay pass");
            if report.claimed == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;

    let resent = HANG_AFTER - full_batches;
    let deliveries = total + resent;
    let mut stream = subscriber.subscribe(&sink).await.expect("subscribe");
    let mut got: HashMap<String, Vec<uuid::Uuid>> = HashMap::new();
    let mut seen = BTreeSet::new();
    for _ in 0..deliveries {
        let d = within("a delivery", stream.next())
            .await
            .expect("stream")
            .expect("delivery");
        let e = JsonCodec.decode(d.message()).expect("decode");
        if seen.insert(e.id) {
            got.entry(e.metadata.aggregate_id.clone().expect("aggregate"))
                .or_default()
                .push(e.id);
        }
        d.ack().await.expect("ack");
    }
    assert_eq!(seen, all, "every event delivered");
    assert_eq!(got, expected, "per-aggregate order (first deliveries)");
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(extra.is_err(), "more than the interrupted batch was resent");
}

/// The relay through the `Publisher` trait into the Postgres queue (same database, another
/// schema): events reach a queue subscription and the outbox empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_into_the_postgres_queue() {
    if !common::reachable().await {
        return;
    }
    let store = common::store_with(true).await;
    let broker = common::broker().await.expect("broker");
    let mut stream = broker
        .subscriber()
        .subscribe(&Subscription::new("projections", ["events.order_created"]).with_prefetch(100))
        .await
        .expect("subscribe");
    let events: Vec<Event> = (0..25)
        .map(|i| Event::new("order_created", serde_json::json!({"i": i})).with_aggregate_id("o-1"))
        .collect();
    store
        .append("o-1", ExpectedVersion::NoStream, events.clone())
        .await
        .expect("append");
    let outbox: Arc<dyn Outbox> = Arc::new(store.clone());
    let publisher: Arc<dyn Publisher> = broker.publisher();
    let relay = OutboxRelay::new("relay-q", outbox.clone(), publisher).batch_size(10);
    let mut sent = 0;
    while sent < events.len() {
        sent += relay.run_once().await.expect("relay pass").sent;
    }
    assert_eq!(outbox.pending().await.expect("pending"), 0);
    for e in &events {
        let d = within("delivery", stream.next())
            .await
            .expect("stream")
            .expect("delivery");
        assert_eq!(JsonCodec.decode(d.message()).expect("decode"), *e);
        assert_eq!(d.topic, "events.order_created");
        d.ack().await.expect("ack");
    }
    // The store is intact too.
    assert_eq!(
        store.read_stream("o-1", 1, 100).await.expect("read").len(),
        25
    );
}
