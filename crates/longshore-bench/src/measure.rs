//! One timed side of a round ([`Sample`]), latency recording and the statistics of a row.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use longshore_core::{Codec, JsonCodec, Message};
use serde::Serialize;
use tokio::sync::Notify;

use crate::rss;

/// Header carrying the send time (µs since [`epoch`]) for end-to-end latency.
pub const SENT_HEADER: &str = "bench-sent-us";

/// The process's reference instant for send stamps.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// What one side did in one round.
#[derive(Debug, Clone)]
pub struct Sample {
    pub items: usize,
    pub elapsed: Duration,
    /// Latencies in µs (per call, per batch or per message, depending on the scenario).
    pub latencies_us: Vec<u64>,
    pub peak_rss_kib: u64,
    pub start_rss_kib: u64,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The timed part of one side of a round: resets the RSS peak when it starts.
pub struct Timed {
    start: Instant,
    start_rss_kib: u64,
}

impl Timed {
    pub fn start() -> Self {
        rss::reset_peak();
        Timed {
            start_rss_kib: rss::current_kib(),
            start: Instant::now(),
        }
    }

    pub fn finish(self, items: usize, latencies_us: Vec<u64>) -> Sample {
        let elapsed = self.start.elapsed();
        Sample {
            items,
            elapsed,
            latencies_us,
            peak_rss_kib: rss::peak_kib(),
            start_rss_kib: self.start_rss_kib,
        }
    }
}

/// Counts handled messages and their end-to-end latencies; wakes the waiter at the target.
pub struct Recorder {
    target: usize,
    stride: usize,
    handled: AtomicUsize,
    /// µs since [`epoch`] + 1 of the first and last message handled (0: none yet).
    first_us: AtomicU64,
    last_us: AtomicU64,
    latencies: Mutex<Vec<u64>>,
    /// Whether [`Recorder::handle_raw`] decodes the body (not at the transport level).
    decode: bool,
    done: Notify,
}

impl Recorder {
    /// Records every message's latency up to 200k messages, then every k-th.
    pub fn new(target: usize, with_latency: bool) -> Arc<Self> {
        Arc::new(Recorder {
            target,
            stride: if with_latency {
                target.div_ceil(200_000).max(1)
            } else {
                0
            },
            handled: AtomicUsize::new(0),
            first_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            latencies: Mutex::new(Vec::with_capacity(if with_latency {
                target.min(200_000)
            } else {
                0
            })),
            decode: true,
            done: Notify::new(),
        })
    }

    /// A recorder for the transport scenario: no latencies, and raw handlers do not decode.
    pub fn transport(target: usize) -> Arc<Self> {
        let mut r = Recorder::new(target, false);
        if let Some(r) = Arc::get_mut(&mut r) {
            r.decode = false;
        }
        r
    }

    /// One message handled, stamped with its send time (if any).
    pub fn record(&self, sent_us: Option<u64>) {
        let n = self.handled.fetch_add(1, Ordering::AcqRel) + 1;
        if self.stride == 0 {
            let now = now_us() + 1;
            let _ = self
                .first_us
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
            self.last_us.fetch_max(now, Ordering::AcqRel);
        }
        if self.stride > 0 && n.is_multiple_of(self.stride) {
            if let Some(sent) = sent_us {
                let lat = now_us().saturating_sub(sent);
                if let Ok(mut l) = self.latencies.lock() {
                    l.push(lat);
                }
            }
        }
        if n == self.target {
            self.done.notify_one();
        }
    }

    /// What a raw consumer's handler does: decode the body into the same `Event` the
    /// consumer runtime's codec builds for longshore (JSON parse, id and timestamp parsed),
    /// then record the message. At the transport level ([`Recorder::transport`]) neither side
    /// decodes.
    pub fn handle_raw(&self, payload: &[u8], sent_us: Option<u64>) {
        if self.decode {
            let event = JsonCodec.decode(&Message::new(payload.to_vec()));
            std::hint::black_box(&event);
        }
        self.record(sent_us);
    }

    /// From the first message handled to the last (recorders made without latency only).
    pub fn span(&self) -> Option<Duration> {
        let (first, last) = (
            self.first_us.load(Ordering::Acquire),
            self.last_us.load(Ordering::Acquire),
        );
        (first > 0 && last > first).then(|| Duration::from_micros(last - first))
    }

    pub fn handled(&self) -> usize {
        self.handled.load(Ordering::Acquire)
    }

    /// Waits until the target is reached, failing after `limit`.
    pub async fn wait(&self, limit: Duration) -> crate::Result<()> {
        let deadline = Instant::now() + limit;
        while self.handled() < self.target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "only {} of {} messages handled within {limit:?}",
                    self.handled(),
                    self.target
                )
                .into());
            }
            // Re-check at least every 100 ms: the notification can race with the count.
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(100)), self.done.notified())
                    .await;
        }
        Ok(())
    }

    pub fn take_latencies(&self) -> Vec<u64> {
        self.latencies
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// Parses a send stamp header value.
pub fn parse_stamp(v: Option<&str>) -> Option<u64> {
    v.and_then(|s| s.parse().ok())
}

/// Statistics of one side over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct SideStats {
    /// Median of the per-round rates.
    pub rate: f64,
    /// Best per-round rate.
    pub best: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Highest RSS during the timed part of any round.
    pub peak_rss_mib: f64,
    /// Largest growth of RSS during the timed part of a round (peak − RSS at its start).
    pub rss_growth_mib: f64,
    pub rounds: Vec<f64>,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)] as f64 / 1000.0)
}

impl SideStats {
    pub fn of(samples: &[Sample]) -> Option<SideStats> {
        if samples.is_empty() {
            return None;
        }
        let rounds: Vec<f64> = samples.iter().map(Sample::rate).collect();
        let mut lat: Vec<u64> = samples
            .iter()
            .flat_map(|s| s.latencies_us.iter().copied())
            .collect();
        lat.sort_unstable();
        let mib = |k: u64| k as f64 / 1024.0;
        Some(SideStats {
            rate: median(&rounds),
            best: rounds.iter().copied().fold(0.0, f64::max),
            p50_ms: percentile(&lat, 0.50),
            p99_ms: percentile(&lat, 0.99),
            peak_rss_mib: mib(samples.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0)),
            rss_growth_mib: mib(samples
                .iter()
                .map(|s| s.peak_rss_kib.saturating_sub(s.start_rss_kib))
                .max()
                .unwrap_or(0)),
            rounds,
        })
    }
}
