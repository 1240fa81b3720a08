//! A three-node JetStream cluster (`scripts/nats-cluster.sh`: nodes on 127.0.0.1:4251-4253)
//! and a stream with three replicas: the node leading the stream is killed (SIGKILL) while a
//! consumer runs, then started again; every confirmed message is handled
//! (`longshore_testkit::fault::run`, fault `node-killed-r3`).
//!
//! Uses ports of its own, so it runs beside the other tests. Skips with a printed reason when
//! the script cannot start the cluster, except under CI. A guard stops the cluster this test
//! started, also when it fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use longshore_core::Broker;
use longshore_nats::{NatsBroker, NatsConfig, BACKEND};
use longshore_testkit::fault;

/// The three nodes, comma-separated: the client reconnects among them.
const SERVERS: &str = "nats://127.0.0.1:4251,127.0.0.1:4252,127.0.0.1:4253";

/// How long the killed node stays down before it is started again.
const DOWN: Duration = Duration::from_secs(2);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Runs `scripts/nats-cluster.sh <args>`; false if it fails or takes over 90 s (it is killed
/// then). Its output goes to the test's.
fn script(args: &[&str]) -> bool {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/nats-cluster.sh");
    let mut child = match Command::new("bash").arg(path).args(args).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("nats-cluster.sh {args:?}: {e}");
            return false;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                eprintln!("nats-cluster.sh {args:?} did not finish within 90 s");
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// The cluster for one test; stops it on drop if this test started it.
struct Cluster {
    started_here: bool,
}

impl Cluster {
    /// Starts the nodes (those not running); `None` (skip, reason printed) if that fails
    /// outside CI.
    fn start() -> Option<Cluster> {
        let cluster = Cluster {
            started_here: !script(&["status"]),
        };
        if script(&["start"]) {
            return Some(cluster);
        }
        assert!(
            !ci(),
            "scripts/nats-cluster.sh could not start the 3-node cluster"
        );
        eprintln!("SKIPPED: scripts/nats-cluster.sh could not start a 3-node cluster");
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started_here && !script(&["stop"]) {
            eprintln!("nats-cluster.sh stop failed: stop it by hand");
        }
    }
}

/// The node (1-3) leading `stream`'s replicas; node 1 if the cluster does not say.
async fn stream_leader(broker: &NatsBroker, stream: &str) -> u8 {
    let leader = async {
        let mut stream = broker.jetstream().get_stream(stream).await.ok()?;
        let info = stream.info().await.ok()?;
        info.cluster.as_ref()?.leader.clone()
    };
    let name = tokio::time::timeout(Duration::from_secs(10), leader)
        .await
        .ok()
        .flatten();
    match name.as_deref() {
        Some("n2") => 2,
        Some("n3") => 3,
        _ => 1,
    }
}

/// Creates the stream, retrying while the new cluster settles (bounded).
async fn ensure_stream(broker: &NatsBroker) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match broker.ensure_stream().await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("stream not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the replicated stream was never created: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_node_loses_no_confirmed_message_on_a_replicated_stream() {
    let Some(_cluster) = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("start the cluster")
    else {
        return;
    };
    let stream = format!(
        "LS_CLUSTER_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let url = format!("{SERVERS}?replicas=3&stream={stream}&prefix=lscluster&max_age=1h");
    let config = NatsConfig::from_url(&url).expect("cluster URL");
    assert_eq!(config.replicas, 3);
    let broker = NatsBroker::connect(config)
        .await
        .expect("connect to the cluster");
    ensure_stream(&broker).await;
    let leader = stream_leader(&broker, &stream).await;
    eprintln!("stream {stream} is led by n{leader}; killing it mid-run");

    let count = fault::message_count();
    let run = fault::run(
        BACKEND,
        "node-killed-r3",
        broker.publisher(),
        broker.subscriber(),
        count,
        || async move {
            let node = leader.to_string();
            let killed = tokio::task::spawn_blocking({
                let node = node.clone();
                move || script(&["kill", &node])
            })
            .await
            .expect("kill");
            assert!(killed, "could not kill n{node}");
            tokio::time::sleep(DOWN).await;
            let back = tokio::task::spawn_blocking(move || script(&["start", &node]))
                .await
                .expect("restart");
            assert!(back, "n{leader} did not come back");
        },
    );
    let limit = fault::RUN_LIMIT + fault::SETTLE + Duration::from_secs(60);
    let report = tokio::time::timeout(limit, run)
        .await
        .expect("the fault run finished in time");
    eprintln!("{report:?}");
    report.record();
    report.assert_nothing_lost();
    assert!(
        report.confirmed > count / 2,
        "publishing never resumed after the node came back: {report:?}"
    );

    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        broker.jetstream().delete_stream(&stream),
    )
    .await;
    let _ = broker.close().await;
}
