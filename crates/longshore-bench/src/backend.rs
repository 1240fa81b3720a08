//! The backends: URLs, facade connections, raw clients, and the schemas a run leaves behind.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use longshore::{Config, Longshore};
use serde::Serialize;

use crate::raw::kafka::RawKafka;
use crate::raw::memory::RawMemory;
use crate::raw::nats::RawNats;
use crate::raw::postgres::RawPg;
use crate::raw::rabbitmq::RawRabbit;
use crate::raw::sqlite::RawSqlite;
use crate::raw::RawClient;
use crate::work::unique;

/// One backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Memory,
    Rabbitmq,
    Kafka,
    Nats,
    Postgres,
    Sqlite,
}

/// The exchange the bench publishes to (not the default one services use).
const EXCHANGE: &str = "lsbench";
/// The JetStream stream and subject prefix of the bench.
const NATS_STREAM: &str = "LONGSHORE_BENCH";
const NATS_PREFIX: &str = "lsbench";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

pub fn pg_url() -> String {
    env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
}

fn amqp_url() -> String {
    env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

fn nats_url() -> String {
    env_or("NATS_URL", "nats://127.0.0.1:4222")
}

fn kafka_brokers() -> String {
    env_or("KAFKA_BROKERS", "127.0.0.1:9092")
}

impl Backend {
    /// Memory last: its million-message scenarios leave the allocator holding memory, which
    /// would inflate every later peak RSS.
    pub const ALL: [Backend; 6] = [
        Backend::Rabbitmq,
        Backend::Kafka,
        Backend::Nats,
        Backend::Postgres,
        Backend::Sqlite,
        Backend::Memory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Rabbitmq => "rabbitmq",
            Backend::Kafka => "kafka",
            Backend::Nats => "nats",
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }

    pub fn from_name(s: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == s)
    }

    /// What the longshore side is compared with.
    pub fn raw_name(self) -> &'static str {
        match self {
            Backend::Memory => "tokio mpsc",
            Backend::Rabbitmq => "lapin",
            Backend::Kafka => "rdkafka",
            Backend::Nats => "async-nats",
            Backend::Postgres => "sqlx",
            Backend::Sqlite => "sqlx-sqlite",
        }
    }

    /// Whether the backend has an event store of its own.
    pub fn has_store(self) -> bool {
        matches!(self, Backend::Memory | Backend::Postgres | Backend::Sqlite)
    }

    /// The facade URL (a fresh schema for Postgres; SQLite's comes from [`Env::sqlite_url`]).
    fn url(self, pg_schema: &str) -> String {
        match self {
            Backend::Memory => "memory://".into(),
            Backend::Rabbitmq => with_query(&amqp_url(), &format!("exchange={EXCHANGE}")),
            Backend::Kafka => format!("kafka://{}", kafka_brokers()),
            Backend::Nats => with_query(
                &nats_url(),
                &format!("stream={NATS_STREAM}&prefix={NATS_PREFIX}&max_age=1h"),
            ),
            Backend::Postgres => pg_schema_url(pg_schema),
            Backend::Sqlite => String::new(),
        }
    }
}

fn pg_schema_url(schema: &str) -> String {
    with_query(&pg_url(), &format!("schema={schema}"))
}

/// Everything one backend's scenarios share.
pub struct Env {
    pub backend: Backend,
    pub quick: bool,
    pub rounds: usize,
    pub raw: Arc<dyn RawClient>,
    /// Raw sqlx (its own schema): the raw store, and the pool raw relays read outboxes with.
    pub pg: Option<Arc<RawPg>>,
    pg_error: Option<String>,
    /// RabbitMQ only: raw lapin sending transient messages.
    pub transient: Option<Arc<RawRabbit>>,
    /// SQLite only: the raw client (its file also holds the raw event store's tables).
    pub lite: Option<Arc<RawSqlite>>,
    /// SQLite only: `synchronous=FULL` on both sides (NORMAL otherwise).
    pub full: bool,
    /// SQLite only: the run's fresh directory, holding every file; removed by [`Env::close`].
    dir: Option<PathBuf>,
    /// Schemas the longshore side created, dropped by [`Env::close`].
    schemas: Mutex<Vec<String>>,
}

impl Env {
    /// Connects the raw client and checks that longshore reaches the backend. `full`: SQLite
    /// with `synchronous=FULL` on both sides.
    pub async fn open(
        backend: Backend,
        quick: bool,
        rounds: usize,
        full: bool,
    ) -> crate::Result<Env> {
        let (pg, pg_error) = if backend == Backend::Sqlite {
            // Everything SQLite measures (the relay's outbox too) is in its own files.
            (None, Some("not used by the sqlite backend".to_string()))
        } else {
            match RawPg::connect(&pg_url(), &unique("lsbench_raw_")).await {
                Ok(p) => (Some(Arc::new(p)), None),
                Err(e) if backend == Backend::Postgres => {
                    return Err(format!("PostgreSQL unreachable: {e}").into())
                }
                // Only the relay scenario needs Postgres on the other backends; it reports it.
                Err(e) => (None, Some(e.to_string())),
            }
        };
        let dir = (backend == Backend::Sqlite)
            .then(|| std::env::temp_dir().join(unique("longshore-bench-sqlite-")));
        let env = match Self::clients(backend, &pg, dir.as_ref(), full).await {
            Ok((raw, transient, lite)) => Env {
                backend,
                quick,
                rounds,
                raw,
                pg,
                pg_error,
                transient,
                lite,
                full,
                dir,
                schemas: Mutex::new(Vec::new()),
            },
            Err(e) => {
                if let Some(pg) = &pg {
                    let _ = pg.drop_schema().await;
                }
                if let Some(dir) = &dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(e);
            }
        };
        // Fails fast (and creates the exchange / stream) before any scenario runs.
        match env.connect().await {
            Ok(ls) => close(&ls).await,
            Err(e) => {
                env.close().await;
                return Err(e);
            }
        }
        Ok(env)
    }

    /// The raw client (and RabbitMQ's transient one, SQLite's typed one).
    async fn clients(
        backend: Backend,
        pg: &Option<Arc<RawPg>>,
        dir: Option<&PathBuf>,
        full: bool,
    ) -> crate::Result<(
        Arc<dyn RawClient>,
        Option<Arc<RawRabbit>>,
        Option<Arc<RawSqlite>>,
    )> {
        let (mut transient, mut lite) = (None, None);
        let raw: Arc<dyn RawClient> = match backend {
            Backend::Memory => Arc::new(RawMemory::default()),
            Backend::Rabbitmq => {
                transient = Some(Arc::new(RawRabbit::transient(&amqp_url(), EXCHANGE).await?));
                Arc::new(RawRabbit::connect(&amqp_url(), EXCHANGE).await?)
            }
            Backend::Kafka => Arc::new(RawKafka::connect(&kafka_brokers())?),
            Backend::Nats => {
                Arc::new(RawNats::connect(&nats_url(), NATS_STREAM, NATS_PREFIX).await?)
            }
            Backend::Postgres => match pg {
                Some(p) => p.clone(),
                None => return Err("PostgreSQL unreachable".into()),
            },
            Backend::Sqlite => {
                let dir = dir.ok_or("no directory for the sqlite files")?;
                std::fs::create_dir_all(dir)?;
                let raw = Arc::new(RawSqlite::create(&dir.join("raw.db"), full).await?);
                lite = Some(raw.clone());
                raw
            }
        };
        Ok((raw, transient, lite))
    }

    fn fresh_schema(&self) -> String {
        let s = unique("lsbench_");
        if let Ok(mut v) = self.schemas.lock() {
            v.push(s.clone());
        }
        s
    }

    /// A fresh SQLite file of this run for the facade, with this run's `synchronous`.
    fn sqlite_url(&self) -> crate::Result<(String, String)> {
        let dir = self
            .dir
            .as_ref()
            .ok_or("no directory for the sqlite files")?;
        let path = dir.join(format!("{}.db", unique("ls_")));
        let path = path.to_str().ok_or("temp dir is not UTF-8")?.to_string();
        let sync = if self.full { "full" } else { "normal" };
        Ok((format!("sqlite://{path}?synchronous={sync}"), path))
    }

    /// Fresh facade handles on the backend (`longshore::connect`).
    pub async fn connect(&self) -> crate::Result<Longshore> {
        let url = match self.backend {
            Backend::Postgres => self.backend.url(&self.fresh_schema()),
            Backend::Sqlite => self.sqlite_url()?.0,
            _ => self.backend.url(""),
        };
        Ok(longshore::connect(&url).await?)
    }

    /// Facade handles with an event store: the backend's own, or a fresh Postgres schema for
    /// brokers without one. Returns the Postgres schema (SQLite: the file's path), if any.
    pub async fn connect_with_store(&self) -> crate::Result<(Longshore, Option<String>)> {
        match self.backend {
            Backend::Memory => Ok((self.connect().await?, None)),
            Backend::Sqlite => {
                let (url, path) = self.sqlite_url()?;
                Ok((longshore::connect(&url).await?, Some(path)))
            }
            Backend::Postgres => {
                let schema = self.fresh_schema();
                Ok((
                    longshore::connect(&pg_schema_url(&schema)).await?,
                    Some(schema),
                ))
            }
            _ => {
                if self.pg.is_none() {
                    return Err(format!(
                        "this scenario needs PostgreSQL (the outbox): {}",
                        self.pg_error.as_deref().unwrap_or("unreachable")
                    )
                    .into());
                }
                let schema = self.fresh_schema();
                let config =
                    Config::new(self.backend.url("")).with_store_url(pg_schema_url(&schema));
                Ok((longshore::connect_with(&config).await?, Some(schema)))
            }
        }
    }

    /// Drops the schemas this run created; removes its SQLite files.
    pub async fn close(&self) {
        if let Some(lite) = &self.lite {
            lite.close().await;
        }
        if let Some(dir) = &self.dir {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                eprintln!("could not remove {}: {e}", dir.display());
            }
        }
        let schemas = self.schemas.lock().map(|v| v.clone()).unwrap_or_default();
        if let Some(pg) = &self.pg {
            for s in schemas {
                let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{s}\" CASCADE"
                )))
                .execute(&pg.pool)
                .await;
                if let Err(e) = dropped {
                    eprintln!("could not drop schema {s}: {e}");
                }
            }
            if let Err(e) = pg.drop_schema().await {
                eprintln!("could not drop schema {}: {e}", pg.schema);
            }
        }
    }
}

/// Closes a connection's publisher and subscriber.
pub async fn close(ls: &Longshore) {
    let _ = ls.subscriber.close().await;
    let _ = ls.publisher.close().await;
}
