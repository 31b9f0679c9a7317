//! Runs the bench: one lab per mode, started with that mode's environment
//! and warmed up; then, round after round, each route driven in every lab
//! in turn; the labs stopped at the end.

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
    /// Rounds; each round drives each route in every mode's lab, in a
    /// rotated order.
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

    /// What happened since `earlier`, counters of the same services read
    /// before: the counters' growth, and the spans queued now.
    fn since(&self, earlier: &ExportTotals) -> ExportTotals {
        ExportTotals {
            spans_ended: self.spans_ended.saturating_sub(earlier.spans_ended),
            spans_exported: self.spans_exported.saturating_sub(earlier.spans_exported),
            spans_failed: self.spans_failed.saturating_sub(earlier.spans_failed),
            spans_dropped_queue_full: self
                .spans_dropped_queue_full
                .saturating_sub(earlier.spans_dropped_queue_full),
            spans_dropped_by_fault: self
                .spans_dropped_by_fault
                .saturating_sub(earlier.spans_dropped_by_fault),
            spans_queued: self.spans_queued,
        }
    }

    /// Spans that never reached the collector.
    pub fn lost(&self) -> u64 {
        self.spans_failed + self.spans_dropped_queue_full + self.spans_dropped_by_fault
    }
}

/// One mode's lab in one round.
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

/// Runs the bench; `progress` hears one line per lab started (with its
/// database's name) and per round.
///
/// Every mode's lab is started first and kept to the end. Each round then
/// drives each route in every lab in turn (the modes in an order rotated
/// every round), so the bursts a ratio compares ran seconds apart, not a
/// lab start-up apart; a busy machine's drift hits every mode alike.
///
/// When `stop` resolves (the CLI passes Ctrl-C or SIGTERM) the bench ends
/// early: the lab being started finishes starting, then every lab stops
/// and drops its database, as at the end of a run.
///
/// # Errors
/// When a lab does not start (binaries missing, Postgres or RabbitMQ
/// down), the login fails, a route answers nothing but errors, or `stop`
/// came first.
pub async fn run(
    opts: &BenchOptions,
    mut progress: impl FnMut(&str),
    stop: impl Future<Output = ()>,
) -> anyhow::Result<BenchRuns> {
    anyhow::ensure!(!opts.modes.is_empty(), "no mode to measure");
    anyhow::ensure!(!opts.routes.is_empty(), "no route to measure");
    let load_average_before = load_average();
    tokio::pin!(stop);
    let mut interrupted = false;
    let mut labs = Vec::new();
    let mut started = Ok(());
    for &mode in &opts.modes {
        let lab_opts = match lab_options(opts, mode) {
            Ok(o) => o,
            Err(e) => {
                started = Err(e);
                break;
            }
        };
        progress(&format!(
            "starting the {} lab (database {})",
            mode.name(),
            database_name(&lab_opts.database_url)
        ));
        // A lab being started when `stop` comes is let finish starting,
        // so that it stops (and drops its database) like the others.
        let start = ModeLab::start(opts, mode, lab_opts);
        tokio::pin!(start);
        let lab = tokio::select! {
            lab = &mut start => lab,
            () = &mut stop => {
                interrupted = true;
                start.await
            }
        };
        match lab {
            Ok(lab) => labs.push(lab),
            Err(e) => {
                started = Err(e.context(format!("bench lab {}", mode.name())));
                break;
            }
        }
        if interrupted {
            break;
        }
    }
    let runs = match started {
        Ok(()) if interrupted => Err(anyhow::anyhow!(INTERRUPTED)),
        Ok(()) => tokio::select! {
            runs = rounds(opts, &mut labs, &mut progress) => runs,
            () = &mut stop => Err(anyhow::anyhow!(INTERRUPTED)),
        },
        Err(e) => Err(e),
    };
    // Every lab stops, whatever happened.
    let mut stopped = Ok(());
    for lab in labs {
        if let Err(e) = lab.lab.stop().await {
            stopped = Err(e);
        }
    }
    let runs = runs?;
    stopped?;
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

/// What an interrupted bench says, once its labs have stopped.
const INTERRUPTED: &str =
    "interrupted: every lab the bench started was stopped and its database dropped";

/// The database name of a Postgres URL (its path).
fn database_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
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

/// One mode's lab, kept for the whole bench, with what measuring it needs.
struct ModeLab {
    mode: Mode,
    lab: Lab,
    /// Held until the lab stops: the services' exports hang on it.
    _blackhole: Option<Blackhole>,
    target: Target,
    pids: Vec<u32>,
    services: Vec<(&'static str, String)>,
    /// The services' export counters when its previous round ended.
    counted: ExportTotals,
}

impl ModeLab {
    async fn start(
        opts: &BenchOptions,
        mode: Mode,
        mut lab_opts: LabOptions,
    ) -> anyhow::Result<ModeLab> {
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
        let ready = async {
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
            Ok((target, services, pids))
        }
        .await;
        match ready {
            Ok((target, services, pids)) => Ok(ModeLab {
                mode,
                lab,
                _blackhole: blackhole,
                target,
                pids,
                services,
                counted: ExportTotals::default(),
            }),
            Err(e) => {
                let _ = lab.stop().await;
                Err(e)
            }
        }
    }
}

async fn rounds(
    opts: &BenchOptions,
    labs: &mut [ModeLab],
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Vec<LabRun>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for lab in labs.iter() {
        for &route in &opts.routes {
            lab.target
                .closed_loop(route, opts.connections, opts.warmup)
                .await;
        }
    }
    // The checkout's asynchronous tail (outbox relay, notification) ends
    // its spans after the answer: let it finish before the first snapshot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for lab in labs.iter_mut() {
        lab.counted = drained_exports(&http, &lab.services).await?;
    }
    let n = labs.len();
    let total = opts.rounds.max(1);
    let mut runs = Vec::new();
    for round in 0..total {
        // Rotated, so no mode always follows the same one.
        let order: Vec<usize> = (0..n).map(|i| (i + round as usize) % n).collect();
        progress(&format!(
            "round {}/{total} (load average {})",
            round + 1,
            load_average().map_or("?".into(), |l| format!("{l:.2}"))
        ));
        let mut routes: Vec<Vec<RouteSample>> = vec![Vec::new(); n];
        let mut load_avg = vec![None; n];
        for &route in &opts.routes {
            for &i in &order {
                let lab = &labs[i];
                routes[i].push(
                    sample(opts, &http, lab, route)
                        .await
                        .with_context(|| format!("bench lab {}", lab.mode.name()))?,
                );
                load_avg[i] = load_average();
            }
        }
        let mut latency = vec![(None, None); n];
        if !opts.latency_duration.is_zero() {
            for &i in &order {
                let burst = labs[i]
                    .target
                    .closed_loop(Route::Login, 1, opts.latency_duration)
                    .await;
                if !burst.latency.is_empty() {
                    latency[i] = (
                        Some(burst.latency.quantile(0.5)),
                        Some(burst.latency.quantile(0.99)),
                    );
                }
            }
        }
        for &i in &order {
            let lab = &mut labs[i];
            let checkout_readable_us = if lab.mode == Mode::Full
                && opts.routes.contains(&Route::Checkout)
                && opts.readable_checkouts > 0
            {
                readable_after_answer(
                    &lab.target,
                    &http,
                    &lab.lab.tempo_url(),
                    opts.readable_checkouts,
                )
                .await?
            } else {
                Vec::new()
            };
            let now = drained_exports(&http, &lab.services).await?;
            let export = now.since(&lab.counted);
            lab.counted = now;
            runs.push(LabRun {
                mode: lab.mode,
                round,
                load_average: load_avg[i],
                routes: std::mem::take(&mut routes[i]),
                login_p50_us: latency[i].0,
                login_p99_us: latency[i].1,
                checkout_readable_us,
                export,
            });
        }
    }
    Ok(runs)
}

/// One burst of `route` in `lab`: requests, the services' CPU and the
/// spans they ended.
async fn sample(
    opts: &BenchOptions,
    http: &reqwest::Client,
    lab: &ModeLab,
    route: Route,
) -> anyhow::Result<RouteSample> {
    let before = (cpu_of(&lab.pids), exports(http, &lab.services).await?);
    let burst = lab
        .target
        .closed_loop(route, opts.connections, opts.duration)
        .await;
    let after = (cpu_of(&lab.pids), exports(http, &lab.services).await?);
    anyhow::ensure!(
        burst.ok > 0,
        "{}: no request succeeded ({} failed)",
        route.name(),
        burst.failed
    );
    Ok(RouteSample {
        route,
        ok: burst.ok,
        failed: burst.failed,
        seconds: burst.elapsed.as_secs_f64(),
        rate: burst.rate(),
        cpu_us: after.0.saturating_sub(before.0),
        spans_ended: after.1.spans_ended.saturating_sub(before.1.spans_ended),
        p50_us: (!burst.latency.is_empty()).then(|| burst.latency.quantile(0.5)),
        p99_us: (!burst.latency.is_empty()).then(|| burst.latency.quantile(0.99)),
    })
}

/// The export counters once the batch processors exported what is queued;
/// a dead collector's queue never drains, so the wait is short.
async fn drained_exports(
    http: &reqwest::Client,
    services: &[(&'static str, String)],
) -> anyhow::Result<ExportTotals> {
    let drain_until = Instant::now() + Duration::from_millis(1500);
    let mut export = exports(http, services).await?;
    while export.spans_queued > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        export = exports(http, services).await?;
    }
    Ok(export)
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

#[cfg(test)]
mod tests {
    use super::database_name;

    #[test]
    fn database_name_is_the_urls_last_path_segment() {
        assert_eq!(
            database_name("postgres://postgres@127.0.0.1:5432/tracelab_bench_ab12"),
            "tracelab_bench_ab12"
        );
        assert_eq!(database_name("postgres://u@h/db_1?sslmode=disable"), "db_1");
    }
}
