//! Answer keys of the scenario catalog (`scenarios/*.yaml`), checked on
//! real labs.
//!
//! For every scenario one test starts its own lab (`LabOptions::for_tests`:
//! free ports, its own database, exchange and queue), sends the scenario's
//! traffic with the scenario stopped and asserts that no check of its
//! signature finds anything, then starts it, sends the traffic again and
//! asserts that every check finds its signature (the span with the error,
//! the latency, the gap, the orphan root...), through the Tempo-compatible
//! API of the embedded collector. Invariants (one charge per
//! Idempotency-Key) must hold in both phases.
//!
//! Also here: the catalog's own rules (coverage of services, pitfalls and
//! compound incidents, every query accepted by the collector's TraceQL),
//! exercise grading end to end (wrong answers, accepted alternatives,
//! history), and how fast a fault takes effect after `fault set`.
//!
//! Needs Postgres and RabbitMQ on localhost and the service binaries
//! (`cargo build --workspace --bins`); without them the tests FAIL and say so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracelab::lab::{Lab, LabOptions};
use tracelab::scenario::{Catalog, Category, Pitfall};
use tracelab::verify::{Target, verify};

fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

fn catalog() -> Catalog {
    Catalog::load(&catalog_dir()).unwrap_or_else(|e| panic!("the catalog must load: {e:#}"))
}

async fn start_lab() -> (Lab, LabOptions) {
    let opts = LabOptions::for_tests();
    let lab = Lab::start(opts.clone()).await.unwrap_or_else(|e| {
        panic!(
            "the answer-key tests need a running lab and could not start one: {e:#}\n\
             (build the services with `cargo build --workspace --bins`; start Postgres and RabbitMQ)"
        )
    });
    (lab, opts)
}

/// Verifies one scenario's answer key on a lab of its own.
async fn answer_key(id: &str) {
    let catalog = catalog();
    let scenario = catalog.get(id).expect("scenario in the catalog");
    let (lab, opts) = start_lab().await;
    let target = Target::for_lab(&lab, &opts).expect("target");
    let started = Instant::now();
    let result = verify(&target, scenario, Duration::from_secs(20)).await;
    let logs = match &result {
        Ok(v) if v.passed() => String::new(),
        _ => lab.dump_logs(),
    };
    lab.stop().await.expect("the lab stops cleanly");
    let v = result.unwrap_or_else(|e| panic!("verifying {id}: {e:#}\n{logs}"));
    eprintln!("{}(verified in {:.1?})", v.render(), started.elapsed());
    assert!(v.passed(), "{}\n{logs}", v.render());
}

macro_rules! answer_keys {
    ($($name:ident => $id:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                answer_key($id).await;
            }
        )*
        /// The scenarios with an answer-key test above.
        const TESTED: &[&str] = &[$($id),*];
    };
}

answer_keys! {
    answer_key_auth_verify_errors => "auth-verify-errors",
    answer_key_auth_verify_slow => "auth-verify-slow",
    answer_key_gateway_auth_propagation_break => "gateway-auth-propagation-break",
    answer_key_gateway_search_latency => "gateway-search-latency",
    answer_key_incident_cascade_pool => "incident-cascade-pool",
    answer_key_incident_invisible_search => "incident-invisible-search",
    answer_key_incident_red_herring_clock_skew => "incident-red-herring-clock-skew",
    answer_key_incident_retry_storm => "incident-retry-storm",
    answer_key_notification_consumer_stall => "notification-consumer-stall",
    answer_key_notification_dead_letter => "notification-dead-letter",
    answer_key_payment_save_slow => "payment-save-slow",
    answer_key_payment_validate_slow_query => "payment-validate-slow-query",
    answer_key_pitfall_high_cardinality => "pitfall-high-cardinality",
    answer_key_pitfall_propagation_break_queue => "pitfall-propagation-break-queue",
    answer_key_pitfall_sampling_miss => "pitfall-sampling-miss",
    answer_key_pitfall_tracing_overhead => "pitfall-tracing-overhead",
    answer_key_provider_outage => "provider-outage",
    answer_key_provider_rate_limit => "provider-rate-limit",
    answer_key_provider_slow => "provider-slow",
    answer_key_search_slow_query => "search-slow-query",
}

#[test]
fn every_scenario_has_an_answer_key_test() {
    let catalog = catalog();
    let mut ids: Vec<&str> = catalog.ids();
    let mut tested: Vec<&str> = TESTED.to_vec();
    ids.sort_unstable();
    tested.sort_unstable();
    assert_eq!(ids, tested, "add an answer_keys! line for every scenario");
}

#[test]
fn catalog_covers_services_pitfalls_and_incidents() {
    let catalog = catalog();
    assert!(
        catalog.scenarios.len() >= 16,
        "at least 16 scenarios, found {}",
        catalog.scenarios.len()
    );
    for service in tracelab::lab::SERVICES {
        assert!(
            catalog
                .scenarios
                .iter()
                .any(|s| s.category == Category::Single && s.faults[0].service == service),
            "no single-fault scenario on {service}"
        );
    }
    for pitfall in [
        Pitfall::HighCardinality,
        Pitfall::SamplingMiss,
        Pitfall::PropagationBreak,
        Pitfall::Overhead,
    ] {
        assert!(
            catalog.scenarios.iter().any(|s| s.pitfall == Some(pitfall)),
            "no scenario for the pitfall {pitfall:?}"
        );
    }
    let compound: Vec<_> = catalog
        .scenarios
        .iter()
        .filter(|s| s.category == Category::Compound)
        .collect();
    assert!(compound.len() >= 3, "at least three compound incidents");
}
