//! Start-up contract, bounds and shutdown.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use prost::Message;

use common::*;
use tracelab_collector::{Collector, CollectorConfig};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_one_listening_line_per_listener_with_the_real_address() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let c = start().await;
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["message"] == "listening")
        .collect();
    let found: Vec<(String, String)> = lines
        .iter()
        .map(|v| {
            (
                v["listener"].as_str().unwrap().to_string(),
                v["addr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("otlp_http".to_string(), c.otlp_http_addr().to_string()),
            ("otlp_grpc".to_string(), c.otlp_grpc_addr().to_string()),
            ("api".to_string(), c.api_addr().to_string()),
        ]
    );
    assert_ne!(c.api_addr().port(), 0);
}

#[tokio::test]
async fn oldest_traces_are_evicted_beyond_max_traces() {
    let c = start_with(CollectorConfig {
        max_traces: 5,
        ..CollectorConfig::ephemeral()
    })
    .await;
    let ids: Vec<[u8; 16]> = (0..8).map(|_| trace_id()).collect();
    for id in &ids {
        post_proto(
            &c,
            &request(
                "search",
                vec![
                    S::new(*id, 1, "GET /api/products"),
                    S::new(*id, 2, "SELECT").parent(1),
                ],
            ),
        )
        .await;
    }
    for old in &ids[..3] {
        assert_eq!(get_trace(&c, old).await.0, 404, "oldest traces are gone");
    }
    for kept in &ids[3..] {
        assert_eq!(get_trace(&c, kept).await.0, 200);
    }
    let stats = c.stats();
    assert_eq!(
        (
            stats.traces_stored,
            stats.spans_stored,
            stats.traces_evicted
        ),
        (5, 10, 3)
    );
    // Late spans of an evicted trace do not bring back more than the bound.
    post_proto(&c, &request("search", vec![S::new(ids[0], 3, "late")])).await;
    assert_eq!(c.stats().traces_stored, 5);
}

#[tokio::test]
async fn span_bound_evicts_and_caps_a_single_trace() {
    let c = start_with(CollectorConfig {
        max_spans: 10,
        ..CollectorConfig::ephemeral()
    })
    .await;
    let a = trace_id();
    let b = trace_id();
    post_proto(
        &c,
        &request("x", (1..=6).map(|i| S::new(a, i, "a")).collect()),
    )
    .await;
    post_proto(
        &c,
        &request("x", (1..=6).map(|i| S::new(b, i, "b")).collect()),
    )
    .await;
    assert_eq!(get_trace(&c, &a).await.0, 404);
    assert_eq!(get_trace(&c, &b).await.0, 200);
    // One trace with more spans than the whole store may hold is capped.
    let big = trace_id();
    post_proto(
        &c,
        &request("x", (1..=15).map(|i| S::new(big, i, "big")).collect()),
    )
    .await;
    let (_, body) = get_trace(&c, &big).await;
    assert_eq!(spans_of(&body["batches"]).len(), 10);
    let stats = c.stats();
    assert!(stats.spans_stored <= 10, "{stats:?}");
    assert_eq!(stats.spans_rejected, 5);
}

/// A gzip request whose spans carry `kib` KiB of (compressible) attribute
/// each: small on the wire, large in memory.
fn gzip_request(t: [u8; 16], spans: u8, kib: usize) -> Vec<u8> {
    let filler = "x".repeat(kib * 1024);
    let req = request(
        "x",
        (1..=spans)
            .map(|i| S::new(t, i, "big").attr(kv_str("payload", &filler)))
            .collect(),
    );
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&req.encode_to_vec()).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn byte_bound_holds_whatever_is_sent_and_keeps_the_newest_traces() {
    const MAX_BYTES: usize = 2 * 1024 * 1024;
    let c = start_with(CollectorConfig {
        max_bytes: MAX_BYTES,
        ..CollectorConfig::ephemeral()
    })
    .await;
    let url = format!("http://{}/v1/traces", c.otlp_http_addr());
    // 200 traces of 4 spans x 64 KiB: about 50 MiB in memory, 25 times the
    // bound, from well under 1 MiB of gzip on the wire.
    let mut sent = Vec::new();
    let mut wire = 0;
    for _ in 0..200 {
        let t = trace_id();
        let body = gzip_request(t, 4, 64);
        wire += body.len();
        let resp = post_gzip(&url, body).await;
        assert_eq!(resp.status(), 200);
        sent.push(t);
        let stats = c.stats();
        assert!(stats.bytes_stored <= MAX_BYTES as u64, "{stats:?}");
    }
    assert!(wire < 1024 * 1024, "{wire} bytes of gzip");
    let stats = c.stats();
    // Each trace is about 260 KB: the bound holds 7 of them.
    assert!(stats.bytes_stored > (MAX_BYTES / 2) as u64, "{stats:?}");
    assert!(stats.traces_stored >= 4, "{stats:?}");
    assert_eq!(stats.traces_evicted, 200 - stats.traces_stored);
    assert_eq!(stats.traces_evicted_for_bytes, stats.traces_evicted);
    // The newest traces are the ones kept.
    let kept = stats.traces_stored as usize;
    for t in &sent[200 - kept..] {
        assert_eq!(get_trace(&c, t).await.0, 200);
    }
    assert_eq!(get_trace(&c, &sent[200 - kept - 1]).await.0, 404);
    assert_eq!(get_trace(&c, &sent[0]).await.0, 404);
    let (status, body) = get(&c, "/api/tracelab/stats").await;
    assert_eq!(status, 200);
    assert_eq!(body["bytes_stored"], stats.bytes_stored);
    assert_eq!(
        body["traces_evicted_for_bytes"],
        stats.traces_evicted_for_bytes
    );

    // A request whose decoding alone would need more than the whole bound
    // (2.5 MiB inflated, as much again decoded) is refused with 413 before
    // it is inflated past the bound; the collector keeps what it had.
    let before = c.stats();
    let huge = trace_id();
    let resp = post_gzip(&url, gzip_request(huge, 40, 64)).await;
    assert_eq!(resp.status(), 413);
    let status = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(status.message.contains("memory"), "{}", status.message);
    let stats = c.stats();
    assert_eq!(stats.bytes_in_flight, 0, "{stats:?}");
    assert!(stats.bytes_stored <= MAX_BYTES as u64, "{stats:?}");
    assert_eq!(stats.spans_received, before.spans_received);
    assert_eq!(get_trace(&c, &huge).await.0, 404);
    // And the next ordinary request is stored as usual.
    let t = trace_id();
    assert_eq!(post_gzip(&url, gzip_request(t, 4, 64)).await.status(), 200);
    assert_eq!(get_trace(&c, &t).await.0, 200);
}

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[test]
fn default_byte_bound_is_documented_value() {
    assert_eq!(CollectorConfig::default().max_bytes, 256 * 1024 * 1024);
    assert_eq!(
        CollectorConfig::default().max_bytes,
        tracelab_collector::DEFAULT_MAX_BYTES
    );
}

#[tokio::test]
async fn shutdown_releases_the_ports_and_stats_are_served() {
    let c = start().await;
    post_proto(&c, &request("x", vec![S::new(trace_id(), 1, "a")])).await;
    let (status, stats) = get(&c, "/api/tracelab/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["spans_received"], 1);
    assert_eq!(stats["traces_stored"], 1);
    let api = c.api_addr();
    tokio::time::timeout(std::time::Duration::from_secs(10), c.shutdown())
        .await
        .expect("shutdown finishes");
    // The listener is closed: nothing answers on the API port any more.
    let after = client().get(format!("http://{api}/ready")).send().await;
    assert!(
        after.is_err(),
        "API still answering after shutdown: {after:?}"
    );
}

#[tokio::test]
async fn start_fails_when_a_port_is_taken() {
    let c = start().await;
    let err = Collector::start(CollectorConfig {
        api: c.api_addr(),
        ..CollectorConfig::ephemeral()
    })
    .await
    .err()
    .expect("bind error");
    assert!(format!("{err:#}").contains("Tempo API"), "{err:#}");
}

/// POSTs a gzipped OTLP/protobuf export request.
async fn post_gzip(url: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap()
}
