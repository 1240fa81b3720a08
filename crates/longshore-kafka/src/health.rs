//! Health of a Kafka handle: one metadata request, off the async threads.

use std::collections::HashSet;
use std::time::Duration;

use longshore_core::observe::Health;

use crate::broker::Shared;
use crate::error::{map, BACKEND};

/// A health check answers quickly even with the cluster gone: it never waits longer than this
/// (or the configured request timeout, if shorter).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// The health of a handle on `shared`; `closed` names the handle when it was closed.
///
/// `connected`: the cluster answered a metadata request. `topology_declared`: every Kafka
/// topic this broker handle created or confirmed is still in that metadata (nothing is
/// declared at connect, topics come with first use).
pub(crate) async fn check(shared: &Shared, closed: Option<&'static str>) -> Health {
    if let Some(what) = closed {
        return Health::down(BACKEND, format!("{what} is closed"));
    }
    let url = shared.config.url.redacted();
    let admin = shared.admin.clone();
    let timeout = shared.config.request_timeout.min(HEALTH_TIMEOUT);
    let listed = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(None, timeout)
            .map(|md| {
                md.topics()
                    .iter()
                    .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                    .map(|t| t.name().to_string())
                    .collect::<HashSet<_>>()
            })
            .map_err(|e| map("fetch metadata", e))
    })
    .await;
    let present = match listed {
        Ok(Ok(present)) => present,
        Ok(Err(e)) => return Health::down(BACKEND, format!("{url}: {e}")),
        Err(e) => return Health::down(BACKEND, format!("{url}: metadata task failed: {e}")),
    };
    let mut missing: Vec<String> = shared
        .known_topics()
        .into_iter()
        .filter(|t| !present.contains(t))
        .collect();
    if missing.is_empty() {
        return Health::up(BACKEND);
    }
    missing.sort();
    Health::up(BACKEND)
        .with_topology(false)
        .with_detail(format!("topics missing from {url}: {}", missing.join(", ")))
}
