//! Durable delayed nacks: the delay topic of a subscription and the copies it holds.
//!
//! Kafka has no per-message timer, and holding a nacked message in the consumer with its
//! offset uncommitted is neither durable (a restart redelivers it at once, as attempt 1) nor
//! cheap (a long delay stalls the commit of its whole partition). So a nack with a delay
//! writes a copy of the message to the subscription's delay topic
//! (`longshore.delay.<subscription>`, [`crate::TopicMap::delay_topic`]) and, once the broker
//! confirmed the copy (acks=all), settles the original like an ack. The subscription's
//! consumer reads its delay topic beside its own topics; a copy whose time has not come is
//! held in the consumer with its delay-topic offset uncommitted, so a consumer that restarts
//! reads it again and holds it again: the wait survives restarts and ends on time.
//!
//! A copy carries, besides the message's own id, key, payload and headers:
//! - the longshore topic it was delivered on, in the adapter's topic header
//!   ([`crate::mapping::HEADER_TOPIC`]), as every record does; the copy is delivered as a
//!   message of that topic again;
//! - its due time in core's [`HEADER_DELIVER_AT`], which the runtime understands too;
//! - [`HEADER_ATTEMPTS`]: the attempt of the delivery that was nacked, so the count goes on;
//! - [`HEADER_OWN_SCHEDULE`]: the message's own `x-deliver-at`, if it had one, which
//!   replaces the due time again on the way out (absent = the nack added the due time, which
//!   is then removed).
//!
//! The private headers are read only from records of the delay topic and never shown.

use std::time::{Duration, SystemTime};

use longshore_core::{Message, HEADER_DELIVER_AT};

use crate::mapping::{Packed, Parts};

/// Header of a delay copy: the attempt of the delivery that was nacked (decimal).
pub(crate) const HEADER_ATTEMPTS: &str = "x-longshore-attempts";

/// Header of a delay copy: the message's own `x-deliver-at` before the nack, if it had one.
pub(crate) const HEADER_OWN_SCHEDULE: &str = "x-longshore-deliver-at";

/// Longest delay a copy is given: far beyond any retention, and it keeps the due time
/// representable whatever the caller asked for.
const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Held copies are released this much after their due time: the runtime compares the due
/// time in milliseconds with its own clock, and a copy released a hair early would be
/// deferred (and copied) once more.
const MARGIN: Duration = Duration::from_millis(2);

/// The copy of `message` (delivered as attempt `attempt`) that the delay topic holds for
/// `delay` from `now`.
pub(crate) fn delayed_copy(
    mut message: Message,
    attempt: u32,
    delay: Duration,
    now: SystemTime,
) -> Message {
    let due = now
        .checked_add(delay.min(MAX_DELAY))
        .unwrap_or(now + Duration::from_secs(1));
    if let Some(own) = message.headers.remove(HEADER_DELIVER_AT) {
        message.headers.insert(HEADER_OWN_SCHEDULE.into(), own);
    } else {
        // A copy of a copy: the message has no own schedule, keep it that way.
        message.headers.remove(HEADER_OWN_SCHEDULE);
    }
    message
        .headers
        .insert(HEADER_ATTEMPTS.into(), attempt.max(1).to_string());
    message.deliver_at(due.into())
}

/// A record read from the delay topic: what its private headers say.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DelayRecord<'a> {
    /// The attempt of the delivery that was nacked, if the header is a number.
    pub attempts: Option<u32>,
    /// When the copy is due, if its `x-deliver-at` is a time.
    pub due: Option<SystemTime>,
    /// The message's own `x-deliver-at`, to be restored.
    pub own_schedule: Option<&'a [u8]>,
}

impl<'a> DelayRecord<'a> {
    /// Reads the private headers among `headers`; garbage in any of them counts as absent.
    pub fn read(headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>) -> Self {
        let mut r = DelayRecord::default();
        for (name, value) in headers {
            let Some(value) = value else { continue };
            match name {
                HEADER_ATTEMPTS => {
                    r.attempts = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                }
                HEADER_DELIVER_AT => r.due = parse_time(value),
                HEADER_OWN_SCHEDULE => r.own_schedule = Some(value),
                _ => {}
            }
        }
        r
    }

    /// The attempt of the redelivery: one more than the attempts made, never below 1.
    pub fn attempt(&self) -> u32 {
        self.attempts.unwrap_or(0).saturating_add(1).max(1)
    }

    /// How long the copy is still to be held at `now`; `None` when it is due (or its due time
    /// is unreadable: delivering it is better than holding it for ever).
    pub fn hold(&self, now: SystemTime) -> Option<Duration> {
        let left = self.due?.duration_since(now).ok()?;
        (!left.is_zero()).then(|| left.min(MAX_DELAY) + MARGIN)
    }
}

/// An RFC 3339 time, read with core's own parser (the one the runtime uses).
fn parse_time(value: &[u8]) -> Option<SystemTime> {
    let value = std::str::from_utf8(value).ok()?;
    let probe = Message::new(&b""[..]).with_header(HEADER_DELIVER_AT, value);
    probe.scheduled_for().ok().flatten().map(SystemTime::from)
}

/// Packs a delay-topic record as the message that was nacked: the private headers and the
/// due time removed, the message's own schedule restored. `headers` are the record's headers
/// other than id and topic; returns the packed record, its attempt and how long it is to be
/// held.
pub(crate) fn pack_delayed<'a>(
    parts: &Parts<'a>,
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + Clone,
    now: SystemTime,
) -> (Packed, u32, Option<Duration>) {
    let record = DelayRecord::read(headers.clone());
    let kept = headers.filter(|(name, _)| {
        !matches!(
            *name,
            HEADER_ATTEMPTS | HEADER_OWN_SCHEDULE | HEADER_DELIVER_AT
        )
    });
    let own = record
        .own_schedule
        .map(|value| (HEADER_DELIVER_AT, Some(value)));
    let packed = Packed::pack(parts, kept.chain(own));
    (packed, record.attempt(), record.hold(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(payload: &'a [u8]) -> Parts<'a> {
        Parts {
            kafka_topic: "longshore.delay.billing",
            partition: 1,
            offset: 9,
            payload,
            key: Some(b"order-1"),
            id: Some(b"id-1"),
            topic: Some(b"orders.created"),
        }
    }

    /// The headers of a copy as the consumer reads them back.
    fn record_headers(m: &Message) -> Vec<(&str, Option<&[u8]>)> {
        m.headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_bytes())))
            .collect()
    }

    #[test]
    fn a_copy_comes_back_as_the_original_with_the_attempt_carried_on() {
        let now = SystemTime::now();
        let original = Message::new(&b"{}"[..])
            .with_key("order-1")
            .with_header("tenant", "acme");
        let copy = delayed_copy(original.clone(), 3, Duration::from_secs(60), now);
        assert_eq!(copy.headers[HEADER_ATTEMPTS], "3");
        assert!(copy.scheduled_for().expect("a time").is_some());
        let headers = record_headers(&copy);
        let (packed, attempt, hold) = pack_delayed(&parts(b"{}"), headers.into_iter(), now);
        assert_eq!(attempt, 4);
        let hold = hold.expect("held");
        assert!(hold > Duration::from_secs(59) && hold <= Duration::from_secs(61));
        let (m, topic) = packed.unpack();
        assert_eq!(
            topic, "orders.created",
            "the original topic, not the delay topic"
        );
        assert_eq!((m.id.as_str(), m.key.as_deref()), ("id-1", Some("order-1")));
        assert_eq!(
            m.headers, original.headers,
            "private headers and due time stripped"
        );
    }

    #[test]
    fn a_users_own_schedule_is_restored() {
        let now = SystemTime::now();
        let own = "2030-01-01T00:00:00.000Z";
        let original = Message::new(&b""[..]).with_header(HEADER_DELIVER_AT, own);
        let copy = delayed_copy(original, 1, Duration::from_millis(500), now);
        assert_eq!(copy.headers[HEADER_OWN_SCHEDULE], own);
        assert_ne!(
            copy.headers[HEADER_DELIVER_AT], own,
            "the due time rules the copy"
        );
        let headers = record_headers(&copy);
        let (packed, attempt, _) = pack_delayed(&parts(b""), headers.into_iter(), now);
        assert_eq!(attempt, 2);
        let (m, _) = packed.unpack();
        assert_eq!(
            m.headers.get(HEADER_DELIVER_AT).map(String::as_str),
            Some(own)
        );
        assert!(!m.headers.contains_key(HEADER_OWN_SCHEDULE));
        // Delayed again once delivered: the user's schedule is kept, not the first due time.
        let again = delayed_copy(m, 2, Duration::from_millis(500), now);
        assert_eq!(again.headers[HEADER_OWN_SCHEDULE], own);
        // A copy of a delivered copy (which had no schedule of its own) does not invent one.
        let plain = delayed_copy(Message::new(&b""[..]), 1, Duration::from_secs(1), now);
        let (packed, _, _) = pack_delayed(&parts(b""), record_headers(&plain).into_iter(), now);
        let back = delayed_copy(packed.unpack().0, 2, Duration::from_secs(1), now);
        assert!(!back.headers.contains_key(HEADER_OWN_SCHEDULE));
    }

    #[test]
    fn due_copies_are_not_held() {
        let now = SystemTime::now();
        let copy = delayed_copy(Message::new(&b""[..]), 1, Duration::from_millis(1), now);
        let later = now + Duration::from_secs(1);
        let (_, _, hold) = pack_delayed(&parts(b""), record_headers(&copy).into_iter(), later);
        assert_eq!(hold, None);
    }

    #[test]
    fn garbage_headers_are_tolerated() {
        let now = SystemTime::now();
        for attempts in [&b"x"[..], b"-3", b"", b"99999999999999999999", b"\xff\xfe"] {
            let headers = [
                (HEADER_ATTEMPTS, Some(attempts)),
                (HEADER_DELIVER_AT, Some(&b"not a time"[..])),
                (HEADER_OWN_SCHEDULE, None),
                ("tenant", Some(&b"acme"[..])),
            ];
            let (packed, attempt, hold) = pack_delayed(&parts(b"p"), headers.into_iter(), now);
            assert_eq!(attempt, 1, "a garbage count restarts at 1, never below");
            assert_eq!(hold, None, "an unreadable due time is due now");
            let (m, topic) = packed.unpack();
            assert_eq!(topic, "orders.created");
            assert_eq!(m.headers.len(), 1);
            assert_eq!(m.headers["tenant"], "acme");
        }
        let max = u32::MAX.to_string();
        let headers = [(HEADER_ATTEMPTS, Some(max.as_bytes()))];
        assert_eq!(
            pack_delayed(&parts(b""), headers.into_iter(), now).1,
            u32::MAX
        );
        assert_eq!(
            DelayRecord::read([(HEADER_ATTEMPTS, Some(&b"0"[..]))].into_iter()).attempt(),
            1
        );
    }

    #[test]
    fn absurd_delays_are_capped() {
        let now = SystemTime::now();
        let copy = delayed_copy(Message::new(&b""[..]), 1, Duration::MAX, now);
        let (_, _, hold) = pack_delayed(&parts(b""), record_headers(&copy).into_iter(), now);
        assert!(hold.is_some_and(|h| h <= MAX_DELAY + MARGIN));
    }
}
