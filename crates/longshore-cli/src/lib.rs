//! # longshore-cli
//!
//! The `longshore` command-line tool: publish, tail, dead letters, lag, health and the event
//! store, with the same verbs on every backend, picked by `--url` / `LONGSHORE_URL`. It is a
//! thin layer on the `longshore` facade: dead-letter operations are
//! [`longshore::DeadLetters`], connecting is [`longshore::connect_with`].
//!
//! Exit codes: 0 success (for `health`: ready), 1 failure (one line on stderr; for
//! `health`: not ready or unreachable), 2 a command line clap refused.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
mod connect;
mod dlq;
pub mod error;
mod output;
mod publish;
mod status;
mod store;
mod tail;
mod time;

use clap::CommandFactory;

pub use cli::Cli;
pub use connect::Urls;
pub use error::CliError;
use output::Output;

/// Runs one command line. `Ok(false)` is a command that ran and answered no (`health` not
/// ready); errors are printed by the caller as one line.
pub async fn run(cli: Cli) -> Result<bool, CliError> {
    let urls = Urls {
        url: cli.url,
        store_url: cli.store_url,
    };
    let out = Output::new(cli.json);
    use cli::Command;
    match cli.command {
        Command::Publish(args) => publish::run(&urls, out, args).await.map(|()| true),
        Command::Tail(args) => tail::run(&urls, out, args).await.map(|()| true),
        Command::Dlq { command } => dlq::run(&urls, out, command).await.map(|()| true),
        Command::Lag {
            subscription,
            patterns,
        } => status::lag(&urls, out, &subscription, &patterns)
            .await
            .map(|()| true),
        Command::Health { timeout } => status::health(&urls, out, timeout).await,
        Command::Store { command } => store::run(&urls, out, command).await.map(|()| true),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "longshore", &mut std::io::stdout());
            Ok(true)
        }
    }
}

// `cargo test --doc` compiles and runs the README's examples.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
