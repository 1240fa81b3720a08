//! Durable delays on the broker, without a plugin: the levels a delayed nack passes through.
//!
//! Time is counted in [`DELAY_UNIT`]s (100 ms). A delay of `n` units is written in binary,
//! [`LEVELS`] bits, most significant first, as the words of the routing key, followed by the
//! subscription's queue name: `0.0.….1.0.billing`. Level `k` is a durable topic exchange and a
//! durable queue, both named `<exchange>.delay.<k>` (`<exchange>.delay.quorum.<k>` for quorum
//! queues), the queue holding messages for `2^k` units (`x-message-ttl`) and then
//! dead-lettering them to the exchange of level `k - 1` (level 0: to the delivery exchange
//! `<exchange>.delay.deliver`), routing key unchanged (no `x-dead-letter-routing-key`).
//!
//! - The exchange of level `k` sends a message whose bit `k` is `1` to its queue (it waits
//!   `2^k` units) and one whose bit is `0` straight on to the next level down (an
//!   exchange-to-exchange binding). After level 0 the message has waited exactly `n` units.
//! - The delivery exchange binds each subscription's queue with [`LEVELS`] `*` words and the
//!   queue's name (queue names may contain dots: the exact count of `*` keeps the match exact),
//!   so the message comes back to the subscription that nacked it, and to no other.
//!
//! The top level waits 2^27 units (15.5 days), so the longest delay is 2^28 - 1 units, about
//! 310.7 days ([`MAX_DELAY`]). A longer delay is clamped to it: the consumer runtime nacks a
//! scheduled message that comes back early again with what remains. (RabbitMQ 3.10+ accepts a
//! queue TTL of up to ten years, rabbitmq-server PR #4836; the delivery count of a retried
//! message keeps counting across rounds, see `mapping`.)

use std::time::Duration;

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use longshore_core::{Error, Headers};
use tokio::time::Instant;

use crate::client::Client;
use crate::config::QueueType;
use crate::error::map_lapin;

/// The granularity of a delayed nack: delays are rounded up to whole units.
pub const DELAY_UNIT: Duration = Duration::from_millis(100);

/// How many levels (bits of the delay in units) there are: level `k` waits `2^k` units.
pub const LEVELS: u32 = 28;

/// The largest delay in units: all [`LEVELS`] bits set.
const MAX_UNITS: u64 = (1 << LEVELS) - 1;

/// The longest delay a nack waits on the broker (2^28 - 1 units, about 310.7 days); longer
/// delays are clamped to it.
pub const MAX_DELAY: Duration = Duration::from_millis(MAX_UNITS * 100);

/// A delay in units, rounded up, clamped to [`MAX_DELAY`]. Zero only for a zero delay.
pub(crate) fn units(delay: Duration) -> u64 {
    let unit = DELAY_UNIT.as_nanos();
    let units = delay.as_nanos().div_ceil(unit);
    u64::try_from(units).unwrap_or(u64::MAX).min(MAX_UNITS)
}

/// What every delay entity of `exchange`'s topology is named after: `<exchange>.delay.`.
/// Queues and exchanges with this prefix belong to the delay levels.
pub(crate) fn prefix(exchange: &str) -> String {
    format!("{exchange}.delay.")
}

/// The exchange the last level dead-letters to, which routes to the subscriptions' queues.
pub(crate) fn deliver_exchange(exchange: &str) -> String {
    format!("{exchange}.delay.deliver")
}

/// The exchange (and the queue) of level `k`. Classic and quorum levels have their own names:
/// brokers configured with either type may share a vhost, and a queue's type cannot change.
pub(crate) fn level_name(exchange: &str, queue_type: QueueType, k: u32) -> String {
    match queue_type {
        QueueType::Classic => format!("{exchange}.delay.{k}"),
        QueueType::Quorum => format!("{exchange}.delay.quorum.{k}"),
    }
}

/// The level a message of `units` is published to: that of its highest set bit (the levels
/// above would only pass it on). `units` must be at least 1.
pub(crate) fn first_level(units: u64) -> u32 {
    63u32.saturating_sub(units.max(1).leading_zeros())
}

/// The routing key of a message delayed by `units` for `queue`: the [`LEVELS`] bits, most
/// significant first, then the queue name. At most 56 + 128 bytes (names are at most 128).
pub(crate) fn routing_key(units: u64, queue: &str) -> String {
    let mut key = String::with_capacity(2 * LEVELS as usize + queue.len());
    for k in (0..LEVELS).rev() {
        key.push(if units >> k & 1 == 1 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(queue);
    key
}

/// The binding of `queue` on the delivery exchange: [`LEVELS`] `*` words, then its name.
pub(crate) fn delivery_binding(queue: &str) -> String {
    let mut key = "*.".repeat(LEVELS as usize);
    key.push_str(queue);
    key
}

/// The binding pattern of level `k` for bit `k` = `bit`: `*` for each higher bit, the bit,
/// then `#` for the lower bits and the queue name.
fn level_binding(k: u32, bit: char) -> String {
    let mut key = "*.".repeat((LEVELS - 1 - k) as usize);
    key.push(bit);
    key.push_str(".#");
    key
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// The arguments of level `k`'s queue. Quorum levels dead-letter at least once (RabbitMQ
/// 3.10+: the message stays in the level until the next one confirmed it), which needs
/// `x-overflow: reject-publish`; classic queues dead-letter at most once.
fn level_arguments(exchange: &str, queue_type: QueueType, k: u32) -> FieldTable {
    let next = match k {
        0 => deliver_exchange(exchange),
        _ => level_name(exchange, queue_type, k - 1),
    };
    let ttl = (DELAY_UNIT.as_millis() as i64) << k;
    let mut args = FieldTable::default();
    let mut text = |name: &str, value: &str| {
        args.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    };
    text("x-dead-letter-exchange", &next);
    if queue_type == QueueType::Quorum {
        text("x-queue-type", "quorum");
        text("x-dead-letter-strategy", "at-least-once");
        text("x-overflow", "reject-publish");
    }
    args.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongLongInt(ttl),
    );
    args
}

/// The word after the delay's bits that marks a scheduled publish's routing key: what follows
/// it is a topic, not a queue name. Queue names are `[A-Za-z0-9_.-]`, so no queue's binding on
/// the delivery exchange can match it, nor a scheduled binding a nacked copy's key.
pub(crate) const TOPIC_MARKER: &str = "@t";

/// The exchange scheduled publishes reach once due: the delivery exchange passes it every key
/// carrying [`TOPIC_MARKER`], and each subscription binds it once per pattern. Its alternate
/// exchange is [`unrouted_name`], so a due message no subscription matches is kept there.
pub(crate) fn scheduled_exchange(exchange: &str) -> String {
    format!("{exchange}.delay.scheduled")
}

/// The fanout exchange and the durable queue that keep scheduled messages which came due for
/// a topic no subscription matched (instead of RabbitMQ dropping them silently).
pub(crate) fn unrouted_name(exchange: &str) -> String {
    format!("{exchange}.delay.unrouted")
}

/// The routing key of a message scheduled `units` ahead for `topic`: the bits, the marker,
/// the topic's words. `None` when it would exceed AMQP's 255 bytes (topics over 196 bytes).
pub(crate) fn scheduled_key(units: u64, topic: &str) -> Option<String> {
    let key = routing_key(units, &format!("{TOPIC_MARKER}.{topic}"));
    (key.len() <= 255).then_some(key)
}

/// The binding of a subscription's `pattern` on [`scheduled_exchange`]: [`LEVELS`] `*` words,
/// the marker, the pattern, whose `*` and `#` keep their meaning (a trailing `#` matches zero
/// words, so `orders.#` matches `orders`, as on the topic exchange). `None` when it would
/// exceed 255 bytes (patterns over 196 bytes).
pub(crate) fn scheduled_binding(pattern: &str) -> Option<String> {
    let key = delivery_binding(&format!("{TOPIC_MARKER}.{pattern}"));
    (key.len() <= 255).then_some(key)
}

/// Declares the delivery exchange (durable, topic) and, behind it, the scheduled exchange
/// with its alternate exchange and queue for unrouted messages. Idempotent.
pub(crate) async fn declare_deliver(channel: &Channel, exchange: &str) -> Result<(), Error> {
    let failed = |what: &'static str| move |e| map_lapin(what, e);
    let deliver = deliver_exchange(exchange);
    let scheduled = scheduled_exchange(exchange);
    let unrouted = unrouted_name(exchange);
    channel
        .exchange_declare(
            deliver.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(failed("declare delay exchange"))?;
    channel
        .exchange_declare(
            unrouted.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(failed("declare unrouted exchange"))?;
    // Classic for either queue type: a holding pen for operators, one name per vhost.
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(unrouted.as_str().into(), durable, FieldTable::default())
        .await
        .map_err(failed("declare unrouted queue"))?;
    channel
        .queue_bind(
            unrouted.as_str().into(),
            unrouted.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed("bind unrouted queue"))?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("alternate-exchange"),
        AMQPValue::LongString(LongString::from(unrouted.as_bytes())),
    );
    channel
        .exchange_declare(
            scheduled.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            args,
        )
        .await
        .map_err(failed("declare scheduled exchange"))?;
    let mut marked = "*.".repeat(LEVELS as usize);
    marked.push_str(TOPIC_MARKER);
    marked.push_str(".#");
    channel
        .exchange_bind(
            scheduled.as_str().into(),
            deliver.as_str().into(),
            marked.into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed("bind scheduled exchange"))
}

/// Binds a subscription's queue to the delivery exchange (declared first), so that its
/// delayed messages come back to it. Idempotent.
pub(crate) async fn bind_queue(
    channel: &Channel,
    exchange: &str,
    queue: &str,
) -> Result<(), Error> {
    declare_deliver(channel, exchange).await?;
    channel
        .queue_bind(
            queue.into(),
            deliver_exchange(exchange).into(),
            delivery_binding(queue).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| map_lapin("bind queue to the delay exchange", e))
}

/// Binds a subscription's queue to the scheduled exchange once per pattern, so that scheduled
/// publishes of every topic it matches reach it when due. A pattern too long for the marked
/// binding (over 196 bytes) is left out, with a warning: the topics it matches that are short
/// enough to be scheduled on the broker are rare enough not to be worth a longer key scheme.
/// Idempotent; the delivery exchange must be declared (see [`bind_queue`]).
pub(crate) async fn bind_patterns(
    channel: &Channel,
    exchange: &str,
    queue: &str,
    patterns: &[String],
) -> Result<(), Error> {
    let scheduled = scheduled_exchange(exchange);
    for pattern in patterns {
        let Some(binding) = scheduled_binding(pattern) else {
            tracing::warn!(
                queue,
                pattern = %pattern,
                "pattern too long to bind for scheduled publishes; scheduled messages only \
                 it matches are kept in the unrouted queue"
            );
            continue;
        };
        channel
            .queue_bind(
                queue.into(),
                scheduled.as_str().into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| map_lapin("bind queue to the scheduled exchange", e))?;
    }
    Ok(())
}

/// Declares the delivery exchange and every level: exchange, queue and both bindings, from
/// level 0 up (each level dead-letters to the one below). Idempotent.
async fn declare_levels(
    channel: &Channel,
    exchange: &str,
    queue_type: QueueType,
) -> Result<(), Error> {
    declare_deliver(channel, exchange).await?;
    let failed = |what: &'static str| move |e| map_lapin(what, e);
    for k in 0..LEVELS {
        let name = level_name(exchange, queue_type, k);
        channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Topic,
                durable_exchange(),
                FieldTable::default(),
            )
            .await
            .map_err(failed("declare delay exchange"))?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(
                name.as_str().into(),
                durable,
                level_arguments(exchange, queue_type, k),
            )
            .await
            .map_err(|e| match map_lapin("declare delay queue", e) {
                Error::Config(reason) => Error::Config(format!(
                    "delay queue {name:?} exists with other arguments than this adapter \
                     declares: {reason}"
                )),
                other => other,
            })?;
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                level_binding(k, '1').into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed("bind delay queue"))?;
        let below = match k {
            0 => deliver_exchange(exchange),
            _ => level_name(exchange, queue_type, k - 1),
        };
        channel
            .exchange_bind(
                below.into(),
                name.as_str().into(),
                level_binding(k, '0').into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed("bind delay exchange"))?;
    }
    Ok(())
}

/// Declares the levels once per connection: again after the client re-opened its connection
/// (a broker that lost them, or a vhost that was reset, gets them back), never twice on one.
/// Concurrent first callers (a burst of scheduled publishes) wait for one declaration.
pub(crate) async fn ensure_levels(client: &Client, deadline: Instant) -> Result<(), Error> {
    if client.delay_levels_declared() {
        return Ok(());
    }
    let _declaring = client.delay_levels_lock().lock().await;
    if client.delay_levels_declared() {
        return Ok(());
    }
    let channel = client.channel(deadline).await?;
    let generation = client.generation();
    let declared = tokio::time::timeout_at(
        deadline,
        declare_levels(&channel, &client.config.exchange, client.config.queue_type),
    )
    .await
    .unwrap_or(Err(Error::Timeout {
        operation: "rabbitmq declare delay levels",
        after: client.config.publish_timeout,
    }));
    if channel.status().connected() {
        let _ = channel.close(200, "OK".into()).await;
    }
    declared?;
    client.set_delay_levels_declared(generation);
    Ok(())
}

/// A delayed copy's count of the attempts made before its delay: the attempt of the delivery
/// that was nacked. Written by the acker on the copy it sends through the delay levels, read
/// back only from a message that came out of them, never shown as a header.
pub(crate) const ATTEMPTS_HEADER: &str = "x-longshore-attempts";

/// A delayed copy's topic (its routing key on the way back is the delay's, not the topic).
/// Written and read like [`ATTEMPTS_HEADER`].
pub(crate) const TOPIC_HEADER: &str = "x-longshore-topic";

/// Headers RabbitMQ adds to a message it dead-letters (besides `x-death`): prefixes of
/// `…queue`, `…reason`, `…exchange`.
const DEATH_HEADER_PREFIXES: [&str; 2] = ["x-first-death-", "x-last-death-"];

/// Removes the `x-first-death-*` / `x-last-death-*` headers that name a delay queue: they
/// were added by the delay levels, not by a queue the user knows.
pub(crate) fn forget_deaths(headers: &mut Headers, delay_prefix: &str) {
    if delay_prefix.is_empty() {
        return;
    }
    for prefix in DEATH_HEADER_PREFIXES {
        let queue = format!("{prefix}queue");
        if headers
            .get(&queue)
            .is_some_and(|q| q.starts_with(delay_prefix))
        {
            for field in ["queue", "reason", "exchange"] {
                headers.remove(&format!("{prefix}{field}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_up_and_clamp() {
        assert_eq!(units(Duration::ZERO), 0);
        assert_eq!(units(Duration::from_nanos(1)), 1);
        assert_eq!(units(Duration::from_millis(100)), 1);
        assert_eq!(units(Duration::from_millis(101)), 2);
        assert_eq!(units(Duration::from_secs(2)), 20);
        assert_eq!(units(MAX_DELAY), MAX_UNITS);
        assert_eq!(units(MAX_DELAY + DELAY_UNIT), MAX_UNITS);
        assert_eq!(units(Duration::MAX), MAX_UNITS);
        // The top level's TTL is within RabbitMQ's limit for x-message-ttl (ten years).
        assert!((DELAY_UNIT.as_millis() << (LEVELS - 1)) <= 315_360_000_000);
        assert!(MAX_DELAY > Duration::from_secs(310 * 24 * 3600));
    }

    #[test]
    fn routing_keys_spell_the_bits() {
        let key = routing_key(5, "dlq.billing");
        let words: Vec<&str> = key.split('.').collect();
        assert_eq!(words.len(), LEVELS as usize + 2);
        assert_eq!(
            &words[LEVELS as usize - 3..],
            ["1", "0", "1", "dlq", "billing"]
        );
        assert!(words[..LEVELS as usize - 3].iter().all(|w| *w == "0"));
        assert_eq!(first_level(5), 2);
        assert_eq!(first_level(1), 0);
        assert_eq!(first_level(MAX_UNITS), LEVELS - 1);
        // The longest key fits an AMQP short string.
        assert!(routing_key(MAX_UNITS, &"q".repeat(128)).len() <= 255);
        assert!(delivery_binding(&"q".repeat(128)).len() <= 255);
    }

    #[test]
    fn bindings_match_exactly_one_way() {
        use longshore_core::topic::matches;
        let key = routing_key(0b110, "orders.billing");
        for k in 0..LEVELS {
            let bit = key.split('.').nth((LEVELS - 1 - k) as usize) == Some("1");
            assert_eq!(matches(&level_binding(k, '1'), &key), bit, "level {k}");
            assert_eq!(matches(&level_binding(k, '0'), &key), !bit, "level {k}");
        }
        assert!(matches(&delivery_binding("orders.billing"), &key));
        assert!(!matches(&delivery_binding("billing"), &key));
        assert!(!matches(&delivery_binding("orders"), &key));
    }

    #[test]
    fn levels_chain_down_to_delivery() {
        let args = level_arguments("longshore", QueueType::Classic, 3);
        let get = |name: &str| args.inner().get(name).cloned();
        assert_eq!(get("x-message-ttl"), Some(AMQPValue::LongLongInt(800)));
        assert_eq!(
            get("x-dead-letter-exchange"),
            Some(AMQPValue::LongString("longshore.delay.2".into()))
        );
        assert!(get("x-dead-letter-routing-key").is_none());
        assert!(get("x-queue-type").is_none());
        let zero = level_arguments("longshore", QueueType::Quorum, 0);
        assert_eq!(
            zero.inner().get("x-dead-letter-exchange"),
            Some(&AMQPValue::LongString("longshore.delay.deliver".into()))
        );
        assert_eq!(
            zero.inner().get("x-dead-letter-strategy"),
            Some(&AMQPValue::LongString("at-least-once".into()))
        );
        assert!(level_name("x", QueueType::Quorum, 1).starts_with(&prefix("x")));
        assert!(deliver_exchange("x").starts_with(&prefix("x")));
    }
}
