//! The services' tracer ([`LeanTracerProvider`]) against the SDK's
//! (`SdkTracerProvider`), both ending spans into the same kind of export
//! pipeline: the time one span takes the thread that starts and ends it,
//! sampled and dropped. The cases run in alternating slices of a few
//! milliseconds on one thread, so a busy machine slows them alike; the
//! tenth percentile of the slices is the figure least disturbed by it.
//!
//! A span here is shaped like a SERVER span of the lab: a child of the
//! current context, five attributes built only when it is recorded
//! (static keys, two owned string values), one more set before it ends,
//! put in a context and ended. The export threads send to a local
//! receiver that keeps nothing; their CPU is not counted.
//!
//! ```sh
//! cargo run --release -p tracelab-telemetry --example tracer_ab
//! ```
//!
//! With `TRACER_AB_SPANS=<n>` and `TRACER_AB_CASE=<case>` (`sdk-sampled`,
//! `lean-sampled`, `sdk-dropped` or `lean-dropped`) it runs a fixed amount
//! of work instead, for counting instructions
//! (`valgrind --tool=callgrind`): 1000 spans of that case as a warm-up,
//! then exactly `n`, then every provider shuts down; nothing is timed. The
//! difference between two runs (`n` and `2n`) is what `n` spans cost;
//! `scripts/span-instructions` does that.

use std::time::{Duration, Instant};

use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracelab_telemetry::export::Transport;
use tracelab_telemetry::stats::{QueueSettings, SpanCounters, export_pipeline};
use tracelab_telemetry::tracer::{LeanTracer, LeanTracerProvider};

#[path = "support/sink.rs"]
mod sink;

const SLICE: u32 = 1_000;
const SLICES: u32 = 400;
/// Spans before the counted ones in the fixed-work mode.
const FIXED_WARMUP: u32 = 1_000;

/// The export queue; in the fixed-work mode (`fixed`) a batch leaves only
/// when full or at shutdown, so the export threads' work does not depend
/// on how fast the run goes.
fn settings(fixed: bool) -> QueueSettings {
    let (scheduled_delay, min_interval) = if fixed {
        (Duration::from_secs(3600), Duration::from_secs(3600))
    } else {
        (Duration::from_millis(10), Duration::from_millis(50))
    };
    QueueSettings {
        max_queue: 1 << 20,
        max_batch: 512,
        scheduled_delay,
        min_interval,
    }
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("tracer-ab")
        .build()
}

fn attributes() -> Vec<KeyValue> {
    vec![
        KeyValue::new("http.request.method", "POST"),
        KeyValue::new("url.path", "/api/login".to_owned()),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("http.route", "/api/login"),
        KeyValue::new("server.address", "127.0.0.1".to_owned()),
    ]
}

/// One span the way `span::start_with_parent_lazy` started SDK spans.
fn sdk_span(tracer: &SdkTracer, parent: &Context) {
    let mut span = tracer
        .span_builder("POST /api/login")
        .with_kind(SpanKind::Server)
        .start_with_context(tracer, parent);
    if span.is_recording() {
        span.set_attributes(attributes());
    }
    let cx = parent.with_span(span);
    finish(&cx);
}

fn lean_span(tracer: &LeanTracer, parent: &Context) {
    let cx = tracer.start_in(
        parent,
        "POST /api/login".into(),
        SpanKind::Server,
        attributes,
    );
    finish(&cx);
}

fn finish(cx: &Context) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("http.response.status_code", 200_i64));
    span.end();
}

/// A case: its name, its `TRACER_AB_CASE` key, and one span of it.
type Case<'a> = (&'a str, &'a str, Box<dyn Fn() + 'a>);

fn main() {
    let fixed = std::env::var_os("TRACER_AB_SPANS").is_some();
    let sink = format!("http://{}/v1/traces", sink::start("otlp-sink"));
    let pipeline = || {
        export_pipeline(
            Transport::Http { url: sink.clone() },
            Duration::from_secs(5),
            settings(fixed),
            std::sync::Arc::new(SpanCounters::new()),
        )
        .expect("export thread")
    };
    let sdk = |sampler: Sampler| {
        SdkTracerProvider::builder()
            .with_span_processor(pipeline())
            .with_sampler(sampler)
            .with_resource(resource())
            .build()
    };
    let lean =
        |sampler: Sampler| LeanTracerProvider::new(Box::new(sampler), pipeline(), &resource());
    let (sdk_on, sdk_off) = (sdk(Sampler::AlwaysOn), sdk(Sampler::AlwaysOff));
    let (lean_on, lean_off) = (lean(Sampler::AlwaysOn), lean(Sampler::AlwaysOff));
    let (sdk_on_t, sdk_off_t) = (sdk_on.tracer("tracelab"), sdk_off.tracer("tracelab"));
    let (lean_on_t, lean_off_t) = (lean_on.tracer("tracelab"), lean_off.tracer("tracelab"));
    let parent = Context::new();

    let cases: Vec<Case<'_>> = vec![
        (
            "SDK tracer, sampled",
            "sdk-sampled",
            Box::new(|| sdk_span(&sdk_on_t, &parent)),
        ),
        (
            "lean tracer, sampled",
            "lean-sampled",
            Box::new(|| lean_span(&lean_on_t, &parent)),
        ),
        (
            "SDK tracer, dropped",
            "sdk-dropped",
            Box::new(|| sdk_span(&sdk_off_t, &parent)),
        ),
        (
            "lean tracer, dropped",
            "lean-dropped",
            Box::new(|| lean_span(&lean_off_t, &parent)),
        ),
    ];
    if let Ok(n) = std::env::var("TRACER_AB_SPANS") {
        let n: u32 = n.parse().expect("TRACER_AB_SPANS is a number");
        let key = std::env::var("TRACER_AB_CASE").unwrap_or_default();
        let Some((name, _, run)) = cases.iter().find(|(_, k, _)| *k == key) else {
            panic!("TRACER_AB_CASE is one of sdk-sampled, lean-sampled, sdk-dropped, lean-dropped");
        };
        for _ in 0..FIXED_WARMUP + n {
            run();
        }
        println!(
            "{name}: {} spans ({FIXED_WARMUP} of them warm-up)",
            FIXED_WARMUP + n
        );
    } else {
        run_slices(&cases);
    }
    let _ = (sdk_on.shutdown(), sdk_off.shutdown());
    let timeout = Duration::from_secs(5);
    let _ = (
        lean_on.shutdown_with_timeout(timeout),
        lean_off.shutdown_with_timeout(timeout),
    );
}

/// The timed run: every case in alternating slices.
fn run_slices(cases: &[Case<'_>]) {
    let mut spent = vec![Vec::new(); cases.len()];
    let started = Instant::now();
    for _ in 0..SLICES {
        for (i, (_, _, run)) in cases.iter().enumerate() {
            let t0 = Instant::now();
            for _ in 0..SLICE {
                run();
            }
            spent[i].push(t0.elapsed().as_nanos() as f64 / f64::from(SLICE));
        }
    }
    println!(
        "ns per span on the ending thread, {SLICES} alternating slices of {SLICE} spans ({:.1} s):",
        started.elapsed().as_secs_f64()
    );
    for ((name, _, _), mut v) in cases.iter().zip(spent) {
        v.sort_by(f64::total_cmp);
        println!(
            "  {name:22} p10 {:7.0}  median {:7.0}",
            v[v.len() / 10],
            v[v.len() / 2]
        );
    }
}
