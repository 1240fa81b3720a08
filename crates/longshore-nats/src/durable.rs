//! The durable pull consumer of a subscription: created on first use (deliver policy *new*,
//! dead-letter subscriptions *all*), its patterns kept in its description so that a later
//! subscribe with more patterns widens its filters, and the dead-letter durable beside it.

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use longshore_core::topic::validate_topic;
use longshore_core::{dead_letter_topic, Error, Subscription};

use crate::client::Client;
use crate::error::{api_error, CONSUMER_NOT_FOUND};
use crate::mapping::{durable_of, plan, FilterPlan};

/// Marks the patterns kept in a durable's description.
const DESCRIPTION_TAG: &str = "longshore patterns: ";

/// What a consumer needs to know about its durable.
pub(crate) struct Plan {
    pub durable: String,
    /// Every pattern the durable selects (this subscribe's and earlier ones').
    pub patterns: Vec<String>,
    /// Whether deliveries must be matched against `patterns` on the client.
    pub client_match: bool,
}

/// Validates `sub`, makes sure the stream and the durables of `sub` and its dead letters
/// exist, and returns the plan of `sub`'s durable.
pub(crate) async fn declare(client: &Client, sub: &Subscription) -> Result<Plan, Error> {
    sub.validate()?;
    let dlq = dead_letter_topic(&sub.name);
    validate_topic(&dlq).map_err(|_| Error::InvalidName {
        kind: "subscription",
        value: sub.name.clone(),
        reason: "dlq.<name> must be a valid topic (no empty words)",
    })?;
    client.ensure_stream().await?;
    let deliver_all = sub.is_dead_letter_queue();
    let plan = ensure_consumer(client, &sub.name, &sub.patterns, deliver_all).await?;
    if !deliver_all {
        // The dead-letter subscription exists from the start, like a DLQ queue.
        ensure_consumer(client, &dlq, std::slice::from_ref(&dlq), true).await?;
    }
    Ok(plan)
}

/// The durable of subscription `name`, created or widened to select `patterns` too.
async fn ensure_consumer(
    client: &Client,
    name: &str,
    patterns: &[String],
    deliver_all: bool,
) -> Result<Plan, Error> {
    let durable = durable_of(name);
    if durable.len() > 200 {
        return Err(Error::InvalidName {
            kind: "subscription",
            value: name.to_string(),
            reason: "too long once `.` and `_` are escaped for a durable name",
        });
    }
    let existing = fetch(client, &durable).await?;
    let before = existing.as_ref().map(recorded_patterns).unwrap_or_default();
    let mut union = before.clone();
    for p in patterns {
        if !union.contains(p) {
            union.push(p.clone());
        }
    }
    let wanted = plan(&client.config.subject_prefix, &union, client.multi_filter);
    if let Some(info) = &existing {
        if union == before {
            // Nothing new: use the durable as it is.
            let mut actual: Vec<String> = if info.config.filter_subjects.is_empty() {
                vec![info.config.filter_subject.clone()]
            } else {
                info.config.filter_subjects.clone()
            };
            actual.sort();
            let exact = !wanted.client_match && actual == wanted.filters;
            return Ok(Plan {
                durable,
                patterns: union,
                client_match: !exact,
            });
        }
    }
    let config = consumer_config(
        client,
        name,
        &durable,
        &union,
        &wanted,
        existing.as_ref(),
        deliver_all,
    )?;
    let stream = &client.config.stream;
    let request = serde_json::json!({ "stream_name": stream, "config": config });
    let created = client
        .api::<consumer::Info, _>(
            "consumer create",
            format!("CONSUMER.CREATE.{stream}.{durable}"),
            &request,
        )
        .await?;
    match created {
        Ok(_) => Ok(Plan {
            durable,
            patterns: union,
            client_match: wanted.client_match,
        }),
        Err(e) if existing.is_some() => Err(Error::Config(format!(
            "subscription {name:?} exists with patterns {before:?}; the server refused to add {patterns:?} ({e}); delete the durable {durable:?} to change its patterns"
        ))),
        Err(e) => Err(api_error("consumer create", &e).into()),
    }
}

/// The durable's info, or `None` when it does not exist.
async fn fetch(client: &Client, durable: &str) -> Result<Option<consumer::Info>, Error> {
    let info = client.consumer_info(durable).await?;
    match info {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.error_code().0 == CONSUMER_NOT_FOUND => Ok(None),
        Err(e) => Err(api_error("consumer info", &e).into()),
    }
}

/// The patterns an existing durable was created for (kept in its description).
fn recorded_patterns(info: &consumer::Info) -> Vec<String> {
    info.config
        .description
        .as_deref()
        .and_then(|d| d.strip_prefix(DESCRIPTION_TAG))
        .and_then(|j| serde_json::from_str::<Vec<String>>(j).ok())
        .unwrap_or_default()
}

/// The durable's configuration for `patterns` filtered as `wanted`; an existing durable
/// keeps its deliver policy.
fn consumer_config(
    client: &Client,
    name: &str,
    durable: &str,
    patterns: &[String],
    wanted: &FilterPlan,
    existing: Option<&consumer::Info>,
    deliver_all: bool,
) -> Result<consumer::Config, Error> {
    let description = format!(
        "{DESCRIPTION_TAG}{}",
        serde_json::to_string(patterns).unwrap_or_default()
    );
    if description.len() > 4000 {
        return Err(Error::InvalidName {
            kind: "subscription",
            value: name.to_string(),
            reason: "too many patterns for one NATS durable",
        });
    }
    let mut config = consumer::Config {
        durable_name: Some(durable.to_string()),
        description: Some(description),
        deliver_policy: match (existing, deliver_all) {
            (Some(info), _) => info.config.deliver_policy,
            (None, true) => DeliverPolicy::All,
            (None, false) => DeliverPolicy::New,
        },
        ack_policy: AckPolicy::Explicit,
        ack_wait: client.config.ack_wait,
        max_deliver: -1,
        max_ack_pending: client.config.max_ack_pending,
        ..Default::default()
    };
    if wanted.filters.len() == 1 {
        config.filter_subject = wanted.filters[0].clone();
    } else {
        config.filter_subjects = wanted.filters.clone();
    }
    Ok(config)
}
