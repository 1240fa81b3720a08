//! Time in messages: when a message may be delivered (`x-deliver-at`) and when it is stale
//! (`x-expires-at`).
//!
//! Both are plain headers (RFC 3339, UTC, milliseconds), so they cross every broker, the
//! outbox and the seed's wire form unchanged, and a peer that knows nothing of them still reads
//! the message. What honours them:
//! - scheduled delivery: backends that can hold a message until a time do so at publish
//!   ([`Capabilities::native_schedule`](crate::Capabilities): the SQL queues' `available_at`,
//!   RabbitMQ's delay levels, memory's timers);
//!   on the others the consumer runtime gives an early message back with a delayed `nack` for
//!   the time left, which the broker holds ([`Capabilities::native_delay`](crate::Capabilities))
//!   or, on Kafka, the consumer holds with its offset uncommitted;
//! - expiry: checked by the consumer runtime at delivery, on every backend
//!   ([`Consumer::on_expired`](crate::Consumer::on_expired)).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::Error;
use crate::message::{Headers, Message};

/// Header: the time (RFC 3339) before which the message is not delivered to handlers.
pub const HEADER_DELIVER_AT: &str = "x-deliver-at";
/// Header: the time (RFC 3339) after which the message is not delivered to handlers.
pub const HEADER_EXPIRES_AT: &str = "x-expires-at";

/// Names a scheduled message, for [`Publisher::cancel`](crate::Publisher::cancel): the
/// message's id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScheduleId(pub String);

impl std::fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The header value for `when`.
fn stamp(when: DateTime<Utc>) -> String {
    when.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a time header; `Err` names the header when its value is no RFC 3339 time.
fn read(message: &Message, header: &'static str) -> Result<Option<DateTime<Utc>>, Error> {
    if !may_hold(&message.headers, header) {
        return Ok(None);
    }
    let Some(value) = message.headers.get(header) else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(value)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| Error::InvalidHeader {
            name: header,
            reason: "not an RFC 3339 time",
        })
}

impl Message {
    /// Schedules the message: it reaches handlers at `when`, not before (see
    /// [`Publisher::publish_at`](crate::Publisher::publish_at)).
    pub fn deliver_at(mut self, when: DateTime<Utc>) -> Self {
        self.headers.insert(HEADER_DELIVER_AT.into(), stamp(when));
        self
    }

    /// Gives the message an expiry: after `when`, consumers drop it or dead-letter it with
    /// reason `expired` instead of handling it.
    pub fn expires_at(mut self, when: DateTime<Utc>) -> Self {
        self.headers.insert(HEADER_EXPIRES_AT.into(), stamp(when));
        self
    }

    /// Like [`Message::expires_at`], `ttl` from now.
    pub fn expires_after(self, ttl: Duration) -> Self {
        self.expires_at(after(ttl))
    }

    /// When the message may be delivered, if it is scheduled. `Err` when the header is not a
    /// time (publishers refuse such a message; consumers dead-letter it).
    pub fn scheduled_for(&self) -> Result<Option<DateTime<Utc>>, Error> {
        read(self, HEADER_DELIVER_AT)
    }

    /// When the message expires, if it does.
    pub fn expiry(&self) -> Result<Option<DateTime<Utc>>, Error> {
        read(self, HEADER_EXPIRES_AT)
    }
}

/// Whether `headers` may hold `name`, from their last name alone: headers are sorted by name
/// and the time headers sort late (`x-…`), so for most messages, whose names all sort before
/// them, one comparison answers where a lookup would compare against each name on its way.
fn may_hold(headers: &Headers, name: &str) -> bool {
    match headers.last_key_value() {
        Some((last, _)) => last.as_str() >= name,
        None => false,
    }
}

/// `delay` from now, saturating far in the future.
pub(crate) fn after(delay: Duration) -> DateTime<Utc> {
    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_add_signed(delay)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Where a delivered message stands in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Timing {
    /// Deliver it now.
    Due,
    /// Scheduled: give it back for this long.
    Early(Duration),
    /// Past its expiry.
    Expired,
    /// A time header that is no time (a hostile or broken peer): dead-letter with the reason.
    Invalid(String),
}

/// Where `message` stands now. Cheap when neither header is present (the usual case): two
/// map lookups, and the clock is read only for a message that has one.
pub(crate) fn timing_now(message: &Message) -> Timing {
    let h = &message.headers;
    // `HEADER_DELIVER_AT` sorts first of the two (a test checks): no name at or after it, no
    // time header.
    if !may_hold(h, HEADER_DELIVER_AT)
        || !(h.contains_key(HEADER_DELIVER_AT) || h.contains_key(HEADER_EXPIRES_AT))
    {
        return Timing::Due;
    }
    timing(message, Utc::now())
}

/// Where `message` stands at `now`.
pub(crate) fn timing(message: &Message, now: DateTime<Utc>) -> Timing {
    match message.expiry() {
        Ok(Some(at)) if at <= now => return Timing::Expired,
        Ok(_) => {}
        Err(e) => return Timing::Invalid(e.to_string()),
    }
    match message.scheduled_for() {
        Ok(Some(at)) if at > now => {
            Timing::Early((at - now).to_std().unwrap_or(Duration::from_millis(1)))
        }
        Ok(_) => Timing::Due,
        Err(e) => Timing::Invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_headers_are_found_whatever_sorts_around_them() {
        // `timing_now` relies on this order.
        assert!(HEADER_DELIVER_AT < HEADER_EXPIRES_AT);
        let at = Utc::now() + chrono::Duration::seconds(60);
        for other in ["a", "x-a", "x-e", "x-z", "zz", "\u{e9}"] {
            let m = Message::new("x").with_header(other, "v").deliver_at(at);
            assert!(matches!(timing_now(&m), Timing::Early(_)), "{other}");
            assert!(m.scheduled_for().unwrap().is_some());
            let m = Message::new("x").with_header(other, "v").expires_at(at);
            assert!(m.expiry().unwrap().is_some(), "{other}");
            let m = Message::new("x").with_header(other, "v");
            assert_eq!(timing_now(&m), Timing::Due);
            assert_eq!(m.expiry().unwrap(), None);
        }
    }

    #[test]
    fn headers_round_trip_and_timing() {
        let now = Utc::now();
        let m = Message::new("x").deliver_at(now + chrono::Duration::seconds(2));
        assert_eq!(
            m.scheduled_for().unwrap().map(|t| t.timestamp_millis()),
            Some((now + chrono::Duration::seconds(2)).timestamp_millis())
        );
        match timing(&m, now) {
            Timing::Early(d) => {
                assert!(d > Duration::from_millis(1_900) && d <= Duration::from_secs(2))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(timing(&m, now + chrono::Duration::seconds(3)), Timing::Due);
        let m = Message::new("x").expires_at(now);
        assert_eq!(timing(&m, now), Timing::Expired);
        assert_eq!(timing(&Message::new("x"), now), Timing::Due);
        // Expiry wins over a schedule: a message due after it expired is never handled.
        let m = Message::new("x")
            .deliver_at(now + chrono::Duration::seconds(9))
            .expires_at(now - chrono::Duration::seconds(1));
        assert_eq!(timing(&m, now), Timing::Expired);
    }

    #[test]
    fn garbage_times_are_invalid_not_panics() {
        for bad in [
            "",
            "tomorrow",
            "2026-13-45T99:00:00Z",
            "1733500000000",
            "\u{0}",
        ] {
            let m = Message::new("x").with_header(HEADER_DELIVER_AT, bad);
            assert!(
                matches!(timing(&m, Utc::now()), Timing::Invalid(_)),
                "{bad:?}"
            );
            assert!(m.scheduled_for().is_err());
            let m = Message::new("x").with_header(HEADER_EXPIRES_AT, bad);
            assert!(
                matches!(timing(&m, Utc::now()), Timing::Invalid(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn far_delays_saturate() {
        assert_eq!(after(Duration::MAX), DateTime::<Utc>::MAX_UTC);
    }
}
