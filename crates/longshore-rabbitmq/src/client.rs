//! The one connection a broker handle keeps, re-opened on demand after it drops, and the
//! backend's capabilities.
//!
//! lapin's own `enable_auto_recover()` is not used: this adapter re-opens the connection
//! itself, re-declares the topology, re-creates channels per role and re-subscribes, so the
//! behaviour after a drop is explicit and tested (see the crate README).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use longshore_core::{Capabilities, Error};
use tokio::time::Instant;

use crate::config::{QueueType, RabbitConfig, DEAD_LETTER_EXCHANGE};
use crate::error::{is_transport, map_connect, map_lapin};
use crate::BACKEND;

/// The connection state shared by a broker and every handle made from it.
pub(crate) struct Client {
    pub(crate) config: RabbitConfig,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The last opened connection, readable without waiting for a reconnection in progress.
    last: std::sync::Mutex<Option<Arc<Connection>>>,
    closed: AtomicBool,
    /// Connections opened so far (the first one included).
    opened: AtomicU64,
    /// A health check is re-opening the connection (so checks do not pile up attempts).
    pub(crate) health_probe: AtomicBool,
    /// The connection generation on which the delay levels were last declared (0: never).
    delay_levels: AtomicU64,
    /// Held while the delay levels are being declared, so a burst declares them once.
    delay_declaring: tokio::sync::Mutex<()>,
}

impl Client {
    /// Connects once (no retries: a wrong password or vhost fails at once, typed).
    pub(crate) async fn connect(config: RabbitConfig) -> Result<Arc<Self>, Error> {
        config.validate()?;
        let client = Arc::new(Client {
            config,
            conn: tokio::sync::Mutex::new(None),
            last: std::sync::Mutex::new(None),
            closed: AtomicBool::new(false),
            opened: AtomicU64::new(0),
            health_probe: AtomicBool::new(false),
            delay_levels: AtomicU64::new(0),
            delay_declaring: tokio::sync::Mutex::new(()),
        });
        client.connection().await?;
        Ok(client)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// How many times the connection was re-opened after a drop.
    pub(crate) fn reconnects(&self) -> u64 {
        self.opened.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// Which connection is the current one: it changes each time the connection is
    /// re-opened, so a channel opened before a change belongs to a dead connection.
    pub(crate) fn generation(&self) -> u64 {
        self.opened.load(Ordering::Acquire)
    }

    /// Whether the delay levels were declared on the current connection.
    pub(crate) fn delay_levels_declared(&self) -> bool {
        self.delay_levels.load(Ordering::Acquire) == self.generation()
    }

    /// Serialises declarations of the delay levels (see `delay::ensure_levels`).
    pub(crate) fn delay_levels_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.delay_declaring
    }

    /// Records that the delay levels were declared on connection `generation`.
    pub(crate) fn set_delay_levels_declared(&self, generation: u64) {
        self.delay_levels.store(generation, Ordering::Release);
    }

    /// Whether the connection is up right now.
    pub(crate) fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// The current connection if it is up, without re-opening it.
    pub(crate) fn current(&self) -> Option<Arc<Connection>> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }

    /// The live connection, re-opened (one attempt, bounded by `connect_timeout`) if it
    /// dropped. Concurrent callers share one reconnection.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>, Error> {
        if self.is_closed() {
            return Err(Error::Closed("rabbitmq broker"));
        }
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.status().connected() {
                return Ok(c.clone());
            }
        }
        *guard = None;
        let conn = Arc::new(open(&self.config).await?);
        if self.opened.fetch_add(1, Ordering::AcqRel) > 0 {
            tracing::info!(url = %self.config.url, "rabbitmq connection re-opened");
        }
        *guard = Some(conn.clone());
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// A new channel, reconnecting with backoff on transport errors until `deadline`.
    pub(crate) async fn channel(&self, deadline: Instant) -> Result<Channel, Error> {
        let mut attempt = 0;
        loop {
            let result = async {
                let conn = self.connection().await?;
                conn.create_channel()
                    .await
                    .map_err(|e| map_lapin("open channel", e))
            }
            .await;
            match result {
                Ok(channel) => return Ok(channel),
                Err(e) if is_transport(&e) && !self.is_closed() => {
                    let delay = self.config.backoff(attempt);
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, attempt, "rabbitmq unavailable; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the connection; every handle fails with [`Error::Closed`] afterwards.
    pub(crate) async fn close(&self) -> Result<(), Error> {
        self.closed.store(true, Ordering::Release);
        let conn = self.conn.lock().await.take();
        self.last.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(conn) = conn {
            if conn.status().connected() {
                match conn.close(200, "OK".into()).await {
                    Ok(()) => {}
                    // A channel of a handle dropped just before is still closing (lapin
                    // closes a dropped channel in the background): the connection goes all
                    // the same, and nothing confirmed depends on that channel.
                    Err(e) if matches!(e.kind(), lapin::ErrorKind::InvalidChannelState(..)) => {
                        tracing::debug!(error = %e, "connection closed while a channel was closing");
                    }
                    Err(e) => return Err(map_lapin("close connection", e)),
                }
            }
        }
        Ok(())
    }
}

/// Opens a connection and declares the exchanges every role needs.
async fn open(config: &RabbitConfig) -> Result<Connection, Error> {
    // Parse here so that lapin's parse error (which quotes the URL) never reaches a message.
    let uri: AMQPUri = config
        .url
        .expose()
        .parse()
        .map_err(|_| Error::Config(format!("invalid AMQP URL {}", config.url)))?;
    let props =
        ConnectionProperties::default().with_connection_name(config.connection_name.clone().into());
    let attempt = async {
        let conn = Connection::connect_uri(uri, props)
            .await
            .map_err(map_connect)?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| map_lapin("open channel", e))?;
        declare_exchanges(&channel, &config.exchange).await?;
        let _ = channel.close(200, "OK".into()).await;
        Ok::<_, Error>(conn)
    };
    match tokio::time::timeout(config.connect_timeout, attempt).await {
        Ok(result) => result.map_err(|e| match e {
            Error::Connection {
                backend, message, ..
            } => Error::Connection {
                backend,
                message: format!("{} ({message})", config.url),
                source: None,
            },
            other => other,
        }),
        Err(_) => Err(Error::Timeout {
            operation: "rabbitmq connect",
            after: config.connect_timeout,
        }),
    }
}

/// The durable topic exchange and the seed's durable direct dead-letter exchange.
pub(crate) async fn declare_exchanges(channel: &Channel, exchange: &str) -> Result<(), Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|e| map_lapin("declare exchange", e))?;
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|e| map_lapin("declare dead-letter exchange", e))
}

/// The RabbitMQ capabilities: native delay (a delayed nack waits in the broker's delay levels,
/// see `delay`) and native schedule (a message scheduled ahead is published into those levels
/// and reaches the subscriptions' queues only when due, see `schedule`), no cancel (a message
/// in a queue cannot be withdrawn by id), no replay, order kept for one consumer, no dedup window. A delivery count only on quorum queues: they
/// report `x-delivery-count`, while classic queues only flag a redelivery, so there
/// `Delivery::attempt` is 1 for a first delivery and 2 for any redelivery.
pub(crate) fn capabilities(config: &RabbitConfig) -> Capabilities {
    let mut caps = Capabilities::new(BACKEND, config.max_payload);
    caps.ordered_by_key = true;
    caps.delivery_count = config.queue_type == QueueType::Quorum;
    caps.native_delay = true;
    caps.native_schedule = true;
    caps
}
