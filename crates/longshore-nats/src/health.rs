//! Health of the connection and the stream, and the lag of a subscription's durable.

use async_nats::connection::State;
use longshore_core::topic::validate_name;
use longshore_core::{Error, Health};

use crate::client::Client;
use crate::error::{api_error, CONSUMER_NOT_FOUND, STREAM_NOT_FOUND};
use crate::mapping::durable_of;
use crate::BACKEND;

/// The health of `client`'s connection as seen by a handle; `closed_handle` names the handle
/// when it was closed itself.
pub(crate) async fn report(client: &Client, closed_handle: Option<&str>) -> Health {
    if let Some(handle) = closed_handle {
        return Health::down(BACKEND, format!("{handle} is closed"));
    }
    if client.is_closed() {
        return Health::down(BACKEND, "nats broker is closed");
    }
    if client.nats.connection_state() != State::Connected {
        // async-nats reconnects by itself (without limit): nothing to trigger here.
        return Health::down(
            BACKEND,
            format!(
                "not connected to {}; reconnecting",
                client.config.url.redacted()
            ),
        );
    }
    match client.refresh_stream().await {
        Ok(()) => Health::up(BACKEND),
        Err(e) => Health::up(BACKEND)
            .with_topology(false)
            .with_detail(format!("stream {}: {e}", client.config.stream)),
    }
}

/// `num_pending + num_ack_pending` of the subscription's durable consumer.
pub(crate) async fn lag(client: &Client, subscription: &str) -> Result<Option<u64>, Error> {
    validate_name("subscription", subscription)?;
    let info = client.consumer_info(&durable_of(subscription)).await?;
    match info {
        Ok(info) => {
            let unacked = u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX);
            Ok(Some(info.num_pending.saturating_add(unacked)))
        }
        Err(e) if matches!(e.error_code().0, CONSUMER_NOT_FOUND | STREAM_NOT_FOUND) => {
            Err(Error::InvalidName {
                kind: "subscription",
                value: subscription.to_string(),
                reason: "no such durable consumer: subscribe or ensure_subscription creates it",
            })
        }
        Err(e) => Err(api_error("consumer info", &e).into()),
    }
}
