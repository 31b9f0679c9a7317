//! `tracelab status`: the lab's services as its console sees them, the
//! command-line twin of the page's Lab view. For each service: its process
//! (natively: running, restarts, how it last ended, resident memory), its
//! health, and the span export counters of its `/health`, so lost spans are
//! seen from a terminal too; natively, a last line sums the lab's resident
//! memory (services, collector, `tracelab up`).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use super::args::LabUrlArg;
use crate::console::api::lab::{LabView, ServiceView};

/// `tracelab status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the console's `GET /api/lab` answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub lab: LabUrlArg,
}

/// The span export counters of a service's `/health` (`telemetry`). A
/// counter the service does not report reads as 0.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
struct Counters {
    spans_ended: u64,
    spans_exported: u64,
    spans_failed: u64,
    spans_dropped_by_fault: u64,
    spans_dropped_queue_full: u64,
    spans_queued: u64,
}

impl Counters {
    fn of(service: &ServiceView) -> Option<Counters> {
        let telemetry = service.health.as_ref()?.get("telemetry")?;
        serde_json::from_value(telemetry.clone()).ok()
    }
}

/// Exit 0 when every service answers healthy, 1 when one does not, 2 when
/// the console cannot be asked.
pub(super) async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.lab.client(Duration::from_secs(10))?;
    if args.json {
        let raw: Value = client.get("/api/lab").await?;
        println!("{}", serde_json::to_string_pretty(&raw)?);
        let view: LabView = serde_json::from_value(raw)?;
        return Ok(exit_code(&view));
    }
    let view: LabView = client.get("/api/lab").await?;
    print!("{}", render(client.base_url(), &view));
    Ok(exit_code(&view))
}

fn healthy(s: &ServiceView) -> bool {
    s.health_status
        .is_some_and(|code| (200..300).contains(&code))
}

fn exit_code(view: &LabView) -> ExitCode {
    if view.services.iter().all(healthy) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn process_text(s: &ServiceView) -> String {
    let Some(p) = &s.process else {
        return "-".into();
    };
    let mut out = match (p.running, p.pid) {
        (true, Some(pid)) => format!("running (pid {pid})"),
        (true, None) => "running".into(),
        (false, _) => format!("{:?}", p.state).to_lowercase(),
    };
    if p.restarts > 0 {
        let _ = write!(out, ", {} restart(s)", p.restarts);
        if let Some(exit) = &p.exit {
            let _ = write!(out, ", last: {exit}");
        }
    }
    out
}

/// KiB as MiB with one decimal: `14.2 MiB`.
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn render(console: &str, view: &LabView) -> String {
    let mut out = String::new();
    let mode = serde_json::to_value(view.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "lab {console} ({mode}): gateway {}, traces {}{}",
        view.gateway,
        view.tempo,
        if view.exercise_running {
            ", an exercise is running"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{:<17} {:<8} {:>8} {:>9} {:>7} {:>13} {:>13} {:>7} {:>10}  process",
        "service",
        "health",
        "ended",
        "exported",
        "failed",
        "dropped:queue",
        "dropped:fault",
        "queued",
        "memory"
    );
    for s in &view.services {
        let health = match (s.health_status, healthy(s)) {
            (Some(_), true) => "ok".to_string(),
            (Some(code), false) => format!("{code}"),
            (None, _) => "down".to_string(),
        };
        let counters = Counters::of(s);
        let n = |f: fn(&Counters) -> u64| {
            counters
                .as_ref()
                .map_or_else(|| "-".to_string(), |c| f(c).to_string())
        };
        let _ = writeln!(
            out,
            "{:<17} {:<8} {:>8} {:>9} {:>7} {:>13} {:>13} {:>7} {:>10}  {}",
            s.name,
            health,
            n(|c| c.spans_ended),
            n(|c| c.spans_exported),
            n(|c| c.spans_failed),
            n(|c| c.spans_dropped_queue_full),
            n(|c| c.spans_dropped_by_fault),
            n(|c| c.spans_queued),
            s.process
                .as_ref()
                .and_then(|p| p.memory_kib)
                .map_or_else(|| "-".to_string(), mib),
            process_text(s)
        );
        if let Some(error) = &s.error {
            let _ = writeln!(out, "{:<17} {error}", "");
        }
    }
    let lost: u64 = view
        .services
        .iter()
        .filter_map(Counters::of)
        .map(|c| c.spans_dropped_queue_full + c.spans_failed)
        .sum();
    if let Some(m) = &view.memory {
        let _ = writeln!(
            out,
            "memory (resident): {} in all: services {}, collector {}, tracelab up {}",
            mib(m.total_kib),
            mib(m.services_kib),
            m.collector_kib.map_or_else(|| "-".to_string(), mib),
            mib(m.console_kib)
        );
    }
    if lost > 0 {
        let _ = writeln!(
            out,
            "{lost} span(s) never reached the collector: dropped from a full export queue or in a failed export (is the collector down or slow?)"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(health: Value) -> LabView {
        serde_json::from_value(json!({
            "mode": "native",
            "gateway": "http://127.0.0.1:8080",
            "tempo": "http://127.0.0.1:3200",
            "exercise_running": false,
            "services": [{
                "name": "payment",
                "url": "http://127.0.0.1:8083",
                "health_status": 200,
                "health": health,
                "error": null,
                "process": {"name": "payment", "pid": 42, "state": "running",
                            "running": true, "exit": "killed by signal 9", "restarts": 2,
                            "memory_kib": 14540}
            }],
            "memory": {"total_kib": 102400, "services_kib": 61440,
                       "collector_kib": 20480, "console_kib": 20480}
        }))
        .unwrap()
    }

    #[test]
    fn counters_restarts_and_lost_spans_are_shown() {
        let text = render(
            "http://127.0.0.1:7070",
            &view(json!({"status": "ok", "telemetry": {
                "spans_ended": 100, "spans_exported": 60, "spans_failed": 5,
                "spans_dropped_by_fault": 0, "spans_dropped_queue_full": 30,
                "spans_queued": 7, "queue_capacity": 2048}})),
        );
        let row = text.lines().find(|l| l.starts_with("payment")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cells[..8],
            ["payment", "ok", "100", "60", "5", "30", "0", "7"]
        );
        assert!(row.contains("running (pid 42), 2 restart(s), last: killed by signal 9"));
        assert_eq!(&cells[8..10], ["14.2", "MiB"], "{row}");
        assert!(
            text.contains(
                "memory (resident): 100.0 MiB in all: services 60.0 MiB, collector 20.0 MiB, tracelab up 20.0 MiB"
            ),
            "{text}"
        );
        assert!(
            text.contains("35 span(s) never reached the collector"),
            "{text}"
        );
        // The counters are right-aligned under their headers.
        let header = text.lines().find(|l| l.starts_with("service")).unwrap();
        for (name, value) in [
            ("ended", "100"),
            ("dropped:queue", "30"),
            ("dropped:fault", "0"),
            ("queued", "7"),
            ("memory", "MiB"),
        ] {
            let end = |line: &str, word: &str| {
                let at = line.find(&format!(" {word} ")).expect(word) + 1;
                at + word.len()
            };
            assert_eq!(
                end(header, name),
                end(row, value),
                "{name} column:\n{header}\n{row}"
            );
        }
    }

    #[test]
    fn a_service_without_counters_shows_dashes_and_no_loss_line() {
        let mut v = view(json!({"status": "ok"}));
        v.services[0].process.as_mut().unwrap().memory_kib = None;
        v.memory = None;
        let text = render("c", &v);
        let row = text.lines().find(|l| l.starts_with("payment")).unwrap();
        assert_eq!(row.split_whitespace().filter(|c| *c == "-").count(), 7);
        assert!(!text.contains("memory (resident)"), "{text}");
        assert!(!text.contains("never reached"));
    }
}
