//! Command-line arguments.

use std::path::PathBuf;

use crate::backend::Backend;
use crate::scenario::Scenario;

pub const USAGE: &str = "usage: longshore-bench [--quick] [--rounds N] [--out DIR] <scenario[,scenario…]|all> <backend[,backend…]|all>

scenarios: publish-one publish-batch publish-concurrent-1 publish-concurrent-64 publish-concurrent-512
           publish-stream transport end-to-end store-append-1 store-append-10 read-all relay drain-backlog
backends:  memory rabbitmq kafka nats postgres sqlite (NORMAL, then again with synchronous=FULL)
  --quick       tiny counts, one round each (seconds; what CI runs)
  --rounds N    rounds per scenario, alternating which side goes first (default 5, quick 1)
  --out DIR     where results.json, results.md and results.svg go (default target/bench)

Brokers: AMQP_URL, KAFKA_BROKERS, NATS_URL, DATABASE_URL (defaults: the local ones).
SQLite: fresh files in a new directory of the system temp dir (TMPDIR), removed at the end.
Under CI=true a missing broker is an error; otherwise that backend is skipped.";

/// What to run.
#[derive(Debug, Clone)]
pub struct Args {
    pub quick: bool,
    pub rounds: usize,
    pub out: PathBuf,
    pub scenarios: Vec<Scenario>,
    pub backends: Vec<Backend>,
    /// The command line, for the report.
    pub command: String,
}

pub enum Parsed {
    Run(Args),
    Help,
}

impl Args {
    pub fn parse(argv: impl Iterator<Item = String>) -> Result<Parsed, String> {
        let argv: Vec<String> = argv.collect();
        let command = format!(
            "cargo run --release -p longshore-bench -- {}",
            argv.join(" ")
        );
        let (mut quick, mut rounds, mut out) = (false, None, PathBuf::from("target/bench"));
        let mut positional = Vec::new();
        let mut it = argv.into_iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-h" | "--help" => return Ok(Parsed::Help),
                "--quick" => quick = true,
                "--rounds" => {
                    let v = it.next().ok_or("--rounds needs a number")?;
                    let n: usize = v
                        .parse()
                        .map_err(|_| format!("--rounds {v}: not a number"))?;
                    rounds = Some(n.max(1));
                }
                "--out" => out = PathBuf::from(it.next().ok_or("--out needs a directory")?),
                s if s.starts_with("--") => return Err(format!("unknown option {s}")),
                _ => positional.push(a),
            }
        }
        let [scenario, backend] = positional.as_slice() else {
            return Err("expected <scenario|all> <backend|all>".into());
        };
        let scenarios = pick(scenario, &Scenario::ALL, Scenario::from_name, "scenario")?;
        let backends = pick(backend, &Backend::ALL, Backend::from_name, "backend")?;
        Ok(Parsed::Run(Args {
            quick,
            rounds: rounds.unwrap_or(if quick { 1 } else { 5 }),
            out,
            scenarios,
            backends,
            command,
        }))
    }
}

/// `all`, or a comma-separated list of names (`what`: the kind, for the error).
fn pick<T: Copy>(
    list: &str,
    all: &[T],
    from_name: fn(&str) -> Option<T>,
    what: &str,
) -> Result<Vec<T>, String> {
    if list == "all" {
        return Ok(all.to_vec());
    }
    list.split(',')
        .map(|s| from_name(s).ok_or(format!("unknown {what} {s}")))
        .collect()
}
