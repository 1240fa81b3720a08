//! Rows another writer of the queue table put there (issue #16, defect 1): every row is either
//! delivered or dead-lettered once, never leased again and again, and a valid row after them
//! is delivered.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::{Broker, DeliveryStream, Message, Subscription, HEADER_DLQ_REASON};
use longshore_postgres::sqlx;
use longshore_postgres::PgBroker;

/// What must happen to a foreign row.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Delivered once, with these headers (name, value).
    Delivered(&'static [(&'static str, &'static str)]),
    /// Dead-lettered once, the reason containing this text.
    DeadLettered(&'static str),
}

/// One foreign row: its id, headers as jsonb text, payload, attempt count, and the outcome.
struct Foreign {
    id: &'static str,
    headers: String,
    payload: Vec<u8>,
    attempts: i32,
    expect: Expect,
}

fn foreign_rows() -> Vec<Foreign> {
    use Expect::{DeadLettered, Delivered};
    let row = |id, headers: &str, expect| Foreign {
        id,
        headers: headers.to_string(),
        payload: b"payload".to_vec(),
        attempts: 0,
        expect,
    };
    let deep = format!("{{\"x\": {}1{}}}", "[".repeat(300), "]".repeat(300));
    vec![
        // Numbers and booleans have one obvious string form: delivered as that text.
        row(
            "number",
            r#"{"x": 7, "ok": "yes"}"#,
            Delivered(&[("x", "7"), ("ok", "yes")]),
        ),
        row("float", r#"{"x": 1.5}"#, Delivered(&[("x", "1.5")])),
        // Exactly as stored, not through a float.
        row(
            "big-number",
            r#"{"x": 12345678901234567890123}"#,
            Delivered(&[("x", "12345678901234567890123")]),
        ),
        row("boolean", r#"{"x": true}"#, Delivered(&[("x", "true")])),
        row(
            "null-value",
            r#"{"x": null}"#,
            DeadLettered("headers.x is null"),
        ),
        row(
            "array-value",
            r#"{"x": [1]}"#,
            DeadLettered("headers.x is an array"),
        ),
        row(
            "object-value",
            r#"{"x": {"y": "z"}}"#,
            DeadLettered("headers.x is an object"),
        ),
        row("array", "[1, 2]", DeadLettered("headers are an array")),
        row("json-null", "null", DeadLettered("headers are null")),
        row("string", r#""text""#, DeadLettered("headers are a string")),
        row("deep", &deep, DeadLettered("headers")),
        Foreign {
            id: "not-utf8",
            headers: "{}".into(),
            payload: vec![0xff, 0xfe, 0x00, 0x80],
            attempts: 0,
            expect: Delivered(&[]),
        },
        Foreign {
            id: "empty-payload",
            headers: "{}".into(),
            payload: Vec::new(),
            attempts: 0,
            expect: Delivered(&[]),
        },
        Foreign {
            id: "max-attempts",
            headers: "{}".into(),
            payload: b"p".to_vec(),
            attempts: i32::MAX,
            expect: Delivered(&[]),
        },
        Foreign {
            id: "negative-attempts",
            headers: "{}".into(),
            payload: b"p".to_vec(),
            attempts: -5,
            expect: Delivered(&[]),
        },
    ]
}

async fn next_within(
    stream: &mut DeliveryStream,
    wait: Duration,
) -> Option<longshore_core::Delivery> {
    match tokio::time::timeout(wait, stream.next()).await {
        Ok(Some(Ok(d))) => Some(d),
        Ok(Some(Err(e))) => panic!("the stream failed: {e}"),
        Ok(None) => panic!("the stream ended"),
        Err(_) => None,
    }
}

/// Takes deliveries (acking each) until `quiet` passes without one.
async fn drain(stream: &mut DeliveryStream, quiet: Duration) -> Vec<(Message, String)> {
    let mut got = Vec::new();
    while let Some(d) = next_within(stream, quiet).await {
        got.push((d.message().clone(), d.topic.clone()));
        d.ack().await.expect("ack");
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_rows_are_delivered_or_dead_lettered_once() {
    if !common::reachable().await {
        return;
    }
    let schema = common::fresh_schema();
    // A short lease: a row that is leased and never settled would come back within the test.
    let config = common::config(&schema).with_visibility_timeout(Duration::from_millis(500));
    let broker = PgBroker::connect(config).await.expect("broker");
    let sub = Subscription::new("work", ["jobs.#"]);
    let subscriber = broker.subscriber();
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    let rows = foreign_rows();
    for r in &rows {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{schema}\".queue_messages \
             (subscription, topic, message_id, message_key, headers, payload, attempts) \
             VALUES ('work', 'jobs.foreign', $1, NULL, $2::jsonb, $3, $4)"
        )))
        .bind(r.id)
        .bind(&r.headers)
        .bind(&r.payload)
        .bind(r.attempts)
        .execute(broker.pool())
        .await
        .unwrap_or_else(|e| panic!("insert {}: {e}", r.id));
    }
    broker
        .publisher()
        .publish("jobs.valid", Message::new(&b"valid"[..]).with_id("valid"))
        .await
        .expect("publish the valid message");

    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let dlq_sub = Subscription::new("dlq.work", ["dlq.work"]);
    let mut dlq = subscriber.subscribe(&dlq_sub).await.expect("subscribe dlq");
    // Several lease periods: anything leased and left would be delivered or fetched again.
    let delivered = drain(&mut stream, Duration::from_secs(4)).await;
    let dead = drain(&mut dlq, Duration::from_secs(2)).await;

    let mut delivered_ids: HashMap<String, Vec<Message>> = HashMap::new();
    for (m, _) in delivered {
        delivered_ids.entry(m.id.clone()).or_default().push(m);
    }
    let mut dead_ids: HashMap<String, Vec<Message>> = HashMap::new();
    for (m, _) in dead {
        dead_ids.entry(m.id.clone()).or_default().push(m);
    }
    let mut problems = Vec::new();
    for r in &rows {
        let got = delivered_ids.get(r.id).map_or(0, Vec::len);
        let died = dead_ids.get(r.id).map_or(0, Vec::len);
        match r.expect {
            Expect::Delivered(headers) => {
                if got != 1 || died != 0 {
                    problems.push(format!("{}: delivered {got}, dead-lettered {died}", r.id));
                    continue;
                }
                let m = &delivered_ids[r.id][0];
                assert_eq!(m.payload.as_ref(), r.payload.as_slice(), "{}", r.id);
                for (name, value) in headers {
                    assert_eq!(
                        m.headers.get(*name).map(String::as_str),
                        Some(*value),
                        "{}",
                        r.id
                    );
                }
            }
            Expect::DeadLettered(why) => {
                if got != 0 || died != 1 {
                    problems.push(format!("{}: delivered {got}, dead-lettered {died}", r.id));
                    continue;
                }
                let m = &dead_ids[r.id][0];
                let reason = m
                    .headers
                    .get(HEADER_DLQ_REASON)
                    .cloned()
                    .unwrap_or_default();
                assert!(
                    reason.starts_with("undecodable queue row") && reason.contains(why),
                    "{}: reason {reason:?} does not say {why:?}",
                    r.id
                );
                assert_eq!(
                    m.payload.as_ref(),
                    r.payload.as_slice(),
                    "{}: payload kept",
                    r.id
                );
            }
        }
    }
    assert_eq!(
        delivered_ids.get("valid").map_or(0, Vec::len),
        1,
        "the valid row"
    );
    assert!(problems.is_empty(), "{problems:#?}");
    let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".queue_messages"
    )))
    .fetch_one(broker.pool())
    .await
    .expect("count");
    assert_eq!(left, 0, "rows left in the queue");
}
