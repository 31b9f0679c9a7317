//! A service's `/health` shows the spans it lost: telemetry set up as a
//! service does it (`tracelab_telemetry::init_with`, a 4-span export queue
//! through `OTEL_BSP_MAX_QUEUE_SIZE`'s setting) behind a collector that
//! accepts connections and never answers.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use opentelemetry::trace::{Span as _, Tracer as _};
use serde_json::Value;
use tracelab_service::health::{Check, health_response};
use tracelab_telemetry::TelemetryConfig;
use tracelab_telemetry::config::{Protocol, SamplerOverride};

/// Accepts every connection and keeps it open without reading or answering.
fn blackhole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}

async fn health_telemetry() -> Value {
    let response = health_response("svc", vec![Check::ok("self")], None);
    assert_eq!(
        response.status(),
        200,
        "lost spans never make a service unhealthy"
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    body["telemetry"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_counts_the_spans_a_full_export_queue_dropped() {
    let telemetry = tracelab_telemetry::init_with(TelemetryConfig {
        service_name: "svc".into(),
        endpoint: blackhole(),
        protocol: Protocol::HttpProtobuf,
        sdk_disabled: false,
        sampler: Some(SamplerOverride::AlwaysOn),
        sampling_file: None,
        log_filter: "warn".into(),
        max_queue: 4,
        max_batch: 512,
        scheduled_delay: std::time::Duration::from_millis(50),
        min_interval: std::time::Duration::ZERO,
    })
    .expect("telemetry starts");

    const SPANS: u64 = 50;
    let tracer = opentelemetry::global::tracer("health-test");
    for i in 0..SPANS {
        tracer.start(format!("span {i}")).end();
    }

    // The exporter gives up on the batch it sent after its 5 s timeout;
    // wait until every span has an outcome.
    let deadline = Instant::now() + Duration::from_secs(60);
    let t = loop {
        let t = health_telemetry().await;
        if t["spans_queued"] == 0 {
            break t;
        }
        assert!(Instant::now() < deadline, "spans still queued: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k} in {t}"));
    assert_eq!(n("spans_ended"), SPANS, "{t}");
    assert_eq!(n("queue_capacity"), 4, "{t}");
    assert_eq!(n("spans_exported"), 0, "the blackhole never answers: {t}");
    assert!(
        (1..=SPANS - 1).contains(&n("spans_failed")),
        "what was sent failed: {t}"
    );
    assert!(n("spans_dropped_queue_full") >= SPANS / 2, "{t}");
    assert_eq!(
        n("spans_exported")
            + n("spans_failed")
            + n("spans_dropped_by_fault")
            + n("spans_dropped_queue_full")
            + n("spans_queued"),
        n("spans_ended"),
        "every ended span has exactly one outcome: {t}"
    );
    telemetry.shutdown().await;
}
