//! `tracelab bench` on tiny settings: the table has its shape and its
//! numbers agree with each other (not timings: those are the bench's to
//! print, never a test's to assert). Starts two real labs, kept for both
//! rounds; needs the binaries (`cargo build --workspace --bins`), Postgres
//! and RabbitMQ.

use std::time::Duration;

use tracelab::bench::{BenchOptions, BenchReport, Mode, Route, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_counts_spans_only_when_tracing_is_on() {
    let opts = BenchOptions {
        modes: vec![Mode::Off, Mode::Full],
        routes: vec![Route::Login],
        rounds: 2,
        duration: Duration::from_millis(400),
        connections: 2,
        latency_duration: Duration::from_millis(200),
        warmup: Duration::from_millis(100),
        ..BenchOptions::default()
    };
    let mut lines = Vec::new();
    let runs = run(&opts, |l| lines.push(l.to_string())).await.unwrap();
    // A line per lab started, then per round (with the load average).
    let said: Vec<&str> = lines
        .iter()
        .map(|l| l.split(" (").next().unwrap())
        .collect();
    assert_eq!(
        said,
        [
            "starting the off lab",
            "starting the 100% lab",
            "round 1/2",
            "round 2/2"
        ]
    );
    assert_eq!(runs.runs.len(), 4, "each lab measured in each round");
    // The rounds measured the same labs, in a rotated order.
    let order: Vec<(Mode, u32)> = runs.runs.iter().map(|r| (r.mode, r.round)).collect();
    assert_eq!(
        order,
        [
            (Mode::Off, 0),
            (Mode::Full, 0),
            (Mode::Full, 1),
            (Mode::Off, 1)
        ]
    );
    let report = BenchReport::new(runs, &opts.modes, &opts.routes);

    assert_eq!(report.baseline, Mode::Off);
    assert_eq!(report.routes.len(), 2);
    let row = |m: Mode| report.routes.iter().find(|r| r.mode == m).unwrap();
    let (off, full) = (row(Mode::Off), row(Mode::Full));
    assert_eq!(off.ratio, 1.0);
    assert!(off.rate > 0.0 && full.rate > 0.0);
    assert_eq!(off.failed + full.failed, 0);
    assert!(off.cpu_us_per_request > 0.0, "{off:?}");
    assert_eq!(off.spans_per_request, 0.0, "tracing off ends no span");
    // Login is three spans: the gateway's SERVER and CLIENT, auth's SERVER.
    // A request in flight at either edge of the run may move the mean a bit.
    assert!((2.5..=3.5).contains(&full.spans_per_request), "{full:?}");
    assert!(full.us_per_span.is_some() && off.us_per_span.is_none());

    let export = |m: Mode| report.modes.iter().find(|r| r.mode == m).unwrap();
    let (off_x, full_x) = (export(Mode::Off), export(Mode::Full));
    assert_eq!(off_x.export.spans_ended, 0);
    assert_eq!(off_x.export.spans_exported, 0);
    let e = full_x.export;
    assert!(e.spans_exported > 0, "{e:?}");
    assert_eq!(
        e.spans_ended,
        e.spans_exported + e.lost() + e.spans_queued,
        "every ended span is counted once: {e:?}"
    );
    assert!(off_x.login_p50_us.is_some() && full_x.login_p99_us >= full_x.login_p50_us);

    let table = report.render();
    for needle in [
        "login: POST /api/login",
        "off ",
        "100% ",
        "exported",
        "p50 µs",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from:\n{table}");
    }
    assert!(
        !table.contains("checkout:"),
        "only login was measured:\n{table}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["routes"].as_array().unwrap().len(), 2);
    assert_eq!(json["raw"]["runs"].as_array().unwrap().len(), 4);
}
