//! Tail sampling through the real receivers and the decision timer.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tracelab_collector::{Collector, CollectorConfig, TailPolicy};

/// The lab's decision wait: long, so anything queryable "at once" was
/// released early, not decided at the end of the wait.
const LAB_WAIT_MS: u64 = 10_000;
/// A short wait, for tests that watch a drop decision happen.
const SHORT_WAIT_MS: u64 = 1_000;

/// Errors, traces of 1 s or more, `pct` % of the rest.
fn policy(wait_ms: u64, pct: u32) -> TailPolicy {
    TailPolicy::from_yaml_str(&format!(
        "tail_based:
  decision_wait_ms: {wait_ms}
  policies:
    - {{ name: errors, type: status_code, status_code: {{ status_codes: [ERROR] }} }}
    - {{ name: slow, type: latency, latency: {{ threshold_ms: 1000 }} }}
    - {{ name: default, type: probabilistic, probabilistic: {{ sampling_percentage: {pct} }} }}
"
    ))
    .unwrap()
    .unwrap()
}

async fn start_tail(wait_ms: u64, pct: u32) -> Collector {
    start_with(CollectorConfig {
        tail: Some(policy(wait_ms, pct)),
        ..CollectorConfig::ephemeral()
    })
    .await
}

/// Waits until the decisions for everything sent so far have been made.
async fn until_decided(c: &Collector) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.stats().tail_pending_traces > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tail decisions never made: {:?}",
            c.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// "At once": well under a second after the export returned, against a
/// 10 s decision wait.
fn assert_prompt(since: Instant, what: &str) {
    let took = since.elapsed();
    assert!(
        took < Duration::from_millis(900),
        "{what}: queryable after {took:?}"
    );
}

#[tokio::test]
async fn hundred_percent_makes_traces_queryable_at_once_despite_a_long_wait() {
    let c = start_tail(LAB_WAIT_MS, 100).await;
    let ids: Vec<[u8; 16]> = (0..20).map(|_| trace_id()).collect();
    let sent = Instant::now();
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
    for t in &ids {
        assert_eq!(get_trace(&c, t).await.0, 200);
    }
    assert_prompt(sent, "100% trace");
    let stats = c.stats();
    assert_eq!(stats.tail_pending_traces, 0, "{stats:?}");
    assert_eq!(stats.tail_early_kept_traces, 20, "{stats:?}");
    assert_eq!(stats.tail_sampled_traces, 20, "{stats:?}");
    assert_eq!(stats.tail_dropped_traces, 0, "{stats:?}");
    c.shutdown().await;
}

#[tokio::test]
async fn zero_percent_holds_an_ordinary_trace_for_the_wait_then_drops_it() {
    let c = start_tail(SHORT_WAIT_MS, 0).await;
    let t = trace_id();
    let sent = Instant::now();
    post_proto(
        &c,
        &request("search", vec![S::new(t, 1, "GET /api/products").ms(30)]),
    )
    .await;
    assert_eq!(get_trace(&c, &t).await.0, 404, "held during the wait");
    assert_eq!(c.stats().tail_pending_traces, 1);
    until_decided(&c).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(SHORT_WAIT_MS),
        "dropped before the decision wait was over"
    );
    assert_eq!(get_trace(&c, &t).await.0, 404, "dropped at 0%");
    // A late span follows the drop.
    post_proto(
        &c,
        &request(
            "notification",
            vec![S::new(t, 2, "late consumer").parent(1)],
        ),
    )
    .await;
    assert_eq!(get_trace(&c, &t).await.0, 404);
    let stats = c.stats();
    assert_eq!(stats.tail_dropped_traces, 1, "{stats:?}");
    assert_eq!(stats.tail_dropped_spans, 2, "{stats:?}");
    assert_eq!(stats.tail_sampled_traces, 0, "{stats:?}");
    assert_eq!(stats.traces_stored, 0, "{stats:?}");
    c.shutdown().await;
}

#[tokio::test]
async fn an_error_span_makes_a_zero_percent_trace_queryable_at_once() {
    let c = start_tail(LAB_WAIT_MS, 0).await;
    let t = trace_id();
    post_proto(
        &c,
        &request("gateway", vec![S::new(t, 1, "POST /api/checkout").ms(30)]),
    )
    .await;
    assert_eq!(get_trace(&c, &t).await.0, 404, "no policy keeps it yet");
    let sent = Instant::now();
    post_proto(
        &c,
        &request(
            "payment",
            vec![S::new(t, 2, "processPayment").parent(1).error("declined")],
        ),
    )
    .await;
    let (status, body) = get_trace(&c, &t).await;
    assert_eq!(status, 200, "error trace released");
    assert_prompt(sent, "error trace");
    assert_eq!(
        spans_of(&body["batches"]).len(),
        2,
        "the buffered span is released with the error"
    );
    let stats = c.stats();
    assert_eq!(stats.tail_early_kept_traces, 1, "{stats:?}");
    assert_eq!(stats.tail_pending_traces, 0, "{stats:?}");
    c.shutdown().await;
}

#[tokio::test]
async fn a_slow_trace_is_released_as_soon_as_its_spans_show_the_threshold() {
    let c = start_tail(LAB_WAIT_MS, 0).await;
    let t = trace_id();
    let t0 = now_ns();
    let ms = |n: u64| t0 + n * 1_000_000;
    // 0..200 ms, then 500..800 ms: 800 ms so far, under the 1 s threshold.
    post_proto(
        &c,
        &request(
            "gateway",
            vec![S::new(t, 1, "POST /api/checkout").start(ms(0)).ms(200)],
        ),
    )
    .await;
    post_proto(
        &c,
        &request(
            "payment",
            vec![
                S::new(t, 2, "processPayment")
                    .parent(1)
                    .start(ms(500))
                    .ms(300),
            ],
        ),
    )
    .await;
    assert_eq!(get_trace(&c, &t).await.0, 404, "800 ms: not slow yet");
    assert_eq!(c.stats().tail_pending_traces, 1);
    // 900..1100 ms: the trace now covers 1.1 s.
    let sent = Instant::now();
    post_proto(
        &c,
        &request(
            "notification",
            vec![S::new(t, 3, "sendReceipt").parent(2).start(ms(900)).ms(200)],
        ),
    )
    .await;
    let (status, body) = get_trace(&c, &t).await;
    assert_eq!(status, 200, "slow trace released");
    assert_prompt(sent, "slow trace");
    assert_eq!(spans_of(&body["batches"]).len(), 3);
    assert_eq!(c.stats().tail_early_kept_traces, 1);
    c.shutdown().await;
}

#[tokio::test]
async fn late_spans_after_an_early_keep_are_stored() {
    let c = start_tail(LAB_WAIT_MS, 0).await;
    let t = trace_id();
    post_proto(
        &c,
        &request(
            "gateway",
            vec![S::new(t, 1, "POST /api/checkout").error("upstream failed")],
        ),
    )
    .await;
    assert_eq!(get_trace(&c, &t).await.0, 200);
    for (n, service) in [(2, "payment"), (3, "notification")] {
        let sent = Instant::now();
        post_proto(
            &c,
            &request(service, vec![S::new(t, n, "late consumer").parent(1)]),
        )
        .await;
        let (status, body) = get_trace(&c, &t).await;
        assert_eq!(status, 200);
        assert_prompt(sent, "late span");
        assert_eq!(spans_of(&body["batches"]).len(), usize::from(n));
    }
    let stats = c.stats();
    assert_eq!(stats.tail_early_kept_traces, 1, "{stats:?}");
    assert_eq!(stats.tail_sampled_traces, 1, "{stats:?}");
    assert_eq!(stats.tail_pending_traces, 0, "{stats:?}");
    assert_eq!(stats.spans_stored, 3, "{stats:?}");
    c.shutdown().await;
}

#[tokio::test]
async fn zero_percent_keeps_errors_and_slow_traces_drops_the_rest() {
    let c = start_tail(SHORT_WAIT_MS, 0).await;
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
    assert_eq!(get_trace(&c, &slow).await.0, 200, "slow trace kept");
    assert_eq!(get_trace(&c, &failed).await.0, 200, "error trace kept");
    until_decided(&c).await;
    assert_eq!(get_trace(&c, &ordinary).await.0, 404, "dropped at 0%");
    let stats = c.stats();
    assert_eq!(stats.tail_sampled_traces, 2, "{stats:?}");
    assert_eq!(stats.tail_early_kept_traces, 2, "{stats:?}");
    assert_eq!(stats.tail_dropped_traces, 1, "{stats:?}");
    assert_eq!(stats.tail_dropped_spans, 1, "{stats:?}");
    assert_eq!(stats.traces_stored, 2, "{stats:?}");
    c.shutdown().await;
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
