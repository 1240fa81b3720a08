//! The command line, as clap derives it.

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  export LONGSHORE_URL=amqp://guest:guest@127.0.0.1:5672/%2f
  longshore publish orders.placed --type order_placed --key o-1 '{\"order_id\":\"o-1\"}'
  cat events.jsonl | longshore publish orders.placed --type order_placed -
  longshore publish payments.deadline --type payment_deadline --after 15m '{\"order_id\":\"o-1\"}'
  longshore tail 'orders.#' --count 10 --format json
  longshore dlq list billing --reason timeout --since 2h
  longshore dlq show billing 01931f7e-…
  longshore dlq replay billing --type order_placed --dry-run
  longshore dlq purge billing --reason 'card declined' --yes
  longshore lag billing
  longshore health && echo ready
  longshore --store-url postgres://postgres@127.0.0.1/test store read order-o-1
  longshore completions bash > /etc/bash_completion.d/longshore";

/// The longshore command-line tool: one set of verbs on every backend, picked by URL.
#[derive(Debug, Parser)]
#[command(name = "longshore", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Broker URL (credentials are never printed).
    #[arg(long, env = "LONGSHORE_URL", global = true, hide_env_values = true)]
    pub url: Option<String>,
    /// Event-store URL, when the broker has no store of its own.
    #[arg(
        long,
        env = "LONGSHORE_STORE_URL",
        global = true,
        hide_env_values = true
    )]
    pub store_url: Option<String>,
    /// JSON lines instead of tables (the default when stdout is not a terminal).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish one event (DATA, --file, or - for JSON lines on stdin); each is confirmed.
    Publish(PublishArgs),
    /// Follow the messages of topics matching PATTERN.
    Tail(TailArgs),
    /// Dead letters: list, show, replay, purge.
    Dlq {
        /// The operation.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// How many messages wait for a subscription.
    Lag {
        /// The subscription.
        subscription: String,
        /// The subscription's patterns: Kafka computes lag over the topics they select and
        /// knows them only for subscriptions opened by the same process.
        #[arg(long = "pattern")]
        patterns: Vec<String>,
    },
    /// Whether the backend is ready: exit code 0 when it is, 1 when it is not.
    Health {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// The event store.
    Store {
        /// The operation.
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `publish`'s arguments.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic (dot-separated words).
    pub topic: String,
    /// The event type (for stdin lines: the default for lines without `event_type`).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Ordering key (aggregate id).
    #[arg(long)]
    pub key: Option<String>,
    /// A header, `name=value` (repeatable).
    #[arg(long = "header", value_name = "K=V")]
    pub headers: Vec<String>,
    /// Read the data from this file.
    #[arg(long, conflicts_with = "data")]
    pub file: Option<std::path::PathBuf>,
    /// The event data as JSON; `-` reads JSON lines from stdin, one event each.
    pub data: Option<String>,
    /// Deliver at this time (RFC 3339, e.g. 2026-12-24T18:00:00Z), not before.
    #[arg(long, value_name = "TIME", conflicts_with = "after")]
    pub at: Option<String>,
    /// Deliver after this long: a number with a unit, `500ms`, `30s`, `15m`, `24h`.
    #[arg(long, value_name = "DURATION")]
    pub after: Option<String>,
}

/// How `tail` prints messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One readable line per message.
    Pretty,
    /// One JSON object per message.
    Json,
}

/// `tail`'s arguments.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// AMQP-style pattern: `*` one word, `#` zero or more.
    pub pattern: String,
    /// Consume (and acknowledge) an existing subscription instead of a temporary one.
    #[arg(long)]
    pub subscription: Option<String>,
    /// Start from the oldest message kept (backends that replay: Kafka).
    #[arg(long)]
    pub from_start: bool,
    /// Stop after N messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Output format (default: pretty on a terminal, json otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

/// Filters shared by the dead-letter commands.
#[derive(Debug, Args, Default)]
pub struct Filters {
    /// Only this message id (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<String>,
    /// Only this event type.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only letters whose reason contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Only letters dead-lettered since TIME (RFC 3339, or an age: 30s, 10m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only letters dead-lettered before TIME.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

/// The dead-letter operations.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// A table of id, type, reason, attempts, original topic and time.
    List {
        /// The subscription whose dead letters to list.
        subscription: String,
        /// Which letters.
        #[command(flatten)]
        filters: Filters,
    },
    /// One dead letter in full: headers and body.
    Show {
        /// The subscription.
        subscription: String,
        /// The message id.
        id: String,
    },
    /// Republish chosen letters to their original topic (or --to); each is removed only
    /// after its republish was confirmed.
    Replay {
        /// The subscription.
        subscription: String,
        /// Which letters.
        #[command(flatten)]
        filters: Filters,
        /// Send them here instead of their original topic.
        #[arg(long, value_name = "TOPIC")]
        to: Option<String>,
        /// Only list what would be replayed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove chosen letters for good.
    Purge {
        /// The subscription.
        subscription: String,
        /// Which letters.
        #[command(flatten)]
        filters: Filters,
        /// Really remove them.
        #[arg(long)]
        yes: bool,
    },
}

/// The event-store operations.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// The events of one stream, in version order.
    Read {
        /// The stream id.
        stream: String,
        /// First version to read.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most events to print.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Every stream's events in the store's global order.
    ReadAll {
        /// Read events after this position.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most events to print (without --follow).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Keep printing new events as they are appended (Ctrl-C stops).
        #[arg(long)]
        follow: bool,
    },
    /// Append one event with an expected version (`any`, `none`, or a number).
    Append {
        /// The stream id.
        stream: String,
        /// The version the stream must be at: any, none, or N.
        #[arg(long)]
        expect: String,
        /// The event type.
        #[arg(long = "type")]
        event_type: String,
        /// The event data as JSON.
        data: String,
    },
    /// Create or upgrade the store's SQL schema (Postgres, SQLite); connecting runs it.
    Migrate,
}
