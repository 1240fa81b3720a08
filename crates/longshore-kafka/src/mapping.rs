//! How longshore topics and patterns map onto Kafka topics.
//!
//! Kafka orders messages only within one partition of one topic, so the events of one aggregate
//! stay in order only if they land in the same Kafka topic (and, by their key, the same
//! partition) whatever their event type. The mapping therefore groups longshore topics:
//!
//! - a longshore topic `w1.w2.….wn` goes to the Kafka topic made of its first
//!   [`TopicMap::words`] words (default 1): `events.order_created` and
//!   `events.order_cancelled` both go to Kafka topic `events`, so with key = aggregate id one
//!   aggregate's events keep their order across event types. A topic with fewer words maps to
//!   itself. `words = 2` would give one Kafka topic per event type (and no order across types).
//! - dead-letter topics `dlq.<subscription>` map to the Kafka topic of the same name.
//! - Kafka topics named `longshore.delay.…` are reserved for the delay topics of
//!   subscriptions ([`TopicMap::delay_topic`]): no longshore topic maps to one, and wildcard
//!   patterns never read them.
//! - the full longshore topic travels in the header [`HEADER_TOPIC`]; a subscription reads the
//!   Kafka topics its patterns can route to and skips (commits past) messages whose longshore
//!   topic its patterns do not match. A message without that header (produced by a
//!   non-longshore client) has the Kafka topic as its longshore topic.
//!
//! A pattern whose first `words` words are literal (`events.order_*`, `events.#`) reads exactly
//! one Kafka topic, known up front. A pattern with a wildcard among them (`#`, `*.created`)
//! reads every existing Kafka topic it can route to, found from cluster metadata when the
//! consumer starts and refreshed periodically; a new Kafka topic is read from its beginning.
//!
//! Message conversion: a fetched record is packed into one buffer on the consumer thread and
//! unpacked into a [`Message`] on the async side; publishing writes the id and the topic as
//! the headers above.

use bytes::{BufMut, Bytes, BytesMut};
use longshore_core::topic::{validate_pattern, validate_topic};
use longshore_core::{Error, Headers, Message};

/// Header carrying the message id.
pub const HEADER_ID: &str = "longshore-id";
/// Header carrying the full longshore topic the message was published to.
pub const HEADER_TOPIC: &str = "longshore-topic";

/// Longest Kafka topic name Kafka accepts.
pub const MAX_KAFKA_TOPIC: usize = 249;

const DLQ_PREFIX: &str = "dlq.";

/// Prefix of the delay topics, one per subscription (`crate::delay`). Kafka names starting
/// with it are reserved: no longshore topic maps to them and wildcard patterns never read them.
pub(crate) const DELAY_TOPIC_PREFIX: &str = "longshore.delay.";

/// The topic mapping (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicMap {
    /// How many leading words of a longshore topic name its Kafka topic (at least 1).
    pub words: usize,
}

impl Default for TopicMap {
    fn default() -> Self {
        TopicMap { words: 1 }
    }
}

/// Which Kafka topics a pattern reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Exactly this Kafka topic.
    Fixed(String),
    /// Whatever existing Kafka topics [`TopicMap::may_route_to`] accepts.
    Discover,
}

impl TopicMap {
    /// A mapping on the first `words` words (at least 1).
    pub fn new(words: usize) -> Self {
        TopicMap {
            words: words.max(1),
        }
    }

    /// The Kafka topic a (valid) longshore topic is written to.
    pub fn kafka_topic(&self, topic: &str) -> Result<String, Error> {
        validate_topic(topic)?;
        let kafka = if topic.starts_with(DLQ_PREFIX) {
            topic.to_string()
        } else {
            topic
                .split('.')
                .take(self.words.max(1))
                .collect::<Vec<_>>()
                .join(".")
        };
        check_user_kafka_name(&kafka)?;
        Ok(kafka)
    }

    /// The Kafka topic of the dead letters of subscription `name` (already validated).
    pub fn dead_letter_topic(name: &str) -> Result<String, Error> {
        let kafka = longshore_core::dead_letter_topic(name);
        check_kafka_name(&kafka)?;
        Ok(kafka)
    }

    /// The Kafka topic of the delayed nacks of subscription `name` (already validated):
    /// `longshore.delay.<name>`, read by the subscription's own consumers only.
    pub fn delay_topic(name: &str) -> Result<String, Error> {
        let kafka = format!("{DELAY_TOPIC_PREFIX}{name}");
        check_kafka_name(&kafka)?;
        Ok(kafka)
    }

    /// Which Kafka topics a (valid) pattern reads.
    pub fn resolve(&self, pattern: &str) -> Result<Resolved, Error> {
        validate_pattern(pattern)?;
        let words: Vec<&str> = pattern.split('.').collect();
        let literal = |w: &&str| *w != "*" && *w != "#";
        if pattern.starts_with(DLQ_PREFIX) || words.len() <= self.words {
            // Maps to itself, if it is a single topic at all.
            return Ok(if words.iter().all(literal) {
                check_user_kafka_name(pattern)?;
                Resolved::Fixed(pattern.to_string())
            } else {
                Resolved::Discover
            });
        }
        let head = &words[..self.words];
        // `events.#` (words = 1) matches `events` too, which maps to `events`: still one topic.
        if head.iter().all(literal) && head.first() != Some(&"dlq") {
            let kafka = head.join(".");
            check_user_kafka_name(&kafka)?;
            Ok(Resolved::Fixed(kafka))
        } else {
            Ok(Resolved::Discover)
        }
    }

    /// Whether some longshore topic matched by `pattern` maps to the Kafka topic `kafka`.
    pub fn may_route_to(&self, pattern: &str, kafka: &str) -> bool {
        if kafka.is_empty()
            || kafka.starts_with("__")
            || kafka.starts_with(DELAY_TOPIC_PREFIX)
            || validate_topic(kafka).is_err()
        {
            return false;
        }
        let p: Vec<&str> = pattern.split('.').collect();
        let k: Vec<&str> = kafka.split('.').collect();
        if k[0] == "dlq" || k.len() < self.words {
            // Only the topic `kafka` itself maps there (longer topics starting with `dlq.`
            // are dead-letter topics that map to themselves).
            return longshore_core::topic::matches(pattern, kafka);
        }
        if k.len() > self.words {
            return false; // no longshore topic maps to a longer non-dlq name
        }
        // `kafka` itself or any extension of it: is some state of the pattern's automaton
        // reachable after consuming the words of `kafka`? (Any reachable state can then be
        // completed, since words, `*` and `#` can all match some continuation.)
        !prefix_states(&p, &k).is_empty()
    }
}

/// The automaton states (positions in `pattern`) reachable after matching `words`.
fn prefix_states(pattern: &[&str], words: &[&str]) -> Vec<usize> {
    let closure = |states: &mut Vec<usize>| {
        let mut i = 0;
        while i < states.len() {
            let s = states[i];
            if s < pattern.len() && pattern[s] == "#" && !states.contains(&(s + 1)) {
                states.push(s + 1);
            }
            i += 1;
        }
    };
    let mut states = vec![0];
    closure(&mut states);
    for w in words {
        let mut next = Vec::new();
        for &s in &states {
            if s >= pattern.len() {
                continue;
            }
            match pattern[s] {
                "#" if !next.contains(&s) => next.push(s),
                "#" => {}
                "*" => next.push(s + 1),
                lit if lit == *w => next.push(s + 1),
                _ => {}
            }
        }
        next.sort_unstable();
        next.dedup();
        closure(&mut next);
        states = next;
        if states.is_empty() {
            break;
        }
    }
    states
}

/// [`check_kafka_name`], and not one of the reserved delay topics: a longshore topic mapped
/// there would be read as a delayed nack by that subscription.
fn check_user_kafka_name(name: &str) -> Result<(), Error> {
    if name.starts_with(DELAY_TOPIC_PREFIX) {
        return Err(Error::InvalidName {
            kind: "kafka topic",
            value: name.to_string(),
            reason: "`longshore.delay.` is reserved for the delay topics of subscriptions",
        });
    }
    check_kafka_name(name)
}

fn check_kafka_name(name: &str) -> Result<(), Error> {
    if name.len() > MAX_KAFKA_TOPIC {
        return Err(Error::InvalidName {
            kind: "kafka topic",
            value: name.to_string(),
            reason: "Kafka topic names are at most 249 bytes",
        });
    }
    if name.starts_with("__") || name == "." || name == ".." {
        return Err(Error::InvalidName {
            kind: "kafka topic",
            value: name.to_string(),
            reason: "reserved for Kafka's internal topics",
        });
    }
    Ok(())
}

const NONE: u32 = u32::MAX;

/// Borrowed parts of a record, as read from librdkafka.
pub(crate) struct Parts<'a> {
    pub kafka_topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub payload: &'a [u8],
    pub key: Option<&'a [u8]>,
    pub id: Option<&'a [u8]>,
    pub topic: Option<&'a [u8]>,
}

/// A fetched Kafka record packed into one buffer: `[payload][id][key][topic][n headers][name,
/// value]...`, each field a little-endian `u32` length (`u32::MAX` = absent) and its bytes.
///
/// The consumer thread copies each record out of librdkafka with a single allocation; the
/// async side unpacks it into a [`Message`] when the stream hands it out, and the acker keeps
/// the packed form (cheap to clone) for redelivery. That keeps the consumer thread's work per
/// message small and the many small allocations of a `Message` on the thread that also frees
/// them.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    buf: Bytes,
    payload_len: usize,
}

fn put(b: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            // Kafka caps records far below 4 GiB; saturate rather than wrap.
            b.put_u32_le(u32::try_from(v.len()).unwrap_or(NONE - 1));
            b.put_slice(&v[..v.len().min((NONE - 1) as usize)]);
        }
        None => b.put_u32_le(NONE),
    }
}

impl Packed {
    /// Packs a record; `headers` yields the headers other than id and topic.
    pub fn pack<'a>(
        parts: &Parts<'a>,
        headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + Clone,
    ) -> Packed {
        let len = |v: Option<&[u8]>| 4 + v.map_or(0, <[u8]>::len);
        let mut size =
            parts.payload.len() + len(parts.id) + len(parts.key) + len(parts.topic) + 4 + 40; // room for the fallback id
        let mut count = 0u32;
        for (k, v) in headers.clone() {
            size += 4 + k.len() + len(v);
            count += 1;
        }
        let mut b = BytesMut::with_capacity(size);
        b.put_slice(parts.payload);
        // An empty id header (a peer's) counts as none: every message has an id.
        match parts.id.filter(|id| !id.is_empty()) {
            Some(id) => put(&mut b, Some(id)),
            None => {
                let id = format!("{}-{}-{}", parts.kafka_topic, parts.partition, parts.offset);
                put(&mut b, Some(id.as_bytes()));
            }
        }
        put(&mut b, parts.key);
        put(
            &mut b,
            // An empty topic header (a peer's) counts as none, like a missing one.
            Some(
                parts
                    .topic
                    .filter(|t| !t.is_empty())
                    .unwrap_or(parts.kafka_topic.as_bytes()),
            ),
        );
        b.put_u32_le(count);
        for (k, v) in headers {
            put(&mut b, Some(k.as_bytes()));
            put(&mut b, v);
        }
        Packed {
            payload_len: parts.payload.len(),
            buf: b.freeze(),
        }
    }

    /// The message and its longshore topic. Never panics, whatever the buffer holds.
    pub fn unpack(&self) -> (Message, String) {
        let payload = self.buf.slice(..self.payload_len.min(self.buf.len()));
        let mut r = Reader {
            buf: &self.buf,
            at: self.payload_len,
        };
        let text = |v: Option<&[u8]>| v.map(|v| String::from_utf8_lossy(v).into_owned());
        let id = text(r.field()).unwrap_or_default();
        let key = text(r.field());
        let topic = text(r.field()).unwrap_or_default();
        let mut headers = Headers::new();
        let count = r.u32().unwrap_or(0);
        for _ in 0..count {
            let (Some(k), v) = (r.field(), r.field()) else {
                break;
            };
            headers.insert(
                String::from_utf8_lossy(k).into_owned(),
                text(v).unwrap_or_default(),
            );
        }
        (
            Message {
                id,
                key,
                headers,
                payload,
            },
            topic,
        )
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let b = self.buf.get(self.at..self.at.checked_add(4)?)?;
        self.at += 4;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        if n == NONE {
            return None;
        }
        let end = self.at.checked_add(n as usize)?;
        let v = self.buf.get(self.at..end)?;
        self.at = end;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_group_by_leading_words() {
        let m = TopicMap::default();
        assert_eq!(m.kafka_topic("events.order_created").unwrap(), "events");
        assert_eq!(m.kafka_topic("events").unwrap(), "events");
        assert_eq!(m.kafka_topic("dlq.orders-v1").unwrap(), "dlq.orders-v1");
        let m2 = TopicMap::new(2);
        assert_eq!(m2.kafka_topic("a.b.c").unwrap(), "a.b");
        assert_eq!(m2.kafka_topic("a").unwrap(), "a");
        assert!(m.kafka_topic("__consumer_offsets.x").is_err());
        assert!(m.kafka_topic("a.*").is_err());
        // Delay topics are reserved; with one word the same longshore topic is fine.
        assert!(TopicMap::new(3).kafka_topic("longshore.delay.x").is_err());
        assert!(TopicMap::new(3).resolve("longshore.delay.x.#").is_err());
        assert_eq!(m.kafka_topic("longshore.delay.x").unwrap(), "longshore");
        assert_eq!(
            TopicMap::delay_topic("billing").unwrap(),
            "longshore.delay.billing"
        );
        assert!(!TopicMap::new(3).may_route_to("#", "longshore.delay.billing"));
    }

    #[test]
    fn resolve_patterns() {
        let m = TopicMap::default();
        assert_eq!(
            m.resolve("events.#").unwrap(),
            Resolved::Fixed("events".into())
        );
        assert_eq!(
            m.resolve("events.*.x").unwrap(),
            Resolved::Fixed("events".into())
        );
        assert_eq!(
            m.resolve("events").unwrap(),
            Resolved::Fixed("events".into())
        );
        assert_eq!(
            m.resolve("dlq.sub").unwrap(),
            Resolved::Fixed("dlq.sub".into())
        );
        assert_eq!(m.resolve("dlq.#").unwrap(), Resolved::Discover);
        assert_eq!(m.resolve("#").unwrap(), Resolved::Discover);
        assert_eq!(m.resolve("*.created").unwrap(), Resolved::Discover);
        let m2 = TopicMap::new(2);
        assert_eq!(m2.resolve("a.b.#").unwrap(), Resolved::Fixed("a.b".into()));
        assert_eq!(m2.resolve("a.#").unwrap(), Resolved::Discover);
        assert_eq!(m2.resolve("a").unwrap(), Resolved::Fixed("a".into()));
        assert!(m.resolve("a.**").is_err());
    }

    #[test]
    fn routing_predicate() {
        let m = TopicMap::default();
        assert!(m.may_route_to("#", "events"));
        assert!(m.may_route_to("#", "dlq.x"));
        assert!(m.may_route_to("*.created", "events"));
        assert!(!m.may_route_to("*.created", "dlq.x"));
        assert!(m.may_route_to("dlq.*", "dlq.x"));
        assert!(!m.may_route_to("dlq.*", "dlq.x.y"));
        assert!(!m.may_route_to("#", "__consumer_offsets"));
        assert!(!m.may_route_to("events.#", "orders"));
        assert!(!m.may_route_to("#", "a.b")); // a non-dlq two-word name is no words=1 target
        let m2 = TopicMap::new(2);
        assert!(m2.may_route_to("a.#", "a"));
        assert!(m2.may_route_to("a.#", "a.b"));
        assert!(m2.may_route_to("a.*.c", "a.b"));
        assert!(!m2.may_route_to("a.*", "a")); // `a` alone is no match and nothing longer maps to `a`
        assert!(!m2.may_route_to("x.#", "a.b"));
        assert!(m2.may_route_to("#.c", "a.b"));
    }

    /// Brute force: for every topic over a small alphabet, the predicate agrees with "some
    /// matching topic maps to this Kafka topic".
    #[test]
    fn predicate_agrees_with_enumeration() {
        let alphabet = ["a", "b", "dlq"];
        let mut topics = Vec::new();
        for len in 1..=4 {
            let mut idx = vec![0usize; len];
            loop {
                topics.push(
                    idx.iter()
                        .map(|&i| alphabet[i])
                        .collect::<Vec<_>>()
                        .join("."),
                );
                let mut k = 0;
                while k < len {
                    idx[k] += 1;
                    if idx[k] < alphabet.len() {
                        break;
                    }
                    idx[k] = 0;
                    k += 1;
                }
                if k == len {
                    break;
                }
            }
        }
        let patterns = [
            "#", "*", "a.#", "*.b", "#.b", "a.*.b", "dlq.#", "dlq.*", "*.#.a", "a",
        ];
        for words in 1..=2 {
            let m = TopicMap::new(words);
            for p in patterns {
                let kafkas: std::collections::BTreeSet<String> =
                    topics.iter().map(|t| m.kafka_topic(t).unwrap()).collect();
                for k in &kafkas {
                    // Topics of up to 4 words stand in for "some topic"; patterns here need
                    // at most 4 words to match.
                    let expected = topics.iter().any(|t| {
                        longshore_core::topic::matches(p, t) && &m.kafka_topic(t).unwrap() == k
                    });
                    assert_eq!(m.may_route_to(p, k), expected, "words={words} p={p} k={k}");
                }
                if let Resolved::Fixed(k) = m.resolve(p).unwrap() {
                    for t in &topics {
                        if longshore_core::topic::matches(p, t) {
                            assert_eq!(m.kafka_topic(t).unwrap(), k, "p={p} t={t}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn round_trip() {
        let parts = Parts {
            kafka_topic: "orders",
            partition: 2,
            offset: 7,
            payload: b"{\"a\":1}",
            key: Some(b"order-1"),
            id: Some(b"id-1"),
            topic: Some(b"orders.created"),
        };
        let headers = [("tenant", Some(&b"acme"[..])), ("empty", None)];
        let p = Packed::pack(&parts, headers.iter().copied());
        let (m, topic) = p.unpack();
        assert_eq!(topic, "orders.created");
        assert_eq!(m.id, "id-1");
        assert_eq!(m.key.as_deref(), Some("order-1"));
        assert_eq!(&m.payload[..], b"{\"a\":1}");
        assert_eq!(m.headers["tenant"], "acme");
        assert_eq!(m.headers["empty"], "");

        let bare = Parts {
            kafka_topic: "orders",
            partition: 0,
            offset: 3,
            payload: b"",
            key: None,
            id: None,
            topic: None,
        };
        let (m, topic) = Packed::pack(&bare, std::iter::empty()).unpack();
        assert_eq!((m.id.as_str(), topic.as_str()), ("orders-0-3", "orders"));
        assert_eq!(m.key, None);
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..64u8 {
            let buf: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            for payload_len in [0usize, 1, 5, 100] {
                let p = Packed {
                    buf: Bytes::from(buf.clone()),
                    payload_len,
                };
                let _ = p.unpack();
            }
        }
    }
}
