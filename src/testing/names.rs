//! Isolation: each `TestBus` maps the service's topics and subscription names into its own
//! namespace, so parallel tests on one shared broker never see each other's messages.

use longshore_core::Subscription;

const DLQ: &str = "dlq.";

/// The namespace of one bus: `<prefix>.<topic>` for topics, `<prefix>-<name>` for
/// subscriptions, and `dlq.<prefix>-<name>` for their dead letters (where adapters put them).
#[derive(Clone, Debug)]
pub(crate) struct Namespace {
    prefix: String,
}

impl Namespace {
    /// A fresh namespace: `t` and 10 random hex digits (a valid topic word and name start).
    pub(crate) fn fresh() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Namespace {
            prefix: format!("t{}", &id[..10]),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The broker's topic (or pattern) for the service's `topic`.
    pub(crate) fn topic(&self, topic: &str) -> String {
        match topic.strip_prefix(DLQ) {
            Some(name) => format!("{DLQ}{}", self.name(name)),
            None => format!("{}.{topic}", self.prefix),
        }
    }

    /// The broker's subscription name for the service's `name`.
    pub(crate) fn name(&self, name: &str) -> String {
        match name.strip_prefix(DLQ) {
            Some(rest) => format!("{DLQ}{}-{rest}", self.prefix),
            None => format!("{}-{name}", self.prefix),
        }
    }

    /// The service's topic for the broker's `topic`; topics outside the namespace as they are.
    pub(crate) fn strip_topic(&self, topic: &str) -> String {
        if let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('.'))
        {
            return rest.to_string();
        }
        if let Some(rest) = topic
            .strip_prefix(DLQ)
            .and_then(|r| r.strip_prefix(self.prefix.as_str()))
            .and_then(|r| r.strip_prefix('-'))
        {
            return format!("{DLQ}{rest}");
        }
        topic.to_string()
    }

    /// The broker's subscription for the service's.
    pub(crate) fn subscription(&self, sub: &Subscription) -> Subscription {
        Subscription {
            name: self.name(&sub.name),
            patterns: sub.patterns.iter().map(|p| self.topic(p)).collect(),
            prefetch: sub.prefetch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_dead_letters_follow_the_adapters() {
        let ns = Namespace::fresh();
        let p = ns.prefix().to_string();
        assert_eq!(ns.topic("events.a"), format!("{p}.events.a"));
        assert_eq!(ns.strip_topic(&ns.topic("events.a")), "events.a");
        let dlq = Subscription::dead_letters_of("billing");
        let mapped = ns.subscription(&dlq);
        // The adapter dead-letters to dlq.<its subscription name>.
        let adapter_dlq = longshore_core::dead_letter_topic(&ns.name("billing"));
        assert_eq!(mapped.name, adapter_dlq);
        assert_eq!(mapped.patterns, vec![adapter_dlq.clone()]);
        assert_eq!(ns.strip_topic(&adapter_dlq), "dlq.billing");
        assert_eq!(ns.strip_topic("other.topic"), "other.topic");
        mapped.validate().expect("valid names");
    }
}
