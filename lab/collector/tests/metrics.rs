//! `/api/metrics/query_range` and `/api/metrics/query`: TraceQL metrics
//! over a few spans placed at known times.

mod common;

use common::*;
use serde_json::{Value as Json, json};
use tracelab_collector::Collector;

const SEC: u64 = 1_000_000_000;

/// gateway spans at t0+5s (100ms), t0+15s (200ms), t0+25s (300ms, error);
/// payment spans at t0+5s (1s) and t0+6s (3s). t0 is a whole minute.
async fn fixture() -> (Collector, u64) {
    let c = start().await;
    let t0 = (now_ns() / SEC / 60) * 60 - 600;
    let at = |s: u64| (t0 + s) * SEC;
    let mut gateway = Vec::new();
    for (n, (s, ms)) in [(5, 100), (15, 200), (25, 300)].into_iter().enumerate() {
        let mut span = S::new(trace_id(), 1, "GET /").start(at(s)).ms(ms);
        if n == 2 {
            span = span.error("boom");
        }
        gateway.push(span);
    }
    post_proto(&c, &request("gateway", gateway)).await;
    let payment = vec![
        S::new(trace_id(), 1, "charge").start(at(5)).ms(1000),
        S::new(trace_id(), 1, "charge").start(at(6)).ms(3000),
    ];
    post_proto(&c, &request("payment", payment)).await;
    (c, t0)
}

async fn metrics(c: &Collector, path: &str, params: &[(&str, &str)]) -> (u16, Json) {
    let url =
        reqwest::Url::parse_with_params(&format!("http://{}{path}", c.api_addr()), params).unwrap();
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn range(c: &Collector, t0: u64, q: &str) -> Json {
    let (start, end) = (t0.to_string(), (t0 + 30).to_string());
    let (status, body) = metrics(
        c,
        "/api/metrics/query_range",
        &[("q", q), ("start", &start), ("end", &end), ("step", "10s")],
    )
    .await;
    assert_eq!(status, 200, "{q}: {body}");
    body
}

/// Each series as (its labels, [(seconds after t0, value)]).
fn series(body: &Json, t0: u64) -> Vec<(Json, Vec<(i64, f64)>)> {
    body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let samples = s["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let ms: i64 = p["timestampMs"].as_str().unwrap().parse().unwrap();
                    (ms / 1000 - t0 as i64, p["value"].as_f64().unwrap())
                })
                .collect();
            (s["labels"].clone(), samples)
        })
        .collect()
}

fn service(name: &str) -> Json {
    json!([{"key": "resource.service.name", "value": {"stringValue": name}}])
}

#[tokio::test]
async fn counts_and_rates_per_interval_and_group() {
    let (c, t0) = fixture().await;
    let body = range(&c, t0, "{ } | count_over_time() by (resource.service.name)").await;
    // One extra interval before the start, as Tempo; each reported at its end.
    assert_eq!(
        series(&body, t0),
        vec![
            (
                service("gateway"),
                vec![(0, 0.0), (10, 1.0), (20, 1.0), (30, 1.0)]
            ),
            (
                service("payment"),
                vec![(0, 0.0), (10, 2.0), (20, 0.0), (30, 0.0)]
            ),
        ]
    );
    assert_eq!(body["metrics"]["inspectedTraces"], 5);

    let body = range(&c, t0, "{ status = error } | rate()").await;
    assert_eq!(
        series(&body, t0),
        vec![(
            json!([{"key": "__name__", "value": {"stringValue": "rate"}}]),
            vec![(0, 0.0), (10, 0.0), (20, 0.0), (30, 0.1)]
        )]
    );
    // Exemplars point at the spans counted.
    let ex = &body["series"][0]["exemplars"][0];
    assert_eq!(ex["labels"][0]["key"], "trace:id");
    assert_eq!(ex["timestampMs"], ((t0 + 25) * 1000).to_string());
}

#[tokio::test]
async fn over_time_functions_measure_seconds() {
    let (c, t0) = fixture().await;
    let body = range(
        &c,
        t0,
        "{ } | max_over_time(duration) by (resource.service.name)",
    )
    .await;
    assert_eq!(
        series(&body, t0),
        vec![
            (service("gateway"), vec![(10, 0.1), (20, 0.2), (30, 0.3)]),
            (service("payment"), vec![(10, 3.0)]),
        ]
    );
    let body = range(&c, t0, "{ } | avg_over_time(duration)").await;
    let s = series(&body, t0);
    assert_eq!(s[0].1[0].0, 10);
    assert!(
        (s[0].1[0].1 - (0.1 + 1.0 + 3.0) / 3.0).abs() < 1e-9,
        "{s:?}"
    );
    let body = range(&c, t0, "{ } | sum_over_time(duration) > 1").await;
    assert_eq!(series(&body, t0)[0].1, vec![(10, 4.1)]);

    let body = range(&c, t0, "{ } | quantile_over_time(duration, .5, 1)").await;
    let s = series(&body, t0);
    assert_eq!(s.len(), 2);
    assert_eq!(
        s[0].0[1],
        json!({"key": "p", "value": {"doubleValue": 0.5}})
    );
    assert_eq!(s[0].1[0], (10, 1.0));
    assert_eq!(s[1].1[0], (10, 3.0));

    let body = range(
        &c,
        t0,
        "{ resource.service.name = \"payment\" } | histogram_over_time(duration)",
    )
    .await;
    let buckets: Vec<Json> = series(&body, t0)
        .into_iter()
        .map(|(l, _)| l[1]["value"].clone())
        .collect();
    assert_eq!(
        buckets,
        vec![json!({"doubleValue": 1.0}), json!({"doubleValue": 4.0})]
    );
}

#[tokio::test]
async fn second_stage_filters_and_topk() {
    let (c, t0) = fixture().await;
    let body = range(
        &c,
        t0,
        "{ } | count_over_time() by (resource.service.name) > 0 | topk(1)",
    )
    .await;
    assert_eq!(
        series(&body, t0),
        vec![
            (service("gateway"), vec![(20, 1.0), (30, 1.0)]),
            (service("payment"), vec![(10, 2.0)]),
        ]
    );
    let body = range(
        &c,
        t0,
        "{ } | count_over_time() by (resource.service.name) | bottomk(1) >= 1",
    )
    .await;
    assert_eq!(
        series(&body, t0),
        vec![(service("gateway"), vec![(10, 1.0)])]
    );
    let body = range(&c, t0, "{ } | compare({ status = error })").await;
    let labels: Vec<Json> = series(&body, t0).into_iter().map(|(l, _)| l).collect();
    assert!(
        labels.contains(&json!([
            {"key": "__meta_type", "value": {"stringValue": "selection"}},
            {"key": "resource.service.name", "value": {"stringValue": "gateway"}},
        ])),
        "{labels:?}"
    );
}

#[tokio::test]
async fn instant_queries_answer_one_value_per_series() {
    let (c, t0) = fixture().await;
    let (start, end) = (t0.to_string(), (t0 + 30).to_string());
    let (status, body) = metrics(
        &c,
        "/api/metrics/query",
        &[
            ("q", "{ } | rate() by (resource.service.name)"),
            ("start", &start),
            ("end", &end),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["series"],
        json!([
            {"labels": service("gateway"), "value": 0.1},
            {"labels": service("payment"), "value": 2.0 / 30.0},
        ])
    );
    // `since` instead of start/end: the last hour, which holds every span.
    let (_, body) = metrics(
        &c,
        "/api/metrics/query",
        &[("q", "{ } | count_over_time()"), ("since", "1h")],
    )
    .await;
    assert_eq!(body["series"][0]["value"], 5.0);
}

#[tokio::test]
async fn bad_metrics_requests_are_400s_naming_the_problem() {
    let (c, t0) = fixture().await;
    let (start, end) = (t0.to_string(), (t0 + 30).to_string());
    for (params, word) in [
        (vec![("q", "{ status = error }")], "not a metrics query"),
        (vec![("q", "{ } | rate( ")], "character"),
        (vec![], "missing q"),
        (
            vec![("q", "{ } | rate()"), ("start", &end), ("end", &start)],
            "before end",
        ),
        (vec![("q", "{ } | rate()"), ("step", "0")], "step"),
        (vec![("q", "{ } | rate()"), ("start", "yesterday")], "start"),
        (
            vec![("q", "{ } | rate()"), ("since", "30d"), ("step", "1s")],
            "too many points",
        ),
        (vec![("q", "{ } | rate()\u{1}")], "control character"),
    ] {
        let (status, body) = metrics(&c, "/api/metrics/query_range", &params).await;
        assert_eq!(status, 400, "{params:?}: {body}");
        assert_eq!(body["error"]["code"], "bad_query");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(word), "{params:?}: {msg}");
    }
}
