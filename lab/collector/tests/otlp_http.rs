//! OTLP/HTTP receiver end to end: POST over real HTTP, read back through the
//! Tempo API.

mod common;

use std::io::Write;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;

#[tokio::test]
async fn protobuf_export_is_queryable_with_tempo_shapes() {
    let c = start().await;
    let t = trace_id();
    let root = S::new(t, 1, "POST /api/checkout")
        .kind(SpanKind::Server)
        .ms(120)
        .attr(kv_str("http.route", "/api/checkout"))
        .attr(kv_int("http.response.status_code", 502))
        .attr(kv_bool("retry", true))
        .attr(kv_f64("payment.amount", 12.5))
        .error("upstream failed");
    let child = S::new(t, 2, "POST /payments")
        .kind(SpanKind::Client)
        .parent(1);
    post_proto(&c, &request("gateway", vec![root, child])).await;

    let (status, body) = get_trace(&c, &t).await;
    assert_eq!(status, 200, "{body}");
    let batches = &body["batches"];
    assert_eq!(batches.as_array().unwrap().len(), 1);
    let rs = &batches[0];
    assert_eq!(
        rs["resource"]["attributes"],
        json!([
            {"key": "service.name", "value": {"stringValue": "gateway"}},
            {"key": "process.pid", "value": {"intValue": "4242"}},
        ])
    );
    assert_eq!(
        rs["scopeSpans"][0]["scope"],
        json!({"name": "gateway-tracer", "version": "1.2.3"})
    );

    let spans = spans_of(batches);
    assert_eq!(spans.len(), 2);
    let root = spans
        .iter()
        .find(|s| s["name"] == "POST /api/checkout")
        .unwrap();
    let child = spans
        .iter()
        .find(|s| s["name"] == "POST /payments")
        .unwrap();
    // Ids are base64 in trace bodies, as Tempo returns them.
    assert_eq!(root["traceId"], b64(&t));
    assert_eq!(root["spanId"], b64(&span_id(1)));
    assert!(
        root.get("parentSpanId").is_none(),
        "root has no parent: {root}"
    );
    assert_eq!(child["parentSpanId"], b64(&span_id(1)));
    assert_eq!(root["kind"], "SPAN_KIND_SERVER");
    assert_eq!(child["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(
        root["status"],
        json!({"code": "STATUS_CODE_ERROR", "message": "upstream failed"})
    );
    assert_eq!(
        child["status"],
        json!({}),
        "UNSET status is an empty object, as in Tempo"
    );
    let start: u64 = root["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u64 = root["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert_eq!(end - start, 120_000_000);
    assert_eq!(
        root["attributes"],
        json!([
            {"key": "http.route", "value": {"stringValue": "/api/checkout"}},
            {"key": "http.response.status_code", "value": {"intValue": "502"}},
            {"key": "retry", "value": {"boolValue": true}},
            {"key": "payment.amount", "value": {"doubleValue": 12.5}},
        ])
    );

    // v2 shape carries the same resource spans.
    let (status, v2) = get(&c, &format!("/api/v2/traces/{}", hex::encode(t))).await;
    assert_eq!(status, 200);
    assert_eq!(v2["trace"]["resourceSpans"], body["batches"]);

    let stats = c.stats();
    assert_eq!(
        (
            stats.spans_received,
            stats.traces_stored,
            stats.spans_stored
        ),
        (2, 1, 2)
    );
    c.shutdown().await;
}

#[tokio::test]
async fn later_spans_merge_into_the_same_trace_across_services() {
    let c = start().await;
    let t = trace_id();
    post_proto(
        &c,
        &request(
            "gateway",
            vec![S::new(t, 1, "POST /api/checkout").kind(SpanKind::Server)],
        ),
    )
    .await;
    post_proto(
        &c,
        &request("payment", vec![S::new(t, 2, "processPayment").parent(1)]),
    )
    .await;
    // The async consumer reports much later, from another process.
    post_proto(
        &c,
        &request(
            "notification",
            vec![
                S::new(t, 3, "process payment.completed")
                    .kind(SpanKind::Consumer)
                    .parent(2),
            ],
        ),
    )
    .await;
    // A retried batch must not duplicate spans.
    post_proto(
        &c,
        &request("payment", vec![S::new(t, 2, "processPayment").parent(1)]),
    )
    .await;

    let (_, body) = get_trace(&c, &t).await;
    let services: Vec<&str> = body["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["resource"]["attributes"][0]["value"]["stringValue"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(services, ["gateway", "payment", "notification"]);
    assert_eq!(spans_of(&body["batches"]).len(), 3);
    assert_eq!(c.stats().traces_stored, 1);
}

#[tokio::test]
async fn json_export_follows_the_otlp_json_spec() {
    let c = start().await;
    let t = trace_id();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "search"}}]},
        "scopeSpans": [{"scope": {"name": "manual"}, "spans": [
            {"traceId": hex::encode(t), "spanId": hex::encode(span_id(1)), "parentSpanId": "",
             "name": "GET /api/products", "kind": 2,
             "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": 1700000000250000000u64,
             "attributes": [
                {"key": "http.response.status_code", "value": {"intValue": "200"}},
                {"key": "db.rows", "value": {"intValue": 3}},
                {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}}}
             ],
             "events": [{"timeUnixNano": "1700000000100000000", "name": "cache miss"}],
             "status": {"code": 1}},
            // Enum names and base64 ids, as Tempo and protobuf's JSON mapping write them.
            {"traceId": b64(&t), "spanId": b64(&span_id(2)), "parentSpanId": b64(&span_id(1)),
             "name": "SELECT products", "kind": "SPAN_KIND_CLIENT",
             "startTimeUnixNano": "1700000000010000000", "endTimeUnixNano": "1700000000020000000",
             "status": {"code": "STATUS_CODE_ERROR", "message": "timeout"}}
        ]}]
    }]});
    let resp = client()
        .post(format!("http://{}/v1/traces", c.otlp_http_addr()))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap(), json!({}));

    let (status, body) = get_trace(&c, &t).await;
    assert_eq!(status, 200, "{body}");
    let spans = spans_of(&body["batches"]);
    let root = spans
        .iter()
        .find(|s| s["name"] == "GET /api/products")
        .unwrap();
    let db = spans
        .iter()
        .find(|s| s["name"] == "SELECT products")
        .unwrap();
    assert_eq!(root["kind"], "SPAN_KIND_SERVER");
    assert_eq!(root["status"], json!({"code": "STATUS_CODE_OK"}));
    assert_eq!(root["endTimeUnixNano"], "1700000000250000000");
    assert_eq!(
        root["attributes"][1],
        json!({"key": "db.rows", "value": {"intValue": "3"}})
    );
    assert_eq!(
        root["attributes"][2]["value"]["arrayValue"]["values"][1],
        json!({"stringValue": "b"})
    );
    assert_eq!(
        root["events"][0],
        json!({"timeUnixNano": "1700000000100000000", "name": "cache miss"})
    );
    assert_eq!(db["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(db["parentSpanId"], b64(&span_id(1)));
    assert_eq!(db["status"]["code"], "STATUS_CODE_ERROR");
}

#[tokio::test]
async fn gzip_bodies_are_accepted_in_both_encodings() {
    let c = start().await;
    let t1 = trace_id();
    let t2 = trace_id();
    let gz = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let proto = request("auth", vec![S::new(t1, 1, "POST /verify")]).encode_to_vec();
    let resp = client()
        .post(format!("http://{}/v1/traces", c.otlp_http_addr()))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gz(&proto))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let decoded = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(decoded.partial_success, None);

    let json_body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": hex::encode(t2), "spanId": hex::encode(span_id(1)), "name": "x"}]}]}]});
    let resp = client()
        .post(format!("http://{}/v1/traces", c.otlp_http_addr()))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz(json_body.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(get_trace(&c, &t1).await.0, 200);
    assert_eq!(get_trace(&c, &t2).await.0, 200);
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_status_body() {
    let c = start().await;
    let url = format!("http://{}/v1/traces", c.otlp_http_addr());
    let post = |ct: &'static str, ce: Option<&'static str>, body: Vec<u8>| {
        let mut req = client()
            .post(url.clone())
            .header("content-type", ct)
            .body(body);
        if let Some(ce) = ce {
            req = req.header("content-encoding", ce);
        }
        req.send()
    };

    // Protobuf garbage: the error body is a protobuf google.rpc.Status.
    let resp = post(
        "application/x-protobuf",
        None,
        vec![0xff, 0xff, 0xff, 0x0f, 0x12],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.bytes().await.unwrap();
    // Field 1 (code) = 3, then field 2 (message).
    assert_eq!(&body[..2], &[0x08, 0x03]);
    assert!(String::from_utf8_lossy(&body).contains("protobuf"));

    // A valid request cut short inside a span: a 400 naming the problem,
    // and none of its spans stored.
    let valid = request(
        "gateway",
        vec![
            S::new(trace_id(), 1, "root").attr(kv_str("http.route", "/a")),
            S::new(trace_id(), 2, "child").parent(1),
        ],
    )
    .encode_to_vec();
    let resp = post(
        "application/x-protobuf",
        None,
        valid[..valid.len() - 3].to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..2], &[0x08, 0x03]);
    assert!(
        String::from_utf8_lossy(&body).contains("buffer underflow"),
        "{body:?}"
    );
    assert_eq!(c.stats().spans_received, 0);

    // JSON garbage and JSON of the wrong shape.
    for bad in [
        &b"{not json"[..],
        b"[1,2]",
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#,
    ] {
        let resp = post("application/json", None, bad.to_vec()).await.unwrap();
        assert_eq!(resp.status(), 400, "{}", String::from_utf8_lossy(bad));
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(err["code"], 3);
        assert!(err["message"].as_str().unwrap().contains("JSON"), "{err}");
    }

    // A body that claims gzip but is not.
    let resp = post(
        "application/x-protobuf",
        Some("gzip"),
        b"definitely not gzip".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = post(
        "application/json",
        Some("gzip"),
        b"\x1f\x8b\x08\x00garbage".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert!(err["message"].as_str().unwrap().contains("gzip"), "{err}");

    // Unknown media type or encoding.
    assert_eq!(
        post("text/plain", None, b"hi".to_vec())
            .await
            .unwrap()
            .status(),
        415
    );
    assert_eq!(
        post("application/json", Some("br"), b"{}".to_vec())
            .await
            .unwrap()
            .status(),
        415
    );

    // Nothing was stored, and the collector still works.
    assert_eq!(c.stats().spans_received, 0);
    let t = trace_id();
    post_proto(&c, &request("gateway", vec![S::new(t, 1, "ok")])).await;
    assert_eq!(get_trace(&c, &t).await.0, 200);
}

#[tokio::test]
async fn invalid_ids_are_reported_as_partial_success() {
    let c = start().await;
    let t = trace_id();
    let mut bad_trace = S::new(t, 2, "bad trace id");
    bad_trace.span.trace_id = vec![1, 2, 3];
    let mut zero_span = S::new(t, 3, "zero span id");
    zero_span.span.span_id = vec![0; 8];
    let req = request("gateway", vec![S::new(t, 1, "good"), bad_trace, zero_span]);
    let resp = client()
        .post(format!("http://{}/v1/traces", c.otlp_http_addr()))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let decoded = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    let partial = decoded.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("invalid"),
        "{}",
        partial.error_message
    );
    let stats = c.stats();
    assert_eq!(
        (
            stats.spans_received,
            stats.spans_rejected,
            stats.spans_stored
        ),
        (3, 2, 1)
    );
}

#[tokio::test]
async fn trace_lookup_errors_and_health_endpoints() {
    let c = start().await;
    let (status, body) = get(&c, "/api/traces/0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "trace_not_found");
    // v2 answers an unknown id as Tempo 3.0.3 does: 200 with an empty trace.
    assert_eq!(
        get(&c, "/api/v2/traces/0123456789abcdef0123456789abcdef").await,
        (200, serde_json::json!({"trace": {}}))
    );
    for bad in ["not-hex", "0123456789abcdef0123456789abcdef00"] {
        let (status, body) = get(&c, &format!("/api/traces/{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["code"], "bad_trace_id");
    }
    let text = |path: &'static str| {
        let url = format!("http://{}{}", c.api_addr(), path);
        async move {
            let r = client().get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(text("/ready").await, (200, "ready".into()));
    assert_eq!(text("/api/echo").await, (200, "echo".into()));

    // A 64-bit id (16 hex digits) is left-padded, as Tempo does.
    let mut t = [0u8; 16];
    t[8..].copy_from_slice(&[9, 8, 7, 6, 5, 4, 3, 2]);
    post_proto(&c, &request("legacy", vec![S::new(t, 1, "old tracer")])).await;
    assert_eq!(get(&c, "/api/traces/0908070605040302").await.0, 200);
}

#[tokio::test]
async fn trace_by_id_in_protobuf_when_asked() {
    use opentelemetry_proto::tonic::trace::v1::TracesData;
    let c = start().await;
    let t = trace_id();
    post_proto(
        &c,
        &request(
            "gateway",
            vec![S::new(t, 1, "a"), S::new(t, 2, "b").parent(1)],
        ),
    )
    .await;
    let resp = client()
        .get(format!(
            "http://{}/api/traces/{}",
            c.api_addr(),
            hex::encode(t)
        ))
        .header("accept", "application/protobuf")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let data = TracesData::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(data.resource_spans[0].scope_spans[0].spans.len(), 2);
    assert_eq!(
        data.resource_spans[0].scope_spans[0].spans[1].parent_span_id,
        span_id(1).to_vec()
    );
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_with_413_and_nothing_is_kept() {
    let c = start().await;
    // 64 MiB of zeros (four times the limit) is about 64 KiB of gzip. The
    // body is cut off at the limit while decompressing, never held whole.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..64 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 256 * 1024, "{} bytes", bomb.len());
    for ct in ["application/x-protobuf", "application/json"] {
        let resp = client()
            .post(format!("http://{}/v1/traces", c.otlp_http_addr()))
            .header("content-type", ct)
            .header("content-encoding", "gzip")
            .body(bomb.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413, "{ct}");
        let text = String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned();
        assert!(
            text.contains(&tracelab_collector::MAX_BODY_BYTES.to_string()),
            "{text}"
        );
    }
    assert_eq!(c.stats().spans_received, 0);
    assert_eq!(c.stats().bytes_stored, 0);
    // Still serving.
    let t = trace_id();
    post_proto(&c, &request("gateway", vec![S::new(t, 1, "ok")])).await;
    assert_eq!(get_trace(&c, &t).await.0, 200);
}
