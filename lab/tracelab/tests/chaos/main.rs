//! The chaos suite: real faults under steady load, then the lab's
//! invariants (issue 12, docs/chaos.md).
//!
//! Each test runs its own private PostgreSQL and RabbitMQ (own data
//! directories and ports: [`postgres`], [`rabbitmq`]), so it may stop and
//! kill them without touching the machine's servers on 5432 and 5672, and
//! a lab of the six services on them. A steady open-loop checkout load
//! ([`load`]) runs while the test restarts the broker, stops Postgres for
//! longer than the pool's acquire timeout, `kill -9`s payment or
//! notification, or blackholes the collector; then [`invariants`] checks
//! that nothing was lost, duplicated, charged twice or left `processing`,
//! and prints the figures (recovery times, latencies).
//!
//! Needs the PostgreSQL server binaries (`initdb`, `postgres`), RabbitMQ
//! (`rabbitmq-server`, Erlang) and the service binaries (`cargo build
//! --workspace --bins`); without them the tests fail and say what is
//! missing. Run: `cargo nextest run -p tracelab --test chaos
//! --no-capture` (the figures are printed).

mod fixtures;
mod harness;
mod invariants;
mod load;
mod otlp_gate;
mod postgres;
mod procs;
mod provider_tap;
mod rabbitmq;

use std::time::{Duration, Instant};

use harness::{ChaosLab, Spans};
use invariants::{Timeline, check};
use load::{CheckoutLoad, quantile};
use otlp_gate::GateMode;

/// Checkouts a second: steady, and gentle enough for five of these labs
/// at once on a two-core machine. `TRACELAB_CHAOS_RATE` sets another (the
/// issue's figures were taken at 27).
const RATE: f64 = 10.0;

fn rate() -> f64 {
    match std::env::var("TRACELAB_CHAOS_RATE") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|r: &f64| *r > 0.0)
            .unwrap_or_else(|| panic!("TRACELAB_CHAOS_RATE={v:?} is not a positive number")),
        Err(_) => RATE,
    }
}
/// Successful checkouts before the fault.
const WARM: usize = 20;
/// Seconds' worth of successful checkouts (at the load's rate) sent after
/// the fault is lifted before the load stops: the lab serves again, and the
/// load goes on across the recovery.
const AFTER_SECS: f64 = 5.0;
/// How long the lab may take to serve checkouts again after a fault.
const RECOVER_LIMIT: Duration = Duration::from_secs(90);
/// How long Postgres stays down: longer than every pool's acquire timeout
/// (payment's `DB_ACQUIRE_TIMEOUT_MS`, 2 s; the shared pool's default, 5 s,
/// for search and notification), so requests waiting for a connection give
/// up, and the 10 s outage.
const POSTGRES_OUTAGE: Duration = Duration::from_secs(10);
const _: () = assert!(
    POSTGRES_OUTAGE.as_millis() > 2 * tracelab_contract::timeouts::DB_ACQUIRE_TIMEOUT_MS as u128
);
/// How long the lab may take to restart a killed service.
const RESTART_LIMIT: Duration = Duration::from_secs(60);

/// Waits for [`AFTER_SECS`] worth of checkouts sent after the lift to
/// succeed, stops the load and returns every checkout with the timeline.
async fn recover(
    chaos: &ChaosLab,
    load: CheckoutLoad,
    fault_at: Instant,
    lifted_at: Instant,
    notes: Vec<String>,
) -> (Vec<load::Checkout>, load::Client, Timeline) {
    let after = (rate() * AFTER_SECS).ceil() as usize;
    let ok_again_at = load.wait_ok_since(lifted_at, after, RECOVER_LIMIT).await;
    let (checkouts, client) = load.stop().await;
    let timeline = Timeline {
        fault_at,
        lifted_at,
        ok_again_at,
        notes,
    };
    assert!(
        ok_again_at.is_some(),
        "[{}] fewer than {after} checkouts sent after the fault succeeded within {RECOVER_LIMIT:?}; \
         answers since: {:?}\n{}",
        chaos.name,
        checkouts
            .iter()
            .filter(|c| c.sent >= lifted_at)
            .map(load::Checkout::label)
            .collect::<Vec<_>>(),
        chaos.logs()
    );
    (checkouts, client, timeline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_under_load() {
    let mut chaos = ChaosLab::start("broker restart", Spans::Embedded).await;
    let load = chaos.start_load(rate(), WARM).await;
    let fault_at = Instant::now();
    chaos.rabbit.stop().await;
    let down = fault_at.elapsed();
    chaos
        .rabbit
        .start_again()
        .await
        .expect("the private RabbitMQ starts again");
    let lifted_at = Instant::now();
    let notes = vec![format!(
        "broker stopped in {:.1} s, booted again in {:.1} s",
        down.as_secs_f64(),
        (lifted_at - fault_at - down).as_secs_f64()
    )];
    let (checkouts, client, timeline) = recover(&chaos, load, fault_at, lifted_at, notes).await;
    check(
        &chaos,
        "RabbitMQ restarted under load",
        &checkouts,
        &client,
        &timeline,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_longer_than_the_pool_timeout() {
    let mut chaos = ChaosLab::start("postgres outage", Spans::Embedded).await;
    let load = chaos.start_load(rate(), WARM).await;
    let fault_at = Instant::now();
    chaos.postgres.stop().await;
    // The outage itself: a fixed length is the fault being injected.
    tokio::time::sleep(POSTGRES_OUTAGE.saturating_sub(fault_at.elapsed())).await;
    chaos
        .postgres
        .start_again()
        .await
        .expect("the private Postgres starts again");
    let lifted_at = Instant::now();
    let (checkouts, client, timeline) =
        recover(&chaos, load, fault_at, lifted_at, Vec::new()).await;
    check(
        &chaos,
        &format!(
            "Postgres down for {:.0} s under load",
            (lifted_at - fault_at).as_secs_f64()
        ),
        &checkouts,
        &client,
        &timeline,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_notification_under_load() {
    let chaos = ChaosLab::start("kill -9 notification", Spans::Embedded).await;
    let load = chaos.start_load(rate(), WARM).await;
    let (pid, killed_at) = chaos.kill_service("notification");
    let back_at = chaos
        .wait_restarted("notification", pid, RESTART_LIMIT)
        .await;
    let notes = vec![format!(
        "notification running and healthy again {:.1} s after the kill",
        (back_at - killed_at).as_secs_f64()
    )];
    let (checkouts, client, timeline) = recover(&chaos, load, killed_at, back_at, notes).await;
    check(
        &chaos,
        "kill -9 notification under load",
        &checkouts,
        &client,
        &timeline,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_payment_under_load() {
    let chaos = ChaosLab::start("kill -9 payment", Spans::Embedded).await;
    let load = chaos.start_load(rate(), WARM).await;
    let (pid, killed_at) = chaos.kill_service("payment");
    let back_at = chaos.wait_restarted("payment", pid, RESTART_LIMIT).await;
    let notes = vec![format!(
        "payment running and healthy again {:.1} s after the kill",
        (back_at - killed_at).as_secs_f64()
    )];
    let (checkouts, client, timeline) = recover(&chaos, load, killed_at, back_at, notes).await;
    check(
        &chaos,
        "kill -9 payment under load",
        &checkouts,
        &client,
        &timeline,
    )
    .await;
}

/// How long each phase of the blackhole test measures latency.
const LATENCY_WINDOW: Duration = Duration::from_secs(20);
/// After the gate closes, how long bytes it already passed may take to be
/// counted by the collector.
const BLACKHOLE_SETTLE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_blackhole_under_load() {
    let chaos = ChaosLab::start("collector blackhole", Spans::Gated).await;
    let gate = chaos.gate.as_ref().expect("a gated lab has a gate");
    let load = chaos.start_load(rate(), WARM).await;
    // The healthy baseline and the blackhole are windows of equal length:
    // the measurement is the experiment's design, not a wait for something.
    let healthy_from = Instant::now();
    tokio::time::sleep(LATENCY_WINDOW).await;
    let before = chaos.collector_spans();
    assert!(
        before > 0,
        "[{}] no span reached the collector through the open gate",
        chaos.name
    );
    let fault_at = Instant::now();
    gate.set(GateMode::Blackhole);
    // Anything already in the collector's socket lands within this.
    tokio::time::sleep(BLACKHOLE_SETTLE).await;
    let sealed = chaos.collector_spans();
    tokio::time::sleep(LATENCY_WINDOW.saturating_sub(fault_at.elapsed())).await;
    assert_eq!(
        chaos.collector_spans(),
        sealed,
        "[{}] spans reached the collector through the blackholed gate",
        chaos.name
    );
    let loss = chaos.span_loss().await;
    gate.set(GateMode::Forward);
    let lifted_at = Instant::now();

    // Spans flow again: the trace of a checkout sent after the lift arrives.
    let first = load
        .wait_ok_since(lifted_at, 1, RECOVER_LIMIT)
        .await
        .expect("a checkout succeeds after the collector is back");
    let trace_id = load
        .answered()
        .into_iter()
        .find(|c| c.ok() && c.sent == first)
        .and_then(|c| c.trace_id().map(str::to_string))
        .expect("the 2xx answer names its trace");
    let tempo = tracelab_client::TempoClient::new(&chaos.tempo_url()).expect("tempo client");
    tempo
        .wait_for_trace(
            &trace_id,
            |t| t.find_in("gateway", "POST /api/checkout").is_some(),
            RECOVER_LIMIT,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "[{}] no spans reach the collector after the blackhole ends: {e:#}\n{}",
                chaos.name,
                chaos.logs()
            )
        });
    let spans_back = lifted_at.elapsed();

    let answered = load.answered();
    let window = |from: Instant, to: Instant| -> Vec<Duration> {
        answered
            .iter()
            .filter(|c| c.sent >= from && c.sent < to)
            .map(|c| c.latency)
            .collect()
    };
    let healthy = window(healthy_from, fault_at);
    let blackholed = window(fault_at, lifted_at);
    let (h99, b99) = (quantile(&healthy, 0.99), quantile(&blackholed, 0.99));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let notes = vec![
        format!(
            "checkout latency healthy: p50 {:.0} ms p99 {:.0} ms ({} checkouts); blackholed: p50 {:.0} ms p99 {:.0} ms ({} checkouts); p99 ratio {:.2}",
            ms(quantile(&healthy, 0.5)),
            ms(h99),
            healthy.len(),
            ms(quantile(&blackholed, 0.5)),
            ms(b99),
            blackholed.len(),
            ms(b99) / ms(h99).max(f64::MIN_POSITIVE)
        ),
        format!(
            "spans reach the collector again {:.1} s after the blackhole ends",
            spans_back.as_secs_f64()
        ),
        format!("spans the services lost during the blackhole, from their /health: {loss}"),
    ];
    let (checkouts, client, timeline) = recover(&chaos, load, fault_at, lifted_at, notes).await;
    check(
        &chaos,
        "collector blackholed under load",
        &checkouts,
        &client,
        &timeline,
    )
    .await;
}
