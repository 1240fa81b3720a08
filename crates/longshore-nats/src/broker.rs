//! The connection: client, JetStream context, stream provisioning, server facts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::response::Response;
use async_nats::jetstream::{self, stream};
use longshore_core::{Capabilities, Error, Health};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{NatsConfig, Storage};
use crate::error::{NatsError, BACKEND};
use crate::publisher::NatsPublisher;
use crate::subscriber::NatsSubscriber;

/// Room kept below the server's `max_payload` for the headers longshore and callers add.
pub const HEADER_HEADROOM: usize = 16 * 1024;

/// JetStream error code: stream not found.
pub(crate) const STREAM_NOT_FOUND: u64 = 10059;

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

pub(crate) struct Inner {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub config: NatsConfig,
    pub capabilities: Capabilities,
    /// The server's `max_payload` (payload + headers).
    pub server_max_payload: usize,
    /// Server supports several filter subjects per consumer (>= 2.10).
    pub multi_filter: bool,
    pub violations: Arc<Violations>,
    stream_ready: AtomicBool,
    stream_lock: tokio::sync::Mutex<()>,
}

/// A connection to a NATS server with JetStream. Cheap to clone; hand out
/// [`NatsBroker::publisher`] and [`NatsBroker::subscriber`] handles.
#[derive(Clone)]
pub struct NatsBroker {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("config", &self.inner.config)
            .field("capabilities", &self.inner.capabilities)
            .finish()
    }
}

fn parse_version(v: &str) -> (u64, u64) {
    let mut it = v.split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

impl NatsBroker {
    /// Connects, checks that JetStream is available, and reads the server's limits. Fails
    /// within about `connect_timeout + request_timeout` with a typed error: unreachable server
    /// ([`Error::Connection`]), bad credentials or missing permissions
    /// ([`Error::Unauthorized`]), JetStream disabled ([`Error::Unsupported`]).
    pub async fn connect(config: NatsConfig) -> Result<NatsBroker, Error> {
        config.validate()?;
        let redacted = config.url.redacted();
        let violations = Arc::new(Violations::default());
        let events = violations.clone();
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout))
            .max_reconnects(None)
            .client_capacity(8192)
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    match event {
                        async_nats::Event::ServerError(async_nats::ServerError::Other(m))
                            if m.to_ascii_lowercase().contains("permission") =>
                        {
                            tracing::warn!(error = %m, "NATS permission violation");
                            events.record(m);
                        }
                        async_nats::Event::ServerError(e) => {
                            tracing::warn!(error = %e, "NATS server error")
                        }
                        async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                        async_nats::Event::Connected => tracing::info!("NATS (re)connected"),
                        other => tracing::debug!(event = %other, "NATS event"),
                    }
                }
            });
        if let Some(name) = &config.connection_name {
            options = options.name(name);
        }
        let (url, auth) = split_credentials(config.url.expose());
        match auth {
            Auth::None => {}
            Auth::UserPassword(user, password) => {
                options = options.user_and_password(user, password)
            }
            Auth::Token(token) => options = options.token(token),
        }
        // Bound the whole attempt: the client's own timeout covers one TCP connect only.
        let limit = config.connect_timeout + Duration::from_secs(1);
        let client = match tokio::time::timeout(limit, options.connect(url.as_str())).await {
            Err(_) => {
                return Err(NatsError::Unreachable {
                    url: redacted,
                    reason: format!("no answer within {limit:?}"),
                }
                .into())
            }
            Ok(Err(e)) => {
                use async_nats::ConnectErrorKind as K;
                let reason = e.kind().to_string();
                return Err(match e.kind() {
                    K::AuthorizationViolation | K::Authentication => {
                        NatsError::AuthenticationFailed {
                            url: redacted,
                            reason,
                        }
                    }
                    K::ServerParse => {
                        return Err(Error::Config(format!("bad NATS URL {redacted}: {reason}")))
                    }
                    _ => NatsError::Unreachable {
                        url: redacted,
                        reason,
                    },
                }
                .into());
            }
            Ok(Ok(client)) => client,
        };
        let info = client.server_info();
        let (major, minor) = parse_version(&info.version);
        let multi_filter = (major, minor) >= (2, 10);
        let server_max_payload = if info.max_payload > 0 {
            info.max_payload
        } else {
            1024 * 1024
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(1 << 20)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let max_payload = server_max_payload.saturating_sub(HEADER_HEADROOM).max(1);
        let mut capabilities = Capabilities::new(BACKEND, max_payload);
        capabilities.native_delay = true;
        // A durable created on a non-empty stream starts at new messages (a dead-letter
        // subscription reads its whole history): no replay for new subscriptions.
        capabilities.replay = false;
        // One stream keeps publish order; one consumer receives in stream order.
        capabilities.ordered_by_key = true;
        capabilities.dedup_window = true;
        capabilities.delivery_count = true;
        let inner = Arc::new(Inner {
            client,
            js,
            config,
            capabilities,
            server_max_payload,
            multi_filter,
            violations,
            stream_ready: AtomicBool::new(false),
            stream_lock: tokio::sync::Mutex::new(()),
        });
        inner.check_jetstream().await?;
        Ok(NatsBroker { inner })
    }

    /// Connects with [`NatsConfig::from_url`].
    pub async fn connect_url(url: &str) -> Result<NatsBroker, Error> {
        Self::connect(NatsConfig::from_url(url)?).await
    }

    /// A publisher handle.
    pub fn publisher(&self) -> NatsPublisher {
        NatsPublisher::new(self.inner.clone())
    }

    /// A subscriber handle.
    pub fn subscriber(&self) -> NatsSubscriber {
        NatsSubscriber::new(self.inner.clone())
    }

    /// What this adapter can do on this server.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    /// The server version string (`2.9.10`).
    pub fn server_version(&self) -> String {
        self.inner.client.server_info().version
    }

    /// Whether consumers use several filter subjects (server >= 2.10) rather than one wider
    /// filter plus client-side matching.
    pub fn multi_filter(&self) -> bool {
        self.inner.multi_filter
    }

    /// Creates the stream now if it is missing (publishers and subscribers also do this on
    /// first use).
    pub async fn ensure_stream(&self) -> Result<(), Error> {
        self.inner.ensure_stream().await
    }

    /// The underlying JetStream context, for what the ports do not cover.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// Connected, with the stream in place and capturing longshore's subjects (it is created
    /// if missing, as the first publish or subscribe would).
    pub async fn health(&self) -> Health {
        crate::health::report(&self.inner, None).await
    }
}

impl Inner {
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
            Err(e) => Err(NatsError::Api {
                operation: "account info",
                code: e.error_code().0,
                description: e.to_string(),
            }
            .into()),
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
        let c = &self.config;
        let name = &c.stream;
        let wanted = c.effective_stream_subjects();
        match self
            .api::<stream::Info, _>(
                "stream info",
                format!("STREAM.INFO.{name}"),
                &serde_json::json!({}),
            )
            .await?
        {
            Ok(info) => {
                // Every subject we need must be captured by one of the stream's subjects.
                for w in &wanted {
                    if !info
                        .config
                        .subjects
                        .iter()
                        .any(|s| crate::subject::subsumes(s, w) || s == w)
                    {
                        return Err(NatsError::StreamMismatch {
                            stream: name.clone(),
                            subject: w.clone(),
                        }
                        .into());
                    }
                }
                Ok(())
            }
            Err(e) if e.error_code().0 == STREAM_NOT_FOUND => {
                let config = stream::Config {
                    name: name.clone(),
                    subjects: wanted,
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
                match self
                    .api::<stream::Info, _>(
                        "stream create",
                        format!("STREAM.CREATE.{name}"),
                        &config,
                    )
                    .await?
                {
                    Ok(_) => {
                        tracing::info!(stream = %name, "created JetStream stream");
                        Ok(())
                    }
                    // Created concurrently by someone else: fine if it now exists.
                    Err(e) if e.error_code().0 == 10058 => Ok(()),
                    Err(e) => Err(api_error("stream create", &e).into()),
                }
            }
            Err(e) => Err(api_error("stream info", &e).into()),
        }
    }
}

/// Credentials found in a NATS URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `nats://user:pass@h1:4222,h2:4222` into the server list without credentials and
/// the credentials (async-nats does not read them from the URL).
pub(crate) fn split_credentials(url: &str) -> (String, Auth) {
    let mut auth = Auth::None;
    let mut servers = Vec::new();
    for part in url.split(',') {
        let (scheme, rest) = match part.find("://") {
            Some(i) => (&part[..i + 3], &part[i + 3..]),
            None => ("", part),
        };
        let rest = match rest.rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                if auth == Auth::None {
                    auth = match userinfo.split_once(':') {
                        Some((u, p)) => Auth::UserPassword(percent_decode(u), percent_decode(p)),
                        None => Auth::Token(percent_decode(userinfo)),
                    };
                }
                &rest[at + 1..]
            }
            None => rest,
        };
        servers.push(format!("{scheme}{rest}"));
    }
    (servers.join(","), auth)
}

pub(crate) fn api_error(operation: &'static str, e: &jetstream::Error) -> NatsError {
    NatsError::Api {
        operation,
        code: e.error_code().0,
        description: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url() {
        assert_eq!(
            split_credentials("nats://app:p%40ss@h:4222,h2:4222"),
            (
                "nats://h:4222,h2:4222".to_string(),
                Auth::UserPassword("app".into(), "p@ss".into())
            )
        );
        assert_eq!(
            split_credentials("nats://tok@h:4222"),
            ("nats://h:4222".to_string(), Auth::Token("tok".into()))
        );
        assert_eq!(
            split_credentials("nats://h:4222"),
            ("nats://h:4222".to_string(), Auth::None)
        );
        assert_eq!(parse_version("2.10.3-beta"), (2, 10));
        assert_eq!(parse_version("2.9.10"), (2, 9));
    }
}
