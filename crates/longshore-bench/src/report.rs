//! Results: JSON, a markdown table with the targets, and an SVG chart.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::cli::Args;
use crate::measure::SideStats;

/// One line of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub backend: String,
    /// A second raw measurement compared with the same longshore samples.
    pub variant: Option<String>,
    pub raw_client: String,
    pub unit: String,
    pub latency_of: String,
    /// Items per side and round.
    pub items: usize,
    pub longshore: Option<SideStats>,
    pub raw: Option<SideStats>,
    /// Median of the per-round ratios longshore / raw.
    pub ratio: Option<f64>,
}

impl Row {
    fn label(&self) -> String {
        match &self.variant {
            Some(v) => format!("{} · {} ({v})", self.scenario, self.backend),
            None => format!("{} · {}", self.scenario, self.backend),
        }
    }

    /// The ratio target that applies, if any.
    fn ratio_target(&self) -> Option<f64> {
        // #17: ordered by key against the same drain unordered, on every backend.
        if self.scenario == "drain-ordered" && self.variant.is_none() && self.raw.is_some() {
            return Some(0.9);
        }
        // #17: end to end and draining within 0.9× the raw consumer at its best.
        let best_consumer = self
            .variant
            .as_deref()
            .is_some_and(|v| v.starts_with("vs the raw consumer at its best"));
        if best_consumer && matches!(self.scenario.as_str(), "end-to-end" | "drain-backlog") {
            return Some(0.9);
        }
        // Memory has no client of its own: its mpsc baseline is a floor, not a target.
        if self.variant.is_some() || self.raw.is_none() || self.backend == "memory" {
            return None;
        }
        // SQLite's issue (#24) states one target, 0.9× raw, for its own list of scenarios.
        if self.backend == "sqlite" {
            return match self.scenario.as_str() {
                "publish-one" | "publish-batch" | "drain-backlog" | "store-append-1"
                | "store-append-10" | "read-all" | "end-to-end" => Some(0.9),
                _ => None,
            };
        }
        match (self.scenario.as_str(), self.backend.as_str()) {
            // #19: Postgres one by one within 0.9× a raw insert of the same durability.
            ("publish-one", "postgres") => Some(0.9),
            ("publish-one" | "publish-batch", _) => Some(0.95),
            // #19: against the raw client at its best.
            ("publish-concurrent-512" | "relay", _) => Some(0.9),
            ("publish-stream", _) => Some(0.95),
            ("end-to-end", _) => Some(0.9),
            _ => None,
        }
    }
}

fn rate(v: f64) -> String {
    if v >= 100.0 {
        let s = format!("{v:.0}");
        // Thousands separators, for reading.
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{v:.1}")
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 1.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => "–".into(),
    }
}

fn side_cell(s: &Option<SideStats>) -> String {
    s.as_ref().map_or("–".into(), |s| rate(s.rate))
}

fn lat_cell(s: &Option<SideStats>) -> String {
    s.as_ref().map_or("–".into(), |s| {
        format!("{} / {}", ms(s.p50_ms), ms(s.p99_ms))
    })
}

fn rss_cell(s: &Option<SideStats>) -> String {
    s.as_ref().map_or("–".into(), |s| {
        format!("{:.0} (+{:.0})", s.peak_rss_mib, s.rss_growth_mib)
    })
}

/// A one-line summary for the console.
pub fn one_line(r: &Row) -> String {
    format!(
        "{}: longshore {} {} | {} {} | ratio {}",
        r.label(),
        side_cell(&r.longshore),
        r.unit,
        r.raw_client,
        side_cell(&r.raw),
        r.ratio.map_or("–".into(), |x| format!("{x:.2}"))
    )
}

fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0 / 1024.0);
    let load = read("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cores} cores ({model}), {mem_gib:.0} GiB RAM, Linux {}, load average {} at the end of the run",
        read("/proc/sys/kernel/osrelease").trim(),
        load.join(" ")
    )
}

/// The markdown report: table, targets, machine and command.
pub fn markdown(args: &Args, rows: &[Row], skipped: &[String], failures: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Command: `{}`{}\n\nMachine: {}.\n\nRun: {} UTC, {} round(s) per scenario alternating which side goes first; rates are the median of the rounds, the ratio is the median of the per-round ratios longshore / raw, latency percentiles pool all rounds, peak RSS is the process's high-water mark during the timed part (in brackets: growth during it).\n",
        args.command,
        if args.quick { " (quick mode: tiny counts, numbers mean nothing)" } else { "" },
        machine(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        args.rounds,
    );
    md.push_str("| scenario | backend | items/round | longshore | raw | raw client | ratio | latency measured | p50 / p99 ms longshore | p50 / p99 ms raw | peak RSS MiB longshore | peak RSS MiB raw |\n");
    md.push_str("|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|\n");
    for r in rows {
        let scenario = match &r.variant {
            Some(v) => format!("{} — {v}", r.scenario),
            None => r.scenario.clone(),
        };
        let _ = writeln!(
            md,
            "| {scenario} | {} | {} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.backend,
            rate(r.items as f64 + 0.5)
                .trim_end_matches(".0")
                .to_string()
                .replace(".5", ""),
            side_cell(&r.longshore),
            r.unit,
            side_cell(&r.raw),
            if r.raw.is_some() {
                r.raw_client.as_str()
            } else {
                "–"
            },
            r.ratio.map_or("–".into(), |x| format!("{x:.2}")),
            r.latency_of,
            lat_cell(&r.longshore),
            lat_cell(&r.raw),
            rss_cell(&r.longshore),
            rss_cell(&r.raw),
        );
    }
    md.push_str("\nTargets:\n\n");
    for t in targets(rows) {
        let _ = writeln!(md, "- {t}");
    }
    for s in skipped {
        let _ = writeln!(md, "- skipped: {s}");
    }
    for f in failures {
        let _ = writeln!(md, "- FAILED: {f}");
    }
    md
}

fn find<'a>(rows: &'a [Row], scenario: &str, backend: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.backend == backend && r.variant.is_none())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// Each target and whether this run met it.
pub fn targets(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rows {
        if let (Some(t), Some(x)) = (r.ratio_target(), r.ratio) {
            out.push(format!(
                "{}: ratio {x:.3} ≥ {t} — {}",
                r.label(),
                verdict(x >= t)
            ));
        }
    }
    if let (Some(one), Some(batch)) = (
        find(rows, "publish-one", "rabbitmq"),
        find(rows, "publish-batch", "rabbitmq"),
    ) {
        let rate = |r: &Row, raw: bool| {
            if raw { &r.raw } else { &r.longshore }
                .as_ref()
                .map_or(0.0, |s| s.rate)
        };
        let x = rate(batch, false) / rate(one, false).max(1e-9);
        let y = rate(batch, true) / rate(one, true).max(1e-9);
        out.push(format!(
            "rabbitmq batched ≥ 10× one-by-one: longshore {x:.1}×, raw lapin {y:.1}× — {}",
            verdict(x >= 10.0)
        ));
    }
    // The memory backend's 1M msg/s: #8 judged it at the transport level (no runtime, no
    // decoding); #17 through the consumer runtime (typed handler, decoding, ack).
    for (scenario, what) in [
        (
            "transport",
            "memory publish → consume ≥ 1,000,000 msg/s (transport)",
        ),
        (
            "end-to-end",
            "memory end to end through the runtime ≥ 1,000,000 msg/s",
        ),
    ] {
        if let Some(r) = find(rows, scenario, "memory") {
            let x = r.longshore.as_ref().map_or(0.0, |s| s.rate);
            out.push(format!(
                "{what}: {} msg/s — {}",
                rate(x),
                verdict(x >= 1_000_000.0)
            ));
        }
    }
    for r in rows
        .iter()
        .filter(|r| r.scenario == "drain-backlog" && r.variant.is_none())
    {
        if let Some(s) = &r.longshore {
            out.push(format!(
                "drain-backlog · {}: consumer RSS grew {:.0} MiB draining {} messages (target ≤ 50 MiB{}) — {}",
                r.backend,
                s.rss_growth_mib,
                rate(r.items as f64 + 1.0),
                if r.backend == "memory" { ", 1M backlog" } else { "" },
                verdict(s.rss_growth_mib <= 50.0)
            ));
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart's geometry, shared by its two panels: label width, bar width, row height, top
/// margin of a panel.
const LAYOUT: (f64, f64, f64, f64) = (430.0, 420.0, 22.0, 40.0);

/// Two panels: the ratio longshore / raw per row, and both rates on a log scale.
pub fn svg(rows: &[Row]) -> String {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.longshore.is_some()).collect();
    let (label_w, bar_w, row_h, top) = LAYOUT;
    let ratio_rows: Vec<&Row> = rows.iter().copied().filter(|r| r.ratio.is_some()).collect();
    let h1 = top + row_h * ratio_rows.len() as f64 + 30.0;
    let h2 = top + row_h * rows.len() as f64 + 40.0;
    let width = label_w + bar_w + 90.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" font-family="sans-serif" font-size="12">"#,
        h1 + h2
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    ratio_panel(&mut s, &ratio_rows);
    rate_panel(&mut s, &rows, h1);
    s.push_str("</svg>\n");
    s
}

/// The ratio panel: a bar per row with a ratio, against the 0.9, 0.95 and 1.0 lines.
fn ratio_panel(s: &mut String, ratio_rows: &[&Row]) {
    let (label_w, bar_w, row_h, top) = LAYOUT;
    let max_ratio = ratio_rows
        .iter()
        .filter_map(|r| r.ratio)
        .fold(1.5_f64, f64::max)
        .min(5.0);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">longshore / raw client (median of per-round ratios; green: target met)</text>"#
    );
    let x_of = |v: f64| label_w + bar_w * (v / max_ratio).min(1.0);
    // Label heights staggered: 0.9 and 0.95 sit close together.
    for (v, dash, lift) in [(0.9, "4 3", 5.0), (0.95, "2 2", 16.0), (1.0, "", 5.0)] {
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{y2:.1}" stroke="#666" stroke-dasharray="{dash}"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle" fill="#666">{v}</text>"##,
            x = x_of(v),
            y2 = top + row_h * ratio_rows.len() as f64,
            ty = top - lift,
        );
    }
    for (i, r) in ratio_rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let v = r.ratio.unwrap_or(0.0);
        let color = match r.ratio_target() {
            Some(t) if v >= t => "#3a9d5d",
            Some(_) => "#d9822b",
            None => "#7a8fa6",
        };
        let _ = writeln!(
            s,
            r#"<text x="{lx:.1}" y="{ty:.1}" text-anchor="end">{label}</text><rect x="{label_w}" y="{by:.1}" width="{w:.1}" height="{bh:.1}" fill="{color}"/><text x="{vx:.1}" y="{ty:.1}">{v:.2}</text>"#,
            lx = label_w - 6.0,
            ty = y + row_h * 0.7,
            label = esc(&r.label()),
            by = y + 3.0,
            w = x_of(v) - label_w,
            bh = row_h - 6.0,
            vx = x_of(v) + 4.0,
        );
    }
}

/// The throughput panel: both sides' rates per row, on a log scale below the ratio panel
/// (which ends at `h1`).
fn rate_panel(s: &mut String, rows: &[&Row], h1: f64) {
    let (label_w, bar_w, row_h, top) = LAYOUT;
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| [r.longshore.as_ref(), r.raw.as_ref()])
        .flatten()
        .map(|s| s.rate.max(1.0))
        .collect();
    let (lo, hi) = (
        all.iter().copied().fold(f64::MAX, f64::min).log10().floor(),
        all.iter()
            .copied()
            .fold(1.0, f64::max)
            .log10()
            .ceil()
            .max(1.0),
    );
    let lx =
        |v: f64| label_w + bar_w * ((v.max(1.0).log10() - lo) / (hi - lo).max(1.0)).clamp(0.0, 1.0);
    let _ = writeln!(
        s,
        r##"<text x="10" y="{:.1}" font-size="14" font-weight="bold">throughput (log scale): <tspan fill="#2f6db3">longshore</tspan> vs <tspan fill="#aaa">raw client</tspan></text>"##,
        h1 + 20.0
    );
    let mut d = lo;
    while d <= hi {
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y1:.1}" x2="{x:.1}" y2="{y2:.1}" stroke="#ddd"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle" fill="#666">1e{d}</text>"##,
            x = lx(10f64.powf(d)),
            y1 = h1 + top,
            y2 = h1 + top + row_h * rows.len() as f64,
            ty = h1 + top - 5.0,
        );
        d += 1.0;
    }
    for (i, r) in rows.iter().enumerate() {
        let y = h1 + top + row_h * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            x = label_w - 6.0,
            ty = y + row_h * 0.7,
            label = esc(&format!("{} ({})", r.label(), r.unit)),
        );
        for (k, (side, color)) in [(&r.longshore, "#2f6db3"), (&r.raw, "#aaa")]
            .into_iter()
            .enumerate()
        {
            if let Some(st) = side {
                let _ = writeln!(
                    s,
                    r#"<rect x="{label_w}" y="{by:.1}" width="{w:.1}" height="{bh:.1}" fill="{color}"/>"#,
                    by = y + 2.0 + k as f64 * (row_h - 4.0) / 2.0,
                    w = lx(st.rate) - label_w,
                    bh = (row_h - 4.0) / 2.0,
                );
            }
        }
    }
}

#[derive(Serialize)]
struct Json<'a> {
    command: &'a str,
    quick: bool,
    rounds: usize,
    machine: String,
    rows: &'a [Row],
    targets: Vec<String>,
    skipped: &'a [String],
    failures: &'a [String],
}

/// Writes results.json, results.md and results.svg to `args.out`, and prints the table.
pub fn write(
    args: &Args,
    rows: &[Row],
    skipped: &[String],
    failures: &[String],
) -> crate::Result<()> {
    let out: &Path = &args.out;
    std::fs::create_dir_all(out)?;
    let md = markdown(args, rows, skipped, failures);
    println!("\n{md}");
    std::fs::write(out.join("results.md"), &md)?;
    let json = Json {
        command: &args.command,
        quick: args.quick,
        rounds: args.rounds,
        machine: machine(),
        rows,
        targets: targets(rows),
        skipped,
        failures,
    };
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(out.join("results.svg"), svg(rows))?;
    println!("wrote {}/results.{{json,md,svg}}", out.display());
    Ok(())
}
