//! The figures of a run, per route and in total, and their rendering as a
//! table (or JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::config::Route;
use super::histogram::Histogram;

/// Latency percentiles in milliseconds, measured from the scheduled send
/// instant to the end of the response body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds.
    pub fn from_micros(h: &Histogram) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.quantile(0.50)),
            p90_ms: ms(h.quantile(0.90)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One row of the summary: a route, or the total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteSummary {
    /// Route name, or `total`.
    pub route: String,
    /// Slots of the schedule given to this route.
    pub scheduled: u64,
    /// Requests actually sent.
    pub sent: u64,
    /// Slots not sent because `max_in_flight` requests were in flight.
    pub dropped: u64,
    /// Slots not sent for lack of a target (`order` before any checkout).
    pub skipped: u64,
    /// Requests answered (or failed) before the end: ok + errors + declined.
    pub count: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Everything else, except the expected declines.
    pub errors: u64,
    /// 402 answers to checkouts sent with the declining card on purpose.
    pub declined: u64,
    /// errors / count (0 when nothing was answered).
    pub error_rate: f64,
    /// Errors by HTTP status (`"500"`) or failure (`timeout`, `connect`, `io`, `body`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Latency of every answered request (ok, errors and declines).
    pub latency: Latency,
    /// sent / elapsed.
    pub achieved_rps: f64,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Gateway base URL.
    pub gateway: String,
    /// The mix, as `--mix` takes it.
    pub mix: String,
    /// Requested rate.
    pub target_rps: f64,
    /// Requested duration; `None` for `--forever`.
    pub duration_s: Option<f64>,
    /// Sending window: from the start to the last send (at least the
    /// requested duration), or to the interruption.
    pub elapsed_s: f64,
    /// Whether the run was stopped early (Ctrl-C).
    pub interrupted: bool,
    /// Slots of the schedule that came due.
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// Slots dropped because `max_in_flight` requests were in flight.
    pub dropped_by_generator: u64,
    /// Slots skipped for lack of a target (`order` with no order yet).
    pub skipped: u64,
    /// Requests still in flight when the run ended (after the drain).
    pub unfinished: u64,
    /// sent / elapsed.
    pub achieved_rps: f64,
    /// Sends later than `lag_threshold_ms` after their scheduled instant.
    pub behind_schedule: u64,
    /// Largest lateness of a send.
    pub max_lag_ms: f64,
    /// The threshold for `behind_schedule`.
    pub lag_threshold_ms: f64,
    /// Most requests in flight at once.
    pub peak_in_flight: u64,
    /// The `max_in_flight` limit.
    pub max_in_flight: u64,
    /// Logins redone after a 401.
    pub token_refreshes: u64,
    /// One row per route of the mix.
    pub routes: Vec<RouteSummary>,
    /// All routes together.
    pub total: RouteSummary,
}

/// A run's summary so far, for a caller watching a run from elsewhere
/// (the console's `GET /api/load`): the generator refreshes it about once
/// a second while it sends, and leaves the final summary in it at the end.
#[derive(Debug, Clone, Default)]
pub struct LiveSummary(Arc<Mutex<Option<Summary>>>);

impl LiveSummary {
    /// The latest summary; `None` before the first refresh.
    pub fn get(&self) -> Option<Summary> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set(&self, summary: Summary) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
    }
}

impl Summary {
    /// The row of `route`, if it was in the mix.
    pub fn route(&self, route: Route) -> Option<&RouteSummary> {
        self.routes.iter().find(|r| r.route == route.name())
    }

    /// The generator could not keep its schedule (late sends or drops).
    pub fn fell_behind(&self) -> bool {
        self.behind_schedule > 0 || self.dropped_by_generator > 0
    }

    /// The human summary: a table per route, the schedule figures, the
    /// errors by kind, and a warning when the generator fell behind.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{} {:.1}s against {} at {} req/s (mix {})",
            if self.interrupted {
                "interrupted after"
            } else {
                "ran"
            },
            self.elapsed_s,
            self.gateway.trim_end_matches('/'),
            fmt_rate(self.target_rps),
            self.mix
        );
        let _ = writeln!(
            out,
            "\n{:<9} {:>8} {:>8} {:>7} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "route",
            "count",
            "ok",
            "errors",
            "declined",
            "err%",
            "p50",
            "p90",
            "p99",
            "max",
            "req/s"
        );
        for row in self.routes.iter().chain(std::iter::once(&self.total)) {
            let _ = writeln!(
                out,
                "{:<9} {:>8} {:>8} {:>7} {:>8} {:>6.2}% {:>9} {:>9} {:>9} {:>9} {:>8}",
                row.route,
                row.count,
                row.ok,
                row.errors,
                row.declined,
                row.error_rate * 100.0,
                fmt_ms(row.latency.p50_ms, row.count),
                fmt_ms(row.latency.p90_ms, row.count),
                fmt_ms(row.latency.p99_ms, row.count),
                fmt_ms(row.latency.max_ms, row.count),
                fmt_rate(row.achieved_rps),
            );
        }
        let _ = writeln!(
            out,
            "\nscheduled {}, sent {} ({} req/s achieved of {} asked), \
             dropped by generator {}, skipped {}, unfinished {}",
            self.scheduled,
            self.sent,
            fmt_rate(self.achieved_rps),
            fmt_rate(self.target_rps),
            self.dropped_by_generator,
            self.skipped,
            self.unfinished
        );
        let _ = writeln!(
            out,
            "behind schedule {} (sent > {} late), max lag {}; peak in flight {} (limit {})",
            self.behind_schedule,
            fmt_ms(self.lag_threshold_ms, 1),
            fmt_ms(self.max_lag_ms, 1),
            self.peak_in_flight,
            self.max_in_flight
        );
        if self.token_refreshes > 0 {
            let _ = writeln!(out, "token refreshes after 401: {}", self.token_refreshes);
        }
        let errors: Vec<String> = self
            .routes
            .iter()
            .flat_map(|r| {
                r.errors_by_kind
                    .iter()
                    .map(move |(k, n)| format!("{} {k} ×{n}", r.route))
            })
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(out, "errors: {}", errors.join(", "));
        }
        if let Some(order) = self.route(Route::Order)
            && order.skipped > 0
        {
            let _ = writeln!(
                out,
                "order: {} slots skipped (no order created yet to look up)",
                order.skipped
            );
        }
        if self.fell_behind() {
            let _ = writeln!(
                out,
                "warning: the generator fell behind its schedule: {} sends more than {} late \
                 (max lag {}), {} dropped at the limit of {} in flight. The offered load was lower \
                 or burstier than asked; latencies include the lag.",
                self.behind_schedule,
                fmt_ms(self.lag_threshold_ms, 1),
                fmt_ms(self.max_lag_ms, 1),
                self.dropped_by_generator,
                self.max_in_flight
            );
        }
        out
    }
}

pub(crate) fn fmt_ms(ms: f64, count: u64) -> String {
    if count == 0 {
        "-".to_string()
    } else if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

pub(crate) fn fmt_rate(r: f64) -> String {
    if r.fract() == 0.0 && r < 1e12 {
        format!("{r:.0}")
    } else if r >= 100.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// `part / whole`, 0 when `whole` is 0.
pub(crate) fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_summary() -> Summary {
        let mut by_kind = BTreeMap::new();
        by_kind.insert("500".to_string(), 3);
        by_kind.insert("timeout".to_string(), 1);
        let checkout = RouteSummary {
            route: "checkout".into(),
            scheduled: 100,
            sent: 100,
            count: 100,
            ok: 90,
            errors: 4,
            declined: 6,
            error_rate: 0.04,
            errors_by_kind: by_kind,
            latency: Latency {
                p50_ms: 12.34,
                p90_ms: 56.7,
                p99_ms: 250.0,
                max_ms: 1234.5,
                mean_ms: 20.0,
            },
            achieved_rps: 10.0,
            ..RouteSummary::default()
        };
        let order = RouteSummary {
            route: "order".into(),
            scheduled: 5,
            skipped: 5,
            ..RouteSummary::default()
        };
        Summary {
            gateway: "http://127.0.0.1:8080/".into(),
            mix: "checkout=1".into(),
            target_rps: 10.0,
            duration_s: Some(10.0),
            elapsed_s: 10.0,
            scheduled: 105,
            sent: 100,
            skipped: 5,
            achieved_rps: 10.0,
            lag_threshold_ms: 5.0,
            max_lag_ms: 1.25,
            max_in_flight: 2000,
            peak_in_flight: 7,
            total: RouteSummary {
                route: "total".into(),
                ..checkout.clone()
            },
            routes: vec![checkout, order],
            ..Summary::default()
        }
    }

    #[test]
    fn summary_renders_a_table() {
        let s = sample_summary();
        let text = s.render();
        let row = text
            .lines()
            .find(|l| l.starts_with("checkout"))
            .expect(&text);
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "checkout", "100", "90", "4", "6", "4.00%", "12.3ms", "56.7ms", "250ms", "1234ms",
                "10"
            ],
            "{text}"
        );
        let order = text.lines().find(|l| l.starts_with("order ")).expect(&text);
        assert!(order.contains(" - "), "no latency without answers: {order}");
        assert!(text.lines().any(|l| l.starts_with("total")), "{text}");
        assert!(
            text.contains("against http://127.0.0.1:8080 at 10 req/s"),
            "{text}"
        );
        assert!(text.contains("scheduled 105, sent 100"), "{text}");
        assert!(text.contains("dropped by generator 0, skipped 5"), "{text}");
        assert!(
            text.contains("behind schedule 0 (sent > 5.00ms late), max lag 1.25ms"),
            "{text}"
        );
        assert!(
            text.contains("errors: checkout 500 ×3, checkout timeout ×1"),
            "{text}"
        );
        assert!(text.contains("order: 5 slots skipped"), "{text}");
        assert!(!text.contains("warning"), "{text}");
        assert!(text.starts_with("\nran 10.0s"), "{text}");
    }

    #[test]
    fn summary_warns_when_the_generator_fell_behind() {
        let mut s = sample_summary();
        s.behind_schedule = 12;
        s.max_lag_ms = 340.0;
        s.interrupted = true;
        let text = s.render();
        assert!(text.starts_with("\ninterrupted after"), "{text}");
        assert!(
            text.contains("warning: the generator fell behind its schedule: 12 sends more than 5.00ms late (max lag 340ms), 0 dropped"),
            "{text}"
        );
        let mut s = sample_summary();
        s.dropped_by_generator = 3;
        assert!(
            s.render()
                .contains("3 dropped at the limit of 2000 in flight")
        );
    }

    #[test]
    fn summary_json_round_trips() {
        let s = sample_summary();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["routes"][0]["route"], "checkout");
        assert_eq!(v["routes"][0]["latency"]["p99_ms"], 250.0);
        assert_eq!(v["routes"][0]["errors_by_kind"]["500"], 3);
        assert_eq!(v["dropped_by_generator"], 0);
        assert_eq!(v["behind_schedule"], 0);
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }
}
