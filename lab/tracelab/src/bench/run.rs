//! Runs the bench: for each round, for each mode, one lab started with
//! that mode's environment, warmed up, measured on each route, stopped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use super::cpu::{load_average, process_cpu_us};
use super::drive::Target;
use super::mode::{Mode, Route};
use super::sink::{Blackhole, dead_endpoint};
use crate::supervisor::{DEFAULT_AMQP_URL, Lab, LabOptions, LogSink, Ports};

/// What to measure and how long.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The modes, each in its own lab; ratios are against [`Mode::Off`]
    /// when it is among them, else against the first.
    pub modes: Vec<Mode>,
    /// The routes measured in every lab.
    pub routes: Vec<Route>,
    /// Rounds; each round starts every mode's lab once, in a rotated order.
    pub rounds: u32,
    /// How long each route is driven per lab.
    pub duration: Duration,
    /// Concurrent connections of the throughput runs.
    pub connections: usize,
    /// How long login is sent on one connection for p50/p99 (zero: skipped).
    pub latency_duration: Duration,
    /// Traffic before the first measurement of a lab (both routes).
    pub warmup: Duration,
    /// A Postgres URL on the server to use; each lab gets its own database
    /// there (`tracelab_bench_<uuid>`, dropped when it stops).
    pub database_server: String,
    /// RabbitMQ; each lab gets its own exchange and queue.
    pub amqp_url: String,
    /// Where the service binaries are (`None`: as `tracelab up` finds them).
    pub bin_dir: Option<PathBuf>,
    /// Extra environment for every service, after the mode's.
    pub extra_env: Vec<(String, String)>,
    /// Checkouts sent one by one in the `100%` lab, each followed by
    /// polling the collector until its whole trace is there (0: skipped).
    pub readable_checkouts: usize,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            modes: Mode::ALL.to_vec(),
            routes: Route::ALL.to_vec(),
            rounds: 3,
            duration: Duration::from_secs(3),
            connections: 4,
            latency_duration: Duration::from_secs(1),
            warmup: Duration::from_millis(500),
            database_server: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            amqp_url: DEFAULT_AMQP_URL.into(),
            bin_dir: None,
            extra_env: Vec::new(),
            readable_checkouts: 30,
        }
    }
}

/// One route driven in one lab.
#[derive(Debug, Clone, Serialize)]
pub struct RouteSample {
    /// Which route.
    pub route: Route,
    /// 2xx answers.
    pub ok: u64,
    /// Other answers and transport errors.
    pub failed: u64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// 2xx answers per second.
    pub rate: f64,
    /// CPU (user + system) the six services used during the run, µs.
    pub cpu_us: u64,
    /// Spans the services ended (sampled ones) during the run.
    pub spans_ended: u64,
    /// Latency of the 2xx answers during the run (closed loop on
    /// `connections` connections), p50 and p99, µs.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

/// The export counters of a lab's services, summed, read from their
/// `/health` (`telemetry`) after the last run, once the queues drained
/// (or after a short wait, when the collector is down).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ExportTotals {
    pub spans_ended: u64,
    pub spans_exported: u64,
    pub spans_failed: u64,
    pub spans_dropped_queue_full: u64,
    pub spans_dropped_by_fault: u64,
    pub spans_queued: u64,
}

impl ExportTotals {
    fn add_health(&mut self, health: &Value) {
        let t = &health["telemetry"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        self.spans_ended += n("spans_ended");
        self.spans_exported += n("spans_exported");
        self.spans_failed += n("spans_failed");
        self.spans_dropped_queue_full += n("spans_dropped_queue_full");
        self.spans_dropped_by_fault += n("spans_dropped_by_fault");
        self.spans_queued += n("spans_queued");
    }

    /// Spans that never reached the collector.
    pub fn lost(&self) -> u64 {
        self.spans_failed + self.spans_dropped_queue_full + self.spans_dropped_by_fault
    }
}

/// One lab: one mode in one round.
#[derive(Debug, Clone, Serialize)]
pub struct LabRun {
    pub mode: Mode,
    pub round: u32,
    /// One-minute load average when the lab was measured.
    pub load_average: Option<f64>,
    pub routes: Vec<RouteSample>,
    /// Login on one connection: p50 and p99, µs.
    pub login_p50_us: Option<u64>,
    pub login_p99_us: Option<u64>,
    /// For each checkout sent alone (`100%` only): how long after its
    /// answer the collector served its whole trace, µs; `None` when it was
    /// not whole within [`READABLE_WITHIN`].
    pub checkout_readable_us: Vec<Option<u64>>,
    pub export: ExportTotals,
}

/// How long the lab is left quiet before each timed checkout.
pub const QUIET_BEFORE_CHECKOUT: Duration = Duration::from_millis(100);

/// How long the bench waits for a checkout's whole trace.
pub const READABLE_WITHIN: Duration = Duration::from_secs(2);

/// Every lab run, in the order they ran.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRuns {
    pub rounds: u32,
    pub connections: usize,
    pub duration_secs: f64,
    pub cpus: usize,
    pub load_average_before: Option<f64>,
    pub load_average_after: Option<f64>,
    pub runs: Vec<LabRun>,
}

/// Runs the bench; `progress` hears one line per lab.
///
/// # Errors
/// When a lab does not start (binaries missing, Postgres or RabbitMQ
/// down), the login fails, or a route answers nothing but errors.
pub async fn run(opts: &BenchOptions, mut progress: impl FnMut(&str)) -> anyhow::Result<BenchRuns> {
    anyhow::ensure!(!opts.modes.is_empty(), "no mode to measure");
    anyhow::ensure!(!opts.routes.is_empty(), "no route to measure");
    let load_average_before = load_average();
    let mut runs = Vec::new();
    let n = opts.modes.len();
    for round in 0..opts.rounds.max(1) {
        // Rotated, so no mode always follows the same one.
        for i in 0..n {
            let mode = opts.modes[(i + round as usize) % n];
            progress(&format!(
                "round {}/{}: {} (load average {})",
                round + 1,
                opts.rounds.max(1),
                mode.name(),
                load_average().map_or("?".into(), |l| format!("{l:.2}"))
            ));
            let run = run_lab(opts, mode, round)
                .await
                .with_context(|| format!("bench lab {} (round {})", mode.name(), round + 1))?;
            runs.push(run);
        }
    }
    Ok(BenchRuns {
        rounds: opts.rounds.max(1),
        connections: opts.connections,
        duration_secs: opts.duration.as_secs_f64(),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        load_average_before,
        load_average_after: load_average(),
        runs,
    })
}

fn lab_options(opts: &BenchOptions, mode: Mode) -> anyhow::Result<LabOptions> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut url = reqwest::Url::parse(&opts.database_server)
        .with_context(|| format!("database server URL {:?}", opts.database_server))?;
    url.set_path(&format!("/tracelab_bench_{id}"));
    let mut env = mode.env();
    // The lab's default provider latency (100-200 ms) would measure the
    // sleep, not the tracing.
    env.push(("TRACELAB_PROVIDER_LATENCY_MS".into(), "0".into()));
    env.extend(opts.extra_env.iter().cloned());
    let mut lab = LabOptions {
        database_url: url.to_string(),
        amqp_url: opts.amqp_url.clone(),
        exchange: Some(format!("tracelab.bench.{id}")),
        queue: Some(format!("notification.bench.{id}")),
        ports: Ports::ANY,
        log: LogSink::Quiet,
        drop_database: true,
        extra_env: env,
        ..LabOptions::default()
    };
    if let Some(dir) = &opts.bin_dir {
        lab.bin_dir = dir.clone();
    }
    Ok(lab)
}

async fn run_lab(opts: &BenchOptions, mode: Mode, round: u32) -> anyhow::Result<LabRun> {
    let mut lab_opts = lab_options(opts, mode)?;
    // Held until the lab stops: the services' exports hang on it.
    let blackhole = match mode {
        Mode::Blackholed => Some(Blackhole::start().await?),
        _ => None,
    };
    lab_opts.otlp_endpoint = match (mode, &blackhole) {
        (Mode::CollectorDown, _) => Some(dead_endpoint()?),
        (_, Some(b)) => Some(b.endpoint()),
        _ => None,
    };
    let lab = Lab::start(lab_opts).await?;
    let measured = measure(opts, mode, round, &lab).await;
    let stopped = lab.stop().await;
    drop(blackhole);
    let run = measured?;
    stopped?;
    Ok(run)
}

async fn measure(opts: &BenchOptions, mode: Mode, round: u32, lab: &Lab) -> anyhow::Result<LabRun> {
    let target = Target::new(&lab.gateway_url(), opts.connections).await?;
    let services = lab.services();
    let pids: Vec<u32> = services
        .iter()
        .filter_map(|(name, _)| lab.pid(name))
        .collect();
    anyhow::ensure!(
        pids.len() == services.len(),
        "a service is not running: {:?}",
        lab.status()
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for &route in &opts.routes {
        target
            .closed_loop(route, opts.connections, opts.warmup)
            .await;
    }
    // The checkout's asynchronous tail (outbox relay, notification) ends
    // its spans after the answer: let it finish before the first snapshot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut routes = Vec::new();
    let mut load_avg = None;
    for &route in &opts.routes {
        let before = (cpu_of(&pids), exports(&http, &services).await?);
        let burst = target
            .closed_loop(route, opts.connections, opts.duration)
            .await;
        let after = (cpu_of(&pids), exports(&http, &services).await?);
        load_avg = load_average();
        anyhow::ensure!(
            burst.ok > 0,
            "{}: no request succeeded ({} failed)",
            route.name(),
            burst.failed
        );
        routes.push(RouteSample {
            route,
            ok: burst.ok,
            failed: burst.failed,
            seconds: burst.elapsed.as_secs_f64(),
            rate: burst.rate(),
            cpu_us: after.0.saturating_sub(before.0),
            spans_ended: after.1.spans_ended.saturating_sub(before.1.spans_ended),
            p50_us: (!burst.latency.is_empty()).then(|| burst.latency.quantile(0.5)),
            p99_us: (!burst.latency.is_empty()).then(|| burst.latency.quantile(0.99)),
        });
    }
    let (mut p50, mut p99) = (None, None);
    if !opts.latency_duration.is_zero() {
        let burst = target
            .closed_loop(Route::Login, 1, opts.latency_duration)
            .await;
        if !burst.latency.is_empty() {
            p50 = Some(burst.latency.quantile(0.5));
            p99 = Some(burst.latency.quantile(0.99));
        }
    }
    let checkout_readable_us = if mode == Mode::Full
        && opts.routes.contains(&Route::Checkout)
        && opts.readable_checkouts > 0
    {
        readable_after_answer(&target, &http, &lab.tempo_url(), opts.readable_checkouts).await?
    } else {
        Vec::new()
    };
    // Let the batch processors export what is queued; a dead collector's
    // queue never drains, so the wait is short.
    let drain_until = Instant::now() + Duration::from_millis(1500);
    let mut export = exports(&http, &services).await?;
    while export.spans_queued > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        export = exports(&http, &services).await?;
    }
    Ok(LabRun {
        mode,
        round,
        load_average: load_avg,
        routes,
        login_p50_us: p50,
        login_p99_us: p99,
        checkout_readable_us,
        export,
    })
}

/// Sends `n` checkouts one at a time; after each answer, polls the
/// collector's Tempo API until the trace holds as many spans as a whole
/// checkout (counted on a first checkout given a second to settle).
async fn readable_after_answer(
    target: &Target,
    http: &reqwest::Client,
    tempo: &str,
    n: usize,
) -> anyhow::Result<Vec<Option<u64>>> {
    let spans_of = |id: String| async move {
        let Ok(resp) = http.get(format!("{tempo}/api/traces/{id}")).send().await else {
            return 0;
        };
        if !resp.status().is_success() {
            return 0;
        }
        let Ok(body) = resp.json::<Value>().await else {
            return 0;
        };
        body["batches"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|b| b["scopeSpans"].as_array().into_iter().flatten())
            .map(|s| s["spans"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
    };
    let first = target
        .checkout_trace()
        .await
        .context("a checkout for the readability run failed")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let whole = spans_of(first).await;
    anyhow::ensure!(whole > 0, "the collector never served a checkout trace");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        // Alone: the previous checkout's spans are exported and the
        // services' export interval has passed, as for a learner's
        // checkout in a quiet lab.
        tokio::time::sleep(QUIET_BEFORE_CHECKOUT).await;
        let Some(id) = target.checkout_trace().await else {
            continue;
        };
        let answered = Instant::now();
        let mut readable = None;
        while answered.elapsed() < READABLE_WITHIN {
            if spans_of(id.clone()).await >= whole {
                readable = Some(answered.elapsed().as_micros() as u64);
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(readable);
    }
    Ok(samples)
}

fn cpu_of(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| process_cpu_us(*p)).sum()
}

async fn exports(
    http: &reqwest::Client,
    services: &[(&'static str, String)],
) -> anyhow::Result<ExportTotals> {
    let mut totals = ExportTotals::default();
    for (name, url) in services {
        let health: Value = http
            .get(format!("{url}/health"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}/health of {name}"))?
            .json()
            .await
            .with_context(|| format!("reading the /health of {name}"))?;
        totals.add_health(&health);
    }
    Ok(totals)
}
