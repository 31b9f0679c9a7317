//! What the spans of one login cost a service, without the network: the
//! gateway's SERVER span (the real [`server_span`] middleware on an axum
//! router), its CLIENT span to auth (the attributes and header injection
//! of the real client middleware, [`client::start_client_span`]), and
//! auth's SERVER span, a child of the injected `traceparent`, with the
//! `enduser.id` attribute its handler sets. Three spans per iteration, as
//! in `tracelab bench`'s login; the batches go to a local OTLP/HTTP
//! receiver that answers 200 and keeps nothing.
//!
//! The mode comes from the environment, as for a service:
//!
//! ```sh
//! cargo build --release -p tracelab-telemetry --example span_cost
//! OTEL_SDK_DISABLED=true            target/release/examples/span_cost
//! OTEL_TRACES_SAMPLER=always_off    target/release/examples/span_cost
//! OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 target/release/examples/span_cost
//! OTEL_TRACES_SAMPLER=parentbased_always_on target/release/examples/span_cost
//! ```
//!
//! Prints, per login (3 spans): the wall time of the thread that runs the
//! requests and the CPU time of the process but the receiver's thread
//! (the requests' thread and the export thread, until the round's spans
//! are exported), the best and the median of 7 rounds, in µs.
//!
//! With `SPAN_COST_LOGINS=<n>` it runs a fixed amount of work instead, for
//! counting instructions (`valgrind --tool=callgrind`): a warm-up of 1000
//! logins, then exactly `n`, then a flush and shutdown; nothing is timed and
//! the counters are printed. The difference between two runs (`n` and `2n`)
//! is what `n` logins cost, start-up and warm-up cancelling out;
//! `scripts/span-instructions` does that for every sampling mode. With
//! `OTEL_BSP_SCHEDULE_DELAY` and `TRACELAB_EXPORT_MIN_INTERVAL` set high,
//! batches leave only when full (and at shutdown), so the export thread's
//! work does not depend on how fast the run goes. `SPAN_COST_PACE_US=<µs>`
//! sleeps that long after each login of that mode, so spans end at a
//! service's pace rather than as fast as one thread can: with the default
//! delays, batches then leave on their timers (for counting the export
//! thread's syscalls and wake-ups with `strace -f`).

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::from_fn;
use axum::routing::post;
use http::{HeaderMap, HeaderValue, Method};
use opentelemetry::KeyValue;
use opentelemetry::trace::{FutureExt, TraceContextExt};
use tower::ServiceExt;
use tracelab_telemetry::client::start_client_span;
use tracelab_telemetry::propagation::inject_http;
use tracelab_telemetry::server::server_span;

#[path = "support/sink.rs"]
mod sink;

const ITERATIONS: u32 = 50_000;
const ROUNDS: usize = 7;
/// Logins before the counted ones in the fixed-work mode.
const FIXED_WARMUP: u32 = 1_000;

/// The receiver's thread, whose CPU is not the service's.
const SINK_THREAD: &str = "otlp-sink";

/// The CPU time of every thread of this process but the receiver's so
/// far, from the scheduler's nanosecond counters
/// (`/proc/self/task/*/schedstat`).
fn process_cpu() -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == SINK_THREAD {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(ns)
}

async fn gateway_login(req: Request) -> http::Response<Body> {
    let _ = req;
    // The CLIENT span to auth, as the client middleware makes it.
    let url = reqwest::Url::parse("http://127.0.0.1:8081/login").expect("static URL");
    // The gateway names its call to auth after the template `/login`.
    let cx = start_client_span(&Method::POST, &url, Some("/login"));
    let mut headers = HeaderMap::new();
    inject_http(&cx, &mut headers);
    let answer = auth()
        .oneshot(auth_request(headers))
        .with_context(cx.clone())
        .await
        .expect("infallible");
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(answer.status().as_u16()),
    ));
    span.end();
    http::Response::new(Body::from("{}"))
}

async fn auth_login() -> &'static str {
    opentelemetry::Context::current()
        .span()
        .set_attribute(KeyValue::new("enduser.id", "u-alice"));
    "{}"
}

fn auth() -> Router {
    Router::new()
        .route("/login", post(auth_login))
        .layer(from_fn(server_span))
}

fn gateway() -> Router {
    Router::new()
        .route("/api/login", post(gateway_login))
        .layer(from_fn(server_span))
}

fn auth_request(mut headers: HeaderMap) -> Request {
    headers.insert(
        http::header::HOST,
        HeaderValue::from_static("127.0.0.1:8081"),
    );
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("tracelab-gateway"),
    );
    let mut req = Request::new(Body::empty());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = "/login".parse().expect("static URI");
    *req.headers_mut() = headers;
    req
}

fn gateway_request() -> Request {
    let mut req = Request::new(Body::empty());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = "/api/login".parse().expect("static URI");
    let headers = req.headers_mut();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_static("127.0.0.1:8080"),
    );
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static("bench"));
    req
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut config =
        tracelab_telemetry::TelemetryConfig::from_env("span-cost").expect("OTEL_* variables");
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        config.endpoint = format!("http://{}", sink::start(SINK_THREAD));
    }
    // One thread ends spans far faster than a service does: a queue big
    // enough for a round keeps every span encoded and counted, as in a
    // service, instead of dropped.
    if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        config.max_queue = 1 << 20;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let telemetry = runtime
        .block_on(async { tracelab_telemetry::init_with(config).expect("telemetry starts") });
    let gateway = gateway();
    if let Some(n) = std::env::var("SPAN_COST_LOGINS")
        .ok()
        .map(|n| n.parse::<u32>().expect("SPAN_COST_LOGINS is a number"))
    {
        let pace = std::env::var("SPAN_COST_PACE_US")
            .ok()
            .map(|us| Duration::from_micros(us.parse().expect("SPAN_COST_PACE_US is a number")));
        runtime.block_on(async {
            for _ in 0..FIXED_WARMUP + n {
                let response = gateway.clone().oneshot(gateway_request()).await;
                std::hint::black_box(response.map(|r| r.status()).ok());
                if let Some(pace) = pace {
                    // Blocking on purpose: this thread has nothing else to do.
                    std::thread::sleep(pace);
                }
            }
            telemetry.shutdown().await;
        });
        let stats = tracelab_telemetry::stats::export_stats();
        println!(
            "{} logins ({FIXED_WARMUP} of them warm-up); spans ended {}, exported {}, failed {}, dropped {}",
            FIXED_WARMUP + n,
            stats.spans_ended,
            stats.spans_exported,
            stats.spans_failed,
            stats.spans_dropped_queue_full + stats.spans_dropped_by_fault,
        );
        return;
    }
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for _ in 0..ITERATIONS / 4 {
            let _ = gateway.clone().oneshot(gateway_request()).await;
        }
        for _ in 0..ROUNDS {
            let (t0, c0) = (Instant::now(), process_cpu());
            for _ in 0..ITERATIONS {
                let response = gateway.clone().oneshot(gateway_request()).await;
                std::hint::black_box(response.map(|r| r.status()).ok());
            }
            let n = f64::from(ITERATIONS);
            wall.push(t0.elapsed().as_secs_f64() * 1e6 / n);
            // Let the export thread finish this round's batches.
            let until = Instant::now() + Duration::from_secs(10);
            while tracelab_telemetry::stats::export_stats().spans_queued > 0
                && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            cpu.push((process_cpu() - c0).as_secs_f64() * 1e6 / n);
        }
    });
    let stats = tracelab_telemetry::stats::export_stats();
    runtime.block_on(telemetry.shutdown());
    println!(
        "µs per login (3 spans): wall best {:.2} median {:.2}; process CPU best {:.2} median {:.2}; spans ended {}, exported {}",
        wall.iter().copied().fold(f64::INFINITY, f64::min),
        median(wall.clone()),
        cpu.iter().copied().fold(f64::INFINITY, f64::min),
        median(cpu.clone()),
        stats.spans_ended,
        stats.spans_exported,
    );
}
