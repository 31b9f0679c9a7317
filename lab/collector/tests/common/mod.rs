//! Helpers shared by the integration tests: span builders, OTLP posting and
//! Tempo API queries against a collector started on port 0.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::Value as Json;
use tracelab_collector::{Collector, CollectorConfig};

pub(crate) async fn start() -> Collector {
    start_with(CollectorConfig::ephemeral()).await
}

pub(crate) async fn start_with(config: CollectorConfig) -> Collector {
    Collector::start(config).await.expect("collector starts")
}

/// A random-looking but unique trace id per call (tests run in parallel in
/// separate processes and share nothing, so a counter plus the pid is enough).
pub(crate) fn trace_id() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(std::process::id() as u64 ^ 0x5eed_0000_0000_0000).to_be_bytes());
    id[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    id
}

pub(crate) fn span_id(n: u8) -> [u8; 8] {
    [0xab, 0, 0, 0, 0, 0, 0, n]
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub(crate) fn kv_str(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

pub(crate) fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

pub(crate) fn kv_bool(k: &str, v: bool) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::BoolValue(v)),
        }),
        ..Default::default()
    }
}

pub(crate) fn kv_f64(k: &str, v: f64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::DoubleValue(v)),
        }),
        ..Default::default()
    }
}

/// A span builder with sensible defaults.
#[derive(Clone)]
pub(crate) struct S {
    pub span: Span,
}

impl S {
    pub(crate) fn new(trace: [u8; 16], id: u8, name: &str) -> S {
        let start = now_ns();
        S {
            span: Span {
                trace_id: trace.to_vec(),
                span_id: span_id(id).to_vec(),
                name: name.into(),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_000_000,
                ..Default::default()
            },
        }
    }
    pub(crate) fn parent(mut self, id: u8) -> S {
        self.span.parent_span_id = span_id(id).to_vec();
        self
    }
    pub(crate) fn kind(mut self, k: SpanKind) -> S {
        self.span.kind = k as i32;
        self
    }
    pub(crate) fn start(mut self, start_ns: u64) -> S {
        let d = self.span.end_time_unix_nano - self.span.start_time_unix_nano;
        self.span.start_time_unix_nano = start_ns;
        self.span.end_time_unix_nano = start_ns + d;
        self
    }
    pub(crate) fn ms(mut self, ms: u64) -> S {
        self.span.end_time_unix_nano = self.span.start_time_unix_nano + ms * 1_000_000;
        self
    }
    pub(crate) fn attr(mut self, kv: KeyValue) -> S {
        self.span.attributes.push(kv);
        self
    }
    pub(crate) fn error(mut self, msg: &str) -> S {
        self.span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: msg.into(),
        });
        self
    }
}

/// One export request: a resource with `service.name` and the spans.
pub(crate) fn request(service: &str, spans: Vec<S>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(service, spans)],
    }
}

pub(crate) fn resource_spans(service: &str, spans: Vec<S>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv_str("service.name", service), kv_int("process.pid", 4242)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: format!("{service}-tracer"),
                version: "1.2.3".into(),
                ..Default::default()
            }),
            spans: spans.into_iter().map(|s| s.span).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// POSTs a protobuf export and asserts 200.
pub(crate) async fn post_proto(c: &Collector, req: &ExportTraceServiceRequest) {
    let resp = client()
        .post(format!("http://{}/v1/traces", c.otlp_http_addr()))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "export failed: {:?}", resp.text().await);
}

/// GET on the Tempo API, returning status and JSON body (Null if not JSON).
pub(crate) async fn get(c: &Collector, path_and_query: &str) -> (u16, Json) {
    let resp = client()
        .get(format!("http://{}{}", c.api_addr(), path_and_query))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Json::Null))
}

pub(crate) async fn get_trace(c: &Collector, id: &[u8; 16]) -> (u16, Json) {
    get(c, &format!("/api/traces/{}", hex::encode(id))).await
}

/// Search with query parameters given as pairs (encoded properly).
pub(crate) async fn search(c: &Collector, params: &[(&str, &str)]) -> (u16, Json) {
    let url =
        reqwest::Url::parse_with_params(&format!("http://{}/api/search", c.api_addr()), params)
            .unwrap();
    let resp = client().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Json::Null))
}

/// Trace ids (hex) in a search response, in order.
pub(crate) fn ids(body: &Json) -> Vec<String> {
    body["traces"]
        .as_array()
        .unwrap_or_else(|| panic!("no traces array in {body}"))
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_string())
        .collect()
}

/// All spans of a Tempo trace body (`batches` or `resourceSpans`), flattened.
pub(crate) fn spans_of(batches: &Json) -> Vec<Json> {
    batches
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap().iter())
        .flat_map(|ss| ss["spans"].as_array().unwrap().iter().cloned())
        .collect()
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
