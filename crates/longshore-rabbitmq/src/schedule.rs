//! Scheduled publish on the broker: a message whose `x-deliver-at` is at least one
//! [`DELAY_UNIT`](crate::delay::DELAY_UNIT) ahead is published into the delay levels instead of
//! the topic exchange, so that it reaches the subscriptions' queues only once it is due.
//!
//! Its routing key is the delay's bits, the marker word [`TOPIC_MARKER`](delay::TOPIC_MARKER) and the topic
//! (`0.….1.0.@t.orders.created`). It passes the levels as a delayed nack's copy does; the
//! delivery exchange hands every marked key to the scheduled exchange, where each subscription
//! is bound once per pattern (`*.….*.@t.orders.#`), so it fans out to every subscription whose
//! pattern matches its topic, as an immediate publish would. It carries its topic in the header
//! the delay copies use (trusted only from the delay exchanges) and no attempts header, so it
//! arrives as a first delivery of its topic with its id, key, headers (`x-deliver-at` included:
//! by then it is due) and payload.

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::BasicProperties;
use longshore_core::Message;

use crate::confirm::Detour;
use crate::delay::{self, DELAY_UNIT, TOPIC_HEADER};

/// Where a message goes if it is scheduled far enough ahead: the level of its delay's highest
/// bit, with the marked routing key. `None` (publish it as usual) when it has no schedule, is
/// due in less than one unit, or its topic is too long for the marked key (over 196 bytes; the
/// consumer runtime then defers it with a delayed nack). The delay is rounded up to whole units
/// (never early) and clamped to [`MAX_DELAY`](crate::delay::MAX_DELAY): such a message arrives
/// before its time and the runtime gives it back for what remains.
pub(crate) fn detour(
    exchange: &str,
    queue_type: crate::QueueType,
    topic: &str,
    message: &Message,
    now: DateTime<Utc>,
) -> Option<Detour> {
    // A header that is no time was refused by `check_limits` before.
    let when = message.scheduled_for().ok().flatten()?;
    let ahead = (when - now).to_std().ok()?;
    if ahead < DELAY_UNIT {
        return None;
    }
    let units = delay::units(ahead);
    let routing_key = delay::scheduled_key(units, topic)?;
    Some(Detour {
        exchange: delay::level_name(exchange, queue_type, delay::first_level(units)),
        routing_key,
    })
}

/// The properties of a scheduled message: a publish's, plus its topic (the routing key it
/// arrives with is the delay's).
pub(crate) fn with_topic(props: BasicProperties, topic: &str) -> BasicProperties {
    let mut table = props.headers().clone().unwrap_or_default();
    table.insert(
        ShortString::from(TOPIC_HEADER),
        AMQPValue::LongString(LongString::from(topic.as_bytes())),
    );
    props.with_headers(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delay::LEVELS;
    use crate::QueueType;
    use longshore_core::topic::matches;

    fn at(now: DateTime<Utc>, millis: i64) -> Message {
        Message::new("x").deliver_at(now + chrono::Duration::milliseconds(millis))
    }

    #[test]
    fn only_messages_due_a_unit_ahead_take_the_levels() {
        let now = Utc::now();
        let plan = |m: &Message| detour("ls", QueueType::Classic, "orders.created", m, now);
        assert!(plan(&Message::new("x")).is_none());
        assert!(plan(&at(now, -5_000)).is_none());
        assert!(plan(&at(now, 99)).is_none());
        // 250 ms: rounded up to 3 units, from level 1 (its highest bit).
        let d = plan(&at(now, 250)).expect("scheduled");
        assert_eq!(d.exchange, "ls.delay.1");
        assert!(d.routing_key.ends_with(".0.1.1.@t.orders.created"));
        let d = detour("ls", QueueType::Quorum, "a", &at(now, 150), now).expect("scheduled");
        assert_eq!(d.exchange, "ls.delay.quorum.1");
        // Far beyond the longest delay: clamped to the top level.
        let far = at(now, 400 * 24 * 3600 * 1000);
        let d = plan(&far).expect("scheduled");
        assert_eq!(d.exchange, format!("ls.delay.{}", LEVELS - 1));
        // A topic too long for the marked key is published as usual.
        let long = "a".repeat(197);
        assert!(detour("ls", QueueType::Classic, &long, &at(now, 5_000), now).is_none());
        let fits = "a".repeat(196);
        assert!(detour("ls", QueueType::Classic, &fits, &at(now, 5_000), now).is_some());
    }

    #[test]
    fn marked_keys_fan_out_by_pattern_and_never_cross_queue_bindings() {
        let key = delay::scheduled_key(20, "orders.created").expect("key");
        let bound = |p: &str| matches(&delay::scheduled_binding(p).expect("binding"), &key);
        assert!(bound("orders.created"));
        assert!(bound("orders.*"));
        assert!(bound("orders.#"));
        assert!(bound("#"));
        assert!(bound("#.created"));
        assert!(!bound("orders"));
        assert!(!bound("orders.created.*"));
        assert!(!bound("billing.#"));
        // `orders.#` matches `orders`, as on the topic exchange.
        let bare = delay::scheduled_key(20, "orders").expect("key");
        assert!(matches(
            &delay::scheduled_binding("orders.#").expect("binding"),
            &bare
        ));
        // No queue's delivery binding matches a scheduled key, and no scheduled binding a
        // nacked copy's key (queue names cannot hold `@`).
        assert!(!matches(&delay::delivery_binding("orders.created"), &key));
        let copy = delay::routing_key(20, "orders.created");
        assert!(!matches(
            &delay::scheduled_binding("#").expect("binding"),
            &copy
        ));
        assert!(delay::scheduled_binding(&"a".repeat(197)).is_none());
        assert_eq!(
            delay::scheduled_binding(&"a".repeat(196)).map(|b| b.len()),
            Some(255)
        );
    }

    #[test]
    fn the_topic_rides_in_the_delay_header() {
        let props = with_topic(BasicProperties::default(), "orders.created");
        let table = props.headers().as_ref().expect("headers");
        assert_eq!(
            table.inner().get(TOPIC_HEADER),
            Some(&AMQPValue::LongString("orders.created".into()))
        );
    }
}
