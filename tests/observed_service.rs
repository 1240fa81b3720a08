//! The `observed_service` example on every compiled-in backend: it serves `/metrics` with
//! longshore's counters for exactly the orders it handled, and `/health` and `/ready` as ready
//! (broker, store, and its consumer, through `Longshore::serve_health`).
//!
//! The example's source is compiled into this test (its `start` function), so the test runs
//! this checkout's code. One HTTP/1.1 GET is written by hand to avoid an HTTP client
//! dependency for two requests.

mod common;

#[allow(dead_code)]
#[path = "../examples/observed_service.rs"]
mod observed_service;

use std::net::SocketAddr;

use longshore::observe::names;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORDERS: u64 = 3;

/// `GET path` → (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// The value of the sample of `metric` whose labels include every `labels` pair.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn serves_metrics_and_health(url: &str) {
    let backend = url.split("://").next().unwrap_or(url).to_string();
    let reachable = longshore::connect(url).await.map(|_| ());
    if longshore_testkit::require_broker(&backend, url, reachable).is_none() {
        return;
    }
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let service = observed_service::start(&longshore::Config::new(url), addr)
        .await
        .expect("service starts");
    for n in 1..=ORDERS {
        observed_service::place_order(&service, n)
            .await
            .expect("order placed");
    }
    longshore_testkit::eventually("the orders are handled", || service.stats().acked == ORDERS)
        .await;

    let (status, text) = get(service.addr, "/metrics").await;
    assert_eq!(status, 200);
    let backend = service.ls.backend;
    let on_topic = [("backend", backend), ("topic", service.topic.as_str())];
    assert_eq!(
        sample(&text, names::PUBLISHED, &on_topic),
        Some(ORDERS as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, names::PUBLISH_CONFIRMED, &on_topic),
        Some(ORDERS as f64)
    );
    assert_eq!(
        sample(
            &text,
            &format!("{}_count", names::PUBLISH_DURATION),
            &on_topic
        ),
        Some(ORDERS as f64),
        "publish latency histogram: {text}"
    );
    let on_backend = [("backend", backend)];
    assert!(sample(&text, names::ACKED, &on_backend).is_some_and(|n| n >= ORDERS as f64));
    assert!(sample(&text, names::CONSUMERS, &on_backend).is_some_and(|n| n >= 1.0));

    let (status, body) = get(service.addr, "/health").await;
    assert_eq!(status, 200, "ready: {body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("health is JSON");
    assert_eq!(health["ready"], true, "{body}");
    assert_eq!(health["broker"]["backend"], backend);
    assert_eq!(health["broker"]["connected"], true);
    assert!(health["broker"]["last_publish"].is_string(), "{body}");
    assert!(health["broker"]["last_ack"].is_string(), "{body}");
    assert_eq!(health["consumers"][0]["name"], "orders", "{body}");
    assert_eq!(health["consumers"][0]["ready"], true, "{body}");
    let (status, body) = get(service.addr, "/ready").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    let stats = service.stop().await;
    assert_eq!((stats.acked, stats.dead_lettered), (ORDERS, 0));
}

#[tokio::test]
async fn observed_service_memory() {
    serves_metrics_and_health("memory://").await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn observed_service_rabbitmq() {
    serves_metrics_and_health(&common::amqp_url()).await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn observed_service_nats() {
    serves_metrics_and_health(&common::nats_url()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn observed_service_postgres() {
    serves_metrics_and_health(&common::postgres_url()).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn observed_service_kafka() {
    let url = common::kafka_url();
    serves_metrics_and_health(&url).await;
}
