//! Metric names and labels: the same on every backend (see the table in the crate README).
//!
//! Labels: `backend` everywhere; `topic` on publishing metrics; `subscription` on consuming
//! metrics. Topics and subscription names are the service's own, so their number is bounded
//! by its code, not by its traffic.

/// Counter: messages handed to a publisher (`backend`, `topic`).
pub const PUBLISHED: &str = "longshore_published_total";
/// Counter: messages the backend confirmed (`backend`, `topic`).
pub const PUBLISH_CONFIRMED: &str = "longshore_publish_confirmed_total";
/// Counter: messages whose publish failed (`backend`, `topic`).
pub const PUBLISH_FAILED: &str = "longshore_publish_failed_total";
/// Histogram, seconds: one `publish` or `publish_batch` call until confirmed (`backend`, `topic`).
pub const PUBLISH_DURATION: &str = "longshore_publish_duration_seconds";
/// Counter: deliveries received (`backend`, `subscription`).
pub const CONSUMED: &str = "longshore_consumed_total";
/// Counter: deliveries acknowledged (`backend`, `subscription`).
pub const ACKED: &str = "longshore_acked_total";
/// Counter: deliveries given back for redelivery (`backend`, `subscription`).
pub const NACKED: &str = "longshore_nacked_total";
/// Counter: deliveries moved to the dead-letter queue (`backend`, `subscription`).
pub const DEAD_LETTERED: &str = "longshore_dead_lettered_total";
/// Counter: ack / nack / dead-letter calls that failed; the broker redelivers (`backend`, `subscription`).
pub const SETTLE_FAILED: &str = "longshore_settle_failed_total";
/// Counter: errors reported by a delivery stream (`backend`, `subscription`).
pub const STREAM_ERRORS: &str = "longshore_stream_errors_total";
/// Gauge: deliveries received and not yet settled (`backend`, `subscription`).
pub const IN_FLIGHT: &str = "longshore_in_flight";
/// Gauge: open consumers (`backend`, `subscription`).
pub const CONSUMERS: &str = "longshore_consumers";
/// Counter: handler attempts that failed transiently and were retried (`backend`, `subscription`).
pub const RETRIED: &str = "longshore_retried_total";
/// Counter: scheduled messages given back because they arrived early (`backend`, `subscription`).
pub const DEFERRED: &str = "longshore_deferred_total";
/// Counter: messages past their expiry, not handled (`backend`, `subscription`).
pub const EXPIRED: &str = "longshore_expired_total";
/// Histogram, seconds: one handler attempt (`backend`, `subscription`, `outcome` = ok | retry | dead_letter).
pub const HANDLER_DURATION: &str = "longshore_handler_duration_seconds";
/// Gauge: messages waiting for a subscription, where the backend can tell (`backend`, `subscription`).
pub const CONSUMER_LAG: &str = "longshore_consumer_lag";
/// Gauge: a consumer's circuit breaker, 0 closed, 1 half-open, 2 open (`backend`, `subscription`).
pub const CIRCUIT_BREAKER_STATE: &str = "longshore_circuit_breaker_state";
/// Gauge: 1 while a consumer is paused, else 0 (`backend`, `subscription`).
pub const CONSUMER_PAUSED: &str = "longshore_consumer_paused";
/// Gauge: outbox messages not yet relayed (`relay`).
pub const OUTBOX_BACKLOG: &str = "longshore_outbox_backlog";
/// Counter: outbox messages relayed (`relay`).
pub const OUTBOX_RELAYED: &str = "longshore_outbox_relayed_total";
/// Counter: outbox rows parked after the publisher refused them for good (`relay`).
pub const OUTBOX_PARKED: &str = "longshore_outbox_parked_total";
/// Gauge: outbox rows parked and waiting for a retry (`relay`).
pub const OUTBOX_PARKED_ROWS: &str = "longshore_outbox_parked";
/// Gauge, seconds: how long a relay has gone without finishing a pass, 0 while it moves (`relay`).
pub const OUTBOX_STALLED: &str = "longshore_outbox_stalled_seconds";
/// Gauge: the position a catch-up subscription has checkpointed (`subscription`).
pub const CHECKPOINT_POSITION: &str = "longshore_checkpoint_position";

/// Every metric: name, kind, labels, meaning. The README's metric table is generated from it.
pub const ALL: &[(&str, &str, &str, &str)] = &[
    (
        PUBLISHED,
        "counter",
        "backend, topic",
        "messages handed to a publisher",
    ),
    (
        PUBLISH_CONFIRMED,
        "counter",
        "backend, topic",
        "messages the backend confirmed",
    ),
    (
        PUBLISH_FAILED,
        "counter",
        "backend, topic",
        "messages whose publish failed",
    ),
    (
        PUBLISH_DURATION,
        "histogram (s)",
        "backend, topic",
        "one publish / publish_batch call until confirmed",
    ),
    (
        CONSUMED,
        "counter",
        "backend, subscription",
        "deliveries received",
    ),
    (
        ACKED,
        "counter",
        "backend, subscription",
        "deliveries acknowledged",
    ),
    (
        NACKED,
        "counter",
        "backend, subscription",
        "deliveries given back for redelivery",
    ),
    (
        DEAD_LETTERED,
        "counter",
        "backend, subscription",
        "deliveries moved to `dlq.<subscription>`",
    ),
    (
        SETTLE_FAILED,
        "counter",
        "backend, subscription",
        "ack / nack / dead-letter calls that failed (the broker redelivers)",
    ),
    (
        STREAM_ERRORS,
        "counter",
        "backend, subscription",
        "errors reported by a delivery stream (reconnects)",
    ),
    (
        IN_FLIGHT,
        "gauge",
        "backend, subscription",
        "deliveries received and not yet settled",
    ),
    (
        CONSUMERS,
        "gauge",
        "backend, subscription",
        "open consumers",
    ),
    (
        RETRIED,
        "counter",
        "backend, subscription",
        "handler attempts retried (in process, or by the broker after a long backoff)",
    ),
    (
        DEFERRED,
        "counter",
        "backend, subscription",
        "scheduled messages given back because they arrived early",
    ),
    (
        EXPIRED,
        "counter",
        "backend, subscription",
        "messages past their expiry, dropped or dead-lettered unhandled",
    ),
    (
        HANDLER_DURATION,
        "histogram (s)",
        "backend, subscription, outcome",
        "one handler attempt; outcome = ok, retry, dead_letter",
    ),
    (
        CONSUMER_LAG,
        "gauge",
        "backend, subscription",
        "messages waiting for the subscription (where the backend can tell)",
    ),
    (
        CIRCUIT_BREAKER_STATE,
        "gauge",
        "backend, subscription",
        "a consumer's circuit breaker: 0 closed, 1 half-open (probing), 2 open (not fetching)",
    ),
    (
        CONSUMER_PAUSED,
        "gauge",
        "backend, subscription",
        "1 while a consumer is paused (not fetching), else 0",
    ),
    (
        OUTBOX_BACKLOG,
        "gauge",
        "relay",
        "outbox messages not yet relayed",
    ),
    (
        OUTBOX_RELAYED,
        "counter",
        "relay",
        "outbox messages relayed to the broker",
    ),
    (
        OUTBOX_PARKED,
        "counter",
        "relay",
        "outbox messages parked after the broker refused them for good",
    ),
    (
        OUTBOX_PARKED_ROWS,
        "gauge",
        "relay",
        "outbox messages parked, waiting for `Outbox::retry_failed`",
    ),
    (
        OUTBOX_STALLED,
        "gauge",
        "relay",
        "seconds since the relay last finished a pass while failing (0 while it moves)",
    ),
    (
        CHECKPOINT_POSITION,
        "gauge",
        "subscription",
        "position a catch-up subscription has checkpointed",
    ),
];
