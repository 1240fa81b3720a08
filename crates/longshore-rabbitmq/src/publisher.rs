//! Confirmed publishing: single messages, pipelined batches, retries across reconnections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use longshore_core::topic::validate_topic;
use longshore_core::{
    async_trait, BatchError, Capabilities, Error, FailedMessage, Message, Publisher,
};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Unroutable;
use crate::connection::ConfirmChannel;
use crate::convert::properties;
use crate::error::{is_transport, map_lapin, RabbitError, BACKEND};

/// Where one publish goes.
#[derive(Clone, Copy)]
pub(crate) struct Route<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: &'a str,
    pub(crate) mandatory: bool,
}

impl Route<'_> {
    fn options(&self) -> BasicPublishOptions {
        BasicPublishOptions {
            mandatory: self.mandatory,
            immediate: false,
        }
    }
}

/// Turns a confirmation into the publish's outcome.
fn judge(route: Route<'_>, confirmation: Result<Confirmation, lapin::Error>) -> Result<(), Error> {
    match confirmation {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(Confirmation::Ack(Some(returned))) => Err(RabbitError::Unroutable {
            exchange: route.exchange.to_string(),
            routing_key: route.routing_key.to_string(),
            reply: format!("{} {}", returned.reply_code, returned.reply_text),
        }
        .into()),
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
    confirm: PublisherConfirm,
    deadline: Instant,
    publish_timeout: std::time::Duration,
) -> Result<(), Error> {
    match tokio::time::timeout_at(deadline, confirm).await {
        Ok(c) => judge(route, c),
        Err(_) => Err(Error::Timeout {
            operation: "rabbitmq publisher confirm (outcome unknown)",
            after: publish_timeout,
        }),
    }
}

impl ConfirmChannel {
    /// Publishes one message and waits for its confirm. Transport failures (channel or
    /// connection lost before the confirm) are retried on a new channel until the deadline;
    /// a retried message may be stored twice (at-least-once), never reported sent unconfirmed.
    pub(crate) async fn publish_confirmed(
        &self,
        route: Route<'_>,
        payload: &[u8],
        props: &BasicProperties,
    ) -> Result<(), Error> {
        let timeout = self.shared().config.publish_timeout;
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let result = async {
                let channel = self.get(deadline).await?;
                let confirm = channel
                    .basic_publish(
                        route.exchange.into(),
                        route.routing_key.into(),
                        route.options(),
                        payload,
                        props.clone(),
                    )
                    .await
                    .map_err(|e| map_lapin("publish", e))?;
                await_confirm(route, confirm, deadline, timeout).await
            }
            .await;
            match result {
                Err(e) if is_transport(&e) && !self.shared().is_closed() => {
                    let delay = self.shared().config.backoff(attempt);
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

    /// Publishes messages in order with their confirms pipelined: every message is sent, then
    /// all confirms are awaited together. Messages lost to a transport failure are re-sent
    /// (after the others) until the deadline. Returns the failed ones.
    pub(crate) async fn publish_pipelined(
        &self,
        route: Route<'_>,
        items: Vec<(usize, Message, BasicProperties)>,
    ) -> Vec<FailedMessage> {
        let timeout = self.shared().config.publish_timeout;
        let deadline = Instant::now() + timeout;
        let mut pending = items;
        let mut failed = Vec::new();
        let mut attempt = 0;
        while !pending.is_empty() {
            let mut retry = Vec::new();
            match self.get(deadline).await {
                Err(e) => {
                    if is_transport(&e) && !self.shared().is_closed() {
                        retry = std::mem::take(&mut pending)
                            .into_iter()
                            .map(|item| (item, e.to_string()))
                            .collect();
                    } else {
                        let message = e.to_string();
                        failed.extend(pending.drain(..).map(|(index, message_, _)| {
                            FailedMessage {
                                index,
                                message: message_,
                                error: clone_error(&e, &message),
                            }
                        }));
                    }
                }
                Ok(channel) => {
                    let mut sent = Vec::with_capacity(pending.len());
                    let mut confirms = Vec::with_capacity(pending.len());
                    for item in pending.drain(..) {
                        match channel
                            .basic_publish(
                                route.exchange.into(),
                                route.routing_key.into(),
                                route.options(),
                                &item.1.payload,
                                item.2.clone(),
                            )
                            .await
                        {
                            Ok(confirm) => {
                                sent.push(item);
                                confirms.push(await_confirm(route, confirm, deadline, timeout));
                            }
                            Err(e) => retry.push((item, map_lapin("publish", e).to_string())),
                        }
                    }
                    for (item, outcome) in sent.into_iter().zip(join_all(confirms).await) {
                        match outcome {
                            Ok(()) => {}
                            Err(e) if is_transport(&e) && !self.shared().is_closed() => {
                                retry.push((item, e.to_string()))
                            }
                            Err(error) => failed.push(FailedMessage {
                                index: item.0,
                                message: item.1,
                                error,
                            }),
                        }
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            let delay = self.shared().config.backoff(attempt);
            if Instant::now() + delay >= deadline || self.shared().is_closed() {
                failed.extend(
                    retry
                        .into_iter()
                        .map(|((index, message, _), why)| FailedMessage {
                            index,
                            message,
                            error: RabbitError::ConfirmLost(why).into(),
                        }),
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
        failed.sort_by_key(|f| f.index);
        failed
    }
}

/// A copy of `e` for each message of a batch that failed for the same reason.
fn clone_error(e: &Error, message: &str) -> Error {
    match e {
        Error::Closed(what) => Error::Closed(what),
        Error::Timeout { operation, after } => Error::Timeout {
            operation,
            after: *after,
        },
        Error::Unauthorized { backend, message } => Error::Unauthorized {
            backend,
            message: message.clone(),
        },
        Error::Config(m) => Error::Config(m.clone()),
        Error::Connection { backend, .. } => Error::Connection {
            backend,
            message: message.to_string(),
            source: None,
        },
        Error::Rejected {
            backend,
            message,
            retryable,
        } => Error::Rejected {
            backend,
            message: message.clone(),
            retryable: *retryable,
        },
        _ => Error::Backend {
            backend: BACKEND,
            message: message.to_string(),
            retryable: e.is_retryable(),
            source: None,
        },
    }
}

/// Publishes to the topic exchange with publisher confirms. Made by
/// [`RabbitBroker::publisher`](crate::RabbitBroker::publisher); has its own channel on the
/// broker's connection.
pub struct RabbitPublisher {
    channel: ConfirmChannel,
    closed: AtomicBool,
}

impl RabbitPublisher {
    pub(crate) fn new(shared: Arc<crate::connection::Shared>) -> Self {
        RabbitPublisher {
            channel: ConfirmChannel::new(shared),
            closed: AtomicBool::new(false),
        }
    }

    fn route<'a>(&'a self, topic: &'a str) -> Route<'a> {
        let config = &self.channel.shared().config;
        Route {
            exchange: &config.exchange,
            routing_key: topic,
            mandatory: config.unroutable == Unroutable::Error,
        }
    }

    fn check(&self, message: &Message) -> Result<BasicProperties, Error> {
        message.check_limits(self.channel.shared().config.max_payload)?;
        properties(message)
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) || self.channel.shared().is_closed() {
            return Err(Error::Closed("rabbitmq publisher"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for RabbitPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitPublisher")
            .field("exchange", &self.channel.shared().config.exchange)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

#[async_trait]
impl Publisher for RabbitPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.check_open()?;
        validate_topic(topic)?;
        let props = self.check(&message)?;
        let span = tracing::debug_span!("rabbitmq.publish", backend = BACKEND, topic, message_id = %message.id);
        self.channel
            .publish_confirmed(self.route(topic), &message.payload, &props)
            .instrument(span)
            .await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        let total = messages.len();
        if total == 0 {
            return Ok(());
        }
        if let Err(e) = self.check_open().and_then(|()| validate_topic(topic)) {
            let message = e.to_string();
            return Err(BatchError::all(messages, || clone_error(&e, &message)));
        }
        let mut failed = Vec::new();
        let mut items = Vec::with_capacity(total);
        for (index, message) in messages.into_iter().enumerate() {
            match self.check(&message) {
                Ok(props) => items.push((index, message, props)),
                Err(error) => failed.push(FailedMessage {
                    index,
                    message,
                    error,
                }),
            }
        }
        if !items.is_empty() {
            failed.extend(
                self.channel
                    .publish_pipelined(self.route(topic), items)
                    .await,
            );
        }
        if failed.is_empty() {
            Ok(())
        } else {
            failed.sort_by_key(|f| f.index);
            Err(BatchError { total, failed })
        }
    }

    async fn close(&self) -> Result<(), Error> {
        // Every publish waits for its confirm, so nothing is buffered here.
        self.closed.store(true, Ordering::Release);
        self.channel.close().await;
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        crate::capabilities(&self.channel.shared().config)
    }

    /// Connected (a dropped connection is re-opened, waiting at most 2 s) with both
    /// exchanges present; not ready once this publisher or its broker is closed.
    async fn health(&self) -> longshore_core::Health {
        let closed = self.closed.load(Ordering::Acquire);
        crate::health::report(
            self.channel.shared(),
            closed.then_some("rabbitmq publisher"),
        )
        .await
    }
}
