//! A quorum queue on a three-node cluster keeps every confirmed message while the node that
//! leads it is stopped mid-stream (the testkit's fault harness, fault "node-stopped-quorum").
//!
//! Needs the cluster of `scripts/rabbitmq-cluster.sh start` (nodes lsa, lsb, lsc on
//! 127.0.0.1:5673..5675, or `AMQP_CLUSTER_URLS`). Without it the test is skipped with a printed
//! reason; `LONGSHORE_RABBITMQ_CLUSTER=1` makes a missing cluster a failure.

mod common;

use std::time::Duration;

use longshore_core::Broker;
use longshore_rabbitmq::{QueueType, RabbitBroker, RabbitConfig};
use longshore_testkit::fault;

const DEFAULT_URLS: &str = "amqp://guest:guest@127.0.0.1:5673/%2f,\
                            amqp://guest:guest@127.0.0.1:5674/%2f,\
                            amqp://guest:guest@127.0.0.1:5675/%2f";

/// How long the stopped node stays down while publishing goes on.
const DOWN_FOR: Duration = Duration::from_secs(5);

fn script() -> String {
    format!(
        "{}/../../scripts/rabbitmq-cluster.sh",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A quorum-queue broker on `url`, or `None` (skip, reason printed) when the cluster is not
/// running and `LONGSHORE_RABBITMQ_CLUSTER` does not demand it.
async fn node(url: &str) -> Option<RabbitBroker> {
    let config = RabbitConfig::from_url(url)
        .expect("cluster URL")
        .with_queue_type(QueueType::Quorum)
        .with_connect_timeout(Duration::from_secs(5));
    match RabbitBroker::connect(config).await {
        Ok(broker) => Some(broker),
        Err(e) if std::env::var("LONGSHORE_RABBITMQ_CLUSTER").is_err() => {
            eprintln!(
                "SKIPPED: cluster test: no RabbitMQ cluster ({e}); \
                 start one with `bash scripts/rabbitmq-cluster.sh start`"
            );
            None
        }
        Err(e) => panic!("LONGSHORE_RABBITMQ_CLUSTER is set but the cluster is down: {e}"),
    }
}

async fn run(program: &str, args: &[&str]) {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .expect("runnable");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_loses_nothing_confirmed_while_its_leader_node_is_stopped() {
    let urls = std::env::var("AMQP_CLUSTER_URLS").unwrap_or_else(|_| DEFAULT_URLS.to_string());
    let urls: Vec<&str> = urls.split(',').map(str::trim).collect();
    assert_eq!(urls.len(), 3, "AMQP_CLUSTER_URLS: three nodes, lsa,lsb,lsc");
    let Some(publishing) = node(urls[0]).await else {
        return;
    };
    let Some(consuming) = node(urls[1]).await else {
        return;
    };
    // The subscriber on lsb declares the queue, so lsb leads it (client-local leader) and
    // the fault takes away the leader and the consumer's node; the publisher stays on lsa.
    let mut restarted = None;
    let report = fault::run(
        "rabbitmq",
        "node-stopped-quorum",
        publishing.publisher(),
        consuming.subscriber(),
        fault::message_count(),
        || async {
            run("rabbitmqctl", &["-q", "-n", "lsb@localhost", "stop"]).await;
            restarted = Some(tokio::spawn(async {
                tokio::time::sleep(DOWN_FOR).await;
                run("bash", &[&script(), "start", "lsb"]).await;
            }));
        },
    )
    .await;
    if let Some(restart) = restarted {
        restart.await.expect("lsb started again");
    }
    eprintln!("{report:?}");
    report.record();
    report.assert_nothing_lost();
    assert!(
        report.confirmed > 0 && report.recovery_ms.is_some(),
        "{report:?}"
    );
    let _ = publishing.close().await;
    let _ = consuming.close().await;
}
