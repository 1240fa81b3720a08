//! Store → broker: the outbox relay, and the at-least-once copies a crashed relay would send.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use longshore::prelude::*;
use tokio::sync::mpsc;

use super::BoxError;

/// The longest any single awaited step may take before the run fails.
const WAIT: Duration = Duration::from_secs(60);

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> Result<T, BoxError> {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(format!("{what}: channel closed").into()),
        Err(_) => Err(format!("{what}: nothing within {WAIT:?}").into()),
    }
}

/// Relays `outbox` to the broker (relay `name`) until the projection reported every event of
/// `ids` on `applied`; returns how many rows the relay published. Shutting the relay down
/// lets its pass in flight finish, so no row is left published but unmarked.
pub async fn until_applied(
    name: String,
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn Publisher>,
    ids: &HashSet<Uuid>,
    applied: &mut mpsc::UnboundedReceiver<Uuid>,
) -> Result<u64, BoxError> {
    let relay = OutboxRelay::new(name, outbox, publisher).spawn();
    let mut seen = HashSet::new();
    while seen.len() < ids.len() {
        let id = recv(applied, "projection").await?;
        if ids.contains(&id) {
            seen.insert(id);
        }
    }
    Ok(relay.shutdown(WAIT).await)
}

/// A relay that crashes after the broker confirmed but before marking the rows sent publishes
/// them again after restarting: does exactly that with the `stored` events, then waits until
/// the projection's inbox reported skipping each of `ids` on `duplicates` (unless the broker
/// drops the copies itself). Returns whether the broker did, and the ids the inbox skipped.
pub async fn republish(
    ls: &Longshore,
    stored: &[RecordedEvent],
    ids: &HashSet<Uuid>,
    duplicates: &mut mpsc::UnboundedReceiver<String>,
) -> Result<(bool, HashSet<Uuid>), BoxError> {
    let publisher = EventPublisher::new(ls.publisher.clone());
    for recorded in stored {
        publisher.publish(&recorded.event).await?;
    }
    let broker_dedup = ls.publisher.capabilities().dedup_window;
    let mut skipped = HashSet::new();
    if broker_dedup {
        println!(
            "re-published {} events; {} drops copies of a message id inside its dedup window",
            stored.len(),
            ls.backend
        );
    } else {
        println!(
            "re-published {} events; waiting for the inbox to skip each copy",
            stored.len()
        );
        while skipped.len() < ids.len() {
            let id = recv(duplicates, "inbox duplicates").await?;
            if let Ok(id) = id.parse::<Uuid>() {
                if ids.contains(&id) {
                    skipped.insert(id);
                }
            }
        }
        println!("inbox skipped {} duplicate deliveries", skipped.len());
    }
    Ok((broker_dedup, skipped))
}
