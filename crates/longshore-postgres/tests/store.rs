//! Event store, unit of work, outbox and inbox against the real server, beyond the
//! conformance suite.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::memory::MemoryBroker;
use longshore_core::subscribe_all;
use longshore_core::{
    Broker, Codec, Event, EventStore, ExpectedVersion, Inbox, JsonCodec, Outbox, OutboxRelay,
    StoreError, Subscription,
};
use longshore_postgres::sqlx;
use longshore_postgres::PgStore;

fn ev(n: u64) -> Event {
    Event::new("order_created", serde_json::json!({ "n": n }))
}

/// A store on a fresh schema, with the watermark lock held shared for the test.
async fn store(outbox: bool) -> Option<(common::WatermarkGuard, PgStore)> {
    if !common::reachable().await {
        return None;
    }
    let guard = common::watermark_shared().await;
    Some((guard, common::store_with(outbox).await))
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// 50 concurrent writers with the same expected version: exactly one wins, every loser gets
/// `WrongExpectedVersion` with the winner's version, versions stay contiguous and the global
/// order holds every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_writers_exactly_one_wins() {
    let Some((_guard, store)) = store(true).await else {
        return;
    };
    store
        .append("race", ExpectedVersion::NoStream, vec![ev(0)])
        .await
        .expect("seed");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append("race", ExpectedVersion::Exact(1), vec![ev(i), ev(100 + i)])
                .await
        }));
    }
    let (mut wins, mut losses) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => {
                assert_eq!((r.version, r.written), (3, true));
                wins += 1;
            }
            Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                assert_eq!(actual, 3);
                losses += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((wins, losses), (1, 49));
    let versions: Vec<u64> = store
        .read_stream("race", 1, 100)
        .await
        .expect("read")
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    let all = store.read_all(0, 100).await.expect("read_all");
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    // Only the winner's events reached the outbox.
    assert_eq!(store.pending().await.expect("pending"), 3);
}

/// `Any` appends from many writers to one stream all succeed, with contiguous versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_any_appends_all_succeed() {
    let Some((_guard, store)) = store(false).await else {
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append("busy", ExpectedVersion::Any, vec![ev(i)])
                .await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("append Any");
    }
    let versions: Vec<u64> = store
        .read_stream("busy", 1, 100)
        .await
        .expect("read")
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
}

/// A follower reading `read_all` never misses an event that a long transaction commits after
/// later transactions committed, even when that transaction obtained its id first and
/// inserted last (the case a plain identity order gets wrong).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_never_misses_event_behind_long_transaction() {
    if !common::reachable().await {
        return;
    }
    // This test holds a write transaction open, which holds back every reader's watermark on
    // the server: keep the other watermark-dependent tests out meanwhile.
    let _exclusive = common::watermark_exclusive().await;
    let store = common::store_with(false).await;
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    store
        .append("before", ExpectedVersion::Any, vec![ev(0)])
        .await
        .expect("append");
    let mut follower = subscribe_all(shared.clone(), 0);
    let first = within("first event", follower.next())
        .await
        .expect("stream")
        .expect("event");
    assert_eq!(first.stream_id, "before");

    // The long transaction takes its transaction id now (its own write), appends later.
    let mut long = store.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(long.connection())
        .await
        .expect("take a transaction id");

    // Meanwhile other writers append and commit.
    let quick: Vec<Event> = (1..=3).map(ev).collect();
    for e in &quick {
        store
            .append("quick", ExpectedVersion::Any, vec![e.clone()])
            .await
            .expect("quick append");
    }
    // The long transaction now appends (its identity-order position would be the last one).
    let late = ev(99);
    long.append("late", ExpectedVersion::NoStream, vec![late.clone()])
        .await
        .expect("late append");

    // While it is open, the follower sees none of the quick events: they sit above the
    // watermark, and handing them out now would let the late event fall behind the cursor.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), follower.next()).await;
    assert!(
        quiet.is_err(),
        "follower passed an open transaction: {:?}",
        quiet.ok().flatten().map(|r| r.map(|r| r.stream_id))
    );
    long.commit().await.expect("commit");

    let mut got = Vec::new();
    for _ in 0..4 {
        let r = within("events after commit", follower.next())
            .await
            .expect("stream")
            .expect("event");
        got.push(r);
    }
    // The late event is first: its transaction id is the smallest.
    assert_eq!(got[0].event.id, late.id);
    let rest: Vec<_> = got[1..].iter().map(|r| r.event.id).collect();
    assert_eq!(rest, quick.iter().map(|e| e.id).collect::<Vec<_>>());
    assert!(got.windows(2).all(|w| w[0].position < w[1].position));
    // Nothing else comes.
    let end = tokio::time::timeout(Duration::from_millis(300), follower.next()).await;
    assert!(end.is_err(), "an event was delivered twice");
    // Reading from scratch gives the same single order.
    let again: Vec<_> = store
        .read_all(0, 100)
        .await
        .expect("read_all")
        .iter()
        .map(|r| r.event.id)
        .collect();
    let mut expected = vec![first.event.id];
    expected.extend(got.iter().map(|r| r.event.id));
    assert_eq!(again, expected);
}

/// Ids, timestamps (microseconds), data with its key order, and metadata survive.
#[tokio::test]
async fn events_round_trip_exactly() {
    let Some((_guard, store)) = store(false).await else {
        return;
    };
    let data: serde_json::Value =
        serde_json::from_str(r#"{"zeta":1,"alpha":{"b":2,"a":[1.5,"x",null]},"mid":"注文"}"#)
            .expect("json");
    let e = Event::new("order_created", data)
        .with_aggregate_id("order-1")
        .with_correlation_id("c-1")
        .with_causation_id("k-1")
        .with_header("tenant", "acme");
    let mut e = e;
    e.metadata.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    store
        .append("order-1", ExpectedVersion::NoStream, vec![e.clone()])
        .await
        .expect("append");
    let back = store.read_stream("order-1", 1, 10).await.expect("read");
    assert_eq!(back[0].event, e);
    let keys: Vec<&String> = back[0]
        .event
        .data
        .as_object()
        .expect("object")
        .keys()
        .collect();
    assert_eq!(keys, ["zeta", "alpha", "mid"], "key order kept");
}

/// The unit of work: a service's own row, its events and their outbox rows commit together,
/// or (rolled back or dropped) leave nothing behind.
#[tokio::test]
async fn unit_of_work_commits_or_rolls_back_everything() {
    let Some((_guard, store)) = store(true).await else {
        return;
    };
    let orders = format!("{}.orders", store.config().schema.quoted());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {orders} (id bigint PRIMARY KEY, status text NOT NULL)"
    )))
    .execute(store.pool())
    .await
    .expect("service table");
    let insert = sqlx::AssertSqlSafe(format!("INSERT INTO {orders} (id, status) VALUES ($1, $2)"));
    let count_orders = sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {orders}"));

    // Rolled back explicitly.
    let mut uow = store.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(insert.0.clone()))
        .bind(1_i64)
        .bind("created")
        .execute(uow.connection())
        .await
        .expect("service write");
    uow.append("order-1", ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .expect("append");
    uow.rollback().await.expect("rollback");
    // Dropped without commit.
    {
        let mut uow = store.begin().await.expect("begin");
        uow.append("order-1", ExpectedVersion::NoStream, vec![ev(2)])
            .await
            .expect("append");
    }
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_orders.0.clone()))
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(n, 0);
    assert!(store.read_all(0, 10).await.expect("read").is_empty());
    assert_eq!(store.pending().await.expect("pending"), 0);

    // Committed: everything at once, two streams in one transaction.
    let mut uow = store.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(insert.0.clone()))
        .bind(1_i64)
        .bind("created")
        .execute(uow.connection())
        .await
        .expect("service write");
    let a = uow
        .append("order-1", ExpectedVersion::NoStream, vec![ev(3), ev(4)])
        .await
        .expect("append 1");
    let b = uow
        .append("customer-7", ExpectedVersion::Any, vec![ev(5)])
        .await
        .expect("append 2");
    assert!(
        a.position < b.position,
        "positions increase within a transaction"
    );
    // Not visible to others before the commit.
    assert!(store.read_all(0, 10).await.expect("read").is_empty());
    uow.commit().await.expect("commit");
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_orders.0.clone()))
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(n, 1);
    let all = store.read_all(0, 10).await.expect("read");
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].position, b.position);
    assert_eq!(store.pending().await.expect("pending"), 3);
}

/// An event id appended concurrently to two streams: one append wins, the other is a typed
/// `DuplicateEvent` (unique violation mapped), never a generic backend error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_event_id_in_two_transactions_is_a_duplicate() {
    let Some((_guard, store)) = store(false).await else {
        return;
    };
    let e = ev(1);
    let mut first = store.begin().await.expect("begin");
    first
        .append("s1", ExpectedVersion::Any, vec![e.clone()])
        .await
        .expect("first");
    let second_store = store.clone();
    let e2 = e.clone();
    let second = tokio::spawn(async move {
        second_store
            .append("s2", ExpectedVersion::Any, vec![e2])
            .await
    });
    // The second append waits on the first's unique index entry until it commits.
    wait_for_lock_waiter(&store).await;
    first.commit().await.expect("commit");
    match second.await.expect("task") {
        Err(StoreError::DuplicateEvent { event_id, detail }) => {
            assert_eq!(event_id, e.id);
            assert!(detail.contains("s1"), "{detail}");
        }
        other => panic!("expected DuplicateEvent, got {other:?}"),
    }
    // Re-appending to the right stream is an idempotent success.
    let again = store
        .append("s1", ExpectedVersion::NoStream, vec![e])
        .await
        .expect("idempotent");
    assert!(!again.written);
}

/// Invalid names and oversized appends are typed errors, before any SQL runs.
#[tokio::test]
async fn invalid_input_is_rejected() {
    let Some((_guard, store)) = store(true).await else {
        return;
    };
    for bad in ["", "a b", "x;drop table", &"s".repeat(200)] {
        let r = store.append(bad, ExpectedVersion::Any, vec![ev(1)]).await;
        assert!(
            matches!(r, Err(StoreError::Invalid { .. })),
            "{bad:?}: {r:?}"
        );
    }
    let r = store
        .append(
            "s",
            ExpectedVersion::Any,
            vec![Event::new("not a topic word", serde_json::json!({}))],
        )
        .await;
    assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    let e = ev(1);
    let r = store
        .append("s", ExpectedVersion::Any, vec![e.clone(), e])
        .await;
    assert!(matches!(r, Err(StoreError::DuplicateEvent { .. })), "{r:?}");
    let empty = store
        .append("s", ExpectedVersion::NoStream, vec![])
        .await
        .expect("empty append");
    assert!(!empty.written);
    assert!(matches!(
        store.append("s", ExpectedVersion::Exact(3), vec![]).await,
        Err(StoreError::WrongExpectedVersion { actual: 0, .. })
    ));
}

/// The inbox in the handler's transaction: the handler's write and the inbox row commit
/// together; a duplicate is refused; a rolled-back first attempt leaves the id free.
#[tokio::test]
async fn inbox_in_the_handlers_transaction() {
    let Some((_guard, store)) = store(false).await else {
        return;
    };
    let inbox = store.inbox();
    let effects = format!("{}.effects", store.config().schema.quoted());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {effects} (message_id text PRIMARY KEY)"
    )))
    .execute(store.pool())
    .await
    .expect("table");
    let insert = format!("INSERT INTO {effects} (message_id) VALUES ($1)");

    // First attempt fails after recording: rolled back, so the id stays unprocessed.
    let mut tx = store.pool().begin().await.expect("begin");
    assert!(inbox
        .process_once(&mut tx, "billing", "m-1")
        .await
        .expect("once"));
    tx.rollback().await.expect("rollback");
    assert!(!inbox.is_processed("billing", "m-1").await.expect("check"));

    // Second attempt commits handler write + inbox row.
    let mut tx = store.pool().begin().await.expect("begin");
    assert!(inbox
        .process_once(&mut tx, "billing", "m-1")
        .await
        .expect("once"));
    sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
        .bind("m-1")
        .execute(&mut *tx)
        .await
        .expect("effect");
    tx.commit().await.expect("commit");

    // A redelivery is recognised inside its own transaction.
    let mut uow = store.begin().await.expect("begin");
    assert!(!uow.process_once("billing", "m-1").await.expect("dup"));
    uow.rollback().await.expect("rollback");
    assert!(uow_is_other_consumer_free(&inbox).await);
}

/// Waits (bounded) until a backend running a statement on this store's schema is blocked on
/// a lock.
async fn wait_for_lock_waiter(store: &PgStore) {
    let schema = store.config().schema.name().to_string();
    within("a blocked append", async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0",
            )
            .bind(&schema)
            .fetch_one(store.pool())
            .await
            .expect("pg_stat_activity");
            if n > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

async fn uow_is_other_consumer_free(inbox: &longshore_postgres::PgInbox) -> bool {
    !inbox.is_processed("shipping", "m-1").await.expect("check")
}

/// Two relays draining one outbox at the same time into the memory broker: every event
/// arrives exactly once (no double send in the normal path), in order per aggregate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_never_double_send_and_keep_aggregate_order() {
    let Some((_guard, store)) = store(true).await else {
        return;
    };
    let broker = MemoryBroker::default();
    let mut stream = broker
        .subscriber()
        .subscribe(&Subscription::new("all", ["events.#"]).with_prefetch(1000))
        .await
        .expect("subscribe");
    let mut expected: HashMap<String, Vec<uuid::Uuid>> = HashMap::new();
    for round in 0..20 {
        for agg in 0..5 {
            let stream_id = format!("agg-{agg}");
            let e = ev(round).with_aggregate_id(&stream_id);
            expected.entry(stream_id.clone()).or_default().push(e.id);
            store
                .append(&stream_id, ExpectedVersion::Any, vec![e])
                .await
                .expect("append");
        }
    }
    let outbox: Arc<dyn Outbox> = Arc::new(store.clone());
    let mut relays = Vec::new();
    for name in ["relay-a", "relay-b"] {
        let relay = OutboxRelay::new(name, outbox.clone(), broker.publisher()).batch_size(7);
        let outbox = outbox.clone();
        relays.push(tokio::spawn(async move {
            let mut sent = 0;
            while outbox.pending().await.expect("pending") > 0 {
                sent += relay.run_once().await.expect("relay pass").sent;
                tokio::task::yield_now().await;
            }
            sent
        }));
    }
    let mut total = 0;
    for r in relays {
        total += within("relays", r).await.expect("relay task");
    }
    assert_eq!(total, 100, "each row sent once");
    let mut got: HashMap<String, Vec<uuid::Uuid>> = HashMap::new();
    let mut seen = BTreeSet::new();
    for _ in 0..100 {
        let d = within("delivery", stream.next())
            .await
            .expect("stream")
            .expect("delivery");
        let e = JsonCodec.decode(d.message()).expect("decode");
        assert!(seen.insert(e.id), "event {} delivered twice", e.id);
        got.entry(e.metadata.aggregate_id.clone().expect("aggregate"))
            .or_default()
            .push(e.id);
        d.ack().await.expect("ack");
    }
    assert_eq!(got, expected, "per-aggregate order");
}

/// A claim held by a relay blocks later rows of the same aggregate for other relays until it
/// is released or its lease expires; rows of other aggregates flow meanwhile.
#[tokio::test]
async fn claims_block_the_aggregate_not_the_outbox() {
    let Some((_guard, store)) = store(true).await else {
        return;
    };
    for i in 0..3 {
        store
            .append(
                "a",
                ExpectedVersion::Any,
                vec![ev(i).with_aggregate_id("a")],
            )
            .await
            .expect("append");
        store
            .append(
                "b",
                ExpectedVersion::Any,
                vec![ev(i).with_aggregate_id("b")],
            )
            .await
            .expect("append");
    }
    let first = store.claim("r1", 1).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].message.key.as_deref(), Some("a"));
    let second = store.claim("r2", 10).await.expect("claim");
    assert!(
        second.iter().all(|m| m.message.key.as_deref() == Some("b")),
        "r2 must not take aggregate a while r1 holds its first row: {second:?}"
    );
    assert_eq!(second.len(), 3);
    // r1 gives its row back; r2 may now take aggregate a, in order.
    store.release("r1", &[first[0].seq]).await.expect("release");
    let third = store.claim("r2", 10).await.expect("claim");
    let seqs: Vec<u64> = third.iter().map(|m| m.seq).collect();
    assert_eq!(third.len(), 6, "its own b rows again plus the a rows");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // A relay cannot mark rows it does not hold.
    store.mark_sent("r1", &seqs).await.expect("mark");
    assert_eq!(store.pending().await.expect("pending"), 6);
    store.mark_sent("r2", &seqs).await.expect("mark");
    assert_eq!(store.pending().await.expect("pending"), 0);
}

/// Positions and outbox rows stay right when one unit of work appends many events.
#[tokio::test]
async fn large_append_is_one_transaction() {
    let Some((_guard, store)) = store(true).await else {
        return;
    };
    let events: Vec<Event> = (0..1000).map(ev).collect();
    let r = store
        .append("big", ExpectedVersion::NoStream, events.clone())
        .await
        .expect("append");
    assert_eq!(r.version, 1000);
    let all = store.read_all(0, 2000).await.expect("read_all");
    assert_eq!(all.len(), 1000);
    assert_eq!(all.last().map(|r| r.position), Some(r.position));
    assert_eq!(
        all.iter().map(|r| r.event.id).collect::<Vec<_>>(),
        events.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert_eq!(store.pending().await.expect("pending"), 1000);
    let claimed = store.claim("r", 2000).await.expect("claim");
    assert_eq!(
        claimed
            .iter()
            .map(|m| m.message.id.clone())
            .collect::<Vec<_>>(),
        events.iter().map(|e| e.id.to_string()).collect::<Vec<_>>()
    );
}
