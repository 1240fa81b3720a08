//! A bounded in-memory inbox: remembers the last N message ids per consumer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::inbox::Inbox;
use crate::store::StoreError;

#[derive(Default)]
struct Window {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

/// An [`Inbox`] that keeps the most recent `capacity` message ids per consumer.
///
/// Duplicates older than the window are not detected; use the Postgres inbox when a handler's
/// effects must be exactly-once across restarts.
#[derive(Debug)]
pub struct MemoryInbox {
    capacity: usize,
    windows: Mutex<HashMap<String, Window>>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Window({} ids)", self.ids.len())
    }
}

impl MemoryInbox {
    /// An inbox remembering up to `capacity` ids per consumer.
    pub fn new(capacity: usize) -> Self {
        MemoryInbox {
            capacity: capacity.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for MemoryInbox {
    fn default() -> Self {
        Self::new(100_000)
    }
}

#[async_trait]
impl Inbox for MemoryInbox {
    async fn is_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        Ok(windows
            .get(consumer)
            .is_some_and(|w| w.ids.contains(message_id)))
    }

    async fn mark_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.entry(consumer.to_string()).or_default();
        if !w.ids.insert(message_id.to_string()) {
            return Ok(false);
        }
        w.order.push_back(message_id.to_string());
        while w.order.len() > self.capacity {
            if let Some(old) = w.order.pop_front() {
                w.ids.remove(&old);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn window_is_bounded() {
        let inbox = MemoryInbox::new(2);
        assert!(inbox.mark_processed("c", "1").await.unwrap());
        assert!(!inbox.mark_processed("c", "1").await.unwrap());
        assert!(inbox.mark_processed("c", "2").await.unwrap());
        assert!(inbox.mark_processed("c", "3").await.unwrap());
        assert!(!inbox.is_processed("c", "1").await.unwrap());
        assert!(inbox.is_processed("c", "3").await.unwrap());
        assert!(!inbox.is_processed("other", "3").await.unwrap());
    }
}
