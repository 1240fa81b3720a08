//! Shared helpers of the integration tests (included with `mod common;`).
#![allow(dead_code)]

pub mod raw;

use longshore_rabbitmq::{RabbitBroker, RabbitConfig, DEFAULT_URL};
use longshore_testkit::require_broker;

/// `AMQP_URL` or the local broker.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// `AMQP_URL` with `queue_type=quorum`: every subscription declares quorum queues.
pub fn quorum_url() -> String {
    with_query(&amqp_url(), "queue_type=quorum")
}

/// `url` with one more query parameter.
pub fn with_query(url: &str, pair: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{pair}")
}

/// A broker on `AMQP_URL` with `config` applied, or `None` (skip, reason printed) when the
/// broker is unreachable outside CI.
pub async fn broker_with(
    config: impl FnOnce(RabbitConfig) -> RabbitConfig,
) -> Option<RabbitBroker> {
    let url = amqp_url();
    let attempt = match RabbitConfig::from_url(&url) {
        Ok(c) => RabbitBroker::connect(config(c)).await,
        Err(e) => Err(e),
    };
    require_broker("rabbitmq", &url, attempt)
}

/// Force-closes connections with `rabbitmqctl`: by default every connection whose client
/// name is `name` (all connections of the broker handle under test, so that other tests running
/// in parallel, e.g. under nextest, keep theirs); with `LONGSHORE_RECONNECT_CLOSE=all`, every
/// connection of the broker (`close_all_connections --global`).
pub async fn close_connections(name: String) -> Result<usize, String> {
    let rabbitmqctl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("rabbitmqctl")
            .args(&args)
            .output()
            .await
            .map_err(|e| format!("rabbitmqctl not runnable: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "rabbitmqctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    if std::env::var("LONGSHORE_RECONNECT_CLOSE").is_ok_and(|v| v == "all") {
        rabbitmqctl(vec![
            "close_all_connections".into(),
            "--global".into(),
            "longshore reconnect test".into(),
        ])
        .await?;
        return Ok(usize::MAX);
    }
    let listing = rabbitmqctl(vec![
        "-q".into(),
        "list_connections".into(),
        "--no-table-headers".into(),
        "pid".into(),
        "client_properties".into(),
    ])
    .await?;
    let quoted = format!("\"{name}\"");
    let pids: Vec<String> = listing
        .lines()
        .filter(|line| line.contains(&quoted))
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    for pid in &pids {
        rabbitmqctl(vec![
            "close_connection".into(),
            pid.clone(),
            "longshore reconnect test".into(),
        ])
        .await?;
    }
    Ok(pids.len())
}

/// Whether the tests run under CI (where a missing tool fails instead of skipping).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}
