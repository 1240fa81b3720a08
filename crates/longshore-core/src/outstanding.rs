//! Work an adapter hands to a task that its `close` must wait for: a queued ack's write, a
//! delivery dropped unsettled and given back, a fetch still running for a dropped stream.
//!
//! Without the wait, a service that closes its broker and exits right away leaves that work
//! undone: acked messages come back, and given-back ones stay leased until their lease runs
//! out. Each piece is counted by a [`Tracked`] guard that travels with it, so a task dropped
//! unrun (a runtime shutting down) cannot leave the count up.
//!
//! A handle's count can sit within its client's ([`Outstanding::within`]): closing a
//! subscriber handle waits for that handle's work only, closing the broker for everyone's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Counts work handed to tasks; [`Outstanding::finished`] waits until none is left.
#[derive(Debug, Default)]
pub struct Outstanding {
    count: AtomicUsize,
    idle: Notify,
    /// Where every piece counted here is counted too (a handle's work is its client's).
    parent: Option<Arc<Outstanding>>,
}

/// One piece of outstanding work: counted from [`Outstanding::track`] until dropped.
#[derive(Debug)]
pub struct Tracked(Arc<Outstanding>);

impl Outstanding {
    /// A count of its own whose work also counts in `parent`'s: a handle's, within its
    /// client's.
    pub fn within(parent: &Arc<Outstanding>) -> Arc<Outstanding> {
        Arc::new(Outstanding {
            parent: Some(parent.clone()),
            ..Outstanding::default()
        })
    }

    /// Counts one piece of work (here and in every parent) until the returned guard is
    /// dropped.
    pub fn track(self: &Arc<Self>) -> Tracked {
        let mut level = Some(&**self);
        while let Some(counts) = level {
            counts.count.fetch_add(1, Ordering::AcqRel);
            level = counts.parent.as_deref();
        }
        Tracked(self.clone())
    }

    /// Pieces of work not finished yet.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no work is outstanding, for at most `limit`; whether it all finished.
    pub async fn finished(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.idle()).await.is_ok()
    }

    async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the count is read, so an end in between is not missed.
            idle.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut level = Some(&*self.0);
        while let Some(counts) = level {
            if counts.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                counts.idle.notify_waiters();
            }
            level = counts.parent.as_deref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_every_piece_then_returns() {
        let work = Arc::new(Outstanding::default());
        assert!(work.finished(Duration::ZERO).await, "nothing tracked");
        let (a, b) = (work.track(), work.track());
        let waiting = tokio::spawn({
            let work = work.clone();
            async move { work.finished(Duration::from_secs(60)).await }
        });
        drop(a);
        assert_eq!(work.count(), 1);
        drop(b);
        assert!(waiting.await.expect("waiter"), "finished once both dropped");
    }

    /// A handle's work counts in its client's; the handle does not wait for a sibling's.
    #[tokio::test(start_paused = true)]
    async fn a_handle_waits_for_its_own_work_only() {
        let client = Arc::new(Outstanding::default());
        let (a, b) = (Outstanding::within(&client), Outstanding::within(&client));
        let busy = b.track();
        let mine = a.track();
        assert_eq!(client.count(), 2);
        drop(mine);
        assert!(a.finished(Duration::ZERO).await, "a's own work is done");
        assert!(!client.finished(Duration::from_secs(5)).await, "b's is not");
        drop(busy);
        assert!(client.finished(Duration::ZERO).await);
        assert_eq!((a.count(), b.count()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_limit() {
        let work = Arc::new(Outstanding::default());
        let _held = work.track();
        assert!(!work.finished(Duration::from_secs(5)).await);
    }
}
