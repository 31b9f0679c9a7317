//! Ingest cost and memory per span of the embedded collector with batches
//! shaped like the lab's own exports: one service per request, 6 or 7 spans
//! per request (6.6 on average, what the lab's services send) from several
//! 10-span checkout traces, the attributes the lab's telemetry sets (HTTP server and
//! client spans, database spans with their query text) and the lab's
//! resource attributes (service name, version, namespace, SDK).
//!
//! ```text
//! cargo build --release -p tracelab-collector --example lab_batches
//! target/release/examples/lab_batches [SPANS]   # default 300000
//! ```
//!
//! The collector runs on a runtime of its own with ONE worker thread
//! (threads named `collector`); the client posts from another runtime over
//! OTLP/HTTP protobuf, 4 requests in flight. The collector's CPU time is the
//! sum of its threads' user and system time (Linux `/proc/self/task`), so
//! the client's work is not counted. Memory: the store's byte estimate and
//! the growth of the process's resident memory, both per 100,000 stored
//! spans (the store's bounds are set high enough to keep every span).

use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tracelab_collector::{Collector, CollectorConfig};

const IN_FLIGHT: usize = 4;
const SERVICES: [&str; 6] = [
    "gateway",
    "auth",
    "catalog",
    "payment",
    "payment-provider",
    "notification",
];

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn text(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// A checkout trace's spans: (service, name, kind, parent index, ms).
const CHECKOUT: [(usize, &str, i32, usize, u64); 10] = [
    (0, "POST /api/checkout", 2, usize::MAX, 300),
    (0, "POST", 3, 0, 12),
    (1, "POST /verify", 2, 1, 10),
    (0, "POST", 3, 0, 220),
    (3, "POST /payments", 2, 3, 200),
    (3, "processPayment", 1, 4, 150),
    (3, "SELECT orders", 3, 5, 5),
    (3, "POST", 3, 5, 120),
    (4, "POST /v1/charges", 2, 7, 110),
    (5, "payment.completed process", 5, 5, 20),
];

/// Span `s` of trace `t`, with the attributes the lab's telemetry sets for
/// its kind (HTTP server, HTTP client, database, consumer).
fn span(t: u64, s: usize) -> Span {
    let (_, name, kind, parent, ms) = CHECKOUT[s];
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&0x1ab_u64.to_be_bytes());
    trace_id[8..].copy_from_slice(&(t + 1).to_be_bytes());
    let span_id = |i: usize| ((t << 8) | (i as u64 + 1)).to_be_bytes().to_vec();
    let start = 1_760_000_000_000_000_000 + t * 30_000_000 + s as u64 * 1_000_000;
    let attributes = match (kind, name) {
        (2, route) => {
            let (method, path) = route.split_once(' ').unwrap_or(("POST", route));
            vec![
                kv("http.request.method", text(method)),
                kv("url.path", text(path)),
                kv("url.scheme", text("http")),
                kv("http.route", text(path)),
                kv("server.address", text("127.0.0.1")),
                kv("server.port", Value::IntValue(8080)),
                kv("user_agent.original", text("tracelab-load/0.1")),
                kv("http.response.status_code", Value::IntValue(200)),
            ]
        }
        (3, "SELECT orders") => vec![
            kv("db.system.name", text("postgresql")),
            kv("db.namespace", text("tracelab")),
            kv("db.operation.name", text("SELECT")),
            kv("db.collection.name", text("orders")),
            kv(
                "db.query.text",
                text("SELECT id, status, total_cents FROM orders WHERE id = $1"),
            ),
        ],
        (3, _) => vec![
            kv("http.request.method", text("POST")),
            kv("url.full", text("http://127.0.0.1:8083/payments")),
            kv("server.address", text("127.0.0.1")),
            kv("server.port", Value::IntValue(8083)),
            kv("http.response.status_code", Value::IntValue(201)),
        ],
        _ => vec![
            kv("messaging.system", text("rabbitmq")),
            kv("messaging.destination.name", text("tracelab.events")),
            kv("messaging.operation.type", text("process")),
            kv("messaging.operation.name", text("process")),
            kv(
                "messaging.rabbitmq.destination.routing_key",
                text("payment.completed"),
            ),
            kv("messaging.message.id", text(&format!("{t:016x}"))),
        ],
    };
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id(s),
        parent_span_id: if parent == usize::MAX {
            Vec::new()
        } else {
            span_id(parent)
        },
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + ms * 1_000_000,
        attributes,
        status: (t % 50 == 7 && s == 7).then(|| Status {
            code: StatusCode::Error as i32,
            message: "upstream answered 502".into(),
        }),
        flags: 0x301,
        ..Default::default()
    }
}

/// The lab's exports: each service batches the spans it finishes and sends
/// a batch when it holds 6 or 7 (6.6 on average), so a request holds spans
/// of several traces and a trace arrives in several requests.
struct Exports {
    next_trace: u64,
    pending: Vec<Vec<Span>>,
    batches: u64,
}

impl Exports {
    fn new() -> Self {
        Exports {
            next_trace: 0,
            pending: vec![Vec::new(); SERVICES.len()],
            batches: 0,
        }
    }

    /// The next request body and its span count.
    fn next_request(&mut self) -> (Vec<u8>, u64) {
        loop {
            let want = if self.batches % 5 < 3 { 7 } else { 6 };
            if let Some(service) = self.pending.iter().position(|p| p.len() >= want) {
                self.batches += 1;
                let spans: Vec<Span> = self.pending[service].drain(..want).collect();
                return (encode(service, spans), want as u64);
            }
            let t = self.next_trace;
            self.next_trace += 1;
            for (s, (service, ..)) in CHECKOUT.iter().enumerate() {
                self.pending[*service].push(span(t, s));
            }
        }
    }
}

fn encode(service: usize, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", text(SERVICES[service])),
                    kv("service.version", text("0.1.0")),
                    kv("service.namespace", text("tracelab")),
                    kv("telemetry.sdk.language", text("rust")),
                    kv("telemetry.sdk.name", text("opentelemetry")),
                    kv("telemetry.sdk.version", text("0.33.0")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "tracelab-telemetry".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// User + system CPU seconds of this process's threads named `name`.
fn cpu_seconds(name: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... : comm may hold spaces, so split after ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the comm: state is field 3, utime 14, stime 15 (1-based).
        let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        total += (utime + stime) / ticks;
    }
    total
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let total: u64 = std::env::args().nth(1).map_or(Ok(300_000), |a| a.parse())?;
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("collector")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("client")
        .enable_all()
        .build()?;
    let mut config = CollectorConfig::ephemeral();
    config.max_traces = total as usize;
    config.max_spans = total as usize * 2;
    config.max_bytes = usize::MAX / 2;
    let collector = server.block_on(Collector::start(config))?;
    let url = format!("http://{}/v1/traces", collector.otlp_http_addr());

    let rss_before = rss_mib();
    let cpu_before = cpu_seconds("collector");
    let started = Instant::now();
    let (sent, requests) = client_rt.block_on(async move {
        let client = reqwest::Client::new();
        let mut exports = Exports::new();
        let mut next = 0u64;
        let mut r = 0u64;
        let mut in_flight = tokio::task::JoinSet::new();
        while next < total {
            let (body, count) = exports.next_request();
            r += 1;
            next += count;
            if in_flight.len() >= IN_FLIGHT {
                in_flight.join_next().await;
            }
            let client = client.clone();
            let url = url.clone();
            in_flight.spawn(async move {
                let resp = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                assert!(resp.status().is_success(), "{}", resp.status());
            });
        }
        while in_flight.join_next().await.is_some() {}
        (next, r)
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds("collector") - cpu_before;
    let stats = collector.stats();
    let rss_after = rss_mib();
    let per_100k = |x: f64| x * 100_000.0 / stats.spans_stored as f64;

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| spans sent / stored | {sent} / {} ({requests} requests) |",
        stats.spans_stored,
    );
    println!(
        "| collector CPU (1 worker thread) | {cpu:.2} s: {:.0} spans per CPU-second |",
        sent as f64 / cpu
    );
    println!(
        "| wall time | {wall:.2} s: {:.0} spans/s |",
        sent as f64 / wall
    );
    println!(
        "| store estimate per 100k spans | {:.1} MiB ({:.0} B/span) |",
        per_100k(stats.bytes_stored as f64 / 1048576.0),
        stats.bytes_stored as f64 / stats.spans_stored as f64
    );
    println!(
        "| RSS growth per 100k spans | {:.1} MiB (RSS {rss_before:.1} -> {rss_after:.1} MiB) |",
        per_100k(rss_after - rss_before)
    );
    server.block_on(collector.shutdown());
    Ok(())
}
