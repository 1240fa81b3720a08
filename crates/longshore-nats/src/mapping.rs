//! Mapping longshore's model onto NATS: subjects, consumer filters, durable names, headers
//! and messages.
//!
//! - topic `a.b` → subject `<prefix>.a.b` (or `a.b` with an empty prefix);
//! - pattern words: `*` → `*`; a trailing `#` → two filters, the subject without it and
//!   `... .>` (`>` needs at least one token, `#` also matches zero words); a `#` elsewhere
//!   widens the filter to `... .>` from that word on and is matched exactly on the client;
//! - durable names may not contain `.`: `_` is written `__` and `.` is written `_d`, so the
//!   mapping is reversible and no two subscription names share a durable;
//! - message key and id travel in headers ([`HEADER_KEY`], [`NATS_MSG_ID`], [`HEADER_ID`]);
//!   the delivery count and stream sequence come from the `$JS.ACK` reply subject.

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use longshore_core::topic::matches;
use longshore_core::{Error, Headers, Message};

/// Header carrying the message key.
pub const HEADER_KEY: &str = "Longshore-Key";
/// Header carrying the message id when the deduplication id (`Nats-Msg-Id`) differs from it
/// (dead letters, replays of dead letters).
pub const HEADER_ID: &str = "Longshore-Msg-Id";
/// JetStream's deduplication header.
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// Token that starts the subjects longshore uses internally (dead-letter markers). It can
/// never be a topic word (topics are `[A-Za-z0-9_-]`), so no user subscription matches it.
pub(crate) const INTERNAL_TOKEN: &str = "$ls";

/// The NATS subject of `topic` under `prefix`.
pub(crate) fn subject_of(prefix: &str, topic: &str) -> String {
    if prefix.is_empty() {
        topic.to_string()
    } else {
        format!("{prefix}.{topic}")
    }
}

/// The topic of a delivered `subject` (the subject itself when it lacks the prefix).
pub(crate) fn topic_of<'a>(prefix: &str, subject: &'a str) -> &'a str {
    if prefix.is_empty() {
        return subject;
    }
    subject
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(subject)
}

/// Whether a delivered topic is one of longshore's internal subjects, never handed to users.
pub(crate) fn is_internal(topic: &str) -> bool {
    topic.split('.').any(|w| w.starts_with('$'))
}

/// The subject of the dead-letter marker of message `id` (see the publisher's replay logic).
pub(crate) fn marker_subject(prefix: &str, id: &str) -> String {
    subject_of(
        prefix,
        &format!("dlq.{INTERNAL_TOKEN}.{}", hex(id.as_bytes())),
    )
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// How a consumer selects its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FilterPlan {
    /// Filters sent to the server (one, or several on servers >= 2.10).
    pub filters: Vec<String>,
    /// Whether the server-side filter is wider than the patterns, so deliveries must be matched
    /// on the client (non-matching ones are acked and skipped).
    pub client_match: bool,
}

/// NATS filters for one pattern, and whether they are exact.
fn pattern_filters(prefix: &str, pattern: &str) -> (Vec<String>, bool) {
    let words: Vec<&str> = pattern.split('.').collect();
    let mut prefix_words: Vec<&str> = if prefix.is_empty() {
        Vec::new()
    } else {
        prefix.split('.').collect()
    };
    match words.iter().position(|w| *w == "#") {
        None => {
            prefix_words.extend(words);
            (vec![prefix_words.join(".")], true)
        }
        Some(i) if i == words.len() - 1 => {
            // A trailing `#`: the subject without it (zero words) and everything below it.
            // Topics are never empty, so a lone `#` needs only the `>` filter.
            let mut base = prefix_words;
            base.extend(&words[..i]);
            let mut out = Vec::with_capacity(2);
            if i > 0 {
                out.push(base.join("."));
            }
            base.push(">");
            out.push(base.join("."));
            (out, true)
        }
        Some(i) => {
            // `#` in the middle: NATS cannot say it; take everything from there and match on
            // the client.
            let mut f = prefix_words.clone();
            f.extend(&words[..i]);
            f.push(">");
            (vec![f.join(".")], false)
        }
    }
}

/// Whether every subject matched by NATS filter `inner` is matched by `outer`.
pub(crate) fn subsumes(outer: &str, inner: &str) -> bool {
    let o: Vec<&str> = outer.split('.').collect();
    let i: Vec<&str> = inner.split('.').collect();
    for (k, ow) in o.iter().enumerate() {
        if *ow == ">" {
            return i.len() > k;
        }
        let Some(iw) = i.get(k) else { return false };
        if *iw == ">" {
            return false;
        }
        if *ow != "*" && (ow != iw || *iw == "*") {
            return false;
        }
    }
    o.len() == i.len()
}

/// Whether some subject matches both NATS filters.
pub(crate) fn collide(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    let mut k = 0;
    loop {
        match (a.get(k), b.get(k)) {
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (Some(x), Some(y)) => {
                if *x != "*" && *y != "*" && x != y {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        k += 1;
    }
}

/// One filter that covers all of `filters`: their longest common literal prefix, then `>`.
fn widen(prefix: &str, filters: &[String]) -> String {
    let split: Vec<Vec<&str>> = filters.iter().map(|f| f.split('.').collect()).collect();
    let min_len = split.iter().map(Vec::len).min().unwrap_or(0);
    let mut common = Vec::new();
    // Keep at least one token after the common part for `>`.
    for k in 0..min_len.saturating_sub(1) {
        let w = split[0][k];
        if w == "*" || w == ">" || split.iter().any(|s| s[k] != w) {
            break;
        }
        common.push(w);
    }
    if common.is_empty() && !prefix.is_empty() {
        return format!("{prefix}.>");
    }
    common.push(">");
    common.join(".")
}

/// The consumer filters for `patterns`. `multi_filter` says whether the server takes several
/// filter subjects on one consumer (nats-server >= 2.10).
pub(crate) fn plan(prefix: &str, patterns: &[String], multi_filter: bool) -> FilterPlan {
    let mut filters: Vec<String> = Vec::new();
    let mut exact = true;
    for p in patterns {
        let (fs, e) = pattern_filters(prefix, p);
        exact &= e;
        filters.extend(fs);
    }
    filters.sort();
    filters.dedup();
    // Drop filters covered by another one.
    let all = filters.clone();
    filters.retain(|f| !all.iter().any(|g| g != f && subsumes(g, f)));
    if filters.len() == 1 {
        return FilterPlan {
            filters,
            client_match: !exact,
        };
    }
    let disjoint = filters
        .iter()
        .enumerate()
        .all(|(i, a)| filters[i + 1..].iter().all(|b| !collide(a, b)));
    if multi_filter && disjoint {
        return FilterPlan {
            filters,
            client_match: !exact,
        };
    }
    FilterPlan {
        filters: vec![widen(prefix, &filters)],
        client_match: true,
    }
}

/// Whether `topic` matches any of `patterns` (client-side matching).
pub(crate) fn matches_any(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|p| matches(p, topic))
}

/// The durable consumer name of subscription `name` (reversible: see [`subscription_of`]).
pub(crate) fn durable_of(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

/// The subscription name of a durable made by [`durable_of`].
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn subscription_of(durable: &str) -> Option<String> {
    let mut out = String::with_capacity(durable.len());
    let mut chars = durable.chars();
    while let Some(c) = chars.next() {
        if c == '_' {
            match chars.next() {
                Some('_') => out.push('_'),
                Some('d') => out.push('.'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn header_error(name: &str, why: &'static str) -> Error {
    Error::InvalidName {
        kind: "header",
        value: name.chars().take(64).collect(),
        reason: why,
    }
}

/// Sets header `name` to `value`, refusing what NATS headers cannot carry.
pub(crate) fn insert_header(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), Error> {
    let n: HeaderName = name
        .parse()
        .map_err(|_| header_error(name, "not a valid NATS header name"))?;
    let v: HeaderValue = value
        .parse()
        .map_err(|_| header_error(name, "value holds characters NATS headers cannot carry"))?;
    headers.insert(n, v);
    Ok(())
}

/// The NATS headers of `message` sent under deduplication id `dedup_id`, and their size on
/// the wire (an estimate that errs large, for the `max_payload` check).
pub(crate) fn headers_of(message: &Message, dedup_id: &str) -> Result<(HeaderMap, usize), Error> {
    let mut headers = HeaderMap::new();
    let mut header_bytes = 12usize;
    for (name, value) in &message.headers {
        if [NATS_MSG_ID, HEADER_ID, HEADER_KEY]
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
        {
            return Err(header_error(name, "reserved by the NATS adapter"));
        }
        insert_header(&mut headers, name, value)?;
        header_bytes += name.len() + value.len() + 4;
    }
    if let Some(key) = &message.key {
        insert_header(&mut headers, HEADER_KEY, key)?;
        header_bytes += HEADER_KEY.len() + key.len() + 4;
    }
    insert_header(&mut headers, NATS_MSG_ID, dedup_id)
        .map_err(|_| header_error("message id", "not valid in a NATS header"))?;
    header_bytes += NATS_MSG_ID.len() + dedup_id.len() + 4;
    if dedup_id != message.id {
        insert_header(&mut headers, HEADER_ID, &message.id)?;
        header_bytes += HEADER_ID.len() + message.id.len() + 4;
    }
    Ok((headers, header_bytes))
}

/// The longshore message of a delivered NATS message stored at `seq` in `stream`: the id
/// from [`HEADER_ID`], else [`NATS_MSG_ID`], else `<stream>-<seq>`.
pub(crate) fn message_of(m: &async_nats::Message, stream: &str, seq: u64) -> Message {
    let mut headers = Headers::new();
    let mut id = None;
    let mut dedup = None;
    let mut key = None;
    if let Some(h) = &m.headers {
        for (name, values) in h.iter() {
            let Some(value) = values.last().map(|v| v.as_str().to_string()) else {
                continue;
            };
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case(HEADER_ID) {
                id = Some(value);
            } else if name.eq_ignore_ascii_case(NATS_MSG_ID) {
                dedup = Some(value);
            } else if name.eq_ignore_ascii_case(HEADER_KEY) {
                key = Some(value);
            } else {
                headers.insert(name.to_string(), value);
            }
        }
    }
    Message {
        id: id.or(dedup).unwrap_or_else(|| format!("{stream}-{seq}")),
        key,
        headers,
        payload: m.payload.clone(),
    }
}

/// Delivery count and stream sequence from a `$JS.ACK` subject (v1: 9 tokens, v2: 12+).
pub(crate) fn ack_info(reply: &str) -> (u32, u64) {
    let tokens: Vec<&str> = reply.split('.').collect();
    // v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    // v2: $JS.ACK.<domain>.<acchash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<token>
    let base = if tokens.len() >= 12 { 6 } else { 4 };
    let delivered = tokens
        .get(base)
        .and_then(|t| t.parse::<u32>().ok())
        .unwrap_or(1);
    let seq = tokens
        .get(base + 1)
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    (delivered.max(1), seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn subjects_and_topics() {
        assert_eq!(subject_of("ls", "a.b"), "ls.a.b");
        assert_eq!(subject_of("", "a.b"), "a.b");
        assert_eq!(topic_of("ls", "ls.a.b"), "a.b");
        assert_eq!(topic_of("", "a.b"), "a.b");
        assert!(is_internal("dlq.$ls.abcd"));
        assert!(!is_internal("dlq.x"));
        assert_eq!(marker_subject("ls", "a.b"), "ls.dlq.$ls.612e62");
    }

    #[test]
    fn durable_names_are_reversible() {
        for name in ["a", "a.b", "a_b", "a__d", "a_d.b", "orders-v1.dlq", "x._y"] {
            let d = durable_of(name);
            assert!(!d.contains('.'));
            assert_eq!(subscription_of(&d).as_deref(), Some(name));
        }
        assert_ne!(durable_of("a.b"), durable_of("a_db"));
        assert_eq!(subscription_of("a_x"), None);
    }

    #[test]
    fn single_patterns() {
        assert_eq!(
            plan("p", &s(&["a.b"]), false),
            FilterPlan {
                filters: s(&["p.a.b"]),
                client_match: false
            }
        );
        assert_eq!(plan("p", &s(&["a.*"]), false).filters, s(&["p.a.*"]));
        // `a.#` is `a` or `a.>`: two filters on 2.10, one wider filter on 2.9.
        assert_eq!(
            plan("p", &s(&["a.#"]), true),
            FilterPlan {
                filters: s(&["p.a", "p.a.>"]),
                client_match: false
            }
        );
        assert_eq!(
            plan("p", &s(&["a.#"]), false),
            FilterPlan {
                filters: s(&["p.>"]),
                client_match: true
            }
        );
        assert_eq!(
            plan("p", &s(&["#"]), false),
            FilterPlan {
                filters: s(&["p.>"]),
                client_match: false
            }
        );
        assert_eq!(plan("", &s(&["#"]), false).filters, s(&[">"]));
        assert_eq!(
            plan("p", &s(&["a.#.b"]), true),
            FilterPlan {
                filters: s(&["p.a.>"]),
                client_match: true
            }
        );
    }

    #[test]
    fn several_patterns() {
        let pats = s(&["t.orders.*", "t.invoices.#", "t.orders.created"]);
        let p10 = plan("p", &pats, true);
        assert_eq!(
            p10.filters,
            s(&["p.t.invoices", "p.t.invoices.>", "p.t.orders.*"])
        );
        assert!(!p10.client_match);
        let p9 = plan("p", &pats, false);
        assert_eq!(p9.filters, s(&["p.t.>"]));
        assert!(p9.client_match);
        // Partially overlapping filters are not allowed together on 2.10: widen.
        let p = plan("p", &s(&["a.*.c", "a.b.*"]), true);
        assert_eq!(p.filters, s(&["p.a.>"]));
        assert!(p.client_match);
    }

    #[test]
    fn subsumption_and_collision() {
        assert!(subsumes("a.*", "a.b"));
        assert!(subsumes("a.>", "a.b.c"));
        assert!(subsumes("a.>", "a.*"));
        assert!(!subsumes("a.*", "a.>"));
        assert!(!subsumes("a.b", "a.*"));
        assert!(!subsumes("a.>", "a"));
        assert!(collide("a.*.c", "a.b.*"));
        assert!(collide("a.>", "a.b"));
        assert!(!collide("a", "a.>"));
        assert!(!collide("a.b", "a.c"));
    }

    #[test]
    fn plans_agree_with_the_matcher() {
        // Every topic that matches the patterns is selected by the filters; anything the
        // filters select beyond that is caught by client matching.
        let topics = ["a", "a.b", "a.b.c", "b", "b.a", "a.c.c", "x.y.z.w"];
        let pattern_sets = [
            vec!["a.#"],
            vec!["a.*", "b.#"],
            vec!["#"],
            vec!["a.#.c", "b"],
            vec!["*.*.c", "a.b.*"],
            vec!["*"],
        ];
        for multi in [false, true] {
            for set in &pattern_sets {
                let pats = s(set);
                let pl = plan("p", &pats, multi);
                for t in topics {
                    let subj = subject_of("p", t);
                    let selected = pl.filters.iter().any(|f| subsumes(f, &subj));
                    let wanted = matches_any(&pats, t);
                    if wanted {
                        assert!(selected, "{set:?} multi={multi}: {t} not selected");
                    }
                    if selected && !pl.client_match {
                        assert!(wanted, "{set:?} multi={multi}: {t} selected but unwanted");
                    }
                }
            }
        }
    }

    #[test]
    fn parses_ack_subjects() {
        assert_eq!(ack_info("$JS.ACK.S.C.3.42.7.1700000000.0"), (3, 42));
        assert_eq!(
            ack_info("$JS.ACK.dom.hash.S.C.2.9.1.1700000000.0.tok"),
            (2, 9)
        );
        assert_eq!(ack_info("$JS.ACK.garbage"), (1, 0));
    }
}
