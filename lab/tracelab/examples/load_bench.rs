//! How much load `tracelab load` can offer, and at what CPU cost.
//!
//! ```text
//! cargo run --release -p tracelab --example load_bench            # 2000 req/s for 10 s
//! cargo run --release -p tracelab --example load_bench -- 4000 5  # RPS SECONDS
//! ```
//!
//! The generator runs against a trivial in-process endpoint (an axum
//! `GET /api/products` answering a small JSON at once) on 127.0.0.1, port 0.
//! The endpoint has its own runtime whose threads are named `bench-server`,
//! so its CPU time (read per thread from `/proc/self/task/*/stat`) can be
//! taken out of the process total: what is left is the generator's (Linux
//! only). Both share the machine's cores, so the figures are an upper bound
//! on what the generator costs next to a real gateway.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tracelab::load::{self, LoadConfig, Mix, Progress, Route};

const SERVER_THREAD: &str = "bench-server";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rps: f64 = args.next().map_or(Ok(2000.0), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(10), |a| a.parse())?;

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()?;
    let addr = server_rt.block_on(async {
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route(
                "/api/products",
                get(|| async { axum::Json(serde_json::json!({"products": []})) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        anyhow::Ok(addr)
    })?;

    let generator_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load-gen")
        .enable_all()
        .build()?;
    let config = LoadConfig {
        gateway: format!("http://{addr}"),
        rps,
        duration: Some(Duration::from_secs(seconds)),
        mix: Mix::of(&[(Route::Search, 1)]),
        progress: Progress::Off,
        ..LoadConfig::default()
    };
    println!(
        "load_bench: {rps} req/s for {seconds}s against a trivial endpoint at http://{addr} ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let ticks = clock_ticks_per_second() as f64;
    let (process_before, server_before) = (process_ticks()?, thread_ticks(SERVER_THREAD)?);
    let started = Instant::now();
    let summary = generator_rt.block_on(load::run(config))?;
    let wall = started.elapsed().as_secs_f64();
    let (process_after, server_after) = (process_ticks()?, thread_ticks(SERVER_THREAD)?);

    let process_cpu = (process_after - process_before) as f64 / ticks;
    let server_cpu = (server_after - server_before) as f64 / ticks;
    let generator_cpu = process_cpu - server_cpu;
    print!("{}", summary.render());
    println!();
    println!("asked        {rps:>10.1} req/s");
    println!("achieved     {:>10.1} req/s", summary.achieved_rps);
    println!(
        "sent         {:>10} of {} scheduled ({} dropped, {} errors)",
        summary.sent, summary.scheduled, summary.dropped_by_generator, summary.total.errors
    );
    println!(
        "behind       {:>10} sends > {}ms late, max lag {:.1}ms",
        summary.behind_schedule, summary.lag_threshold_ms, summary.max_lag_ms
    );
    println!(
        "latency      p50 {:.2}ms  p99 {:.2}ms  max {:.1}ms",
        summary.total.latency.p50_ms, summary.total.latency.p99_ms, summary.total.latency.max_ms
    );
    println!(
        "generator CPU {:>9.1}% of one core ({generator_cpu:.2}s CPU over {wall:.2}s wall; \
         {:.1} µs CPU per request)",
        generator_cpu / wall * 100.0,
        generator_cpu / summary.sent.max(1) as f64 * 1e6
    );
    println!(
        "server CPU    {:>9.1}% of one core (the trivial endpoint, same process)",
        server_cpu / wall * 100.0
    );
    Ok(())
}

/// `utime + stime` of a `/proc/.../stat` line, in clock ticks.
fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name in parentheses may hold spaces: count from the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn process_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    stat_ticks(&stat).ok_or_else(|| anyhow::anyhow!("unreadable /proc/self/stat"))
}

/// CPU ticks of the live threads of this process named `name`.
fn thread_ticks(name: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == name
            && let Some(t) = std::fs::read_to_string(path.join("stat"))
                .ok()
                .and_then(|s| stat_ticks(&s))
        {
            total += t;
        }
    }
    Ok(total)
}

/// `sysconf(_SC_CLK_TCK)` without libc: the AT_CLKTCK entry of the aux vector.
fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 100;
    };
    auxv.chunks_exact(16)
        .map(|kv| {
            let k = u64::from_ne_bytes(kv[..8].try_into().unwrap_or_default());
            let v = u64::from_ne_bytes(kv[8..].try_into().unwrap_or_default());
            (k, v)
        })
        .find(|(k, _)| *k == AT_CLKTCK)
        .map_or(100, |(_, v)| v)
}
