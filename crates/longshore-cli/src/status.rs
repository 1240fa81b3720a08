//! `longshore lag` and `longshore health`: answers for scripts and readiness probes.

use std::time::Duration;

use serde_json::json;

use crate::connect::{close, connect, Urls};
use crate::error::CliError;
use crate::output::Output;

/// Prints how many messages wait for `subscription`.
pub async fn lag(
    urls: &Urls,
    out: Output,
    subscription: &str,
    patterns: &[String],
) -> Result<(), CliError> {
    let ls = connect(urls).await?;
    let lag = async {
        // A log (Kafka) counts lag over the topics the patterns select, known to a process
        // only once it opened the subscription; elsewhere the broker knows the subscription.
        if ls.subscriber.capabilities().replay {
            if patterns.is_empty() {
                return Err(CliError::Input(format!(
                    "{}: lag needs the subscription's patterns: add --pattern P (repeatable)",
                    ls.backend
                )));
            }
            let sub = longshore::Subscription::new(subscription, patterns.iter().cloned());
            ls.subscriber.ensure_subscription(&sub).await?;
        }
        Ok(ls.subscriber.lag(subscription).await?)
    }
    .await;
    close(&ls).await;
    match lag? {
        Some(n) => out.line(&json!({"subscription": subscription, "lag": n}), || {
            format!("{subscription}: {n} waiting")
        }),
        None => out.line(&json!({"subscription": subscription, "lag": null}), || {
            format!("{subscription}: {} cannot tell", ls.backend)
        }),
    }
    Ok(())
}

/// Prints the backend's health; `Ok(true)` when ready. Unreachable within `timeout_secs` is
/// not ready.
pub async fn health(urls: &Urls, out: Output, timeout_secs: u64) -> Result<bool, CliError> {
    let check = async {
        let ls = connect(urls).await?;
        // The backend's own readiness (publisher and subscriber), not a service's consumers.
        let health = ls
            .publisher
            .health()
            .await
            .and(ls.subscriber.health().await);
        close(&ls).await;
        Ok::<_, CliError>((ls.url().to_string(), health))
    };
    let (url, health) = tokio::time::timeout(Duration::from_secs(timeout_secs), check)
        .await
        .map_err(|_| CliError::Timeout("health check"))??;
    let ready = health.is_ready();
    out.line(
        &json!({
            "backend": health.backend,
            "url": url,
            "ready": ready,
            "connected": health.connected,
            "topology_declared": health.topology_declared,
            "detail": health.detail,
        }),
        || {
            let state = if ready { "ready" } else { "NOT ready" };
            match &health.detail {
                Some(d) => format!("{} at {url}: {state} ({d})", health.backend),
                None => format!("{} at {url}: {state}", health.backend),
            }
        },
    );
    Ok(ready)
}
