//! The benchmark harness: every backend beside its raw client, side by side in one run.
//!
//! `cargo run --release -p longshore-bench -- [--quick] [--rounds N] [--out DIR] <scenario|all> <backend|all>`
//! (see README.md). Exits non-zero if any scenario fails; never on timings.
#![forbid(unsafe_code)]

mod backend;
mod cli;
mod measure;
mod raw;
mod report;
mod rss;
mod scenario;
mod store;
mod work;

use std::process::ExitCode;

/// Errors of the harness: any client's error, boxed with its message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result of the harness.
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args = match cli::Args::parse(std::env::args().skip(1)) {
        Ok(cli::Parsed::Run(a)) => a,
        Ok(cli::Parsed::Help) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    // Two workers: the machine the targets are stated for has two cores.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let failures = rt.block_on(scenario::run_all(&args));
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("\n{} failure(s):", failures.len());
        for f in &failures {
            eprintln!("  - {f}");
        }
        ExitCode::FAILURE
    }
}
