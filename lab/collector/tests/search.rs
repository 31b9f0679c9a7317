//! `/api/search`: tags, durations, time range and TraceQL, plus tag lookups.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use tracelab_collector::Collector;

const SEC: u64 = 1_000_000_000;

struct Fixture {
    c: Collector,
    base_s: u64,
    ok_checkout: String,
    failed_checkout: String,
    slow_search: String,
    fast_search: String,
}

/// Four traces, started 10 s apart (so "most recent first" is defined):
/// an OK checkout, a failed checkout (payment ERROR, HTTP 500), a slow
/// product search (2.5 s, slow DB span) and a fast one (20 ms).
async fn fixture() -> Fixture {
    let c = start().await;
    let base_s = now_ns() / SEC - 100;
    let at = |i: u64| (base_s + 10 * (i + 1)) * SEC;
    let ids: Vec<[u8; 16]> = (0..4).map(|_| trace_id()).collect();

    let checkout = |t: [u8; 16], start: u64, fail: bool| -> ExportTraceServiceRequest {
        let mut payment = S::new(t, 2, "POST /payments")
            .kind(SpanKind::Server)
            .parent(1)
            .start(start + 10_000_000)
            .ms(200)
            .attr(kv_int(
                "http.response.status_code",
                if fail { 500 } else { 200 },
            ));
        let mut process = S::new(t, 3, "processPayment")
            .parent(2)
            .start(start + 20_000_000)
            .ms(150);
        if fail {
            payment = payment.error("HTTP 500");
            process = process.error("card declined");
        }
        ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans(
                    "gateway",
                    vec![
                        S::new(t, 1, "POST /api/checkout")
                            .kind(SpanKind::Server)
                            .start(start)
                            .ms(if fail { 250 } else { 300 })
                            .attr(kv_str("http.route", "/api/checkout")),
                    ],
                ),
                resource_spans("payment", vec![payment, process]),
            ],
        }
    };
    post_proto(&c, &checkout(ids[0], at(0), false)).await;
    post_proto(&c, &checkout(ids[1], at(1), true)).await;
    post_proto(
        &c,
        &request(
            "search",
            vec![
                S::new(ids[2], 1, "GET /api/products")
                    .kind(SpanKind::Server)
                    .start(at(2))
                    .ms(2500),
                S::new(ids[2], 2, "SELECT products")
                    .kind(SpanKind::Client)
                    .parent(1)
                    .start(at(2) + 50_000_000)
                    .ms(2400)
                    .attr(kv_str("db.system.name", "postgresql")),
            ],
        ),
    )
    .await;
    post_proto(
        &c,
        &request(
            "search",
            vec![
                S::new(ids[3], 1, "GET /api/products")
                    .kind(SpanKind::Server)
                    .start(at(3))
                    .ms(20),
            ],
        ),
    )
    .await;
    let hexes: Vec<String> = ids.iter().map(hex::encode).collect();
    Fixture {
        c,
        base_s,
        ok_checkout: hexes[0].clone(),
        failed_checkout: hexes[1].clone(),
        slow_search: hexes[2].clone(),
        fast_search: hexes[3].clone(),
    }
}

async fn found(f: &Fixture, params: &[(&str, &str)]) -> Vec<String> {
    let (status, body) = search(&f.c, params).await;
    assert_eq!(status, 200, "{params:?}: {body}");
    ids(&body)
}

#[tokio::test]
async fn search_by_tags() {
    let f = fixture().await;
    assert_eq!(
        found(
            &f,
            &[("tags", "service.name=payment http.response.status_code=500")]
        )
        .await,
        vec![f.failed_checkout.clone()]
    );
    // Most recent first.
    assert_eq!(
        found(&f, &[("tags", r#"name="POST /api/checkout""#)]).await,
        vec![f.failed_checkout.clone(), f.ok_checkout.clone()]
    );
    assert_eq!(
        found(&f, &[("tags", "status=error")]).await,
        vec![f.failed_checkout.clone()]
    );
    assert_eq!(
        found(
            &f,
            &[("tags", "service.name=search db.system.name=postgresql")]
        )
        .await,
        vec![f.slow_search.clone()]
    );
    assert!(
        found(&f, &[("tags", "service.name=nobody")])
            .await
            .is_empty()
    );
    let (status, body) = search(&f.c, &[("tags", "novalue")]).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("novalue")
    );
}

#[tokio::test]
async fn search_by_duration_time_range_and_limit() {
    let f = fixture().await;
    assert_eq!(
        found(&f, &[("minDuration", "2s")]).await,
        vec![f.slow_search.clone()]
    );
    assert_eq!(
        found(&f, &[("maxDuration", "100ms")]).await,
        vec![f.fast_search.clone()]
    );
    assert_eq!(
        found(&f, &[("minDuration", "200ms"), ("maxDuration", "1s")]).await,
        vec![f.failed_checkout.clone(), f.ok_checkout.clone()]
    );
    assert_eq!(
        found(&f, &[("limit", "2")]).await,
        vec![f.fast_search.clone(), f.slow_search.clone()]
    );
    assert_eq!(found(&f, &[]).await.len(), 4);
    let start = (f.base_s + 15).to_string();
    let end = (f.base_s + 25).to_string();
    assert_eq!(
        found(&f, &[("start", start.as_str()), ("end", end.as_str())]).await,
        vec![f.failed_checkout.clone()]
    );
    for bad in [
        ("minDuration", "soon"),
        ("limit", "many"),
        ("start", "yesterday"),
    ] {
        let (status, body) = search(&f.c, &[bad]).await;
        assert_eq!(status, 400, "{bad:?}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(bad.0),
            "{body}"
        );
    }
}

#[tokio::test]
async fn traceql_error_query_has_tempo_result_shape() {
    let f = fixture().await;
    let (status, body) = search(&f.c, &[("q", "{ status = error }")]).await;
    assert_eq!(status, 200, "{body}");
    let traces = body["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1);
    let t = &traces[0];
    assert_eq!(t["traceID"], f.failed_checkout);
    assert_eq!(t["rootServiceName"], "gateway");
    assert_eq!(t["rootTraceName"], "POST /api/checkout");
    assert_eq!(t["durationMs"], 250);
    let start: u64 = t["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert_eq!(start, (f.base_s + 20) * SEC);
    assert_eq!(
        t["serviceStats"],
        json!({"gateway": {"spanCount": 1, "errorCount": 0}, "payment": {"spanCount": 2, "errorCount": 2}})
    );
    let set = &t["spanSets"][0];
    assert_eq!(set["matched"], 2);
    assert_eq!(t["spanSet"], *set);
    let spans = set["spans"].as_array().unwrap();
    assert_eq!(spans[0]["spanID"], hex::encode(span_id(2)));
    assert_eq!(spans[0]["name"], "POST /payments");
    assert_eq!(spans[0]["durationNanos"], "200000000");
    assert_eq!(
        spans[0]["startTimeUnixNano"],
        ((f.base_s + 20) * SEC + 10_000_000).to_string()
    );
    assert_eq!(
        spans[0]["attributes"],
        json!([
            {"key": "status", "value": {"stringValue": "error"}},
            {"key": "service.name", "value": {"stringValue": "payment"}},
        ])
    );
}

#[tokio::test]
async fn traceql_duration_and_attribute_queries() {
    let f = fixture().await;
    let q = |query: &'static str| {
        let f = &f;
        async move { found(f, &[("q", query)]).await }
    };
    assert_eq!(q("{ duration > 2s }").await, vec![f.slow_search.clone()]);
    assert_eq!(
        q("{ traceDuration >= 250ms && traceDuration < 1s }").await,
        vec![f.failed_checkout.clone(), f.ok_checkout.clone()]
    );
    assert_eq!(
        q(r#"{ resource.service.name = "search" && name =~ "GET .*" }"#).await,
        vec![f.fast_search.clone(), f.slow_search.clone()]
    );
    assert_eq!(
        q("{ kind = server && span.http.response.status_code >= 500 }").await,
        vec![f.failed_checkout.clone()]
    );
    assert_eq!(
        q(r#"{ rootServiceName = "gateway" } && { status = error }"#).await,
        vec![f.failed_checkout.clone()]
    );
    assert_eq!(
        q("{ traceDuration > 1s } || { status = error }").await,
        vec![f.slow_search.clone(), f.failed_checkout.clone()]
    );
    assert_eq!(
        q(r#"{ .db.system.name = "postgresql" && kind = client }"#).await,
        vec![f.slow_search.clone()]
    );
    assert_eq!(
        q(r#"{ span.http.route != nil }"#).await,
        vec![f.failed_checkout.clone(), f.ok_checkout.clone()]
    );
    assert_eq!(q("{}").await.len(), 4);
    assert!(q(r#"{ name = "GET" }"#).await.is_empty());

    // The duration query reports both slow spans, in start order.
    let (_, body) = search(&f.c, &[("q", "{ duration > 2s }")]).await;
    let set = &body["traces"][0]["spanSets"][0];
    assert_eq!(set["matched"], 2);
    let names: Vec<&str> = set["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["GET /api/products", "SELECT products"]);

    // Tags and minDuration combine with q.
    assert!(
        found(&f, &[("q", "{ status = error }"), ("minDuration", "1s")])
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn bad_traceql_is_a_400_naming_the_problem_and_where() {
    let f = fixture().await;
    for (q, words) in [
        ("{ status = broken }", &["broken", "character 12"][..]),
        ("{ name = \"x\" ", &["`}`", "character 13"][..]),
        (
            "{ } | select(span.a, b)",
            &["unknown name `b`", "character 22"][..],
        ),
        ("{ status > error }", &["status", "character 10"][..]),
        ("{ } | count()", &["comparison"][..]),
        ("{ } | rate()", &["/api/metrics/query_range"][..]),
    ] {
        let (status, body) = search(&f.c, &[("q", q)]).await;
        assert_eq!(status, 400, "{q}");
        assert_eq!(body["error"]["code"], "bad_query");
        let msg = body["error"]["message"].as_str().unwrap();
        for w in words {
            assert!(msg.contains(w), "{q}: {msg}");
        }
    }
}

#[tokio::test]
async fn structural_pipeline_and_grouped_queries() {
    let f = fixture().await;
    let q = |query: &'static str| {
        let f = &f;
        async move { found(f, &[("q", query)]).await }
    };
    // The failed checkout: gateway server > payment server (error) > processPayment (error).
    assert_eq!(
        q("{ kind = server } >> { status = error }").await,
        vec![f.failed_checkout.clone()]
    );
    assert_eq!(
        q("{ status = error } | count() > 1").await,
        vec![f.failed_checkout.clone()]
    );
    assert!(q("{ status = error } | count() > 2").await.is_empty());
    let (_, body) = search(&f.c, &[("q", "{ status = error } !< { status = error }")]).await;
    let set = &body["traces"][0]["spanSets"][0];
    assert_eq!(set["matched"], 1);
    assert_eq!(set["spans"][0]["name"], "processPayment");

    // by() makes one spanset per group, each named by its group.
    let (_, body) = search(
        &f.c,
        &[
            (
                "q",
                "{ resource.service.name != \"search\" } | by(resource.service.name)",
            ),
            ("limit", "1"),
        ],
    )
    .await;
    let sets = body["traces"][0]["spanSets"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "{body}");
    assert_eq!(
        sets[1]["attributes"],
        json!([{"key": "by(resource.service.name)", "value": {"stringValue": "payment"}}])
    );
    assert_eq!(sets[1]["matched"], 2);

    // select() adds its fields to the result spans.
    let (_, body) = search(
        &f.c,
        &[
            (
                "q",
                "{ name = \"POST /payments\" } | select(span.http.response.status_code, kind)",
            ),
            ("limit", "1"),
        ],
    )
    .await;
    assert_eq!(
        body["traces"][0]["spanSets"][0]["spans"][0]["attributes"],
        json!([
            {"key": "http.response.status_code", "value": {"intValue": "500"}},
            {"key": "kind", "value": {"stringValue": "server"}},
            {"key": "service.name", "value": {"stringValue": "payment"}},
        ])
    );
}

#[tokio::test]
async fn tag_search_matches_as_tempo_does() {
    let f = fixture().await;
    // service.name and name by substring, root.* on the root span only.
    assert_eq!(
        found(&f, &[("tags", "service.name=pay")]).await,
        vec![f.failed_checkout.clone(), f.ok_checkout.clone()]
    );
    assert_eq!(
        found(&f, &[("tags", "root.service.name=gate")]).await,
        vec![f.failed_checkout.clone(), f.ok_checkout.clone()]
    );
    assert!(
        found(&f, &[("tags", "root.service.name=payment")])
            .await
            .is_empty()
    );
    assert_eq!(
        found(&f, &[("tags", "root.name=products")]).await,
        vec![f.fast_search.clone(), f.slow_search.clone()]
    );
    // Other attributes: the exact value.
    assert!(
        found(&f, &[("tags", "http.route=/api/check")])
            .await
            .is_empty()
    );
    assert_eq!(
        found(&f, &[("tags", "http.route=/api/checkout")])
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn tag_scopes_and_intrinsics() {
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    let c = start().await;
    let t = trace_id();
    let mut s = S::new(t, 1, "consume").kind(SpanKind::Consumer);
    s.span.events.push(Event {
        name: "exception".into(),
        attributes: vec![kv_str("exception.type", "Timeout")],
        ..Default::default()
    });
    s.span.links.push(Link {
        trace_id: vec![3; 16],
        span_id: vec![4; 8],
        attributes: vec![kv_str("messaging.operation", "publish")],
        ..Default::default()
    });
    post_proto(&c, &request("notification", vec![s])).await;

    let (_, body) = get(&c, "/api/search/tags").await;
    let names = body["tagNames"].as_array().unwrap();
    for want in ["service.name", "exception.type", "messaging.operation"] {
        assert!(names.contains(&json!(want)), "{want} in {body}");
    }
    let (_, body) = get(&c, "/api/search/tags?scope=intrinsic").await;
    assert_eq!(body["tagNames"].as_array().unwrap().len(), 25, "{body}");

    let (_, body) = get(&c, "/api/v2/search/tags").await;
    let scope = |name: &str| {
        body["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {body}"))["tags"]
            .clone()
    };
    assert_eq!(scope("event"), json!(["exception.type"]));
    assert_eq!(scope("link"), json!(["messaging.operation"]));
    let intrinsics = scope("intrinsic");
    assert_eq!(intrinsics.as_array().unwrap().len(), 25);
    for want in [
        "span:status",
        "trace:rootService",
        "event:name",
        "link:traceID",
        "instrumentation:name",
    ] {
        assert!(
            intrinsics.as_array().unwrap().contains(&json!(want)),
            "{want}"
        );
    }
    let (status, body) = get(&c, "/api/v2/search/tags?scope=bogus").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_scope"))
    );

    let (_, body) = get(&c, "/api/v2/search/tag/event:name/values").await;
    assert_eq!(
        body["tagValues"],
        json!([{"type": "string", "value": "exception"}])
    );
    let (_, body) = get(&c, "/api/v2/search/tag/link.messaging.operation/values").await;
    assert_eq!(
        body["tagValues"],
        json!([{"type": "string", "value": "publish"}])
    );
    assert_eq!(
        found_in(
            &c,
            "{ event:name = \"exception\" && event.exception.type = \"Timeout\" }"
        )
        .await,
        vec![hex::encode(t)]
    );
    assert_eq!(
        found_in(
            &c,
            "{ link:traceID = \"03030303030303030303030303030303\" }"
        )
        .await,
        vec![hex::encode(t)]
    );
}

async fn found_in(c: &Collector, q: &str) -> Vec<String> {
    let (status, body) = search(c, &[("q", q)]).await;
    assert_eq!(status, 200, "{q}: {body}");
    ids(&body)
}

#[tokio::test]
async fn tag_names_and_values() {
    let f = fixture().await;
    let (status, body) = get(&f.c, "/api/search/tags").await;
    assert_eq!(status, 200);
    let names = body["tagNames"].as_array().unwrap();
    for want in [
        "service.name",
        "http.response.status_code",
        "db.system.name",
        "http.route",
    ] {
        assert!(names.contains(&json!(want)), "{want} in {body}");
    }
    let (_, body) = get(&f.c, "/api/search/tag/service.name/values").await;
    assert_eq!(body["tagValues"], json!(["gateway", "payment", "search"]));
    let (_, body) = get(&f.c, "/api/search/tag/name/values").await;
    assert_eq!(
        body["tagValues"],
        json!([
            "GET /api/products",
            "POST /api/checkout",
            "POST /payments",
            "SELECT products",
            "processPayment"
        ])
    );

    let (_, body) = get(&f.c, "/api/v2/search/tags").await;
    let scopes = body["scopes"].as_array().unwrap();
    let resource = scopes.iter().find(|s| s["name"] == "resource").unwrap();
    assert!(
        resource["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("service.name"))
    );
    let span = scopes.iter().find(|s| s["name"] == "span").unwrap();
    assert!(
        span["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("http.response.status_code"))
    );
    assert!(
        !span["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("service.name"))
    );
    let (_, body) = get(
        &f.c,
        "/api/v2/search/tag/span.http.response.status_code/values",
    )
    .await;
    assert_eq!(
        body["tagValues"],
        json!([{"type": "int", "value": "200"}, {"type": "int", "value": "500"}])
    );
    let (_, body) = get(&f.c, "/api/v2/search/tag/status/values").await;
    assert_eq!(
        body["tagValues"],
        json!([{"type": "keyword", "value": "error"}, {"type": "keyword", "value": "unset"}])
    );
}

#[tokio::test]
async fn root_not_yet_received() {
    let c = start().await;
    let t = trace_id();
    post_proto(
        &c,
        &request("payment", vec![S::new(t, 2, "processPayment").parent(1)]),
    )
    .await;
    let (_, body) = search(&c, &[("q", "{}")]).await;
    assert_eq!(
        body["traces"][0]["rootServiceName"],
        "<root span not yet received>"
    );
    post_proto(
        &c,
        &request("gateway", vec![S::new(t, 1, "POST /api/checkout")]),
    )
    .await;
    let (_, body) = search(&c, &[("q", "{}")]).await;
    assert_eq!(body["traces"][0]["rootServiceName"], "gateway");
}

#[tokio::test]
async fn deeply_nested_traceql_is_a_400_and_the_collector_survives() {
    let f = fixture().await;
    // 1,500 levels overflowed the parser's stack and aborted the process.
    // 20,000 (three bytes each, encoded) is about as many as fit in a URI;
    // the parser's unit tests go to 100,000.
    let deep = format!("{{ {}", "(".repeat(20_000));
    let (status, body) = search(&f.c, &[("q", &deep)]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_query");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("nested too deeply") && msg.contains("64") && msg.contains("character"),
        "{msg}"
    );

    // At the limit (the spanset's `{` plus 63 parentheses) it still works.
    let at_limit = format!("{{ {}kind = server{} }}", "(".repeat(63), ")".repeat(63));
    assert_eq!(found(&f, &[("q", &at_limit)]).await.len(), 4);
    // And the collector keeps answering.
    assert_eq!(found(&f, &[]).await.len(), 4);
}

#[tokio::test]
async fn control_characters_are_a_400_naming_them() {
    let f = fixture().await;
    for (param, value, shown) in [
        ("q", "{ name = \"a\0b\" }", "U+0000"),
        ("q", "{ status = error }\0", "U+0000"),
        ("tags", "service.name=pay\u{1b}ment", "U+001B"),
        ("tags", "service.name=\"\u{7f}\"", "U+007F"),
        ("minDuration", "1\0s", "U+0000"),
    ] {
        let (status, body) = search(&f.c, &[(param, value)]).await;
        assert_eq!(status, 400, "{param}={value:?}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(shown) && msg.contains(param) && msg.contains("control character"),
            "{msg}"
        );
    }
    for path in [
        "/api/search/tag/service.na%00me/values",
        "/api/v2/search/tag/span.x%01/values",
    ] {
        let (status, body) = get(&f.c, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_tag");
    }
    // Not UTF-8 at all: the same JSON error shape.
    let (status, body) = get(&f.c, "/api/search?q=%FF").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_query");
    // Tabs and newlines are fine (multi-line TraceQL).
    assert_eq!(found(&f, &[("q", "{\n\tkind = server\n}")]).await.len(), 4);
}
