//! Query latency of the embedded collector's Tempo API with a full store:
//! trace by id, spanset searches, a structural query and a metrics query.
//!
//! ```text
//! cargo run --release -p tracelab-collector --example query_bench
//! BENCH_TRACES=10000 cargo run --release -p tracelab-collector --example query_bench
//! ```
//!
//! Loads `BENCH_TRACES` (default 100,000) traces of 10 spans each over
//! OTLP/HTTP, spread over the last 15 minutes (1 in 50 with an error), then
//! asks each query `RUNS` times and prints p50 / p95 / max. Ports are picked
//! by the OS; the run stops by itself.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tracelab_collector::{Collector, CollectorConfig};

const TRACES_PER_REQUEST: usize = 100;
const RUNS: usize = 20;
const BY_ID_RUNS: usize = 500;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// (service, span name, kind, parent index, duration ms) of the 10 spans.
const SHAPE: [(&str, &str, i32, usize, u64); 10] = [
    ("gateway", "POST /api/checkout", 2, usize::MAX, 300),
    ("gateway", "POST /verify", 3, 0, 12),
    ("auth", "POST /verify", 2, 1, 10),
    ("gateway", "POST /payments", 3, 0, 220),
    ("payment", "POST /payments", 2, 3, 200),
    ("payment", "processPayment", 1, 4, 150),
    ("payment", "SELECT orders", 3, 5, 5),
    ("payment", "callExternalPaymentAPI", 3, 5, 120),
    ("payment-provider", "POST /v1/charges", 2, 7, 110),
    ("notification", "payment.completed process", 5, 5, 20),
];

fn request(first: usize, now_ns: u64, total: usize) -> (ExportTraceServiceRequest, Vec<[u8; 16]>) {
    let mut by_service: Vec<(&str, Vec<Span>)> = Vec::new();
    let mut ids = Vec::new();
    for t in first..first + TRACES_PER_REQUEST {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&0xbe_4c_u64.to_be_bytes());
        id[8..].copy_from_slice(&(t as u64 + 1).to_be_bytes());
        ids.push(id);
        // Spread over the last 15 minutes.
        let start = now_ns - 900_000_000_000 + (t as u64 * 900_000_000_000 / total as u64);
        let error = t % 50 == 0;
        for (s, (service, name, kind, parent, ms)) in SHAPE.iter().enumerate() {
            let span_id = |n: usize| (((t as u64) << 8) | (n as u64 + 1)).to_be_bytes().to_vec();
            let span = Span {
                trace_id: id.to_vec(),
                span_id: span_id(s),
                parent_span_id: if *parent == usize::MAX {
                    vec![]
                } else {
                    span_id(*parent)
                },
                name: (*name).into(),
                kind: *kind,
                start_time_unix_nano: start + s as u64 * 1_000_000,
                end_time_unix_nano: start + s as u64 * 1_000_000 + ms * 1_000_000,
                attributes: vec![kv(
                    "http.response.status_code",
                    Value::IntValue(if error { 500 } else { 200 }),
                )],
                status: (error && (s == 0 || s == 4 || s == 5 || s == 7)).then(|| Status {
                    code: StatusCode::Error as i32,
                    message: "boom".into(),
                }),
                ..Default::default()
            };
            match by_service.iter_mut().find(|(n, _)| n == service) {
                Some((_, v)) => v.push(span),
                None => by_service.push((service, vec![span])),
            }
        }
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, ids)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = std::env::var("BENCH_TRACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut config = CollectorConfig::ephemeral();
    config.max_traces = total * 2;
    config.max_spans = total * 20;
    config.max_bytes = usize::MAX / 2;
    let collector = Collector::start(config).await?;
    let client = reqwest::Client::new();
    let otlp = format!("http://{}/v1/traces", collector.otlp_http_addr());
    let api = format!("http://{}", collector.api_addr());
    let now_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;

    let load = Instant::now();
    let mut ids = Vec::new();
    for first in (0..total).step_by(TRACES_PER_REQUEST) {
        let (req, mut batch) = request(first, now_ns, total);
        ids.append(&mut batch);
        let r = client
            .post(&otlp)
            .header("content-type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "ingest: {}", r.status());
    }
    let stats = collector.stats();
    println!(
        "loaded {} traces, {} spans in {:.1} s",
        stats.traces_stored,
        stats.spans_stored,
        load.elapsed().as_secs_f64()
    );

    println!(
        "{:<60} {:>9} {:>9} {:>9} {:>8}",
        "query", "p50 ms", "p95 ms", "max ms", "results"
    );
    let mut by_id = Vec::new();
    for k in 0..BY_ID_RUNS {
        let id = hex::encode(ids[k * 7919 % ids.len()]);
        let t = Instant::now();
        let r = client.get(format!("{api}/api/traces/{id}")).send().await?;
        anyhow::ensure!(r.status().is_success());
        r.bytes().await?;
        by_id.push(t.elapsed());
    }
    by_id.sort();
    println!(
        "{:<60} {:>9} {:>9} {:>9} {:>8}",
        "trace by id (/api/traces/{id})",
        ms(percentile(&by_id, 0.5)),
        ms(percentile(&by_id, 0.95)),
        ms(*by_id.last().unwrap()),
        1
    );

    let queries: [(&str, &str, &str); 5] = [
        ("/api/search", "{ status = error }", ""),
        (
            "/api/search",
            "{ resource.service.name = \"payment\" && duration > 140ms }",
            "",
        ),
        ("/api/search", "{ kind = server } >> { status = error }", ""),
        (
            "/api/search",
            "{ status = error } !< { status = error }",
            "",
        ),
        (
            "/api/metrics/query_range",
            "{ } | rate() by (resource.service.name)",
            "15m",
        ),
    ];
    for (path, q, window) in queries {
        let mut times = Vec::new();
        let mut results = 0;
        for _ in 0..RUNS {
            let mut params = vec![("q", q.to_string())];
            if window.is_empty() {
                params.push(("limit", "20".into()));
            } else {
                params.push(("since", window.into()));
            }
            let url = reqwest::Url::parse_with_params(&format!("{api}{path}"), &params)?;
            let t = Instant::now();
            let r = client.get(url).send().await?;
            anyhow::ensure!(r.status().is_success(), "{q}: {}", r.status());
            let body: serde_json::Value = r.json().await?;
            times.push(t.elapsed());
            results = body["traces"]
                .as_array()
                .or_else(|| body["series"].as_array())
                .map_or(0, Vec::len);
        }
        times.sort();
        println!(
            "{:<60} {:>9} {:>9} {:>9} {:>8}",
            q,
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95)),
            ms(*times.last().unwrap()),
            results
        );
    }
    collector.shutdown().await;
    Ok(())
}
