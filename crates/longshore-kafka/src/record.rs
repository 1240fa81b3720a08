//! A fetched Kafka record packed into one buffer.
//!
//! The consumer thread copies each record out of librdkafka with a single allocation (payload,
//! id, key, topic and headers side by side); the async side unpacks it into a
//! [`longshore_core::Message`] when the stream hands it out, and the acker keeps the packed
//! form (cheap to clone) for redelivery. That keeps the consumer thread's work per message
//! small and the many small allocations of a `Message` on the thread that also frees them.

use bytes::{BufMut, Bytes, BytesMut};
use longshore_core::{Headers, Message};

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

/// A packed record: `[payload][id][key][topic][n headers][name, value]...`, each field a
/// little-endian `u32` length (`u32::MAX` = absent) and its bytes.
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
        match parts.id {
            Some(id) => put(&mut b, Some(id)),
            None => {
                let id = format!("{}-{}-{}", parts.kafka_topic, parts.partition, parts.offset);
                put(&mut b, Some(id.as_bytes()));
            }
        }
        put(&mut b, parts.key);
        put(
            &mut b,
            Some(parts.topic.unwrap_or(parts.kafka_topic.as_bytes())),
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
