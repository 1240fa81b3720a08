//! Topics, patterns and name validation: one model on every broker.
//!
//! A topic is a dot-separated routing key (`events.order_created`). Patterns use AMQP words:
//! `*` matches exactly one word, `#` matches zero or more words.

use crate::error::Error;

/// Longest topic or pattern, in bytes (AMQP routing keys allow 255).
pub const MAX_TOPIC_LEN: usize = 255;

fn valid_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks that `topic` is a non-empty sequence of dot-separated words of `[A-Za-z0-9_-]`.
///
/// The same rule holds on every backend, so a topic valid for one broker is valid for all.
pub fn validate_topic(topic: &str) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidName {
        kind: "topic",
        value: topic.to_string(),
        reason,
    };
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(invalid("must be 1 to 255 bytes"));
    }
    if !topic.split('.').all(valid_word) {
        return Err(invalid("must be dot-separated words of [A-Za-z0-9_-]"));
    }
    Ok(())
}

/// Checks a subscription pattern: like a topic, but words may also be `*` or `#`.
pub fn validate_pattern(pattern: &str) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidName {
        kind: "pattern",
        value: pattern.to_string(),
        reason,
    };
    if pattern.is_empty() || pattern.len() > MAX_TOPIC_LEN {
        return Err(invalid("must be 1 to 255 bytes"));
    }
    if !pattern
        .split('.')
        .all(|w| w == "*" || w == "#" || valid_word(w))
    {
        return Err(invalid(
            "must be dot-separated words of [A-Za-z0-9_-], `*` or `#`",
        ));
    }
    Ok(())
}

/// Checks a name used for a subscription, queue, stream or similar resource:
/// 1 to 128 bytes of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidName {
        kind,
        value: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 128 {
        return Err(invalid("must be 1 to 128 bytes"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(invalid("must start with a letter or digit"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(invalid("may only contain [A-Za-z0-9_.-]"));
    }
    Ok(())
}

/// Whether `topic` matches the AMQP-style `pattern`.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let topic: Vec<&str> = topic.split('.').collect();
    match_words(&pattern, &topic)
}

fn match_words(pattern: &[&str], topic: &[&str]) -> bool {
    // Iterative matcher with backtracking over the last `#` (like glob `*`): linear in
    // practice and never recursive, so hostile patterns cannot blow the stack.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < topic.len() {
        if p < pattern.len() && pattern[p] == "#" {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == "*" || pattern[p] == topic[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|w| *w == "#")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert!(matches("events.order_created", "events.order_created"));
        assert!(!matches("events.order_created", "events.order_cancelled"));
        assert!(matches("events.*", "events.order_created"));
        assert!(!matches("events.*", "events"));
        assert!(!matches("events.*", "events.a.b"));
        assert!(matches("events.#", "events"));
        assert!(matches("events.#", "events.a.b"));
        assert!(matches("#", "a"));
        assert!(matches("#.b", "b"));
        assert!(matches("a.#.b", "a.b"));
        assert!(matches("a.#.b", "a.x.y.b"));
        assert!(!matches("a.#.b", "a.x.y.c"));
        assert!(matches("*.#.*", "a.b"));
        assert!(!matches("*.#.*", "a"));
        assert!(matches("#.#", "a.b.c"));
    }

    #[test]
    fn validation() {
        assert!(validate_topic("events.order_created").is_ok());
        assert!(validate_topic("").is_err());
        assert!(validate_topic("a..b").is_err());
        assert!(validate_topic("a.*").is_err());
        assert!(validate_topic("a b").is_err());
        assert!(validate_topic(&"a".repeat(256)).is_err());
        assert!(validate_pattern("a.*.#").is_ok());
        assert!(validate_pattern("a.**").is_err());
        assert!(validate_name("subscription", "orders-v1.dlq").is_ok());
        assert!(validate_name("subscription", ".x").is_err());
        assert!(validate_name("subscription", "a;drop").is_err());
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-c]{1,2}"
    }

    fn topic() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(word(), 1..6)
    }

    /// A reference matcher written as the textbook recursion, to check the iterative one.
    fn reference(p: &[String], t: &[String]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((w, rest)) if w == "#" => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some((w, rest)) => match t.split_first() {
                Some((tw, trest)) => (w == "*" || w == tw) && reference(rest, trest),
                None => false,
            },
        }
    }

    proptest! {
        #[test]
        fn exact_topic_matches_itself(t in topic()) {
            let t = t.join(".");
            prop_assert!(matches(&t, &t));
        }

        #[test]
        fn hash_matches_everything(t in topic()) {
            prop_assert!(matches("#", &t.join(".")));
        }

        #[test]
        fn star_per_word_matches_same_length(t in topic()) {
            let p = vec!["*"; t.len()].join(".");
            prop_assert!(matches(&p, &t.join(".")));
            let longer = format!("{}.x", t.join("."));
            prop_assert!(!matches(&p, &longer));
        }

        #[test]
        fn agrees_with_reference(
            p in prop::collection::vec(prop_oneof![word(), Just("*".to_string()), Just("#".to_string())], 1..6),
            t in topic(),
        ) {
            prop_assert_eq!(matches(&p.join("."), &t.join(".")), reference(&p, &t));
        }
    }
}
