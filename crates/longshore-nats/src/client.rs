//! The connection every handle of one broker shares: the NATS client, the JetStream context,
//! the server's facts (max payload, multi-filter support), stream provisioning, and the
//! backend's capabilities.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::response::Response;
use async_nats::jetstream::{self, consumer, stream};
use longshore_core::{Capabilities, Error, Outstanding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{split_credentials, Auth, NatsConfig, Storage};
use crate::error::{api_error, NatsError, STREAM_NAME_IN_USE, STREAM_NOT_FOUND};
use crate::mapping::subsumes;
use crate::BACKEND;

/// Room kept below the server's `max_payload` for the headers longshore and callers add.
pub const HEADER_HEADROOM: usize = 16 * 1024;

/// Permission violations reported asynchronously by the server (`-ERR 'Permissions
/// Violation ...'`): a request that then times out is reported as a permission error.
#[derive(Default)]
pub(crate) struct Violations {
    recent: Mutex<Vec<(Instant, String)>>,
}

impl Violations {
    fn record(&self, message: String) {
        let mut v = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        v.push((Instant::now(), message));
        let len = v.len();
        if len > 16 {
            v.drain(..len - 16);
        }
    }

    /// A violation reported since `since`, if any.
    pub(crate) fn since(&self, since: Instant) -> Option<String> {
        let v = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .rev()
            .find(|(at, _)| *at >= since)
            .map(|(_, m)| m.clone())
    }
}

/// The connection's state as the client's events report it. Lets a PubAck wait end when the
/// connection it was sent on drops (its answer is lost with it), and a publish retry start
/// as soon as the connection is back rather than after a backoff that grew meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// The client is connected.
    pub connected: bool,
    /// Disconnections so far.
    pub drops: u64,
}

/// The pause before reconnection attempt `attempt` (1-based, counted since the connection was
/// lost): none for the first, then from 10 ms doubling up to `max`.
fn reconnect_delay(attempt: usize, max: Duration) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(16);
    Duration::from_millis(10u64 << doublings).min(max)
}

/// The state every handle of one broker shares.
pub(crate) struct Client {
    /// The NATS connection (async-nats reconnects it by itself, without limit).
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub config: NatsConfig,
    pub capabilities: Capabilities,
    /// The server's `max_payload` (payload + headers).
    pub server_max_payload: usize,
    /// Server supports several filter subjects per consumer (>= 2.10).
    pub multi_filter: bool,
    pub violations: Arc<Violations>,
    /// The connection's ups and downs (see [`Link`]).
    link: watch::Receiver<Link>,
    /// Set by the broker's `close`: every handle refuses work afterwards.
    closed: AtomicBool,
    /// `-NAK`s of deliveries dropped unsettled, sent from tasks: `close` waits for them
    /// before it drains the connection, or they would be lost with it and their messages
    /// left to `ack_wait`.
    pub outstanding: Arc<Outstanding>,
    stream_ready: AtomicBool,
    stream_lock: tokio::sync::Mutex<()>,
}

/// What this adapter can do on a server whose messages may carry `max_payload` bytes.
pub(crate) fn capabilities(max_payload: usize) -> Capabilities {
    let mut capabilities = Capabilities::new(BACKEND, max_payload);
    capabilities.native_delay = true;
    // A durable created on a non-empty stream starts at new messages (a dead-letter
    // subscription reads its whole history): no replay for new subscriptions.
    capabilities.replay = false;
    // One stream keeps publish order; one consumer receives in stream order.
    capabilities.ordered_by_key = true;
    capabilities.dedup_window = true;
    capabilities.delivery_count = true;
    capabilities
}

fn parse_version(v: &str) -> (u64, u64) {
    let mut it = v.split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Logs a connection event; permission violations are also kept in `violations`, the
/// connection's state in `link`.
fn note_event(violations: &Violations, link: &watch::Sender<Link>, event: async_nats::Event) {
    match event {
        async_nats::Event::ServerError(async_nats::ServerError::Other(m))
            if m.to_ascii_lowercase().contains("permission") =>
        {
            tracing::warn!(error = %m, "NATS permission violation");
            violations.record(m);
        }
        async_nats::Event::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
        async_nats::Event::Disconnected => {
            tracing::warn!("NATS disconnected");
            link.send_modify(|l| {
                l.connected = false;
                l.drops += 1;
            });
        }
        async_nats::Event::Connected => {
            tracing::info!("NATS (re)connected");
            link.send_modify(|l| l.connected = true);
        }
        other => tracing::debug!(event = %other, "NATS event"),
    }
}

/// The client options for `config`, with the credentials taken out of its URL (`auth`).
fn connect_options(
    config: &NatsConfig,
    auth: Auth,
    violations: Arc<Violations>,
    link: watch::Sender<Link>,
) -> async_nats::ConnectOptions {
    let max_delay = config.reconnect_delay_max;
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempt| reconnect_delay(attempt, max_delay))
        .client_capacity(8192)
        .event_callback(move |event| {
            note_event(&violations, &link, event);
            std::future::ready(())
        });
    if let Some(name) = &config.connection_name {
        options = options.name(name);
    }
    match auth {
        Auth::None => options,
        Auth::UserPassword(user, password) => options.user_and_password(user, password),
        Auth::Token(token) => options.token(token),
    }
}

/// Opens the connection to one of `servers`, bounded in time, with typed errors.
async fn open(
    config: &NatsConfig,
    servers: &[String],
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, Error> {
    let redacted = config.url.redacted();
    // Bound the whole attempt: the client's own timeout covers one TCP connect only.
    let limit = config.connect_timeout + Duration::from_secs(1);
    let e = match tokio::time::timeout(limit, options.connect(servers)).await {
        Ok(Ok(client)) => return Ok(client),
        Ok(Err(e)) => e,
        Err(_) => {
            return Err(NatsError::Unreachable {
                url: redacted,
                reason: format!("no answer within {limit:?}"),
            }
            .into())
        }
    };
    use async_nats::ConnectErrorKind as K;
    let reason = e.kind().to_string();
    Err(match e.kind() {
        K::AuthorizationViolation | K::Authentication => NatsError::AuthenticationFailed {
            url: redacted,
            reason,
        }
        .into(),
        K::ServerParse => Error::Config(format!("bad NATS URL {redacted}: {reason}")),
        _ => NatsError::Unreachable {
            url: redacted,
            reason,
        }
        .into(),
    })
}

impl Client {
    /// Connects, checks that JetStream is available, and reads the server's limits.
    pub(crate) async fn connect(config: NatsConfig) -> Result<Arc<Client>, Error> {
        config.validate()?;
        let violations = Arc::new(Violations::default());
        let (servers, auth) = split_credentials(config.url.expose());
        let (link_tx, link) = watch::channel(Link {
            connected: true,
            drops: 0,
        });
        let options = connect_options(&config, auth, violations.clone(), link_tx);
        let nats = open(&config, &servers, options).await?;
        let info = nats.server_info();
        let (major, minor) = parse_version(&info.version);
        let server_max_payload = if info.max_payload > 0 {
            info.max_payload
        } else {
            1024 * 1024
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(1 << 20)
            .backpressure_on_inflight(true)
            .build(nats.clone());
        let max_payload = server_max_payload.saturating_sub(HEADER_HEADROOM).max(1);
        let client = Arc::new(Client {
            nats,
            js,
            config,
            capabilities: capabilities(max_payload),
            server_max_payload,
            multi_filter: (major, minor) >= (2, 10),
            violations,
            link,
            closed: AtomicBool::new(false),
            outstanding: Arc::default(),
            stream_ready: AtomicBool::new(false),
            stream_lock: tokio::sync::Mutex::new(()),
        });
        client.check_jetstream().await?;
        Ok(client)
    }

    /// The connection's state now.
    pub(crate) fn link(&self) -> Link {
        *self.link.borrow()
    }

    /// Returns once the connection dropped more than `drops` times in all; never if the
    /// client is gone.
    pub(crate) async fn dropped_after(&self, drops: u64) {
        let mut link = self.link.clone();
        if link.wait_for(|l| l.drops > drops).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Returns once the client is connected (at once if it is); never if the client is gone.
    pub(crate) async fn reconnected(&self) {
        let mut link = self.link.clone();
        if link.wait_for(|l| l.connected).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether the broker was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Refuses further work, flushes what was sent, and drains the connection (open pull
    /// inboxes end, so delivery streams end too).
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let limit = self.config.request_timeout;
        if !self.outstanding.finished(limit).await {
            tracing::warn!(
                left = self.outstanding.count(),
                "closing with give-backs not sent; those messages come back after ack_wait"
            );
        }
        let _ = tokio::time::timeout(limit, self.nats.flush()).await;
        if let Err(e) = self.nats.drain().await {
            tracing::debug!(error = %e, "draining the NATS connection failed");
        }
    }

    /// A JetStream API call: `Ok(Ok(v))`, `Ok(Err(api error))`, or a transport error typed
    /// as unreachable / JetStream disabled / permission denied / timeout.
    pub(crate) async fn api<T: DeserializeOwned, P: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        subject: String,
        payload: &P,
    ) -> Result<Result<T, jetstream::Error>, NatsError> {
        let started = Instant::now();
        match self.js.request::<_, _, Response<T>>(subject, payload).await {
            Ok(Response::Ok(v)) => Ok(Ok(v)),
            Ok(Response::Err { error }) => Ok(Err(error)),
            Err(e) => Err(self.request_error(operation, started, e.kind(), &e.to_string())),
        }
    }

    pub(crate) fn request_error(
        &self,
        operation: &'static str,
        started: Instant,
        kind: jetstream::context::RequestErrorKind,
        text: &str,
    ) -> NatsError {
        use jetstream::context::RequestErrorKind as K;
        if let Some(v) = self.violations.since(started) {
            return NatsError::PermissionDenied(v);
        }
        match kind {
            // After connect proved JetStream is there, silence means it is restarting or
            // recovering: retryable.
            K::NoResponders => NatsError::Unreachable {
                url: self.config.url.redacted(),
                reason: format!(
                    "{operation}: JetStream did not answer (server starting or JetStream disabled)"
                ),
            },
            K::TimedOut => NatsError::Timeout {
                operation,
                after: self.config.request_timeout,
            },
            _ => NatsError::Unreachable {
                url: self.config.url.redacted(),
                reason: format!("{operation}: {text}"),
            },
        }
    }

    /// `CONSUMER.INFO` of durable `durable` on the stream.
    pub(crate) async fn consumer_info(
        &self,
        durable: &str,
    ) -> Result<Result<consumer::Info, jetstream::Error>, NatsError> {
        let stream = &self.config.stream;
        self.api(
            "consumer info",
            format!("CONSUMER.INFO.{stream}.{durable}"),
            &serde_json::json!({}),
        )
        .await
    }

    async fn check_jetstream(&self) -> Result<(), Error> {
        // `$JS.API.INFO` answers on every JetStream-enabled account.
        let started = Instant::now();
        let answer = self
            .js
            .request::<_, _, Response<serde_json::Value>>("INFO", &serde_json::json!({}))
            .await;
        let answer = match answer {
            Ok(Response::Ok(v)) => Ok(v),
            Ok(Response::Err { error }) => Err(error),
            Err(e) if e.kind() == jetstream::context::RequestErrorKind::NoResponders => {
                return Err(NatsError::JetStreamDisabled.into())
            }
            Err(e) => {
                return Err(self
                    .request_error("account info", started, e.kind(), &e.to_string())
                    .into())
            }
        };
        match answer {
            Ok(_) => Ok(()),
            Err(e) if e.code() == 503 => Err(NatsError::JetStreamDisabled.into()),
            Err(e) => Err(api_error("account info", &e).into()),
        }
    }

    /// Makes sure the stream exists and captures our subjects. Cheap after the first success.
    pub(crate) async fn ensure_stream(&self) -> Result<(), Error> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self.stream_lock.lock().await;
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.provision_stream().await?;
        self.stream_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Checks the stream now (creating it if missing), whatever an earlier check found: a
    /// health check must notice a stream deleted since.
    pub(crate) async fn refresh_stream(&self) -> Result<(), Error> {
        let _guard = self.stream_lock.lock().await;
        let result = self.provision_stream().await;
        self.stream_ready.store(result.is_ok(), Ordering::Release);
        result
    }

    /// Forget that the stream was checked (after "no stream" answers), so the next call
    /// provisions it again.
    pub(crate) fn stream_maybe_gone(&self) {
        self.stream_ready.store(false, Ordering::Release);
    }

    async fn provision_stream(&self) -> Result<(), Error> {
        let name = &self.config.stream;
        let wanted = self.config.effective_stream_subjects();
        let info = self
            .api::<stream::Info, _>(
                "stream info",
                format!("STREAM.INFO.{name}"),
                &serde_json::json!({}),
            )
            .await?;
        match info {
            Ok(info) => {
                // Every subject we need must be captured by one of the stream's subjects.
                let missing = wanted.into_iter().find(|w| {
                    !info
                        .config
                        .subjects
                        .iter()
                        .any(|s| subsumes(s, w) || s == w)
                });
                match missing {
                    Some(subject) => Err(NatsError::StreamMismatch {
                        stream: name.clone(),
                        subject,
                    }
                    .into()),
                    None => Ok(()),
                }
            }
            Err(e) if e.error_code().0 == STREAM_NOT_FOUND => self.create_stream(wanted).await,
            Err(e) => Err(api_error("stream info", &e).into()),
        }
    }

    /// Creates the stream on `subjects` with the configured storage and limits.
    async fn create_stream(&self, subjects: Vec<String>) -> Result<(), Error> {
        let c = &self.config;
        let name = &c.stream;
        let config = stream::Config {
            name: name.clone(),
            subjects,
            storage: match c.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            num_replicas: c.replicas,
            duplicate_window: c.duplicate_window,
            max_age: c.max_age,
            max_bytes: c.max_bytes,
            max_messages: -1,
            max_message_size: -1,
            max_consumers: -1,
            max_messages_per_subject: -1,
            ..Default::default()
        };
        let created = self
            .api::<stream::Info, _>("stream create", format!("STREAM.CREATE.{name}"), &config)
            .await?;
        match created {
            Ok(_) => {
                tracing::info!(stream = %name, "created JetStream stream");
                Ok(())
            }
            // Created concurrently by someone else: fine if it now exists.
            Err(e) if e.error_code().0 == STREAM_NAME_IN_USE => Ok(()),
            Err(e) => Err(api_error("stream create", &e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_to_the_maximum() {
        let max = Duration::from_millis(250);
        let delays: Vec<u128> = (1..=8)
            .map(|a| reconnect_delay(a, max).as_millis())
            .collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 250, 250]);
        assert_eq!(reconnect_delay(usize::MAX, max), max);
    }

    #[test]
    fn server_versions() {
        assert_eq!(parse_version("2.10.3-beta"), (2, 10));
        assert_eq!(parse_version("2.9.10"), (2, 9));
    }
}
