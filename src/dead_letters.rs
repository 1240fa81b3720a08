//! `Longshore::dead_letters`: the dead-letter operations of one subscription on the
//! connected backend (see [`DeadLetters`]).

use longshore_core::DeadLetters;

use crate::connect::Longshore;

impl Longshore {
    /// The dead letters of `subscription` (`dlq.<subscription>` on this backend): list,
    /// show, replay and purge them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use longshore::prelude::*;
    /// use longshore::DeadLetterFilter;
    ///
    /// let ls = longshore::connect("memory://").await?;
    /// ls.subscriber.ensure_subscription(&Subscription::new("billing", ["orders.*"])).await?;
    /// let dlq = ls.dead_letters("billing");
    /// for letter in dlq.list(&DeadLetterFilter::all().reason("timeout")).await? {
    ///     println!("{} {:?} {:?}", letter.id, letter.event_type, letter.reason);
    /// }
    /// let report = dlq.replay(&DeadLetterFilter::all().reason("timeout"), None).await?;
    /// assert!(report.replayed.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn dead_letters(&self, subscription: &str) -> DeadLetters {
        DeadLetters::new(
            self.publisher.clone(),
            self.subscriber.clone(),
            subscription,
        )
    }
}
