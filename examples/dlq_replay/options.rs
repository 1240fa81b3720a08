//! The command line: what to inspect and what to replay.

use std::time::Duration;

use super::BoxError;

/// What to inspect and what to replay.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The subscription whose dead letters to read (demo: also the one it creates).
    pub subscription: Option<String>,
    /// Replay dead letters whose text contains this.
    pub filter: Option<String>,
    /// Replay every dead letter.
    pub all: bool,
    /// Only inspect and replay an existing subscription's dead letters; no demo.
    pub existing: bool,
    /// Print what would be replayed, replay nothing.
    pub dry_run: bool,
    /// With `existing`: how long to wait for one more dead letter before stopping.
    pub idle: Option<Duration>,
    /// At most this many dead letters per run.
    pub max: Option<u16>,
    /// Demo: leave what remains in the dead-letter queue (for a later `--existing` run).
    pub keep: bool,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, BoxError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut o = Options {
            subscription: env("DLQ_SUBSCRIPTION"),
            filter: env("DLQ_FILTER"),
            ..Options::default()
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--subscription" => o.subscription = Some(value("--subscription")?),
                "--filter" => o.filter = Some(value("--filter")?),
                "--all" => o.all = true,
                "--existing" => o.existing = true,
                "--dry-run" => o.dry_run = true,
                "--keep" => o.keep = true,
                "--idle-ms" => {
                    o.idle = Some(Duration::from_millis(value("--idle-ms")?.parse()?));
                }
                "--max" => o.max = Some(value("--max")?.parse()?),
                "-h" | "--help" => {
                    println!(
                        "usage: dlq_replay [--subscription NAME] [--filter TEXT | --all] [--dry-run] [--keep]\n\
                         \x20      dlq_replay --existing --subscription NAME [--filter TEXT | --all] [--dry-run] [--idle-ms N] [--max N]\n\
                         env: LONGSHORE_URL (default memory://), DLQ_SUBSCRIPTION, DLQ_FILTER"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (try --help)").into()),
            }
        }
        Ok(o)
    }

    /// Whether a dead letter is chosen for replay, given its text (id, event type, reason,
    /// original topic and body).
    pub fn chooses(&self, text: &str) -> bool {
        if self.all {
            return true;
        }
        match &self.filter {
            Some(filter) => text.contains(filter.as_str()),
            None => false,
        }
    }
}
