//! Memory of the embedded collector after a burst of small gzip requests
//! that inflate to large spans (issue 12: 185 KB of gzip took the collector
//! from 11.5 MB to 229 MB before the store had a byte bound).
//!
//! ```text
//! cargo run -p tracelab-collector --example memory_burst [MAX_BYTES_MIB] [REQUESTS] [IN_FLIGHT]
//! ```
//!
//! `MAX_BYTES_MIB` 0 means no byte bound (the behaviour before it existed);
//! `IN_FLIGHT` (default 1) requests are sent at once. Prints the gzip bytes
//! sent, the requests refused (503 busy: retried after 100 ms; 413 never
//! fits: counted), the store's byte estimate and the process's resident
//! memory (Linux `/proc/self/status`) before, right after, one second after
//! (settled) and at peak. The collector and the client share the process,
//! so the figures include the client's few buffers (the request bodies are
//! made before the peak is measured).

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tracelab_collector::{Collector, CollectorConfig};

/// Spans per request and the size of each one's attribute: 15 MiB per
/// request, under the 16 MiB decompressed body limit.
const SPANS: u8 = 15;
const ATTR_BYTES: usize = 1024 * 1024;

/// `VmRSS` and `VmHWM` (peak) of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn gzip_request(n: u32) -> Vec<u8> {
    let mut trace_id = [0u8; 16];
    trace_id[..4].copy_from_slice(&(n + 1).to_be_bytes());
    trace_id[15] = 1;
    let filler = "x".repeat(ATTR_BYTES);
    let spans = (1..=SPANS)
        .map(|s| Span {
            trace_id: trace_id.to_vec(),
            span_id: vec![s, 0, 0, 0, 0, 0, 0, 1],
            name: "burst".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![KeyValue {
                key: "payload".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(filler.clone())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&req.encode_to_vec()).expect("in memory");
    e.finish().expect("in memory")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let max_mib: usize = args.next().map_or(Ok(256), |a| a.parse())?;
    let requests: u32 = args.next().map_or(Ok(40), |a| a.parse())?;
    let in_flight: usize = args.next().map_or(Ok(1), |a| a.parse())?;
    let max_bytes = if max_mib == 0 {
        usize::MAX
    } else {
        max_mib * 1024 * 1024
    };
    let collector = Collector::start(CollectorConfig {
        max_bytes,
        ..CollectorConfig::ephemeral()
    })
    .await?;
    let url = format!("http://{}/v1/traces", collector.otlp_http_addr());
    let client = reqwest::Client::new();
    // The bodies are made first, and the peak counter reset after, so the
    // peak is the collector's, not the client's building of 15 MiB requests.
    let bodies: Vec<Vec<u8>> = (0..requests).map(gzip_request).collect();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (before, _) = rss_mib();
    let mut wire = 0;
    let (mut busy, mut too_large) = (0, 0);
    let mut next = 0;
    while next < requests {
        let batch: Vec<u32> = (next..requests.min(next + in_flight as u32)).collect();
        next += batch.len() as u32;
        let sends = batch.into_iter().map(|n| {
            let body = bodies[n as usize].clone();
            let client = client.clone();
            let url = url.clone();
            async move {
                let len = body.len();
                let mut busy = 0u32;
                loop {
                    let resp = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .header("content-encoding", "gzip")
                        .body(body.clone())
                        .send()
                        .await?;
                    match resp.status().as_u16() {
                        200 => return anyhow::Ok((len, busy, 0u32)),
                        413 => return Ok((len, busy, 1)),
                        503 => {
                            busy += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        s => anyhow::bail!("export: {s}"),
                    }
                }
            }
        });
        for r in futures::future::join_all(sends).await {
            let (len, b, t) = r?;
            wire += len;
            busy += b;
            too_large += t;
        }
    }
    let (after, _) = rss_mib();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (settled, peak) = rss_mib();
    let stats = collector.stats();
    println!(
        "| max_bytes | in flight | gzip sent | inflated | refused 503/413 | store estimate | traces kept/evicted | RSS before | RSS after | RSS settled | RSS peak |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {in_flight} | {:.0} KB | {} MiB | {busy}/{too_large} | {:.1} MiB | {}/{} | {before:.1} MiB | {after:.1} MiB | {settled:.1} MiB | {peak:.1} MiB |",
        if max_mib == 0 {
            "none".to_string()
        } else {
            format!("{max_mib} MiB")
        },
        wire as f64 / 1000.0,
        requests as usize * SPANS as usize * ATTR_BYTES / (1024 * 1024),
        stats.bytes_stored as f64 / (1024.0 * 1024.0),
        stats.traces_stored,
        stats.traces_evicted,
    );
    collector.shutdown().await;
    Ok(())
}
