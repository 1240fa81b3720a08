//! Configuration of the RabbitMQ adapter.

use std::time::Duration;

use longshore_core::topic::validate_name;
use longshore_core::url::SecretUrl;
use longshore_core::Error;

/// The default topic exchange: durable, type `topic`.
pub const DEFAULT_EXCHANGE: &str = "longshore";
/// The dead-letter exchange of the seed's topology: durable, type `direct`.
pub const DEAD_LETTER_EXCHANGE: &str = "dlx";
/// The default broker URL (the local RabbitMQ with the guest account).
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// RabbitMQ's own default `max_message_size` (128 MiB since 3.8).
pub const BROKER_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// What a publish to a topic that no subscription matches does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unroutable {
    /// Publish with the `mandatory` flag: the broker returns an unroutable message and the
    /// publish fails with [`Error::Rejected`] (never a silent `Ok`). The default.
    #[default]
    Error,
    /// Publish without `mandatory`: RabbitMQ confirms and discards a message no queue is bound
    /// for, as the memory broker, Kafka and JetStream accept a message nobody subscribed to.
    Accept,
}

/// The type of the queues a subscription declares (its queue and its `dlq.<name>` queue).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueType {
    /// Classic durable queues, declared with exactly the seed's arguments. The default.
    #[default]
    Classic,
    /// Quorum queues (`x-queue-type: quorum`): Raft-replicated over the cluster's nodes, and
    /// they count deliveries (`x-delivery-count`), so `Delivery::attempt` is exact.
    Quorum,
}

impl QueueType {
    /// The value of `x-queue-type` (and of the URL's `queue_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// Settings of a [`RabbitBroker`](crate::RabbitBroker).
///
/// `Debug` prints the URL with its password redacted.
#[derive(Clone, Debug)]
pub struct RabbitConfig {
    /// `amqp://` or `amqps://` URL (credentials, host, port, percent-encoded vhost).
    pub url: SecretUrl,
    /// The durable topic exchange that publishers send to and subscriptions bind to.
    pub exchange: String,
    /// What happens to a message no subscription matches.
    pub unroutable: Unroutable,
    /// The type of every queue a subscription declares.
    pub queue_type: QueueType,
    /// Limit for connecting (TCP, TLS, AMQP handshake), for each attempt.
    pub connect_timeout: Duration,
    /// How long one publish (or one batch) may take, reconnections and retries included.
    pub publish_timeout: Duration,
    /// First delay between reconnection attempts.
    pub reconnect_initial: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// Largest payload accepted by a publish (at most RabbitMQ's default `max_message_size`).
    pub max_payload: usize,
    /// The connection name shown in the management UI.
    pub connection_name: String,
}

impl Default for RabbitConfig {
    fn default() -> Self {
        RabbitConfig {
            url: SecretUrl::new(DEFAULT_URL),
            exchange: DEFAULT_EXCHANGE.to_string(),
            unroutable: Unroutable::Error,
            queue_type: QueueType::Classic,
            connect_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(30),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            max_payload: 16 * 1024 * 1024,
            connection_name: "longshore".to_string(),
        }
    }
}

impl RabbitConfig {
    /// Reads a URL. Besides lapin's own query parameters (`heartbeat`, `connection_timeout`,
    /// `frame_max`, `channel_max`, `auth_mechanism`) it understands `exchange=<name>` (the topic
    /// exchange), `unroutable=error|accept` and `queue_type=classic|quorum`, which are removed
    /// before the URL reaches lapin.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let parsed = url::Url::parse(url).map_err(|_| {
            Error::Config(format!(
                "invalid AMQP URL {}",
                longshore_core::url::redact_url(url)
            ))
        })?;
        if !matches!(parsed.scheme(), "amqp" | "amqps") {
            return Err(Error::Config(format!(
                "unsupported scheme {:?} for RabbitMQ (amqp:// or amqps://)",
                parsed.scheme()
            )));
        }
        let mut config = RabbitConfig::default();
        let mut kept: Vec<(String, String)> = Vec::new();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "exchange" => config.exchange = v.into_owned(),
                "unroutable" => {
                    config.unroutable = choice(
                        "unroutable",
                        &v,
                        &[("error", Unroutable::Error), ("accept", Unroutable::Accept)],
                    )?
                }
                "queue_type" => {
                    config.queue_type = choice(
                        "queue_type",
                        &v,
                        &[
                            ("classic", QueueType::Classic),
                            ("quorum", QueueType::Quorum),
                        ],
                    )?
                }
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        let mut lapin_url = parsed.clone();
        lapin_url.set_query(None);
        if !kept.is_empty() {
            lapin_url.query_pairs_mut().extend_pairs(kept);
        }
        config.url = SecretUrl::rewritten(url, lapin_url.to_string());
        config.validate()?;
        Ok(config)
    }

    /// Sets the topic exchange.
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// Sets what happens to messages no subscription matches.
    pub fn with_unroutable(mut self, unroutable: Unroutable) -> Self {
        self.unroutable = unroutable;
        self
    }

    /// Sets the type of the queues subscriptions declare.
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// Sets the per-publish time limit.
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Sets the per-attempt connect limit.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Checks names and limits.
    pub fn validate(&self) -> Result<(), Error> {
        validate_name("exchange", &self.exchange)?;
        if self.exchange == DEAD_LETTER_EXCHANGE || self.exchange.starts_with("amq.") {
            return Err(Error::Config(format!(
                "exchange {:?} is reserved (dead-letter exchange or amq.*)",
                self.exchange
            )));
        }
        if self.max_payload == 0 || self.max_payload > BROKER_MAX_MESSAGE_SIZE {
            return Err(Error::Config(format!(
                "max_payload must be 1..={BROKER_MAX_MESSAGE_SIZE} bytes"
            )));
        }
        if self.connect_timeout.is_zero() || self.publish_timeout.is_zero() {
            return Err(Error::Config("timeouts must be positive".into()));
        }
        Ok(())
    }

    /// The delay before reconnection attempt `attempt` (0-based): exponential with jitter.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .reconnect_initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.reconnect_max);
        // Up to 25 % jitter so that many clients do not reconnect in lockstep.
        let jitter = base.mul_f64(fastrand::f64() * 0.25);
        base.saturating_sub(jitter)
    }
}

/// The option named `value` among `options`, or a config error listing them.
fn choice<T: Copy>(key: &str, value: &str, options: &[(&str, T)]) -> Result<T, Error> {
    options
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, option)| *option)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
            Error::Config(format!("{key}={value:?}: expected {}", names.join(" or ")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_url_reads_exchange_and_hides_password() {
        let c = RabbitConfig::from_url(
            "amqp://user:s3cret@localhost:5672/%2f?exchange=orders&heartbeat=10",
        )
        .expect("config");
        assert_eq!(c.exchange, "orders");
        assert_eq!(
            c.url.expose(),
            "amqp://user:s3cret@localhost:5672/%2f?heartbeat=10"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = RabbitConfig::from_url("amqps://h/vh?unroutable=accept").expect("config");
        assert_eq!(c.unroutable, Unroutable::Accept);
        assert_eq!(c.exchange, DEFAULT_EXCHANGE);
        assert_eq!(c.queue_type, QueueType::Classic);
        let c = RabbitConfig::from_url("amqp://h/%2f?queue_type=quorum&heartbeat=5").expect("qq");
        assert_eq!(c.queue_type, QueueType::Quorum);
        assert_eq!(c.url.expose(), "amqp://h/%2f?heartbeat=5");
    }

    #[test]
    fn from_url_rejects_bad_input_without_leaking() {
        let e = RabbitConfig::from_url("http://u:pw@h").expect_err("scheme");
        assert!(matches!(e, Error::Config(_)));
        let e = RabbitConfig::from_url("amqp://u:pw@h/?exchange=a;b").expect_err("name");
        assert!(matches!(e, Error::InvalidName { .. }));
        let e = RabbitConfig::from_url("amqp://u:pw@h/?exchange=dlx").expect_err("reserved");
        assert!(!e.to_string().contains("pw"));
        let e = RabbitConfig::from_url("amqp://u:pw@h/?queue_type=stream").expect_err("type");
        assert!(matches!(e, Error::Config(_)), "{e}");
        let e = RabbitConfig::from_url("amqp://u:pw@[::1").expect_err("parse");
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = RabbitConfig::default();
        assert!(c.backoff(0) <= Duration::from_millis(100));
        assert!(c.backoff(3) >= Duration::from_millis(600));
        assert!(c.backoff(30) <= Duration::from_secs(5));
    }
}
