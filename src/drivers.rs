//! The driver table: every backend longshore knows, the URL schemes it answers to, and its
//! [`Driver`] when its cargo feature is compiled in (as sqlx's drivers). Adding a backend is
//! one row here and one feature in Cargo.toml.

use longshore_core::Driver;

/// One backend of the table.
pub(crate) struct Row {
    /// The cargo feature that compiles the adapter in.
    pub feature: &'static str,
    /// The URL schemes (lowercase, without `://`).
    pub schemes: &'static [&'static str],
    /// `None` when the feature is off.
    pub driver: Option<Driver>,
}

/// `Some(Driver::of::<$broker>())` when `$feature` is on, `None` otherwise. The broker's path
/// is only resolved when the feature is on.
macro_rules! driver {
    ($feature:literal, $broker:path) => {{
        #[cfg(feature = $feature)]
        let driver = Some(Driver::of::<$broker>());
        #[cfg(not(feature = $feature))]
        let driver = None;
        driver
    }};
}

/// Every backend, in the order they are listed in errors.
pub(crate) fn table() -> [Row; 6] {
    [
        Row {
            feature: "memory",
            schemes: &["memory"],
            driver: Some(Driver::of::<longshore_core::memory::MemoryBroker>()),
        },
        Row {
            feature: "rabbitmq",
            schemes: &["amqp", "amqps"],
            driver: driver!("rabbitmq", longshore_rabbitmq::RabbitBroker),
        },
        Row {
            feature: "kafka",
            schemes: &["kafka"],
            driver: driver!("kafka", longshore_kafka::KafkaBroker),
        },
        Row {
            feature: "nats",
            schemes: &["nats", "tls"],
            driver: driver!("nats", longshore_nats::NatsBroker),
        },
        Row {
            feature: "postgres",
            schemes: &["postgres", "postgresql"],
            driver: driver!("postgres", longshore_postgres::PgBroker),
        },
        Row {
            feature: "sqlite",
            schemes: &["sqlite"],
            driver: driver!("sqlite", longshore_sqlite::SqliteBroker),
        },
    ]
}
