//! Span helpers shaped like the lesson's `tracer.startActiveSpan(...)`.
//!
//! A span started here becomes the current context for the future it wraps,
//! so spans started inside it (and logs written inside it) are its children.

use std::borrow::Cow;
use std::future::Future;

use std::sync::RwLock;

use opentelemetry::trace::{
    FutureExt, Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, global};

use crate::tracer::{LeanTracer, LeanTracerProvider};

use crate::tracecontext::{hex_str, trace_id_hex};

/// Instrumentation scope name for every span the lab creates by hand.
pub const SCOPE: &str = "tracelab";

/// Starts a span as a child of the current context and returns the context
/// holding it. The caller must end it (`cx.span().end()`).
pub fn start(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
) -> Context {
    start_with_parent(&Context::current(), name, kind, attributes)
}

/// Starts a span under an explicit parent context (e.g. one extracted from
/// a message) and returns the context holding it.
pub fn start_with_parent(
    parent: &Context,
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
) -> Context {
    start_with_parent_lazy(parent, name, kind, move || attributes)
}

/// As [`start_with_parent`], but `attributes` runs only when the span is
/// recorded: a span the sampler drops (or any span with the SDK disabled)
/// builds, copies and frees no attribute at all.
///
/// The samplers see no attributes this way; none of the lab's samplers
/// (`sampling.yaml`'s rules, the `OTEL_TRACES_SAMPLER` ones) reads them.
pub fn start_with_parent_lazy(
    parent: &Context,
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Context {
    let tracer = TRACER.read().unwrap_or_else(|e| e.into_inner());
    match tracer.as_ref() {
        Some(tracer) => tracer.start_in(parent, name.into(), kind, attributes),
        None => {
            drop(tracer);
            start_on(
                &global::tracer(SCOPE),
                parent,
                name.into(),
                kind,
                attributes,
            )
        }
    }
}

/// The tracer of the provider [`crate::init`] installed, kept so that a
/// span does not go through the global provider's lock, a boxed tracer
/// and a boxed span, and so that a span that is not recorded is only a
/// span context ([`LeanTracer::start_in`]); `None` before `init` (and in
/// tests that install a provider of their own), when the global tracer is
/// used.
static TRACER: RwLock<Option<LeanTracer>> = RwLock::new(None);

/// Makes [`start_with_parent_lazy`] start spans on `provider`.
pub(crate) fn use_provider(provider: &LeanTracerProvider) {
    *TRACER.write().unwrap_or_else(|e| e.into_inner()) = Some(provider.tracer(SCOPE));
}

fn start_on<T>(
    tracer: &T,
    parent: &Context,
    name: Cow<'static, str>,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Context
where
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    let mut span = tracer
        .span_builder(name)
        .with_kind(kind)
        .start_with_context(tracer, parent);
    if span.is_recording() {
        span.set_attributes(attributes());
    }
    parent.with_span(span)
}

/// As [`start`], with the attributes built only for a recorded span
/// ([`start_with_parent_lazy`]).
pub fn start_lazy(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Context {
    start_with_parent_lazy(&Context::current(), name, kind, attributes)
}

/// Runs `work` inside a new child span, the way the lesson's
/// `startActiveSpan` does: on `Ok` the status is OK, on `Err` the status is
/// ERROR with the error's message and an `exception` event is recorded.
pub async fn in_span<T, E, F, Fut>(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    work: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    in_span_lazy(name, kind, move || attributes, work).await
}

/// As [`in_span`], with the attributes built only for a recorded span
/// ([`start_with_parent_lazy`]).
pub async fn in_span_lazy<T, E, F, Fut>(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
    work: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let cx = start_lazy(name, kind, attributes);
    let result = work(cx.clone()).with_context(cx.clone()).await;
    let span = cx.span();
    match &result {
        Ok(_) => span.set_status(Status::Ok),
        Err(err) => record_error(&cx, std::any::type_name::<E>(), &err.to_string()),
    }
    span.end();
    result
}

/// Marks the span in `cx` as failed: status ERROR with `message`, plus an
/// `exception` event carrying `exception.type` and `exception.message`.
pub fn record_error(cx: &Context, error_type: &str, message: &str) {
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    let short_type = short_type_name(error_type);
    span.set_status(Status::error(message.to_string()));
    span.set_attribute(KeyValue::new("error.type", short_type.clone()));
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", short_type),
            KeyValue::new("exception.message", message.to_string()),
        ],
    );
}

/// `payment::ProcessError` from `payment::process::ProcessError`: readable
/// in a trace view without losing which type it was.
fn short_type_name(full: &str) -> String {
    let base = full.split('<').next().unwrap_or(full);
    let mut parts: Vec<&str> = base.split("::").collect();
    if parts.len() > 2 {
        parts = vec![parts[0], parts[parts.len() - 1]];
    }
    parts.join("::")
}

/// The current trace id as 32 lowercase hex digits, or `None` when no span
/// is active.
pub fn current_trace_id() -> Option<String> {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| hex_str(&trace_id_hex(sc.trace_id())).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_shortened() {
        assert_eq!(
            short_type_name("payment::process::ProcessError"),
            "payment::ProcessError"
        );
        assert_eq!(short_type_name("alloc::string::String"), "alloc::String");
        assert_eq!(short_type_name("Plain"), "Plain");
    }
}
