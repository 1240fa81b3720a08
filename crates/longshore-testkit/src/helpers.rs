//! The small waiting and receiving helpers every scenario (and the adapters' own tests) use.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::{Delivery, DeliveryStream, Message, Subscriber};

/// How long any single expected event may take before the test fails. Generous, because CI
/// machines are small and some brokers (Kafka group joins) take seconds; tests never wait this
/// long when the adapter is correct.
pub const WAIT: Duration = Duration::from_secs(60);

/// How long an absence check watches for a message that must not arrive.
pub const QUIET: Duration = Duration::from_millis(500);

/// Unique names for one test, so tests on a shared broker never see each other's messages.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

impl Names {
    /// Fresh names.
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Names {
            prefix: format!("t{}", &id[..12]),
        }
    }

    /// A topic under this test's namespace: `<prefix>.<suffix>`.
    pub fn topic(&self, suffix: &str) -> String {
        format!("{}.{}", self.prefix, suffix)
    }

    /// A subscription name for this test: `<prefix>-<suffix>`.
    pub fn sub(&self, suffix: &str) -> String {
        format!("{}-{}", self.prefix, suffix)
    }

    /// The prefix itself (a single topic word).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Awaits `fut` for at most [`WAIT`], failing the test with `what` otherwise.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Waits until `condition` holds, checking every 10 ms, failing the test after [`WAIT`]. For
/// states that no event announces (a counter reaching a value).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Polls `subscriber.lag(name)` until it is `want`, failing the test after [`WAIT`] with the
/// last answer: brokers report lag asynchronously (Kafka commits offsets on a timer, JetStream
/// and RabbitMQ count acks as they arrive), so there is no event to await.
pub async fn lag_reaches(subscriber: &dyn Subscriber, name: &str, want: u64) {
    let mut last = None;
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            last = Some(subscriber.lag(name).await.expect("lag"));
            if last == Some(Some(want)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "lag of {name} stayed {last:?}, expected {want}"
    );
}

/// The next delivery; fails the test on a stream error, end or timeout.
pub async fn recv(stream: &mut DeliveryStream) -> Delivery {
    match within("a delivery", stream.next()).await {
        Some(Ok(d)) => d,
        Some(Err(e)) => panic!("delivery stream error: {e}"),
        None => panic!("delivery stream ended unexpectedly"),
    }
}

/// The next `n` deliveries, unsettled.
pub async fn recv_n(stream: &mut DeliveryStream, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(recv(stream).await);
    }
    out
}

/// Receives and acks `n` deliveries, returning their message ids in arrival order.
pub async fn drain_ids(stream: &mut DeliveryStream, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let d = recv(stream).await;
        ids.push(d.message().id.clone());
        d.ack().await.expect("ack");
    }
    ids
}

/// Asserts that nothing arrives for [`QUIET`].
pub async fn expect_quiet(stream: &mut DeliveryStream, why: &str) {
    if let Ok(Some(item)) = tokio::time::timeout(QUIET, stream.next()).await {
        match item {
            Ok(d) => panic!("{why}: unexpected delivery {d:?}"),
            Err(e) => panic!("{why}: unexpected stream error {e}"),
        }
    }
}

/// A message with a recognisable payload and a test header.
pub fn message(n: usize) -> Message {
    Message::new(format!("payload-{n}").into_bytes()).with_header("seq", n.to_string())
}

/// Acks everything `stream` delivers, sending each message id to `ids`, until the stream
/// ends or nobody listens: a consumer running beside the scenario.
pub fn spawn_acking(
    mut stream: DeliveryStream,
    ids: tokio::sync::mpsc::UnboundedSender<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(d)) = stream.next().await {
            let id = d.message().id.clone();
            d.ack().await.expect("ack");
            if ids.send(id).is_err() {
                break;
            }
        }
    })
}

/// The ids of `messages`, as a set (for deliveries whose order is not promised).
pub fn ids_of(messages: &[Message]) -> std::collections::BTreeSet<String> {
    messages.iter().map(|m| m.id.clone()).collect()
}

/// For integration tests that need a live broker: call with the result of a connection
/// attempt. Under `CI=true` an unreachable broker fails the test loudly; elsewhere the test is
/// skipped with a printed reason. Returns `None` when the test should return early.
pub fn require_broker<T, E: std::fmt::Display>(
    backend: &str,
    url: &str,
    attempt: Result<T, E>,
) -> Option<T> {
    match attempt {
        Ok(v) => Some(v),
        Err(e) => {
            let url = longshore_core::url::redact_url(url);
            if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
                panic!("{backend} at {url} is required under CI but unreachable: {e}");
            }
            eprintln!("SKIPPED: {backend} at {url} is unreachable ({e}); set CI=true to make this a failure");
            None
        }
    }
}
