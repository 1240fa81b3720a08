//! The driver: every selected scenario on every selected backend, the two sides alternating
//! round by round, and the rows of the report.

use std::time::Instant;

use longshore::Longshore;
use longshore_core::memory::{MemoryBroker, MemoryConfig};
use longshore_core::Broker;

use super::consume::{drain, drain_ordered, end_to_end, transport};
use super::events::{append, fill_store, read_all, relay, PAGE};
use super::publish::{publish, raw_best_within, raw_publish, raw_same_callers, Pattern};
use super::side::{order, Side};
use super::Scenario;
use crate::backend::{close, Backend, Env};
use crate::cli::Args;
use crate::measure::{median, Sample, SideStats, Timed};
use crate::report::{self, Row};
use crate::store::postgres::raw_read_all;

/// The memory transport variant measuring the broker without the facade's observability layer.
const BARE_MEMORY: &str = "the bare memory broker, without the facade's tracing and metrics layer";
/// The publish-one and publish-batch variant compared with the raw client at its best.
const RAW_BEST: &str = "vs the raw client at its best (windowed confirms / multi-row inserts)";
const RAW_BEST_CONSUMER: &str =
    "vs the raw consumer at its best (prefetch 1,000; Postgres: one delete per fetched batch)";
/// The publish-concurrent variant: the raw client called by the same C tasks as longshore.
const RAW_SAME_CALLERS: &str =
    "vs the raw client called by the same C tasks, each awaiting its own confirm";
/// The other publish-concurrent variant: the raw client at its best, held to C in flight.
const RAW_BEST_WITHIN: &str = "vs the raw client at its best with at most C unconfirmed";
/// SQLite's second pass: every scenario again with `synchronous=FULL` on both sides (the
/// rows without it are NORMAL, the adapter's default).
const SQLITE_FULL: &str = "synchronous=FULL on both sides";

/// The passes over a backend: SQLite runs with `synchronous` NORMAL, then FULL.
fn passes(backend: Backend) -> &'static [bool] {
    if backend == Backend::Sqlite {
        &[false, true]
    } else {
        &[false]
    }
}

/// Runs every selected scenario on every selected backend; returns the failures.
pub async fn run_all(args: &Args) -> Vec<String> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let (mut rows, mut failures, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for (&backend, &full) in args
        .backends
        .iter()
        .flat_map(|b| passes(*b).iter().map(move |f| (b, f)))
    {
        let env = match Env::open(backend, args.quick, args.rounds, full).await {
            Ok(env) => env,
            Err(e) if ci => {
                failures.push(format!(
                    "{}: unreachable under CI=true: {e}",
                    env_label(backend, full)
                ));
                continue;
            }
            Err(e) => {
                println!("SKIPPED {}: {e}", env_label(backend, full));
                skipped.push(format!("{}: {e}", env_label(backend, full)));
                continue;
            }
        };
        let mut new = Vec::new();
        run_on(&env, &args.scenarios, &mut new, &mut failures).await;
        if full {
            for r in &mut new {
                r.variant = Some(match r.variant.take() {
                    Some(v) => format!("{SQLITE_FULL}; {v}"),
                    None => SQLITE_FULL.to_string(),
                });
            }
        }
        rows.extend(new);
        env.close().await;
    }
    println!("\nall done in {:.1} s", started.elapsed().as_secs_f64());
    if let Err(e) = report::write(args, &rows, &skipped, &failures) {
        failures.push(format!("writing the report: {e}"));
    }
    failures
}

/// The backend's name, with `synchronous=FULL` on SQLite's second pass.
fn env_label(backend: Backend, full: bool) -> String {
    if full {
        format!("{} ({SQLITE_FULL})", backend.name())
    } else {
        backend.name().to_string()
    }
}

/// Runs the `scenarios` that apply to `env`'s backend, adding their rows or failures.
async fn run_on(
    env: &Env,
    scenarios: &[Scenario],
    rows: &mut Vec<Row>,
    failures: &mut Vec<String>,
) {
    for &scenario in scenarios {
        if !scenario.applies(env.backend) {
            continue;
        }
        let on = env_label(env.backend, env.full);
        println!("== {} on {on}", scenario.name());
        let t = Instant::now();
        match run_scenario(env, scenario).await {
            Ok(new) => {
                for r in &new {
                    println!(
                        "   {}  ({:.1} s)",
                        report::one_line(r),
                        t.elapsed().as_secs_f64()
                    );
                }
                rows.extend(new);
            }
            Err(e) => {
                eprintln!("   FAILED: {e}");
                failures.push(format!("{} on {on}: {e}", scenario.name()));
            }
        }
    }
}

async fn run_scenario(env: &Env, scenario: Scenario) -> crate::Result<Vec<Row>> {
    let n = scenario.count(env.backend, env.quick);
    // Connections kept for the whole scenario (memory: fresh per side, see `publish`).
    let (ls, schema) = match scenario {
        Scenario::StoreAppend1 | Scenario::StoreAppend10 | Scenario::ReadAll | Scenario::Relay => {
            env.connect_with_store().await?
        }
        _ => (env.connect().await?, None),
    };
    if scenario == Scenario::ReadAll {
        fill_store(&*ls.store()?, n, "read", "order_created").await?;
    }
    let run = Run {
        env,
        scenario,
        ls: &ls,
        schema: schema.as_deref(),
        n,
    };
    let mut samples = Samples::default();
    let result = run.all_rounds(&mut samples).await;
    close(&ls).await;
    result?;
    Ok(run.rows(samples))
}

/// What one scenario collected over its rounds.
#[derive(Default)]
struct Samples {
    ours: Vec<Sample>,
    raw: Vec<Sample>,
    /// Variants measured in the same rounds, by name, each compared with `ours`.
    extra: Vec<(String, Vec<Sample>)>,
}

impl Samples {
    fn push_extra(&mut self, name: &str, s: Sample) {
        match self.extra.iter_mut().find(|(v, _)| v == name) {
            Some((_, v)) => v.push(s),
            None => self.extra.push((name.to_string(), vec![s])),
        }
    }
}

/// One scenario on one backend, with the connection its rounds share.
struct Run<'a> {
    env: &'a Env,
    scenario: Scenario,
    ls: &'a Longshore,
    /// The Postgres schema of the store scenarios' fresh store.
    schema: Option<&'a str>,
    /// Items per side and round.
    n: usize,
}

impl Run<'_> {
    fn rounds(&self) -> usize {
        match self.scenario {
            Scenario::DrainBacklog | Scenario::DrainOrdered if !self.env.quick => {
                self.env.rounds.min(2)
            }
            _ => self.env.rounds,
        }
    }

    /// The memory store and relay have no raw counterpart.
    fn has_raw(&self) -> bool {
        self.env.backend != Backend::Memory
            || !(self.scenario.unit() == "events/s" || self.scenario == Scenario::Relay)
    }

    async fn all_rounds(&self, samples: &mut Samples) -> crate::Result<()> {
        for round in 0..self.rounds() {
            for side in order(round) {
                if side == Side::Raw && !self.has_raw() {
                    continue;
                }
                let s = self.measure(side).await?;
                match side {
                    Side::Longshore => samples.ours.push(s),
                    Side::Raw => samples.raw.push(s),
                }
            }
            self.variants(samples).await?;
        }
        Ok(())
    }

    /// One side's sample of the scenario.
    async fn measure(&self, side: Side) -> crate::Result<Sample> {
        let (env, ls, schema, n) = (self.env, self.ls, self.schema, self.n);
        match self.scenario {
            Scenario::PublishOne => publish(env, ls, side, Pattern::One, n).await,
            Scenario::PublishBatch => publish(env, ls, side, Pattern::Batch, n).await,
            Scenario::PublishConcurrent1
            | Scenario::PublishConcurrent64
            | Scenario::PublishConcurrent512 => {
                let callers = self.scenario.callers().unwrap_or(1);
                publish(env, ls, side, Pattern::Concurrent(callers), n).await
            }
            Scenario::PublishStream => publish(env, ls, side, Pattern::Stream, n).await,
            Scenario::Transport => {
                transport(env, &ls.publisher, &ls.subscriber, side, n, false).await
            }
            Scenario::EndToEnd => end_to_end(env, ls, side, n, false).await,
            Scenario::StoreAppend1 => append(env, ls, side, n, 1).await,
            Scenario::StoreAppend10 => append(env, ls, side, n, 10).await,
            Scenario::ReadAll => read_all(env, ls, schema, side, n).await,
            Scenario::Relay => relay(env, ls, schema, side, n).await,
            Scenario::DrainBacklog => drain(env, ls, side, n, false).await,
            Scenario::DrainOrdered => drain_ordered(env, ls, side, n).await,
        }
    }

    /// The variants of this round, measured after both sides and compared with the same
    /// longshore samples.
    async fn variants(&self, samples: &mut Samples) -> crate::Result<()> {
        let (env, scenario, n) = (self.env, self.scenario, self.n);
        if scenario == Scenario::ReadAll && env.backend == Backend::Postgres {
            let pg = env.pg.as_ref().ok_or("no raw pool")?;
            let s = self.schema.ok_or("no schema")?;
            let t = Timed::start();
            let read = raw_read_all(&pg.pool, s, PAGE as i64, false).await?;
            samples.push_extra(
                "raw reads without the watermark (may skip in-flight events)",
                t.finish(read, Vec::new()),
            );
        }
        if env.backend == Backend::Memory && scenario == Scenario::Transport {
            let broker = MemoryBroker::new(MemoryConfig::default());
            let (p, s) = (broker.publisher(), broker.subscriber());
            let sample = transport(env, &p, &s, Side::Longshore, n, true).await?;
            let _ = s.close().await;
            samples.push_extra(BARE_MEMORY, sample);
        }
        if env.backend != Backend::Memory
            && matches!(scenario, Scenario::EndToEnd | Scenario::DrainBacklog)
        {
            // The same-pattern row above; this one compares with the raw consumer at its best.
            let s = if scenario == Scenario::EndToEnd {
                end_to_end(env, self.ls, Side::Raw, n, true).await?
            } else {
                drain(env, self.ls, Side::Raw, n, true).await?
            };
            samples.push_extra(RAW_BEST_CONSUMER, s);
        }
        if matches!(scenario, Scenario::PublishOne | Scenario::PublishBatch) {
            // The same-pattern row above; this one compares with the raw client at its best.
            let s = raw_publish(env, self.ls, &*env.raw, Pattern::Stream, n).await?;
            samples.push_extra(RAW_BEST, s);
        }
        if let Some(callers) = scenario.callers() {
            // The row above compares with the raw client at its best; this one with the raw
            // client held to the same callers' pattern.
            let s = raw_same_callers(env, self.ls, callers, n).await?;
            samples.push_extra(RAW_SAME_CALLERS, s);
            let s = raw_best_within(env, self.ls, callers, n).await?;
            samples.push_extra(RAW_BEST_WITHIN, s);
        }
        if env.backend == Backend::Rabbitmq
            && matches!(scenario, Scenario::PublishOne | Scenario::PublishBatch)
        {
            let transient = env.transient.clone().ok_or("no transient client")?;
            let pattern = if scenario == Scenario::PublishBatch {
                Pattern::Batch
            } else {
                Pattern::One
            };
            let s = raw_publish(env, self.ls, &*transient, pattern, n).await?;
            samples.push_extra("raw lapin, transient messages (delivery mode 1)", s);
        }
        Ok(())
    }

    /// The scenario's row, and one per variant.
    fn rows(&self, samples: Samples) -> Vec<Row> {
        let items = if self.scenario == Scenario::StoreAppend10 {
            self.n * 10
        } else {
            self.n
        };
        let mut rows = vec![self.row(None, items, &samples.ours, &samples.raw)];
        for (variant, extra) in samples.extra {
            let mut r = self.row(Some(&variant), items, &samples.ours, &extra);
            if variant == BARE_MEMORY {
                r.raw_client = "MemoryBroker".to_string();
            }
            // (RAW_BEST_WITHIN's scenario is already against the best: labelled by `row`.)
            if variant == RAW_BEST || variant == RAW_BEST_CONSUMER {
                r.raw_client = format!("{}, at its best", r.raw_client);
            }
            if variant == RAW_SAME_CALLERS {
                r.raw_client = self.env.backend.raw_name().to_string();
            }
            rows.push(r);
        }
        rows
    }

    fn row(&self, variant: Option<&str>, items: usize, ours: &[Sample], raw: &[Sample]) -> Row {
        let ratios: Vec<f64> = ours
            .iter()
            .zip(raw)
            .map(|(a, b)| a.rate() / b.rate().max(1e-9))
            .collect();
        Row {
            scenario: self.scenario.name().to_string(),
            backend: self.env.backend.name().to_string(),
            variant: variant.map(str::to_string),
            raw_client: if let Some(baseline) = self.scenario.baseline() {
                baseline.to_string()
            } else if self.scenario.against_best() {
                format!("{}, at its best", self.env.backend.raw_name())
            } else {
                self.env.backend.raw_name().to_string()
            },
            unit: self.scenario.unit().to_string(),
            latency_of: self.scenario.latency_of().to_string(),
            items,
            longshore: SideStats::of(ours),
            raw: SideStats::of(raw),
            ratio: (!ratios.is_empty()).then(|| median(&ratios)),
        }
    }
}
