//! Shared by the facade's integration tests: where each broker is, and README sections that
//! are generated from the code.
// Each test binary uses part of this module.
#![allow(dead_code)]

/// `key` from the environment, or `default` when unset or empty.
pub fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// The RabbitMQ under test (`AMQP_URL`).
pub fn amqp_url() -> String {
    env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

/// The NATS server under test (`NATS_URL`).
pub fn nats_url() -> String {
    env_or("NATS_URL", "nats://127.0.0.1:4222")
}

/// The PostgreSQL under test (`DATABASE_URL`).
pub fn postgres_url() -> String {
    env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
}

/// A fresh SQLite file in the system temp dir, as a `sqlite:///…` URL (no server needed).
pub fn sqlite_url() -> String {
    let dir = std::env::temp_dir().join("longshore-sqlite-tests");
    let _ = std::fs::create_dir_all(&dir);
    let name = format!("facade-{}.db", uuid::Uuid::new_v4().simple());
    format!("sqlite://{}", dir.join(name).display())
}

/// The Kafka cluster under test (`KAFKA_BROKERS`, a URL or a host list) as a `kafka://` URL.
pub fn kafka_url() -> String {
    let brokers = env_or("KAFKA_BROKERS", "127.0.0.1:9092");
    if brokers.contains("://") {
        brokers
    } else {
        format!("kafka://{brokers}")
    }
}

/// Fails unless README.md holds `body` between the `begin` and `end` markers (markers
/// included in `body`). With `LONGSHORE_UPDATE_README=1` it rewrites the section instead.
pub fn check_readme_section(begin: &str, end: &str, body: &str, what: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let (Some(a), Some(b)) = (readme.find(begin), readme.find(end)) else {
        panic!("README.md has no {what} markers");
    };
    let current = &readme[a..b + end.len()];
    if current == body {
        return;
    }
    if std::env::var("LONGSHORE_UPDATE_README").is_ok_and(|v| v == "1") {
        let updated = format!("{}{}{}", &readme[..a], body, &readme[b + end.len()..]);
        std::fs::write(path, updated).expect("write README.md");
        return;
    }
    panic!("README.md {what} is stale; regenerate with LONGSHORE_UPDATE_README=1.\nexpected:\n{body}\nfound:\n{current}");
}

/// Whether the backend at `url` answers: `false` after printing why the test is skipped, and a
/// failure under `CI=true` (`longshore_testkit::require_broker`).
pub async fn reachable(url: &str) -> bool {
    let backend = url.split("://").next().unwrap_or(url).to_string();
    match longshore_testkit::require_broker(&backend, url, longshore::connect(url).await) {
        Some(ls) => {
            let _ = ls.close().await;
            true
        }
        None => false,
    }
}

/// What [`arrivals`] reports per handled event: its id and when the handler ran.
pub type Arrival = (String, chrono::DateTime<chrono::Utc>);

/// Starts a consumer on `ls` (its subscription already ensured) that reports every
/// `event_type` event it handles, and acks it: for tests that check when messages arrive.
pub async fn arrivals(
    ls: &longshore::Longshore,
    subscription: longshore::Subscription,
    event_type: &str,
) -> (
    longshore::ConsumerHandle,
    tokio::sync::mpsc::UnboundedReceiver<Arrival>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let consumer = longshore::Consumer::new(ls.subscriber.clone(), subscription)
        .on_event(event_type, move |ctx| {
            let _ = tx.send((ctx.event.id.to_string(), chrono::Utc::now()));
            async { Ok(()) }
        })
        .start()
        .await
        .expect("start the consumer");
    (consumer, rx)
}
