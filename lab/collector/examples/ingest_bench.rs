//! Ingest throughput and "POST to queryable" delay of the embedded collector.
//!
//! ```text
//! cargo run --release -p tracelab-collector --example ingest_bench
//! ```
//!
//! Everything runs on 127.0.0.1 with ports picked by the OS; the run is
//! bounded (a fixed number of requests) and stops by itself.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tracelab_collector::{Collector, CollectorConfig};

const REQUESTS: usize = 2_000;
const TRACES_PER_REQUEST: usize = 10;
const SPANS_PER_TRACE: usize = 10;
const CONCURRENCY: usize = 4;
const LATENCY_SAMPLES: usize = 200;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn trace_request(
    seed: u64,
    traces: usize,
    spans: usize,
) -> (ExportTraceServiceRequest, Vec<[u8; 16]>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut out = Vec::new();
    let mut ids = Vec::new();
    for t in 0..traces {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&seed.to_be_bytes());
        id[8..].copy_from_slice(&(t as u64 + 1).to_be_bytes());
        ids.push(id);
        for s in 0..spans {
            out.push(Span {
                trace_id: id.to_vec(),
                span_id: ((s as u64 + 1) | (seed << 16)).to_be_bytes().to_vec(),
                parent_span_id: if s == 0 {
                    vec![]
                } else {
                    (1u64 | (seed << 16)).to_be_bytes().to_vec()
                },
                name: format!("op-{s}"),
                kind: 2,
                start_time_unix_nano: now + s as u64 * 1_000,
                end_time_unix_nano: now + 5_000_000,
                attributes: vec![
                    kv("http.route", Value::StringValue("/api/checkout".into())),
                    kv("http.response.status_code", Value::IntValue(200)),
                ],
                status: (s == 3 && t % 7 == 0).then(|| Status {
                    code: StatusCode::Error as i32,
                    message: "boom".into(),
                }),
                ..Default::default()
            });
        }
    }
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("bench".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: out,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (req, ids)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let collector = Collector::start(CollectorConfig::ephemeral()).await?;
    let url = format!("http://{}/v1/traces", collector.otlp_http_addr());
    let client = reqwest::Client::new();

    // Throughput: pre-encoded protobuf bodies, CONCURRENCY posting loops.
    let bodies: Vec<Vec<u8>> = (0..REQUESTS)
        .map(|i| {
            trace_request(i as u64 + 1, TRACES_PER_REQUEST, SPANS_PER_TRACE)
                .0
                .encode_to_vec()
        })
        .collect();
    let chunks: Vec<Vec<Vec<u8>>> = {
        let mut chunks = vec![Vec::new(); CONCURRENCY];
        for (i, b) in bodies.into_iter().enumerate() {
            chunks[i % CONCURRENCY].push(b);
        }
        chunks
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for body in chunk {
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                assert!(r.status().is_success());
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed();
    let spans = (REQUESTS * TRACES_PER_REQUEST * SPANS_PER_TRACE) as f64;

    // Delay from POST to queryable, one 15-span trace at a time.
    let api = format!("http://{}", collector.api_addr());
    let mut delays = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES {
        let (req, ids) = trace_request(1_000_000 + i as u64, 1, 15);
        let body = req.encode_to_vec();
        let t0 = Instant::now();
        client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await?;
        let trace_url = format!("{api}/api/traces/{}", hex::encode(ids[0]));
        loop {
            if client.get(&trace_url).send().await?.status().is_success() {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(5),
                "trace never became queryable"
            );
        }
        delays.push(t0.elapsed());
    }
    delays.sort();

    // Search over a full store.
    let search_started = Instant::now();
    let search_url = reqwest::Url::parse_with_params(
        &format!("{api}/api/search"),
        &[
            (
                "q",
                "{ status = error && span.http.route = \"/api/checkout\" }",
            ),
            ("limit", "20"),
        ],
    )?;
    let r = client.get(search_url).send().await?;
    anyhow::ensure!(r.status().is_success(), "search failed");
    let search_time = search_started.elapsed();

    let stats = collector.stats();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| ingest ({REQUESTS} protobuf requests x {} spans, {CONCURRENCY} clients) | {:.0} spans/s ({:.2} s) |",
        TRACES_PER_REQUEST * SPANS_PER_TRACE,
        spans / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "| POST -> queryable (15-span trace, {LATENCY_SAMPLES} runs) | p50 {:?}, p99 {:?}, max {:?} |",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays[delays.len() - 1]
    );
    println!(
        "| TraceQL search over {} stored traces ({} spans) | {:?} |",
        stats.traces_stored, stats.spans_stored, search_time
    );
    println!(
        "| traces evicted (bound {}) | {} |",
        CollectorConfig::default().max_traces,
        stats.traces_evicted
    );
    collector.shutdown().await;
    Ok(())
}
