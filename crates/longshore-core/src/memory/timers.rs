//! Scheduled messages of one memory broker: each waits in a timer task until due, invisible
//! to every subscription, and is then routed like a publish; `cancel` aborts its timer.
//!
//! Routing happens when the message comes due, so a subscription created while it waits gets
//! it too (as with RabbitMQ's delay levels). Nothing survives the process, as with every memory
//! message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::task::AbortHandle;

use super::client::Client;
use super::queue::lock;
use crate::error::Error;
use crate::message::Message;

/// The pending schedules, by message id: one per id (a second schedule of the same id, a
/// relay's retry say, replaces the first, so the message comes once).
#[derive(Default)]
pub(super) struct Timers {
    pending: Mutex<HashMap<String, (u64, AbortHandle)>>,
    next_token: AtomicU64,
}

impl Timers {
    /// Withdraws the pending schedule of `id`; `true` if there was one.
    pub(super) fn cancel(&self, id: &str) -> bool {
        match lock(&self.pending).remove(id) {
            Some((_, timer)) => {
                timer.abort();
                true
            }
            None => false,
        }
    }

    /// Drops every pending schedule (the broker closed: nothing would route them).
    pub(super) fn abort_all(&self) {
        for (_, (_, timer)) in lock(&self.pending).drain() {
            timer.abort();
        }
    }

    /// Takes `id` off the list if `token` still names its schedule; `false` once cancelled or
    /// replaced.
    fn take(&self, id: &str, token: u64) -> bool {
        let mut pending = lock(&self.pending);
        match pending.get(id) {
            Some((t, _)) if *t == token => {
                pending.remove(id);
                true
            }
            _ => false,
        }
    }
}

/// Holds `message` until `due`, then routes it to `topic`'s subscriptions.
pub(super) fn schedule(client: &Arc<Client>, topic: &str, message: Message, due: DateTime<Utc>) {
    let token = client.timers.next_token.fetch_add(1, Ordering::Relaxed);
    let id = message.id.clone();
    let wait = (due - Utc::now()).to_std().unwrap_or_default();
    let task_client = client.clone();
    let topic = topic.to_string();
    let task_id = id.clone();
    // Under the lock, so the task (which takes it first) cannot miss its own entry.
    let mut pending = lock(&client.timers.pending);
    let task = tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        if !task_client.timers.take(&task_id, token) {
            return;
        }
        release(&task_client, &topic, message).await;
    });
    if let Some((_, replaced)) = pending.insert(id, (token, task.abort_handle())) {
        replaced.abort();
    }
}

/// Routes a due message, waiting out a full subscription rather than dropping it (each try
/// already waited `publish_timeout` for room).
async fn release(client: &Client, topic: &str, message: Message) {
    loop {
        if client.closed.load(Ordering::Acquire) {
            return;
        }
        match client.route_one(topic, message.clone()).await {
            Ok(()) => return,
            // Subscriptions it reached before the full one get it again: at least once, as a
            // redelivery would.
            Err(Error::Backpressure { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, "a scheduled message could not be routed");
                return;
            }
        }
    }
}
