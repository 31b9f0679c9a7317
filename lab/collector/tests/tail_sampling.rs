//! Tail sampling through the real receivers and the decision timer.

mod common;

use std::time::Duration;

use common::*;
use tracelab_collector::{CollectorConfig, TailPolicy};

const WAIT_MS: u64 = 300;

fn policy(pct: u32) -> TailPolicy {
    TailPolicy::from_yaml_str(&format!(
        "tail_based:
  decision_wait_ms: {WAIT_MS}
  policies:
    - {{ name: errors, type: status_code, status_code: {{ status_codes: [ERROR] }} }}
    - {{ name: slow, type: latency, latency: {{ threshold_ms: 1000 }} }}
    - {{ name: default, type: probabilistic, probabilistic: {{ sampling_percentage: {pct} }} }}
"
    ))
    .unwrap()
    .unwrap()
}

/// Waits until the decisions for everything sent so far have been made.
async fn until_decided(c: &tracelab_collector::Collector) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.stats().tail_pending_traces > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tail decisions never made: {:?}",
            c.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn errors_and_slow_traces_are_kept_ordinary_ones_dropped_at_zero_percent() {
    let c = start_with(CollectorConfig {
        tail: Some(policy(0)),
        ..CollectorConfig::ephemeral()
    })
    .await;
    let ordinary = trace_id();
    let failed = trace_id();
    let slow = trace_id();
    post_proto(
        &c,
        &request(
            "gateway",
            vec![
                S::new(ordinary, 1, "GET /api/products").ms(30),
                S::new(failed, 1, "POST /api/checkout").ms(30),
                S::new(slow, 1, "POST /api/checkout").ms(1500),
            ],
        ),
    )
    .await;
    // The error shows up in a second batch, still within the decision wait.
    post_proto(
        &c,
        &request(
            "payment",
            vec![
                S::new(failed, 2, "processPayment")
                    .parent(1)
                    .error("declined"),
            ],
        ),
    )
    .await;

    // Held back until the decision: nothing is queryable yet.
    assert_eq!(get_trace(&c, &failed).await.0, 404);
    assert_eq!(c.stats().tail_pending_traces, 3);

    until_decided(&c).await;
    assert_eq!(
        get_trace(&c, &ordinary).await.0,
        404,
        "ordinary trace dropped at 0%"
    );
    let (status, body) = get_trace(&c, &failed).await;
    assert_eq!(status, 200, "error trace kept");
    assert_eq!(
        spans_of(&body["batches"]).len(),
        2,
        "both batches of the error trace kept"
    );
    assert_eq!(get_trace(&c, &slow).await.0, 200, "slow trace kept");

    // Late spans follow the decision.
    post_proto(
        &c,
        &request(
            "notification",
            vec![S::new(failed, 3, "late consumer").parent(2)],
        ),
    )
    .await;
    post_proto(
        &c,
        &request(
            "notification",
            vec![S::new(ordinary, 3, "late consumer").parent(1)],
        ),
    )
    .await;
    let (_, body) = get_trace(&c, &failed).await;
    assert_eq!(spans_of(&body["batches"]).len(), 3);
    assert_eq!(get_trace(&c, &ordinary).await.0, 404);

    let stats = c.stats();
    assert_eq!(stats.tail_sampled_traces, 2, "{stats:?}");
    assert_eq!(stats.tail_dropped_traces, 1, "{stats:?}");
    assert_eq!(stats.tail_dropped_spans, 2, "{stats:?}");
    assert_eq!(stats.traces_stored, 2, "{stats:?}");
    c.shutdown().await;
}

#[tokio::test]
async fn hundred_percent_keeps_everything_after_the_wait() {
    let c = start_with(CollectorConfig {
        tail: Some(policy(100)),
        ..CollectorConfig::ephemeral()
    })
    .await;
    let ids: Vec<[u8; 16]> = (0..20).map(|_| trace_id()).collect();
    let sent = std::time::Instant::now();
    post_proto(
        &c,
        &request(
            "search",
            ids.iter()
                .map(|t| S::new(*t, 1, "GET /api/products"))
                .collect(),
        ),
    )
    .await;
    until_decided(&c).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(WAIT_MS),
        "decided before the wait"
    );
    for t in &ids {
        assert_eq!(get_trace(&c, t).await.0, 200);
    }
    assert_eq!(c.stats().tail_dropped_traces, 0);
}

#[tokio::test]
async fn without_tail_policy_traces_are_queryable_immediately() {
    let c = start().await;
    let t = trace_id();
    post_proto(
        &c,
        &request("search", vec![S::new(t, 1, "GET /api/products")]),
    )
    .await;
    // No waiting: the export has returned, so the trace is stored.
    assert_eq!(get_trace(&c, &t).await.0, 200);
    assert_eq!(c.stats().tail_pending_traces, 0);
}
