//! What extracting and injecting trace context costs per request, with
//! tracelab's strict W3C Level 2 propagator and with the SDK's lenient
//! `TraceContextPropagator` for comparison, on HTTP headers as a service
//! receives them. Prints nanoseconds per call (best of 5 rounds).
//!
//! ```sh
//! cargo run --release -p tracelab-telemetry --example propagation_cost
//! ```

use std::hint::black_box;
use std::time::Instant;

use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracelab_telemetry::tracecontext::W3cTraceContext;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let all: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!all.is_empty()).then_some(all)
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, v.parse().unwrap());
    }
    map
}

/// Nanoseconds per call of `f`, the best of 5 rounds of `n` calls.
fn ns_per_call(n: u32, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    const N: u32 = 200_000;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let cases = [
        ("no trace headers", headers(&[])),
        ("traceparent", headers(&[("traceparent", parent)])),
        (
            "traceparent + tracestate (2 members)",
            headers(&[
                ("traceparent", parent),
                ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            ]),
        ),
        (
            "invalid traceparent",
            headers(&[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            )]),
        ),
    ];
    let ours = W3cTraceContext;
    let sdk = TraceContextPropagator::new();
    let base = Context::new();
    println!(
        "{:<40} {:>14} {:>14}",
        "extract from HTTP headers", "tracelab ns", "SDK ns"
    );
    for (name, map) in &cases {
        let carrier = Headers(map);
        let a = ns_per_call(N, || {
            black_box(ours.extract_with_context(&base, black_box(&carrier)));
        });
        let b = ns_per_call(N, || {
            black_box(sdk.extract_with_context(&base, black_box(&carrier)));
        });
        println!("{name:<40} {a:>14.0} {b:>14.0}");
    }
    println!();
    println!(
        "{:<40} {:>14} {:>14}",
        "inject into a HashMap", "tracelab ns", "SDK ns"
    );
    for (name, map) in &cases[1..3] {
        let cx = ours.extract_with_context(&base, &Headers(map));
        let a = ns_per_call(N, || {
            let mut out = std::collections::HashMap::new();
            ours.inject_context(black_box(&cx), &mut out);
            black_box(out);
        });
        let b = ns_per_call(N, || {
            let mut out = std::collections::HashMap::new();
            sdk.inject_context(black_box(&cx), &mut out);
            black_box(out);
        });
        println!("{name:<40} {a:>14.0} {b:>14.0}");
    }
}
