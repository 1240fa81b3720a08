//! Confirmed publishing on a channel in confirm mode: single messages, pipelined batches and
//! retries across reconnections. Publishers and dead letters both go out this way.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use longshore_core::{Error, FailedMessage, Message};
use tokio::time::Instant;

use crate::client::{declare_exchanges, Client};
use crate::error::{is_transport, map_lapin, RabbitError};
use crate::returns::{Identity, Outcome, Returns};
use crate::BACKEND;

/// Most confirms one batch keeps in flight (lapin's pipelining at its best on this machine
/// is reached from about a thousand on).
const CONFIRM_WINDOW: usize = 1_024;

/// Where one publish goes.
#[derive(Clone, Copy)]
pub(crate) struct Route<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: &'a str,
    pub(crate) mandatory: bool,
}

impl Route<'_> {
    /// Who a message with `props` sent this way is, to find its return.
    fn identity(&self, props: &BasicProperties) -> Identity {
        Identity {
            exchange: self.exchange.to_string(),
            routing_key: self.routing_key.to_string(),
            message_id: props.message_id().as_ref().map(|id| id.to_string()),
        }
    }

    fn options(&self) -> BasicPublishOptions {
        BasicPublishOptions {
            mandatory: self.mandatory,
            immediate: false,
        }
    }
}

/// A route of its own for one message of a batch, instead of the batch's: a scheduled message
/// goes into the delay levels. Always `mandatory` (a level always routes it to a level queue).
pub(crate) struct Detour {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
}

impl Detour {
    pub(crate) fn route(&self) -> Route<'_> {
        Route {
            exchange: &self.exchange,
            routing_key: &self.routing_key,
            mandatory: true,
        }
    }
}

/// One message of a batch on its way: its index in the batch, the message (returned to the
/// caller if it fails), its AMQP properties and, for a scheduled one, its own route.
pub(crate) struct Outgoing {
    pub(crate) index: usize,
    pub(crate) message: Message,
    pub(crate) properties: BasicProperties,
    pub(crate) detour: Option<Detour>,
}

impl Outgoing {
    /// Where this message goes: its detour, or the batch's route.
    fn route<'s>(&'s self, batch: Route<'s>) -> Route<'s> {
        self.detour.as_ref().map_or(batch, Detour::route)
    }

    fn failed(self, error: Error) -> FailedMessage {
        FailedMessage {
            index: self.index,
            message: self.message,
            error,
        }
    }
}

/// Batch messages to send again on a new channel, each with why its last attempt failed.
type Retry = Vec<(Outgoing, String)>;

/// Turns a confirmation into the publish's outcome.
fn judge(route: Route<'_>, confirmation: Result<Confirmation, lapin::Error>) -> Result<(), Error> {
    match confirmation {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(Confirmation::Ack(Some(returned))) => {
            // One line instead of lapin's dump of the whole returned message (its
            // `lapin::returned_messages` target is capped by `observe::log_directives`).
            let message_id = returned
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_string())
                .unwrap_or_default();
            tracing::warn!(
                exchange = %route.exchange,
                topic = %route.routing_key,
                message_id = %message_id,
                reply = %format!("{} {}", returned.reply_code, returned.reply_text),
                "unroutable message returned by RabbitMQ: no queue is bound for its topic; \
                 start a consumer (or ensure_subscription) whose pattern matches it first, \
                 or connect with ?unroutable=accept to let RabbitMQ drop such messages"
            );
            Err(RabbitError::Unroutable {
                exchange: route.exchange.to_string(),
                routing_key: route.routing_key.to_string(),
                reply: format!("{} {}", returned.reply_code, returned.reply_text),
            }
            .into())
        }
        Ok(Confirmation::Nack(_)) => Err(RabbitError::Nacked.into()),
        Ok(Confirmation::NotRequested) => Err(Error::Backend {
            backend: BACKEND,
            message: "publisher confirms are not enabled on the channel".into(),
            retryable: false,
            source: None,
        }),
        Err(e) => Err(RabbitError::ConfirmLost(e.to_string()).into()),
    }
}

async fn await_confirm(
    route: Route<'_>,
    confirm: tokio::sync::oneshot::Receiver<Outcome>,
    deadline: Instant,
    publish_timeout: Duration,
) -> Result<(), Error> {
    match tokio::time::timeout_at(deadline, confirm).await {
        Ok(Ok(c)) => judge(route, c),
        // The pairing task went (the runtime is shutting down): the outcome is unknown.
        Ok(Err(_)) => Err(RabbitError::ConfirmLost("the confirm was not awaited".into()).into()),
        Err(_) => Err(Error::Timeout {
            operation: "rabbitmq publisher confirm (outcome unknown)",
            after: publish_timeout,
        }),
    }
}

/// An open confirm channel and the pairing task of its confirms.
#[derive(Clone)]
struct Live {
    channel: Channel,
    returns: Arc<Returns>,
}

/// A channel in confirm mode, re-created after it (or the connection) closes, with the pairing
/// of its confirms and returns ([`crate::returns`]).
pub(crate) struct ConfirmChannel {
    client: Arc<Client>,
    current: std::sync::Mutex<Option<Live>>,
    create: tokio::sync::Mutex<()>,
}

impl ConfirmChannel {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        ConfirmChannel {
            client,
            current: std::sync::Mutex::new(None),
            create: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn client(&self) -> &Arc<Client> {
        &self.client
    }

    fn live(&self) -> Option<Live> {
        let guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|l| l.channel.status().connected())
            .cloned()
    }

    /// The live confirm channel, opening one (and re-declaring the exchanges) if needed.
    async fn get(&self, deadline: Instant) -> Result<Live, Error> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let _creating = self.create.lock().await;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let channel = self.client.channel(deadline).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| map_lapin("confirm_select", e))?;
        declare_exchanges(&channel, &self.client.config.exchange).await?;
        let live = Live {
            channel,
            returns: Arc::new(Returns::start()),
        };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
        Ok(live)
    }

    /// Closes the channel (publishes already confirmed stay confirmed).
    pub(crate) async fn close(&self) {
        let live = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Live { channel: c, .. }) = live {
            if c.status().connected() {
                let _ = c.close(200, "OK".into()).await;
            }
        }
    }

    /// Whether a failure may go away on a new channel: the transport went, not the broker
    /// handle.
    fn worth_retrying(&self, e: &Error) -> bool {
        is_transport(e) && !self.client.is_closed()
    }

    /// Publishes one message and waits for its confirm. Transport failures (channel or
    /// connection lost before the confirm) are retried on a new channel until the deadline;
    /// a retried message may be stored twice (at-least-once), never reported sent unconfirmed.
    pub(crate) async fn publish_confirmed(
        &self,
        route: Route<'_>,
        payload: &[u8],
        props: &BasicProperties,
    ) -> Result<(), Error> {
        let timeout = self.client.config.publish_timeout;
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let result = async {
                let live = self.get(deadline).await?;
                let publish = live.channel.basic_publish(
                    route.exchange.into(),
                    route.routing_key.into(),
                    route.options(),
                    payload,
                    props.clone(),
                );
                let confirm = live
                    .returns
                    .publish(route.identity(props), publish)
                    .await
                    .map_err(|e| map_lapin("publish", e))?;
                await_confirm(route, confirm, deadline, timeout).await
            }
            .await;
            match result {
                Err(e) if self.worth_retrying(&e) => {
                    let delay = self.client.config.backoff(attempt);
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, attempt, "publish not confirmed; retrying on a new channel");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Publishes messages in order with their confirms pipelined, at most
    /// [`CONFIRM_WINDOW`] in flight, so a batch of any size holds a bounded number of
    /// unconfirmed messages. Each confirm has `publish_timeout` from its own send. Messages
    /// lost to a transport failure are re-sent (after the others) until `publish_timeout`
    /// after the first such failure. Returns the failed ones, in no particular order.
    pub(crate) async fn publish_pipelined(
        &self,
        route: Route<'_>,
        items: Vec<Outgoing>,
    ) -> Vec<FailedMessage> {
        let mut pending = items;
        let mut failed = Vec::new();
        let mut attempt = 0;
        let mut retry_until = None;
        while !pending.is_empty() {
            let retry = self.send_round(route, pending, &mut failed).await;
            if retry.is_empty() {
                break;
            }
            let until = *retry_until
                .get_or_insert_with(|| Instant::now() + self.client.config.publish_timeout);
            let delay = self.client.config.backoff(attempt);
            if Instant::now() + delay >= until || self.client.is_closed() {
                failed.extend(
                    retry
                        .into_iter()
                        .map(|(item, why)| item.failed(RabbitError::ConfirmLost(why).into())),
                );
                break;
            }
            tracing::warn!(
                unconfirmed = retry.len(),
                attempt,
                "batch messages not confirmed; re-sending on a new channel"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
            pending = retry.into_iter().map(|(item, _)| item).collect();
        }
        failed
    }

    /// One round of a batch: sends every pending message on the current channel, keeping at
    /// most [`CONFIRM_WINDOW`] confirms in flight. Definite failures go to `failed`; those a
    /// new channel may fix are returned.
    async fn send_round(
        &self,
        route: Route<'_>,
        pending: Vec<Outgoing>,
        failed: &mut Vec<FailedMessage>,
    ) -> Retry {
        let timeout = self.client.config.publish_timeout;
        let live = match self.get(Instant::now() + timeout).await {
            Ok(live) => live,
            Err(e) if self.worth_retrying(&e) => {
                let why = e.to_string();
                return pending
                    .into_iter()
                    .map(|item| (item, why.clone()))
                    .collect();
            }
            Err(e) => {
                failed.extend(pending.into_iter().map(|item| item.failed(e.copy())));
                return Vec::new();
            }
        };
        let mut retry = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        let mut settle =
            |(item, outcome): (Outgoing, Result<(), Error>), retry: &mut Retry| match outcome {
                Ok(()) => {}
                Err(e) if self.worth_retrying(&e) => retry.push((item, e.to_string())),
                Err(error) => failed.push(item.failed(error)),
            };
        for item in pending {
            if in_flight.len() >= CONFIRM_WINDOW {
                if let Some(done) = in_flight.next().await {
                    settle(done, &mut retry);
                }
            }
            let to = item.route(route);
            let publish = live.channel.basic_publish(
                to.exchange.into(),
                to.routing_key.into(),
                to.options(),
                &item.message.payload,
                item.properties.clone(),
            );
            let published = live
                .returns
                .publish(to.identity(&item.properties), publish)
                .await;
            match published {
                Ok(confirm) => {
                    let deadline = Instant::now() + timeout;
                    in_flight.push(async move {
                        let outcome =
                            await_confirm(item.route(route), confirm, deadline, timeout).await;
                        (item, outcome)
                    });
                }
                Err(e) => retry.push((item, map_lapin("publish", e).to_string())),
            }
        }
        while let Some(done) = in_flight.next().await {
            settle(done, &mut retry);
        }
        retry
    }
}
