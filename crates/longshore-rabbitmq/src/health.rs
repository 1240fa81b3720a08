//! Health of the broker connection and the lag of a subscription's queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, ErrorKind, ExchangeKind};
use longshore_core::topic::validate_name;
use longshore_core::{Error, Health};
use tokio::time::Instant;

use crate::client::Client;
use crate::config::DEAD_LETTER_EXCHANGE;
use crate::error::map_lapin;
use crate::BACKEND;

/// How long `health()` waits for a connection being re-opened: a readiness probe must answer
/// quickly, and the re-opening goes on in the background when it takes longer.
const RECONNECT_WAIT: Duration = Duration::from_secs(2);

/// How long the topology check and `lag()` may take (channel, declarations, close).
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The health of `client`'s connection as seen by a handle; `closed_handle` names the handle
/// when it was closed itself.
pub(crate) async fn report(client: &Arc<Client>, closed_handle: Option<&str>) -> Health {
    if let Some(handle) = closed_handle {
        return Health::down(BACKEND, format!("{handle} is closed"));
    }
    if client.is_closed() {
        return Health::down(BACKEND, "rabbitmq broker handle is closed");
    }
    if !client.is_connected() {
        if let Err(detail) = reopen(client).await {
            return Health::down(BACKEND, detail);
        }
    }
    let checked = match tokio::time::timeout(CHECK_TIMEOUT, check_exchanges(client)).await {
        Ok(checked) => checked,
        Err(_) => Err(format!(
            "checking the exchanges took longer than {CHECK_TIMEOUT:?}"
        )),
    };
    match checked {
        Ok(()) => Health::up(BACKEND),
        // The check failed because the connection went away meanwhile.
        Err(detail) if !client.is_connected() => Health::down(BACKEND, detail),
        Err(detail) => Health::up(BACKEND).with_topology(false).with_detail(detail),
    }
}

/// Re-opens a dropped connection, as the next publish would, so that an idle service becomes
/// ready again once the broker is back. The attempt runs in its own task (never cancelled
/// half-way through the AMQP handshake), at most one at a time from health checks.
async fn reopen(client: &Arc<Client>) -> Result<(), String> {
    let not_connected = || format!("not connected to {}; reconnecting", client.config.url);
    if client.health_probe.swap(true, Ordering::AcqRel) {
        return Err(not_connected());
    }
    let probe = client.clone();
    let attempt = tokio::spawn(async move {
        let result = probe.connection().await.map(|_| ());
        probe.health_probe.store(false, Ordering::Release);
        result
    });
    match tokio::time::timeout(RECONNECT_WAIT, attempt).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("not connected: {e}")),
        Ok(Err(_)) | Err(_) => Err(not_connected()),
    }
}

/// Both exchanges longshore declares on every connection still exist (passive declarations
/// on a short-lived channel; a missing one closes that channel with 404). Uses the current
/// connection only: re-opening it is `reopen`'s job, never cancelled by a timeout.
async fn check_exchanges(client: &Client) -> Result<(), String> {
    let conn = client
        .current()
        .ok_or_else(|| format!("not connected to {}", client.config.url))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {}", map_lapin("open channel", e)))?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let exchanges = [
        (client.config.exchange.as_str(), ExchangeKind::Topic),
        (DEAD_LETTER_EXCHANGE, ExchangeKind::Direct),
    ];
    for (name, kind) in exchanges {
        if let Err(e) = channel
            .exchange_declare(name.into(), kind, passive, FieldTable::default())
            .await
        {
            return Err(if is_not_found(&e) {
                format!("exchange {name:?} does not exist (it is declared again on reconnect)")
            } else {
                format!("checking exchange {name:?}: {}", map_lapin("declare", e))
            });
        }
    }
    close(&channel).await;
    Ok(())
}

/// Messages ready in the subscription's queue (`queue.declare` passive `message_count`).
pub(crate) async fn lag(client: &Client, subscription: &str) -> Result<Option<u64>, Error> {
    validate_name("subscription", subscription)?;
    // Re-opens a dropped connection (bounded by its own deadline and `connect_timeout`).
    let channel = client.channel(Instant::now() + CHECK_TIMEOUT).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = tokio::time::timeout(
        CHECK_TIMEOUT,
        channel.queue_declare(subscription.into(), passive, FieldTable::default()),
    )
    .await;
    match declared {
        Ok(Ok(queue)) => {
            close(&channel).await;
            Ok(Some(u64::from(queue.message_count())))
        }
        // The broker closed the channel with 404: nothing to close.
        Ok(Err(e)) if is_not_found(&e) => Err(Error::InvalidName {
            kind: "subscription",
            value: subscription.to_string(),
            reason: "no such queue: subscribe or ensure_subscription creates it",
        }),
        Ok(Err(e)) => {
            close(&channel).await;
            Err(map_lapin("lag (passive queue.declare)", e))
        }
        Err(_) => {
            close(&channel).await;
            Err(Error::Timeout {
                operation: "rabbitmq lag",
                after: CHECK_TIMEOUT,
            })
        }
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

async fn close(channel: &Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "OK".into()).await;
    }
}
