//! The broker *process* restarted twice while a known set of message ids is published and
//! consumed (fault `broker-restarted-twice`): once cleanly (SIGTERM; Postgres SIGINT, its fast
//! shutdown) at a third of the run, once by SIGKILL to the broker's whole process group at two
//! thirds, each time started again on the same port and data directory. The publisher keeps
//! publishing through each outage (`longshore_testkit::fault::run_during`); every publish that
//! returned `Ok` must be handled.
//!
//! The shared brokers of the machine serve parallel tests and are never restarted: each cell
//! starts a broker of its own on a free 127.0.0.1 port in a fresh directory
//! (`longshore_testkit::own_broker`) and kills only that on drop. The data is durable by the
//! adapters' defaults: RabbitMQ durable classic queues and persistent messages, JetStream file
//! storage, Postgres tables. A missing broker binary skips the cell with a printed reason
//! (a failure under `CI=true`).
//!
//! Kafka has no cell here: the Kafka-protocol broker of these tests (tansu 0.6.0 as built by
//! `scripts/kafka-broker.sh`) stores in memory or in S3 only, so its restart drops every
//! message by design and would measure tansu, not longshore; see RELIABILITY.md.

use std::time::{Duration, Instant};

use longshore_testkit::fault;
use longshore_testkit::own_broker::{Kind, OwnBroker, Stop};

/// The fault's name in the matrix.
const FAULT: &str = "broker-restarted-twice";

/// The first restart is clean, the second a crash.
const STOPS: [Stop; 2] = [Stop::Clean, Stop::Kill];

async fn cell(kind: Kind) {
    let Some(broker) = OwnBroker::start_or_skip(kind).await else {
        return;
    };
    let url = broker.url();
    let ls = tokio::time::timeout(Duration::from_secs(60), longshore::connect(&url))
        .await
        .expect("connect to the own broker in time")
        .expect("connect to the own broker");
    let broker = tokio::sync::Mutex::new(broker);
    let count = fault::message_count();
    let shared = &broker;
    let report = fault::run_during(
        ls.backend,
        FAULT,
        ls.publisher.clone(),
        ls.subscriber.clone(),
        count,
        &[count / 3, 2 * count / 3],
        move |k| async move {
            let mut broker = shared.lock().await;
            let began = Instant::now();
            if let Err(e) = broker.restart(STOPS[k]).await {
                panic!("restart {} ({:?}) of {kind:?} failed: {e}", k + 1, STOPS[k]);
            }
            eprintln!(
                "{kind:?}: restart {} ({:?}) done in {:?}",
                k + 1,
                STOPS[k],
                began.elapsed()
            );
        },
    )
    .await;
    println!("{report:?}");
    report.record();
    let _ = tokio::time::timeout(Duration::from_secs(10), ls.close()).await;
    drop(broker);
    report.assert_nothing_lost();
    assert!(
        report.recovery_ms.is_some(),
        "{kind:?}: no publish was confirmed after one of the restarts: {report:?}"
    );
}

#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_broker_restarted_twice() {
    cell(Kind::RabbitMq).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_broker_restarted_twice() {
    cell(Kind::Nats).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_broker_restarted_twice() {
    cell(Kind::Postgres).await;
}

/// No cell: see the module docs. Printed so the matrix run says why the row is missing.
#[cfg(feature = "kafka")]
#[test]
fn kafka_broker_restarted_twice() {
    eprintln!(
        "SKIPPED: kafka broker-restarted-twice: the local Kafka-protocol broker (tansu 0.6.0) \
         keeps its log in memory (its other engine here is S3, and no S3 server runs here), so \
         a restart drops every message by design"
    );
}
