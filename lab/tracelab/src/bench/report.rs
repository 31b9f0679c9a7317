//! The bench's table: per route and mode, medians over the rounds, ratios
//! against tracing off taken within each round, and the spread.

use std::fmt::Write as _;

use serde::Serialize;

use super::mode::{Mode, Route};
use super::run::{BenchRuns, ExportTotals, LabRun, RouteSample};

/// One line of a route's table.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRow {
    pub route: Route,
    pub mode: Mode,
    /// Median 2xx answers per second.
    pub rate: f64,
    /// Median of the per-round ratios to the baseline's rate.
    pub ratio: f64,
    /// (max − min) / median of the rate over the rounds, percent.
    pub spread_pct: f64,
    /// Median CPU of the six services per 2xx answer, µs.
    pub cpu_us_per_request: f64,
    /// Median of the per-round differences to the baseline's CPU per request.
    pub added_cpu_us: f64,
    /// Median spans ended per request in this mode.
    pub spans_per_request: f64,
    /// `added_cpu_us` per span of a fully sampled request of this route
    /// (`None` without a fully sampled mode or for the baseline).
    pub us_per_span: Option<f64>,
    /// Requests that failed, over all rounds.
    pub failed: u64,
}

/// One mode's export counters and one-connection latency.
#[derive(Debug, Clone, Serialize)]
pub struct ModeRow {
    pub mode: Mode,
    /// Summed over the rounds (`spans_queued`: what was still queued at
    /// the end).
    pub export: ExportTotals,
    /// Median p50 / p99 of login on one connection, µs.
    pub login_p50_us: Option<u64>,
    pub login_p99_us: Option<u64>,
    /// Median of the per-round differences of p50 to the baseline, µs.
    pub added_p50_us: Option<f64>,
    /// Checkouts sent alone, all rounds: p50 and p99 of how long after
    /// the answer their whole trace was in the collector, ms (`None`
    /// without such checkouts), and how many never were within the wait.
    pub checkout_readable_p50_ms: Option<f64>,
    pub checkout_readable_p99_ms: Option<f64>,
    pub checkout_readable_samples: usize,
    pub checkout_never_readable: usize,
}

/// The `q` quantile (nearest rank) of `sorted`.
fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The bench's result: the rows and the runs they come from.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// What ratios are taken against.
    pub baseline: Mode,
    pub routes: Vec<RouteRow>,
    pub modes: Vec<ModeRow>,
    pub raw: BenchRuns,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn sample(run: &LabRun, route: Route) -> Option<&RouteSample> {
    run.routes.iter().find(|s| s.route == route)
}

fn cpu_per_request(s: &RouteSample) -> f64 {
    s.cpu_us as f64 / s.ok.max(1) as f64
}

impl BenchReport {
    /// Summarises the runs. `modes` and `routes` give the order of the rows.
    pub fn new(raw: BenchRuns, modes: &[Mode], routes: &[Route]) -> BenchReport {
        let baseline = if modes.contains(&Mode::Off) {
            Mode::Off
        } else {
            modes.first().copied().unwrap_or(Mode::Off)
        };
        let of = |mode: Mode, round: u32| {
            raw.runs
                .iter()
                .find(move |r| r.mode == mode && r.round == round)
        };
        let mut route_rows = Vec::new();
        for &route in routes {
            // Spans of a fully sampled request, for µs per span.
            let full_spans = modes
                .iter()
                .find(|m| matches!(m, Mode::Full | Mode::CollectorDown | Mode::Blackholed))
                .map(|&m| {
                    median(
                        raw.runs
                            .iter()
                            .filter(|r| r.mode == m)
                            .filter_map(|r| sample(r, route))
                            .map(|s| s.spans_ended as f64 / s.ok.max(1) as f64)
                            .collect(),
                    )
                });
            for &mode in modes {
                let mut rates = Vec::new();
                let mut ratios = Vec::new();
                let mut cpus = Vec::new();
                let mut added = Vec::new();
                let mut spans = Vec::new();
                let mut failed = 0;
                for round in 0..raw.rounds {
                    let Some(s) = of(mode, round).and_then(|r| sample(r, route)) else {
                        continue;
                    };
                    rates.push(s.rate);
                    cpus.push(cpu_per_request(s));
                    spans.push(s.spans_ended as f64 / s.ok.max(1) as f64);
                    failed += s.failed;
                    if let Some(b) = of(baseline, round).and_then(|r| sample(r, route)) {
                        ratios.push(s.rate / b.rate.max(1e-9));
                        added.push(cpu_per_request(s) - cpu_per_request(b));
                    }
                }
                let rate = median(rates.clone());
                let spread_pct = if rates.len() > 1 {
                    let max = rates.iter().copied().fold(f64::MIN, f64::max);
                    let min = rates.iter().copied().fold(f64::MAX, f64::min);
                    (max - min) / rate * 100.0
                } else {
                    0.0
                };
                let added_cpu_us = median(added);
                let us_per_span = full_spans
                    .filter(|n| *n > 0.0 && mode != baseline)
                    .map(|n| added_cpu_us / n);
                route_rows.push(RouteRow {
                    route,
                    mode,
                    rate,
                    ratio: median(ratios),
                    spread_pct,
                    cpu_us_per_request: median(cpus),
                    added_cpu_us,
                    spans_per_request: median(spans),
                    us_per_span,
                    failed,
                });
            }
        }
        let mut mode_rows = Vec::new();
        for &mode in modes {
            let runs: Vec<&LabRun> = raw.runs.iter().filter(|r| r.mode == mode).collect();
            let mut export = ExportTotals::default();
            for r in &runs {
                export.spans_ended += r.export.spans_ended;
                export.spans_exported += r.export.spans_exported;
                export.spans_failed += r.export.spans_failed;
                export.spans_dropped_queue_full += r.export.spans_dropped_queue_full;
                export.spans_dropped_by_fault += r.export.spans_dropped_by_fault;
                // A level, not a counter: what the last round left queued.
                export.spans_queued = r.export.spans_queued;
            }
            let quantile = |f: fn(&LabRun) -> Option<u64>| {
                let v: Vec<f64> = runs.iter().filter_map(|r| f(r)).map(|x| x as f64).collect();
                (!v.is_empty()).then(|| median(v) as u64)
            };
            let added: Vec<f64> = runs
                .iter()
                .filter_map(|r| {
                    let b = of(baseline, r.round)?;
                    Some(r.login_p50_us? as f64 - b.login_p50_us? as f64)
                })
                .collect();
            let readable: Vec<Option<u64>> = runs
                .iter()
                .flat_map(|r| r.checkout_readable_us.iter().copied())
                .collect();
            let mut whole: Vec<u64> = readable.iter().flatten().copied().collect();
            whole.sort_unstable();
            // A trace never whole counts as slower than any that was.
            let never = readable.len() - whole.len();
            whole.extend(std::iter::repeat_n(u64::MAX, never));
            let ms = |v: Option<u64>| {
                v.map(|us| {
                    if us == u64::MAX {
                        f64::INFINITY
                    } else {
                        us as f64 / 1000.0
                    }
                })
            };
            mode_rows.push(ModeRow {
                mode,
                checkout_readable_p50_ms: ms(nearest_rank(&whole, 0.5)),
                checkout_readable_p99_ms: ms(nearest_rank(&whole, 0.99)),
                checkout_readable_samples: readable.len(),
                checkout_never_readable: never,
                export,
                login_p50_us: quantile(|r| r.login_p50_us),
                login_p99_us: quantile(|r| r.login_p99_us),
                added_p50_us: (!added.is_empty()).then(|| median(added)),
            });
        }
        BenchReport {
            baseline,
            routes: route_rows,
            modes: mode_rows,
            raw,
        }
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let raw = &self.raw;
        let mut out = String::new();
        let load = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.2}"));
        let _ = writeln!(
            out,
            "tracelab bench: {} round(s), {:.1} s per route, {} connection(s); {} CPUs, load average {} before, {} after",
            raw.rounds,
            raw.duration_secs,
            raw.connections,
            raw.cpus,
            load(raw.load_average_before),
            load(raw.load_average_after)
        );
        let _ = writeln!(
            out,
            "ratios and +CPU are against `{}` within each round; medians over the rounds; CPU is the six services' user+system time",
            self.baseline.name()
        );
        let num = |v: f64, digits: usize| {
            if v.is_finite() {
                format!("{v:.digits$}")
            } else {
                "-".into()
            }
        };
        let mut routes: Vec<Route> = self.routes.iter().map(|r| r.route).collect();
        routes.dedup();
        for route in routes {
            let rows: Vec<&RouteRow> = self.routes.iter().filter(|r| r.route == route).collect();
            let spans = rows.iter().map(|r| r.spans_per_request).fold(0.0, f64::max);
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{} ({} spans per request when all are sampled)",
                match route {
                    Route::Login => "login: POST /api/login, gateway -> auth",
                    Route::Checkout => "checkout: POST /api/checkout, provider latency 0",
                },
                num(spans, 1)
            );
            let _ = writeln!(
                out,
                "{:<15} {:>9} {:>6} {:>7} {:>11} {:>9} {:>8} {:>10} {:>7}",
                "mode",
                "req/s",
                "ratio",
                "spread",
                "CPU µs/req",
                "+CPU µs",
                "+CPU %",
                "µs/span",
                "spans/req"
            );
            for r in rows {
                let base = self
                    .routes
                    .iter()
                    .find(|b| b.route == route && b.mode == self.baseline)
                    .map_or(f64::NAN, |b| b.cpu_us_per_request);
                let is_base = r.mode == self.baseline;
                let _ = writeln!(
                    out,
                    "{:<15} {:>9} {:>6} {:>6}% {:>11} {:>9} {:>8} {:>10} {:>7}{}",
                    r.mode.name(),
                    num(r.rate, 0),
                    num(r.ratio, 2),
                    num(r.spread_pct, 1),
                    num(r.cpu_us_per_request, 1),
                    if is_base {
                        "-".into()
                    } else {
                        num(r.added_cpu_us, 1)
                    },
                    if is_base {
                        "-".into()
                    } else {
                        format!("{}%", num(r.added_cpu_us / base * 100.0, 1))
                    },
                    r.us_per_span.map_or("-".into(), |v| num(v, 2)),
                    num(r.spans_per_request, 2),
                    if r.failed > 0 {
                        format!("  ({} failed)", r.failed)
                    } else {
                        String::new()
                    }
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "export (services' /health counters, all rounds) and login on one connection"
        );
        let _ = writeln!(
            out,
            "{:<15} {:>10} {:>10} {:>8} {:>11} {:>7} {:>8} {:>8} {:>8}",
            "mode",
            "ended",
            "exported",
            "failed",
            "queue full",
            "queued",
            "p50 µs",
            "p99 µs",
            "+p50 µs"
        );
        for m in &self.modes {
            let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
            let _ = writeln!(
                out,
                "{:<15} {:>10} {:>10} {:>8} {:>11} {:>7} {:>8} {:>8} {:>8}",
                m.mode.name(),
                m.export.spans_ended,
                m.export.spans_exported,
                m.export.spans_failed,
                m.export.spans_dropped_queue_full,
                m.export.spans_queued,
                opt(m.login_p50_us),
                opt(m.login_p99_us),
                if m.mode == self.baseline {
                    "-".into()
                } else {
                    m.added_p50_us.map_or("-".into(), |v| num(v, 0))
                },
            );
        }
        for m in self
            .modes
            .iter()
            .filter(|m| m.checkout_readable_samples > 0)
        {
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| num(v, 1));
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "checkout trace whole in the collector after the answer ({}, {} checkouts sent alone): p50 {} ms, p99 {} ms{}",
                m.mode.name(),
                m.checkout_readable_samples,
                ms(m.checkout_readable_p50_ms),
                ms(m.checkout_readable_p99_ms),
                if m.checkout_never_readable > 0 {
                    format!(
                        ", {} not whole within {:?}",
                        m.checkout_never_readable,
                        super::run::READABLE_WITHIN
                    )
                } else {
                    String::new()
                }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        assert_eq!(nearest_rank(&[], 0.5), None);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 0.5), Some(50));
        assert_eq!(nearest_rank(&v, 0.99), Some(99));
        assert_eq!(nearest_rank(&[7], 0.99), Some(7));
        assert_eq!(nearest_rank(&[1, 2, 3], 0.0), Some(1));
    }
}
