//! A span the sampler drops builds no attribute; a recorded one carries
//! them all, as if they had been given at its start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue, Value, global};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample, SimpleSpanProcessor,
    SpanData, SpanExporter,
};
use tracelab_telemetry::span::start_with_parent_lazy;

/// Keeps the spans whose name starts with `keep`.
#[derive(Debug, Clone)]
struct ByName;

impl ShouldSample for ByName {
    fn should_sample(
        &self,
        _: Option<&Context>,
        _: TraceId,
        name: &str,
        _: &SpanKind,
        _: &[KeyValue],
        _: &[Link],
    ) -> SamplingResult {
        SamplingResult {
            decision: if name.starts_with("keep") {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            },
            attributes: Vec::new(),
            trace_state: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[test]
fn attributes_are_built_only_for_recorded_spans() {
    let spans = Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(SimpleSpanProcessor::new(spans.clone()))
        .with_sampler(ByName)
        .build();
    global::set_tracer_provider(provider.clone());

    let built = AtomicUsize::new(0);
    let attributes = || {
        built.fetch_add(1, Ordering::SeqCst);
        vec![
            KeyValue::new("url.path", "/api/login".to_string()),
            KeyValue::new("server.port", 8080_i64),
        ]
    };
    let dropped = start_with_parent_lazy(&Context::new(), "drop me", SpanKind::Server, attributes);
    assert!(!dropped.span().is_recording());
    assert!(dropped.span().span_context().is_valid(), "still propagates");
    dropped.span().end();
    assert_eq!(
        built.load(Ordering::SeqCst),
        0,
        "nothing built for a dropped span"
    );

    let kept = start_with_parent_lazy(&Context::new(), "keep me", SpanKind::Server, attributes);
    assert!(kept.span().is_recording());
    kept.span().end();
    assert_eq!(built.load(Ordering::SeqCst), 1);

    provider.force_flush().unwrap();
    let spans = spans.0.lock().unwrap();
    assert_eq!(spans.len(), 1, "only the kept span is exported");
    let span = &spans[0];
    assert_eq!(span.name, "keep me");
    assert_eq!(span.span_kind, SpanKind::Server);
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(attr("url.path"), Some(Value::from("/api/login")));
    assert_eq!(attr("server.port"), Some(Value::I64(8080)));
}
