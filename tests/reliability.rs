//! The fault matrix through the facade: every compiled-in broker behind a loopback TCP proxy
//! (`longshore_testkit::proxy`) that cuts, stalls or slows the connection while a known set of
//! message ids is published and consumed (`longshore_testkit::fault::run`). Each cell asserts
//! that nothing confirmed was lost, that health comes back after the fault, and records its
//! row for RELIABILITY.md when `LONGSHORE_RELIABILITY_OUT` is set (`scripts/reliability.sh`).
//!
//! Kafka clients connect to the address the broker advertises, not the one they were given, so
//! Kafka runs on a broker of this test's own (tansu, from `scripts/kafka-broker.sh`) that
//! advertises the proxy. Everything listens on 127.0.0.1, is bounded in count and time, and
//! stops what it started.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use longshore::Longshore;
use longshore_testkit::fault::{self, FaultReport};
use longshore_testkit::proxy::{Mode, Proxy};

/// How long a cut or a stall lasts.
const FAULT: Duration = Duration::from_secs(3);

/// The fault applied while half the messages are out.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Cut,
    Stall,
    Slow,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Cut => "connection-cut",
            Fault::Stall => "connection-stall",
            Fault::Slow => "slow-link",
        }
    }
}

/// `url` with its host and port replaced by `to` (default ports per scheme).
fn rewrite(url: &str, to: SocketAddr) -> (String, SocketAddr) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(end);
    let default = match scheme {
        "amqp" => 5672,
        "nats" => 4222,
        "kafka" => 9092,
        _ => 5432,
    };
    let authority = authority.split(',').next().unwrap_or(authority);
    let (host, port) = authority
        .rsplit_once(':')
        .map_or((authority, default), |(h, p)| {
            (h, p.parse().unwrap_or(default))
        });
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let upstream: SocketAddr = format!("{host}:{port}")
        .parse()
        .expect("a loopback address");
    (format!("{scheme}://{userinfo}{to}{tail}"), upstream)
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A tansu of this test's own on a free port, advertising `advertised` (the proxy), killed on
/// drop. `None` (after printing why) when no tansu binary is installed, outside CI.
struct OwnKafka {
    child: tokio::process::Child,
    addr: SocketAddr,
}

impl OwnKafka {
    async fn start(advertised: SocketAddr) -> Option<OwnKafka> {
        let bin = std::env::var("TANSU_BIN")
            .unwrap_or_else(|_| "/var/cache/longshore/kafka/bin/tansu".to_string());
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
        let spawned = tokio::process::Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://{addr}"),
                "--advertised-listener-url",
                &format!("tcp://{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = longshore_testkit::require_broker("kafka (tansu)", &bin, spawned)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(OwnKafka { child, addr })
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Runs one cell: `fault` on `backend` at `url`, through a proxy.
async fn cell(backend: &'static str, url: String, fault: Fault) {
    let mut kafka = None;
    let (proxy, proxied) = if backend == "kafka" {
        // The broker advertises the proxy's address, so the proxy's port is chosen first.
        let advertised: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let Some(own) = OwnKafka::start(advertised).await else {
            return;
        };
        let proxy = Proxy::start_on(own.addr, advertised.port())
            .await
            .expect("proxy on the advertised port");
        let (proxied, _) = rewrite(&url, proxy.addr());
        kafka = Some(own);
        (proxy, proxied)
    } else {
        let (_, upstream) = rewrite(&url, "127.0.0.1:1".parse().expect("addr"));
        let proxy = Proxy::start(upstream).await.expect("proxy");
        let (proxied, _) = rewrite(&url, proxy.addr());
        (proxy, proxied)
    };
    let attempt = tokio::time::timeout(Duration::from_secs(30), longshore::connect(&proxied))
        .await
        .unwrap_or_else(|_| Err(longshore::Error::Config("connect timed out".into()).into()));
    let Some(ls) = longshore_testkit::require_broker(backend, &url, attempt) else {
        return;
    };
    let report = run_cell(&ls, &proxy, fault).await;
    println!("{report:?}");
    report.record();
    let _ = ls.close().await;
    drop(kafka);
    report.assert_nothing_lost();
    assert_eq!(
        report.health_recovered,
        Some(true),
        "{backend}: health not ready after {}",
        fault.name()
    );
}

async fn run_cell(ls: &Longshore, proxy: &Proxy, fault: Fault) -> FaultReport {
    let saw_outage = Arc::new(Mutex::new(None));
    let seen = saw_outage.clone();
    let health = ls.clone();
    let mut report = fault::run(
        ls.backend,
        fault.name(),
        ls.publisher.clone(),
        ls.subscriber.clone(),
        fault::message_count(),
        || async move {
            let mode = match fault {
                Fault::Cut => Mode::Cut,
                Fault::Stall => Mode::Stall,
                Fault::Slow => Mode::Slow(Duration::from_millis(2)),
            };
            proxy.set(mode);
            let until = Instant::now() + FAULT;
            let mut down = false;
            while Instant::now() < until {
                let probe = tokio::time::timeout(Duration::from_millis(500), health.health()).await;
                down |= !probe.map(|h| h.is_ready()).unwrap_or(false);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Ok(mut s) = seen.lock() {
                *s = Some(down);
            }
            // A slow link stays slow for the rest of the run; the others end here.
            if !matches!(fault, Fault::Slow) {
                proxy.set(Mode::Pass);
            }
        },
    )
    .await;
    proxy.set(Mode::Pass);
    report.health_saw_outage = saw_outage.lock().ok().and_then(|s| *s);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut recovered = false;
    while Instant::now() < deadline && !recovered {
        recovered = ls.health().await.is_ready();
        if !recovered {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    report.health_recovered = Some(recovered);
    report
}

macro_rules! cells {
    ($($feature:literal, $backend:literal, $url:expr => $($name:ident: $fault:expr),+;)+) => {
        $($(
            #[cfg(feature = $feature)]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                cell($backend, $url, $fault).await;
            }
        )+)+
    };
}

cells! {
    "rabbitmq", "rabbitmq", common::amqp_url() =>
        rabbitmq_connection_cut: Fault::Cut,
        rabbitmq_connection_stall: Fault::Stall,
        rabbitmq_slow_link: Fault::Slow;
    "nats", "nats", common::nats_url() =>
        nats_connection_cut: Fault::Cut,
        nats_connection_stall: Fault::Stall,
        nats_slow_link: Fault::Slow;
    "postgres", "postgres", format!("{}?schema=rel{}", common::postgres_url(), &uuid::Uuid::new_v4().simple().to_string()[..10]) =>
        postgres_connection_cut: Fault::Cut,
        postgres_connection_stall: Fault::Stall,
        postgres_slow_link: Fault::Slow;
    "kafka", "kafka", "kafka://127.0.0.1:9092".to_string() =>
        kafka_connection_cut: Fault::Cut,
        kafka_connection_stall: Fault::Stall,
        kafka_slow_link: Fault::Slow;
}
