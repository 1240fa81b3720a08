//! Catch-up subscriptions over any [`EventStore`]: read everything after a position, then
//! follow new appends, with durable named checkpoints.

use std::sync::Arc;
use std::time::Duration;

use futures::stream;

use crate::store::{EventStore, RecordedEvent, RecordedStream, StoreError};

/// Events read per round trip.
const PAGE: usize = 256;
/// Longest wait between polls when the store gives no wake-up hint.
const POLL: Duration = Duration::from_millis(500);

/// Every event with position greater than `after`, then new ones as they are appended.
/// The stream never ends by itself; drop it to stop. A read error is yielded once and the
/// stream goes on from the same position.
pub fn subscribe_all(store: Arc<dyn EventStore>, after: u64) -> RecordedStream {
    struct S {
        store: Arc<dyn EventStore>,
        after: u64,
        page: std::vec::IntoIter<RecordedEvent>,
    }
    let s = S {
        store,
        after,
        page: Vec::new().into_iter(),
    };
    Box::pin(stream::unfold(s, |mut s| async move {
        loop {
            if let Some(event) = s.page.next() {
                s.after = event.position;
                return Some((Ok(event), s));
            }
            match s.store.read_all(s.after, PAGE).await {
                Ok(page) if page.is_empty() => s.store.wait_for_events(s.after, POLL).await,
                Ok(page) => s.page = page.into_iter(),
                Err(e) => {
                    // Give the caller the error but never spin on a failing store.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Some((Err(e), s));
                }
            }
        }
    }))
}

/// Runs `handler` for every event after the named checkpoint, saving the checkpoint after each
/// handled event, until `stop` resolves or the handler fails.
///
/// The checkpoint is saved after the handler succeeds, so a crash means the last event is
/// handled again (at-least-once): make the handler idempotent (the inbox helps).
pub async fn run_catch_up<F, Fut, E>(
    store: Arc<dyn EventStore>,
    name: &str,
    stop: impl std::future::Future<Output = ()>,
    mut handler: F,
) -> Result<u64, CatchUpError<E>>
where
    F: FnMut(RecordedEvent) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    use futures::StreamExt;
    let start = store
        .load_checkpoint(name)
        .await
        .map_err(CatchUpError::Store)?
        .unwrap_or(0);
    let mut events = subscribe_all(store.clone(), start);
    let mut last = start;
    let checkpoint = metrics::gauge!(crate::observe::names::CHECKPOINT_POSITION, "subscription" => name.to_string());
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            _ = &mut stop => return Ok(last),
            next = events.next() => next,
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(e)) => return Err(CatchUpError::Store(e)),
            None => return Ok(last),
        };
        let position = event.position;
        handler(event).await.map_err(CatchUpError::Handler)?;
        store
            .save_checkpoint(name, position)
            .await
            .map_err(CatchUpError::Store)?;
        checkpoint.set(position as f64);
        last = position;
    }
}

/// Why a catch-up subscription stopped.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError<E> {
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The handler failed; the checkpoint stays before the failing event.
    #[error("handler failed")]
    Handler(E),
}
