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
    let runs = run(&opts, |l| lines.push(l.to_string()), std::future::pending())
        .await
        .unwrap();
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

/// Ctrl-C (SIGINT) during the rounds: the bench says it was interrupted,
/// exits with an error, and its lab's database is gone (the labs stopped
/// as at the end of a run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_labs_and_drops_their_databases() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args([
            "bench",
            "--modes",
            "off",
            "--login-only",
            "--rounds",
            "100",
            "--duration",
            "300ms",
            "--latency",
            "0s",
            "--warmup",
            "100ms",
            "--readable",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tracelab bench starts");
    let mut stderr = BufReader::new(bench.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    let mut database = None;
    // Wait for the first round: the lab is up and being driven.
    let in_round = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("bench | starting the off lab (database ") {
                database = Some(rest.trim_end_matches(')').to_string());
            }
            let round = line.starts_with("bench | round 1/100");
            said.push(line);
            if round {
                return;
            }
        }
        panic!("the bench ended before its first round: {said:#?}");
    })
    .await;
    assert!(
        in_round.is_ok(),
        "no first round within 2 minutes: {said:#?}"
    );
    let database = database.unwrap_or_else(|| panic!("no database named: {said:#?}"));
    assert!(database.starts_with("tracelab_bench_"), "{database}");

    let pid = bench.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        let mut rest = Vec::new();
        while let Some(line) = stderr.next_line().await.unwrap() {
            rest.push(line);
        }
        (rest, bench.wait().await.unwrap())
    })
    .await;
    let (rest, status) = rest.expect("the bench stops within a minute of Ctrl-C");
    assert!(!status.success(), "an interrupted bench fails: {rest:#?}");
    assert!(
        rest.iter().any(|l| l.contains("interrupted")),
        "it says it was interrupted: {rest:#?}"
    );

    let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("Postgres on 127.0.0.1:5432 (scripts/deps-up starts it)");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "{database} was not dropped");
}
