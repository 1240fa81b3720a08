//! What a subscription reads: its fixed Kafka topics and its delay topic, and for wildcard
//! patterns the existing Kafka topics they can route to, re-read from cluster metadata every
//! `pattern_refresh`.

use std::sync::mpsc;
use std::sync::Arc;

use longshore_core::{Error, Subscription};
use tokio::sync::watch;

use crate::client::Client;
use crate::command::Cmd;
use crate::mapping::{Resolved, TopicMap};

/// What the subscribe call needs to start a consumer.
#[derive(Clone)]
pub(super) struct Plan {
    pub subscription: Subscription,
    /// Kafka topics named by patterns whose leading words are literal, and the delay topic.
    pub fixed: Vec<String>,
    /// Some pattern has a wildcard among its leading words: read whatever topics it matches.
    pub discover: bool,
}

impl Plan {
    /// Validates the subscription, works out its Kafka topics and creates the fixed ones
    /// (and the dead-letter and delay topics).
    pub async fn new(client: &Client, subscription: &Subscription) -> Result<Plan, Error> {
        subscription.validate()?;
        let map: TopicMap = client.config.topic_map;
        let mut fixed = Vec::new();
        let mut discover = false;
        for p in &subscription.patterns {
            match map.resolve(p)? {
                Resolved::Fixed(t) => {
                    if !fixed.contains(&t) {
                        fixed.push(t)
                    }
                }
                Resolved::Discover => discover = true,
            }
        }
        let mut create = fixed.clone();
        if !subscription.is_dead_letter_queue() {
            // Dead letters are kept from the moment the subscription exists.
            create.push(TopicMap::dead_letter_topic(&subscription.name)?);
        }
        let delay = TopicMap::delay_topic(&subscription.name)?;
        if client.config.create_topics {
            create.push(delay.clone());
            fixed.push(delay);
        } else if client.list_topics().await?.contains(&delay) {
            fixed.push(delay);
        } else {
            // Subscribing to a missing topic would report errors on the stream for ever; a
            // delayed nack then fails to copy and waits in the consumer instead.
            tracing::warn!(subscription = %subscription.name, topic = %delay, "kafka: delay topic missing and create_topics=false; delayed nacks are held in process only");
        }
        client.ensure_topics(&create).await?;
        Ok(Plan {
            subscription: subscription.clone(),
            fixed,
            discover,
        })
    }

    /// The Kafka topics the plan reads now, sorted.
    pub async fn current_topics(&self, client: &Client) -> Result<Vec<String>, Error> {
        let mut topics: Vec<String> = self.fixed.clone();
        if self.discover {
            let map = client.config.topic_map;
            for t in client.list_topics().await? {
                if !topics.contains(&t)
                    && self
                        .subscription
                        .patterns
                        .iter()
                        .any(|p| map.may_route_to(p, &t))
                {
                    topics.push(t);
                }
            }
        }
        topics.sort();
        Ok(topics)
    }
}

/// Re-reads the topic list of a wildcard subscription and tells the consumer when it changed,
/// until the consumer is `done`.
pub(super) async fn refresh_topics(
    client: Arc<Client>,
    plan: Plan,
    cmd: mpsc::Sender<Cmd>,
    mut done: watch::Receiver<bool>,
) {
    let mut last: Option<Vec<String>> = None;
    loop {
        tokio::select! {
            _ = done.wait_for(|d| *d) => return,
            _ = tokio::time::sleep(client.config.pattern_refresh) => {}
        }
        match plan.current_topics(&client).await {
            Ok(topics) => {
                if last.as_ref() != Some(&topics) {
                    last = Some(topics.clone());
                    if cmd.send(Cmd::Topics(topics)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "kafka: topic refresh failed"),
        }
    }
}
