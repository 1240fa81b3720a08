//! Scheduled publish, measured: how fast due messages are released, and how late.
//! `schedule [--quick] [--count N] [backend ...]` (default: every backend).
//!
//! Per backend: a consumer (the runtime, concurrency 64) runs on a fresh subscription;
//! `count` messages are published in batches of 500, all due at one instant `LEAD` after
//! publishing began, so every one of them waits. The report gives the release rate (messages
//! handled per second from the due instant to the last one handled) and each message's
//! lateness (handled minus due) at p50 / p99 / max. No raw row: no raw client schedules.
//! Fails (exit 1) on an unreachable backend under `CI=true`, or when publishing alone
//! outlasted the lead (the figures would then measure publishing).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use longshore::{Consumer, Subscription};
use longshore_core::{Event, Message, Publisher};

/// How far ahead of the start of publishing every message is due.
const LEAD: Duration = Duration::from_secs(5);
const BATCH: usize = 500;

struct Outcome {
    backend: String,
    count: usize,
    rate: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

fn url(backend: &str) -> Option<String> {
    let env = |k: &str, d: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| d.to_string())
    };
    Some(match backend {
        "memory" => "memory://".into(),
        "rabbitmq" => env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        "kafka" => format!("kafka://{}", env("KAFKA_BROKERS", "127.0.0.1:9092")),
        "nats" => env("NATS_URL", "nats://127.0.0.1:4222"),
        "postgres" => env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        "sqlite" => {
            let dir = std::env::temp_dir().join("longshore-bench");
            std::fs::create_dir_all(&dir).ok()?;
            let file = dir.join(format!("schedule-{}.db", uuid::Uuid::new_v4().simple()));
            format!("sqlite://{}", file.display())
        }
        _ => return None,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(backend: &str, count: usize) -> Result<Outcome, String> {
    let url = url(backend).ok_or_else(|| format!("unknown backend {backend}"))?;
    let ls = longshore::connect(&url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let topic = format!("bench{run}.scheduled");
    let sub = Subscription::new(format!("bench-schedule-{run}"), [topic.clone()]);
    ls.subscriber
        .ensure_subscription(&sub)
        .await
        .map_err(|e| format!("ensure: {e}"))?;
    let handled: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let h = handled.clone();
    let consumer = Consumer::new(ls.subscriber.clone(), sub)
        .concurrency(64)
        .lag_interval(None)
        .on_event("reminder", move |_| {
            let mut v = h.lock().unwrap_or_else(|e| e.into_inner());
            v.push(Utc::now());
            if v.len() == count {
                let _ = done_tx.send(());
            }
            async { Ok(()) }
        })
        .start()
        .await
        .map_err(|e| format!("start: {e}"))?;

    let started = Instant::now();
    let due = Utc::now() + chrono::Duration::from_std(LEAD).map_err(|e| e.to_string())?;
    let mut pending: Vec<Message> = Vec::with_capacity(BATCH);
    for i in 0..count {
        let event = Event::new("reminder", serde_json::json!({ "n": i }));
        let message = longshore_core::Codec::encode(&longshore_core::JsonCodec, &event)
            .map_err(|e| e.to_string())?
            .deliver_at(due);
        pending.push(message);
        if pending.len() == BATCH || i + 1 == count {
            let batch = std::mem::take(&mut pending);
            Publisher::publish_batch(ls.publisher.as_ref(), &topic, batch)
                .await
                .map_err(|e| format!("publish: {e}"))?;
        }
    }
    let published_in = started.elapsed();
    if published_in >= LEAD {
        return Err(format!(
            "publishing {count} took {published_in:?}, longer than the {LEAD:?} lead"
        ));
    }
    tokio::time::timeout(LEAD + Duration::from_secs(120), done_rx.recv())
        .await
        .map_err(|_| "not every scheduled message was handled within 2 minutes".to_string())?;
    consumer.shutdown(Duration::from_secs(10)).await;
    let _ = ls.publisher.close().await;
    let _ = ls.subscriber.close().await;

    let times = handled.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let early = times.iter().filter(|t| **t < due).count();
    if early > 0 {
        return Err(format!("{early} messages handled before their time"));
    }
    let mut late: Vec<f64> = times
        .iter()
        .map(|t| (*t - due).num_microseconds().unwrap_or(i64::MAX) as f64 / 1_000.0)
        .collect();
    late.sort_by(f64::total_cmp);
    let last = late.last().copied().unwrap_or(0.0);
    Ok(Outcome {
        backend: backend.to_string(),
        count,
        rate: count as f64 / (last / 1_000.0).max(1e-3),
        p50: percentile(&late, 0.5),
        p99: percentile(&late, 0.99),
        max: last,
    })
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    args.retain(|a| a != "--quick");
    let mut count = if quick { 200 } else { 10_000 };
    if let Some(i) = args.iter().position(|a| a == "--count") {
        if let Some(n) = args.get(i + 1).and_then(|n| n.parse().ok()) {
            count = n;
        }
        args.drain(i..(i + 2).min(args.len()));
    }
    let all = ["rabbitmq", "kafka", "nats", "postgres", "sqlite", "memory"];
    let backends: Vec<String> = if args.is_empty() || args.iter().any(|a| a == "all") {
        all.iter().map(|s| s.to_string()).collect()
    } else {
        args
    };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let mut failed = false;
    println!("| backend | scheduled | released msg/s | lateness p50 | p99 | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for backend in &backends {
        match measure(backend, count).await {
            Ok(o) => println!(
                "| {} | {} | {:.0} | {:.0} ms | {:.0} ms | {:.0} ms |",
                o.backend, o.count, o.rate, o.p50, o.p99, o.max
            ),
            Err(e) if ci || !e.starts_with("connect") => {
                eprintln!("FAILED {backend}: {e}");
                failed = true;
            }
            Err(e) => eprintln!("SKIPPED {backend}: {e}"),
        }
    }
    if failed {
        std::process::exit(1);
    }
}
