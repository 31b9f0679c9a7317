//! Figures for the core lab, printed as a table (a benchmark, not a test):
//! time from start to all healthy, idle memory, checkout latency split into
//! the provider's simulated latency and everything else, and how soon a
//! checkout's trace can be read from the embedded collector.
//!
//! Run (Postgres and RabbitMQ up, binaries built in the same profile):
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p tracelab --example lab_bench -- [checkouts=100]
//! ```

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracelab::supervisor::{COLLECTOR, Lab, LabOptions, SERVICES};
use tracelab_client::{TempoClient, Trace, gateway};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn row(name: &str, values: &mut [f64]) {
    values.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name:<44} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        percentile(values, 50.0),
        percentile(values, 90.0),
        percentile(values, 99.0),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

fn sync_part_complete(t: &Trace) -> bool {
    [
        "POST /api/checkout",
        "POST /v1/charges",
        "savePaymentResult",
        "INSERT outbox",
        "POST /payments",
    ]
    .iter()
    .all(|n| t.find(n).is_some())
}

fn whole_complete(t: &Trace) -> bool {
    sync_part_complete(t) && t.find("INSERT notifications").is_some()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let checkouts: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);

    // 1. start-up, three times (each with a fresh database: creation and
    //    migrations included).
    let mut startups = Vec::new();
    for _ in 0..2 {
        let lab = Lab::start(LabOptions::for_tests()).await?;
        startups.push(lab.startup_duration().as_secs_f64() * 1000.0);
        lab.stop().await?;
    }
    let lab = Lab::start(LabOptions::for_tests()).await?;
    startups.push(lab.startup_duration().as_secs_f64() * 1000.0);

    // 2. idle memory after a short settle
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut rss_total = 0;
    let mut rss_rows = Vec::new();
    for name in SERVICES {
        let kib = lab.pid(name).map(rss_kib).unwrap_or(0);
        rss_total += kib;
        rss_rows.push((name, kib));
    }
    let collector = lab.pid(COLLECTOR).map(rss_kib).unwrap_or(0);
    let own = rss_kib(std::process::id());

    // 3. checkouts
    let http = reqwest::Client::new();
    let tempo = TempoClient::new(&lab.tempo_url())?;
    let gw = lab.gateway_url();
    let token = gateway::login(&http, &gw, "alice", &gateway::demo_password("alice")).await?;
    let (mut total, mut provider, mut rest, mut sync_ready, mut all_ready) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..checkouts {
        let started = Instant::now();
        let response = http
            .post(format!("{gw}/api/checkout"))
            .bearer_auth(&token)
            .header(
                "Idempotency-Key",
                format!("bench-{i}-{}", uuid::Uuid::new_v4()),
            )
            .json(&json!({"amount": 4980, "currency": "JPY", "card": "4242424242424242"}))
            .send()
            .await?;
        let body: Value = response.json().await?;
        let answered = Instant::now();
        let elapsed_ms = (answered - started).as_secs_f64() * 1000.0;
        let trace_id = body["trace_id"].as_str().unwrap_or_default().to_string();
        let mut sync_at = None;
        let trace = loop {
            if let Some(t) = tempo.get_trace(&trace_id).await? {
                if sync_at.is_none() && sync_part_complete(&t) {
                    sync_at = Some(answered.elapsed());
                }
                if whole_complete(&t) {
                    break t;
                }
            }
            if answered.elapsed() > Duration::from_secs(5) {
                anyhow::bail!("trace {trace_id} incomplete after 5 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let whole_at = answered.elapsed();
        let provider_ms = trace
            .find("POST /v1/charges")
            .map(|s| s.duration_ms())
            .unwrap_or(0.0);
        total.push(elapsed_ms);
        provider.push(provider_ms);
        rest.push(elapsed_ms - provider_ms);
        sync_ready.push(sync_at.unwrap_or(whole_at).as_secs_f64() * 1000.0);
        all_ready.push(whole_at.as_secs_f64() * 1000.0);
    }
    lab.stop().await?;

    println!("tracelab lab benchmark ({checkouts} sequential checkouts, idle lab)\n");
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8}",
        "figure (ms)", "p50", "p90", "p99", "max"
    );
    row("start to all healthy (3 starts)", &mut startups);
    row("checkout response time", &mut total);
    row("  provider's simulated latency", &mut provider);
    row("  everything else", &mut rest);
    row("trace readable (all but notification)", &mut sync_ready);
    row("trace readable (whole, notification too)", &mut all_ready);
    println!("\nidle memory (VmRSS):");
    for (name, kib) in rss_rows {
        println!("  {name:<18} {:>7.1} MiB", kib as f64 / 1024.0);
    }
    println!(
        "  {:<18} {:>7.1} MiB",
        "six services",
        rss_total as f64 / 1024.0
    );
    println!(
        "  {:<18} {:>7.1} MiB  (the embedded collector's process)",
        COLLECTOR,
        collector as f64 / 1024.0
    );
    println!(
        "  {:<18} {:>7.1} MiB  (this process: the supervisor and the bench client)",
        "supervisor+bench",
        own as f64 / 1024.0
    );
    Ok(())
}
