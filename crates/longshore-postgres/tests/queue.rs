//! The Postgres queue beyond the conformance suite: pattern matching in SQL agrees with core's
//! matcher, leases expire, and the adapter recovers after its connections are terminated.

mod common;

use std::time::Duration;

use futures::StreamExt;
use longshore_core::{Broker, EventStore, ExpectedVersion, Message, Subscription};
use longshore_postgres::pattern_regex;
use longshore_postgres::sqlx;
use longshore_postgres::PgBroker;

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn words(alphabet: &[&str], max: usize) -> Vec<String> {
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    let mut all = Vec::new();
    for _ in 0..max {
        let mut next = Vec::new();
        for prefix in &out {
            for w in alphabet {
                let mut v = prefix.clone();
                v.push((*w).to_string());
                all.push(v.join("."));
                next.push(v);
            }
        }
        out = next;
    }
    all
}

/// The regexes the queue stores for patterns match exactly the topics core's matcher does.
#[tokio::test]
async fn sql_pattern_matching_agrees_with_core() {
    let Some(broker) = common::broker().await else {
        return;
    };
    let topics = words(&["a", "b", "c-1"], 3);
    let patterns = words(&["a", "b", "*", "#"], 3);
    for pattern in &patterns {
        let regex = pattern_regex(pattern);
        let matched: Vec<String> = sqlx::query_scalar(
            "SELECT t FROM unnest($1::text[]) AS t WHERE ('.' || t) ~ $2 ORDER BY t",
        )
        .bind(&topics)
        .bind(&regex)
        .fetch_all(broker.pool())
        .await
        .expect("match in SQL");
        let mut want: Vec<String> = topics
            .iter()
            .filter(|t| longshore_core::topic::matches(pattern, t))
            .cloned()
            .collect();
        want.sort();
        let mut matched = matched;
        matched.sort();
        assert_eq!(matched, want, "pattern {pattern:?} (regex {regex})");
    }
}

/// A delivery whose consumer process vanished (no ack, no nack, no heartbeat) comes back
/// after the visibility timeout, with a higher attempt count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_redelivers() {
    if !common::reachable().await {
        return;
    }
    let schema = common::fresh_schema();
    let config = common::config(&schema).with_visibility_timeout(Duration::from_millis(600));
    let broker = PgBroker::connect(config).await.expect("broker");
    let sub = Subscription::new("work", ["jobs.#"]);
    let subscriber = broker.subscriber();
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    let publisher = broker.publisher();
    let m = Message::new(&b"job"[..]);
    publisher
        .publish("jobs.one", m.clone())
        .await
        .expect("publish");
    // Simulate a consumer that leased the row and died: lease it directly, as a fetch would.
    let leased = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{schema}\".queue_messages SET locked_by = gen_random_uuid(), \
         locked_until = now() + interval '600 milliseconds', attempts = attempts + 1 \
         WHERE subscription = 'work'"
    )))
    .execute(broker.pool())
    .await
    .expect("lease");
    assert_eq!(leased.rows_affected(), 1);
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let d = within("redelivery after the lease", stream.next())
        .await
        .expect("stream")
        .expect("delivery");
    assert_eq!(d.message().id, m.id);
    assert_eq!(d.attempt, 2);
    d.ack().await.expect("ack");
}

/// A consumer holding a delivery longer than the visibility timeout keeps it: the heartbeat
/// renews the lease, so a competing consumer does not get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_slow_deliveries() {
    if !common::reachable().await {
        return;
    }
    let schema = common::fresh_schema();
    let config = common::config(&schema).with_visibility_timeout(Duration::from_millis(600));
    let broker = PgBroker::connect(config).await.expect("broker");
    let sub = Subscription::new("slow", ["slow"]).with_prefetch(1);
    let (a, b) = (broker.subscriber(), broker.subscriber());
    let mut first = a.subscribe(&sub).await.expect("subscribe");
    let mut second = b.subscribe(&sub).await.expect("subscribe");
    broker
        .publisher()
        .publish("slow", Message::new(&b"x"[..]))
        .await
        .expect("publish");
    let held = within("delivery", first.next())
        .await
        .expect("stream")
        .expect("delivery");
    // Three lease periods pass; the competing consumer must stay empty.
    let stolen = tokio::time::timeout(Duration::from_millis(1800), second.next()).await;
    assert!(
        stolen.is_err(),
        "a leased delivery was handed to another consumer"
    );
    held.ack().await.expect("ack");
}

/// `pg_terminate_backend` on every connection of the adapter (pool and LISTEN): publishing,
/// consuming and appending work again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_connections_are_terminated() {
    if !common::reachable().await {
        return;
    }
    let _watermark = common::watermark_shared().await;
    let schema = common::fresh_schema();
    let app = format!("longshore-term-{}", &schema[schema.len() - 6..]);
    let config = common::config(&schema).with_application_name(&app);
    let broker = PgBroker::connect(config).await.expect("broker");
    let store = broker.store();
    let publisher = broker.publisher();
    let subscriber = broker.subscriber();
    let sub = Subscription::new("survivor", ["t.#"]);
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    publisher
        .publish("t.1", Message::new(&b"before"[..]))
        .await
        .expect("publish");
    let d = within("first", stream.next())
        .await
        .expect("stream")
        .expect("delivery");
    d.ack().await.expect("ack");
    store
        .append(
            "s",
            ExpectedVersion::NoStream,
            vec![longshore_core::Event::new("e", serde_json::json!(1))],
        )
        .await
        .expect("append");

    let killer = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&common::url())
        .await
        .expect("killer connection");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_all(&killer)
    .await
    .expect("terminate");
    assert!(
        killed.len() >= 2,
        "expected pool and listener connections, got {}",
        killed.len()
    );

    // Publishing recovers (a retryable error at most once per dead pooled connection).
    let after = Message::new(&b"after"[..]);
    within("publish after termination", async {
        loop {
            match publisher.publish("t.2", after.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    assert!(
                        e.is_retryable(),
                        "non-retryable error after termination: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await;
    // The consumer recovers: it may report the lost connection once, then delivers.
    let got = within("delivery after termination", async {
        loop {
            match stream.next().await {
                Some(Ok(d)) => break d,
                Some(Err(e)) => assert!(e.is_retryable(), "{e}"),
                None => panic!("stream ended"),
            }
        }
    })
    .await;
    assert_eq!(got.message().id, after.id);
    got.ack().await.expect("ack");
    // The store recovers.
    within("append after termination", async {
        loop {
            match store
                .append(
                    "s",
                    ExpectedVersion::Exact(1),
                    vec![longshore_core::Event::new("e", serde_json::json!(2))],
                )
                .await
            {
                Ok(r) => break assert_eq!(r.version, 2),
                Err(e) => {
                    assert!(e.is_retryable(), "non-retryable store error: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await;
    assert_eq!(store.read_all(0, 10).await.expect("read_all").len(), 2);
    // New connections carry the same application name (so the LISTEN connection came back too).
    within("listener reconnect", async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
            )
            .bind(&app)
            .fetch_one(&killer)
            .await
            .expect("activity");
            if n >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Health reads through the recovered pool.
    for h in [
        broker.health().await,
        publisher.health().await,
        subscriber.health().await,
    ] {
        assert!(h.is_ready(), "{h:?}");
    }
}
