//! The services' tracer ([`LeanTracerProvider`]) against a real OTLP/HTTP
//! receiver: what it exports must be the spans the code made (ids,
//! parents, kinds, attributes, events, links, status, flags), a span the
//! sampler drops must build nothing and still propagate, the head rules
//! switch live, and the counters stay exact through limits, faults and
//! shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{Span as OtlpSpan, span::SpanKind as OtlpKind};
use opentelemetry_sdk::Resource;
use prost::Message;
use tracelab_telemetry::chaos::{self, TelemetryFaults};
use tracelab_telemetry::export::Transport;
use tracelab_telemetry::sampling::{HeadBased, HeadControl, HeadSampler};
use tracelab_telemetry::stats::{QueueSettings, SpanCounters, export_pipeline};
use tracelab_telemetry::tracecontext::{TRACEPARENT, extract_http_headers, inject_http_headers};
use tracelab_telemetry::tracer::{LIMIT, LeanTracer, LeanTracerProvider};

/// Every span the receiver was sent, in arrival order, with its resource's
/// `service.name`.
#[derive(Default, Clone)]
struct Received(Arc<Mutex<Vec<(String, OtlpSpan)>>>);

impl Received {
    fn spans(&self) -> Vec<OtlpSpan> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }

    fn named(&self, name: &str) -> OtlpSpan {
        let spans = self.spans();
        let mut found = spans.iter().filter(|s| s.name == name);
        let span = found
            .next()
            .unwrap_or_else(|| panic!("no span {name:?} among {:?}", names(&spans)));
        assert!(found.next().is_none(), "one span {name:?}");
        span.clone()
    }
}

fn names(spans: &[OtlpSpan]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

async fn receiver(received: Received) -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            |axum::extract::State(received): axum::extract::State<Received>, body: Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut spans = received.0.lock().unwrap();
                for rs in request.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            any_value::Value::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for span in ss.spans {
                            spans.push((service.clone(), span));
                        }
                    }
                }
                ExportTraceServiceResponse::default().encode_to_vec()
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app.with_state(received))
            .await
            .unwrap()
    });
    url
}

fn rules(rate: f64, per_route: &[(&str, f64)]) -> HeadBased {
    HeadBased {
        kind: "probabilistic".into(),
        rate,
        per_service: Default::default(),
        per_route: per_route.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

/// A provider as `init` builds one, with `control`'s head rules, exporting
/// to `url`.
fn provider(
    url: String,
    control: &HeadControl,
    counters: &Arc<SpanCounters>,
) -> LeanTracerProvider {
    let pipeline = export_pipeline(
        Transport::Http { url },
        Duration::from_secs(5),
        QueueSettings {
            max_queue: 1024,
            max_batch: 512,
            scheduled_delay: Duration::from_millis(10),
            min_interval: Duration::ZERO,
        },
        counters.clone(),
    )
    .expect("the export thread starts");
    LeanTracerProvider::new(
        Box::new(HeadSampler::with_control(control.clone())),
        pipeline,
        &Resource::builder_empty()
            .with_service_name("lean-test")
            .build(),
    )
}

async fn flush(provider: &LeanTracerProvider) {
    let provider = provider.clone();
    tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .unwrap()
        .expect("flushed");
}

fn attr(span: &OtlpSpan, key: &str) -> Option<any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn text(s: &str) -> Option<any_value::Value> {
    Some(any_value::Value::StringValue(s.into()))
}

fn start(
    tracer: &LeanTracer,
    parent: &Context,
    name: &'static str,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
) -> Context {
    tracer.start_in(parent, name.into(), kind, move || attributes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_spans_arrive_whole_under_their_parents() {
    let received = Received::default();
    let counters = Arc::new(SpanCounters::new());
    let control = HeadControl::new(rules(1.0, &[]), "lean-test");
    let provider = provider(receiver(received.clone()).await, &control, &counters);
    let tracer = provider.tracer("tracelab");

    // A SERVER span under a remote parent, as the server middleware starts it.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        TRACEPARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let remote = extract_http_headers(&Context::new(), &headers);
    let server = start(
        &tracer,
        &remote,
        "POST /api/login",
        SpanKind::Server,
        vec![KeyValue::new("url.path", "/api/login")],
    );
    assert!(server.span().is_recording());
    let client = start(
        &tracer,
        &server,
        "POST /login",
        SpanKind::Client,
        vec![KeyValue::new("server.port", 8081_i64)],
    );
    // Its traceparent names it, sampled, in the caller's trace.
    let mut outgoing = http::HeaderMap::new();
    inject_http_headers(&client, &mut outgoing);
    let client_sc = client.span().span_context().clone();
    assert_eq!(
        outgoing[TRACEPARENT].to_str().unwrap(),
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            client_sc.span_id()
        )
    );
    let client_span = client.span();
    client_span.set_attribute(KeyValue::new("http.response.status_code", 503_i64));
    client_span.add_event(
        "exception",
        vec![KeyValue::new("exception.message", "upstream down")],
    );
    client_span.set_status(Status::error("503 Service Unavailable"));
    client_span.set_status(Status::Unset);
    client_span.end();
    assert!(!client_span.is_recording(), "an ended span records nothing");
    client_span.set_attribute(KeyValue::new("after.end", true));
    server.span().set_status(Status::Ok);
    server
        .span()
        .set_status(Status::error("too late: Ok is final"));
    server.span().end();
    flush(&provider).await;

    let server_otlp = received.named("POST /api/login");
    let client_otlp = received.named("POST /login");
    let trace_id = hex(&client_otlp.trace_id);
    assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&server_otlp.trace_id), trace_id);
    assert_eq!(hex(&server_otlp.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(client_otlp.parent_span_id, server_otlp.span_id);
    assert_eq!(hex(&client_otlp.span_id), client_sc.span_id().to_string());
    assert_eq!(server_otlp.kind, OtlpKind::Server as i32);
    assert_eq!(client_otlp.kind, OtlpKind::Client as i32);
    // W3C flags (sampled) plus "has is_remote" (0x100), and "is remote"
    // (0x200) only for the span whose parent came over the wire.
    assert_eq!(server_otlp.flags, 0x301);
    assert_eq!(client_otlp.flags, 0x101);
    assert_eq!(attr(&server_otlp, "url.path"), text("/api/login"));
    assert_eq!(
        attr(&client_otlp, "server.port"),
        Some(any_value::Value::IntValue(8081))
    );
    assert_eq!(
        attr(&client_otlp, "http.response.status_code"),
        Some(any_value::Value::IntValue(503))
    );
    assert_eq!(attr(&client_otlp, "after.end"), None);
    let status = client_otlp.status.clone().unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (2, "503 Service Unavailable")
    );
    assert_eq!(server_otlp.status.clone().unwrap().code, 1, "Ok stays");
    assert_eq!(client_otlp.events.len(), 1);
    assert_eq!(client_otlp.events[0].name, "exception");
    assert!(client_otlp.start_time_unix_nano <= client_otlp.end_time_unix_nano);
    assert!(server_otlp.start_time_unix_nano <= client_otlp.start_time_unix_nano);
    assert!(client_otlp.end_time_unix_nano <= server_otlp.end_time_unix_nano);
    assert_eq!(received.0.lock().unwrap()[0].0, "lean-test");

    let stats = counters.snapshot();
    assert_eq!(
        (stats.spans_ended, stats.spans_exported, stats.spans_queued),
        (2, 2, 0),
        "{stats:?}"
    );
    assert_eq!(control.counts().sampled, 0, "no root was started here");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_span_builds_nothing_still_propagates_and_the_rules_switch_live() {
    let received = Received::default();
    let counters = Arc::new(SpanCounters::new());
    let control = HeadControl::new(rules(1.0, &[("GET /api/products", 0.0)]), "lean-test");
    let provider = provider(receiver(received.clone()).await, &control, &counters);
    let tracer = provider.tracer("tracelab");
    let built = AtomicUsize::new(0);
    let attributes = || {
        built.fetch_add(1, Ordering::SeqCst);
        vec![KeyValue::new("url.path", "/api/products")]
    };

    let root = tracer.start_in(
        &Context::new(),
        "GET /api/products".into(),
        SpanKind::Server,
        attributes,
    );
    assert!(!root.span().is_recording());
    let sc = root.span().span_context().clone();
    assert!(sc.is_valid() && !sc.is_sampled(), "{sc:?}");
    let child = tracer.start_in(&root, "GET /products".into(), SpanKind::Client, attributes);
    assert!(!child.span().is_recording(), "the child follows its root");
    assert_eq!(child.span().span_context().trace_id(), sc.trace_id());
    let mut outgoing = http::HeaderMap::new();
    inject_http_headers(&child, &mut outgoing);
    assert_eq!(
        outgoing[TRACEPARENT].to_str().unwrap(),
        format!(
            "00-{}-{}-00",
            sc.trace_id(),
            child.span().span_context().span_id()
        ),
        "the trace goes on, unsampled"
    );
    child.span().set_attribute(KeyValue::new("ignored", 1_i64));
    child.span().end();
    root.span().end();
    assert_eq!(built.load(Ordering::SeqCst), 0, "no attribute was built");

    // The rules switched while the service runs: the next root is kept.
    control
        .replace(rules(1.0, &[("GET /api/products", 1.0)]))
        .unwrap();
    let kept = tracer.start_in(
        &Context::new(),
        "GET /api/products".into(),
        SpanKind::Server,
        attributes,
    );
    assert!(kept.span().is_recording());
    kept.span().end();
    assert_eq!(built.load(Ordering::SeqCst), 1);
    flush(&provider).await;

    assert_eq!(names(&received.spans()), vec!["GET /api/products"]);
    let counts = control.counts();
    assert_eq!((counts.sampled, counts.not_sampled), (1, 1), "{counts:?}");
    let stats = counters.snapshot();
    assert_eq!(
        (stats.spans_ended, stats.spans_exported),
        (1, 1),
        "only the recorded span counts: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_faults_a_forgotten_end_and_shutdown_keep_the_counters_exact() {
    let received = Received::default();
    let counters = Arc::new(SpanCounters::new());
    let control = HeadControl::new(rules(1.0, &[]), "lean-test");
    let provider = provider(receiver(received.clone()).await, &control, &counters);
    let tracer = provider.tracer("tracelab");

    // Over the limit: the first LIMIT attributes are kept, the rest counted.
    let many: Vec<KeyValue> = (0..LIMIT as i64 + 2)
        .map(|i| KeyValue::new(format!("a{i}"), i))
        .collect();
    let cx = tracer.start_in(&Context::new(), "many".into(), SpanKind::Internal, || many);
    cx.span().set_attribute(KeyValue::new("one.more", 1_i64));
    cx.span().end();

    // Dropped without end(): it ends then.
    {
        let _forgotten = tracer.start("forgotten");
    }

    // The drop_spans fault: ended, counted as dropped, not exported.
    chaos::set(TelemetryFaults {
        drop_spans: true,
        ..Default::default()
    });
    tracer.start("dropped by fault").end();
    // A skewed clock: the span's times move by a minute.
    chaos::set(TelemetryFaults {
        clock_skew_ms: 60_000,
        ..Default::default()
    });
    let before = SystemTime::now();
    tracer.start("skewed").end();
    chaos::set(TelemetryFaults::default());
    flush(&provider).await;

    let many = received.named("many");
    assert_eq!(many.attributes.len(), LIMIT);
    assert_eq!(many.dropped_attributes_count, 3);
    received.named("forgotten");
    let skewed = received.named("skewed");
    let before_ns = before.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    assert!(
        skewed.start_time_unix_nano >= before_ns + 60_000_000_000,
        "shifted a minute ahead"
    );
    let stats = counters.snapshot();
    assert_eq!(
        (
            stats.spans_ended,
            stats.spans_exported,
            stats.spans_dropped_by_fault,
            stats.spans_queued
        ),
        (4, 3, 1, 0),
        "{stats:?}"
    );

    let stopped = tokio::task::spawn_blocking({
        let provider = provider.clone();
        move || provider.shutdown_with_timeout(Duration::from_secs(5))
    })
    .await
    .unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");
    let late = tracer.start("after shutdown");
    assert!(
        !late.is_recording(),
        "nothing starts recording after shutdown"
    );
    drop(late);
    assert_eq!(counters.snapshot().spans_ended, 4);
    assert_eq!(received.spans().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_a_builder_on_the_global_provider_keep_links_and_attributes() {
    let received = Received::default();
    let counters = Arc::new(SpanCounters::new());
    let control = HeadControl::new(rules(1.0, &[]), "lean-test");
    let provider = provider(receiver(received.clone()).await, &control, &counters);
    global::set_tracer_provider(provider.clone());

    let linked = SpanContext::new(
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128.into(),
        0x00f0_67aa_0ba9_02b7_u64.into(),
        Default::default(),
        true,
        Default::default(),
    );
    let tracer = global::tracer("tracelab");
    let span = tracer
        .span_builder("reconcilePayment")
        .with_kind(SpanKind::Internal)
        .with_attributes([KeyValue::new("payment.order_id", "o-1")])
        .with_links(vec![Link::with_context(linked)])
        .start_with_context(&tracer, &Context::new());
    let cx = Context::current_with_span(span);
    cx.span()
        .set_attribute(KeyValue::new("payment.reconcile.outcome", "completed"));
    cx.span().end();
    flush(&provider).await;

    let span = received.named("reconcilePayment");
    assert_eq!(span.kind, OtlpKind::Internal as i32);
    assert!(span.parent_span_id.is_empty(), "a root");
    assert_eq!(attr(&span, "payment.order_id"), text("o-1"));
    assert_eq!(attr(&span, "payment.reconcile.outcome"), text("completed"));
    assert_eq!(span.links.len(), 1);
    assert_eq!(
        hex(&span.links[0].trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(hex(&span.links[0].span_id), "00f067aa0ba902b7");
    assert_eq!(control.counts().sampled, 1);
}
