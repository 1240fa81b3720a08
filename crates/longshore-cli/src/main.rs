//! The `longshore` binary: parses the command line, runs it, prints an error as one line.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = longshore_cli::Cli::parse();
    match longshore_cli::run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            // One line: no source chain, no Debug (which could be long), no credentials.
            let line = e.to_string().replace(['\n', '\r'], " ");
            eprintln!("longshore: {line}");
            ExitCode::from(1)
        }
    }
}
