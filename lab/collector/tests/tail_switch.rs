//! Replacing the tail policy of a running collector through
//! `PUT /api/tracelab/sampling`, over real HTTP: who may, what a bad body
//! gets, the per-policy counts, and how traces waiting for their decision
//! are judged across the switch.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tracelab_collector::{Collector, CollectorConfig, TailPolicy};

const TOKEN: &str = "a-lab-admin-token-for-tests";

/// The lesson's shape: errors, slow traces, `pct` % of the rest.
fn tail_based(wait_ms: u64, pct: u32) -> Value {
    json!({
        "decision_wait_ms": wait_ms,
        "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "slow_requests", "type": "latency", "latency": {"threshold_ms": 2000}},
            {"name": "default", "type": "probabilistic", "probabilistic": {"sampling_percentage": f64::from(pct)}},
        ]
    })
}

fn policy(wait_ms: u64, pct: u32) -> TailPolicy {
    let text = json!({ "tail_based": tail_based(wait_ms, pct) }).to_string();
    TailPolicy::from_yaml_str(&text).unwrap().unwrap()
}

async fn start_tail(policy: Option<TailPolicy>, token: Option<&str>) -> Collector {
    start_with(CollectorConfig {
        tail: policy,
        admin_token: token.map(str::to_string),
        ..CollectorConfig::ephemeral()
    })
    .await
}

async fn put(c: &Collector, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = client()
        .put(format!("http://{}/api/tracelab/sampling", c.api_addr()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn counts(report: &Value, policy: &str) -> (u64, u64) {
    let p = report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == policy)
        .unwrap_or_else(|| panic!("no policy {policy} in {report}"));
    (p["kept"].as_u64().unwrap(), p["not_kept"].as_u64().unwrap())
}

#[tokio::test]
async fn only_the_admin_token_replaces_the_policy_and_bad_bodies_get_a_json_400() {
    let c = start_tail(Some(policy(10_000, 100)), Some(TOKEN)).await;
    let lesson = json!({ "tail_based": tail_based(10_000, 5) }).to_string();
    for token in [None, Some("wrong"), Some("a-lab-admin-token-for-test")] {
        let (status, body) = put(&c, token, &lesson).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    for bad in [
        "{not json",
        r#"{"policy": "lesson"}"#,
        r#"{"tail_based": {"policies": []}}"#,
        r#"{"tail_based": {"policies": [{"type": "rate_limiting"}]}}"#,
        r#"{"tail_based": {"policies": [{"type": "probabilistic", "probabilistic": {"sampling_percentage": 500}}]}}"#,
    ] {
        let (status, body) = put(&c, Some(TOKEN), bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_policy", "{bad}: {body}");
    }
    let (status, before) = get(&c, "/api/tracelab/sampling").await;
    assert_eq!(status, 200);
    assert_eq!(before["tail_based"], tail_based(10_000, 100), "unchanged");

    let (status, after) = put(&c, Some(TOKEN), &lesson).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["tail_based"], tail_based(10_000, 5));
    assert_eq!(
        get(&c, "/api/tracelab/sampling").await.1["tail_based"],
        tail_based(10_000, 5)
    );
    c.shutdown().await;
}

#[tokio::test]
async fn without_a_token_or_a_tail_policy_nothing_can_be_replaced() {
    let c = start_tail(Some(policy(1_000, 100)), None).await;
    let body = json!({ "tail_based": tail_based(1_000, 5) }).to_string();
    let (status, answer) = put(&c, Some(""), &body).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no admin token"),
        "{answer}"
    );
    c.shutdown().await;

    let c = start_tail(None, Some(TOKEN)).await;
    assert_eq!(get(&c, "/api/tracelab/sampling").await.0, 409);
    let (status, answer) = put(&c, Some(TOKEN), &body).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "no_tail_sampling");
    c.shutdown().await;
}

/// At 0 % an ordinary trace waits for its decision; switching to 100 %
/// releases it at once, and a decision made before the switch stands.
#[tokio::test]
async fn waiting_traces_are_judged_by_the_new_policy_and_decisions_stand() {
    let c = start_tail(Some(policy(1_000, 0)), Some(TOKEN)).await;
    let (dropped, waiting, failed) = (trace_id(), trace_id(), trace_id());
    post_proto(
        &c,
        &request(
            "gateway",
            vec![
                S::new(dropped, 1, "GET /api/products").ms(5),
                S::new(failed, 1, "POST /api/checkout")
                    .ms(5)
                    .error("declined"),
            ],
        ),
    )
    .await;
    // `dropped` is decided (dropped) at the end of its wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.stats().tail_pending_traces > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", c.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    post_proto(
        &c,
        &request(
            "gateway",
            vec![S::new(waiting, 1, "GET /api/products").ms(5)],
        ),
    )
    .await;
    assert_eq!(get_trace(&c, &waiting).await.0, 404, "held during the wait");
    let (_, report) = get(&c, "/api/tracelab/sampling").await;
    assert_eq!(report["kept"], 1, "{report}");
    assert_eq!(report["dropped"], 1, "{report}");
    assert_eq!(report["pending"], 1, "{report}");
    assert_eq!(counts(&report, "errors"), (1, 1), "{report}");
    assert_eq!(counts(&report, "slow_requests"), (0, 2), "{report}");
    assert_eq!(counts(&report, "default"), (0, 2), "{report}");

    let (status, switched) = put(
        &c,
        Some(TOKEN),
        &json!({ "tail_based": tail_based(1_000, 100) }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{switched}");
    // Released by the switch, not by its wait.
    assert_eq!(get_trace(&c, &waiting).await.0, 200);
    assert_eq!(switched["pending"], 0, "{switched}");
    assert_eq!(
        switched["kept"], 1,
        "counts start again with the new policy: {switched}"
    );
    assert_eq!(switched["dropped"], 0, "{switched}");
    assert_eq!(counts(&switched, "default"), (1, 0), "{switched}");
    // The drop decided before the switch stands: its late span is discarded.
    post_proto(
        &c,
        &request(
            "notification",
            vec![S::new(dropped, 2, "late consumer").parent(1)],
        ),
    )
    .await;
    assert_eq!(get_trace(&c, &dropped).await.0, 404);
    assert_eq!(get_trace(&c, &failed).await.0, 200);
    c.shutdown().await;
}
