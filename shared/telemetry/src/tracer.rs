//! The services' tracer: OpenTelemetry's tracing API over a span type of
//! the crate's own, recorded in place and encoded straight into OTLP when
//! it ends.
//!
//! The SDK's tracer builds, for every span, a `Span` holding a clone of
//! its tracer and limits and a `SpanData` that is moved through its span
//! processors; attributes set after the start are pushed one by one into
//! an empty vector. [`LeanTracer`] does what the services need and no
//! more:
//!
//! - the same decisions: the sampler (`sampling.yaml`'s [`HeadSampler`],
//!   switched live through its `HeadControl`, or an `OTEL_TRACES_SAMPLER`
//!   one) sees the parent context, the trace id, name and kind, as with the
//!   SDK (and a [`SpanBuilder`]'s attributes and links; the lazy
//!   attributes of [`LeanTracer::start_in`] are built after it decided);
//!   ids come from the SDK's random generator; the trace flags and
//!   `tracestate` are the SDK's (the parent's flags with the sampled bit
//!   set or cleared, no flags for a dropped span);
//! - a span that is not recorded is only its [`SpanContext`]:
//!   [`LeanTracer::start_in`] puts that alone in the context (as
//!   `Context::with_remote_span_context` stores one: nothing boxed,
//!   nothing to end), so it propagates and costs nothing more;
//! - a recorded span keeps its attributes in the vector it was given
//!   (no copy), with the SDK's limits (128 attributes, events and links,
//!   the rest counted as dropped);
//! - when it ends, the telemetry faults apply ([`ChaosProcessor::at_end`],
//!   which counts it) and it is encoded, from borrowed fields
//!   ([`SpanView`]), into the export queue ([`OtlpBatchProcessor::queue`]).
//!   A span dropped without `end()` ends then, as an SDK span does; after
//!   [`LeanTracerProvider::shutdown_with_timeout`] nothing is exported.
//!
//! [`HeadSampler`]: crate::sampling::HeadSampler

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Event, Link, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SamplingDecision, ShouldSample, SpanProcessor,
};

use crate::chaos::{ChaosProcessor, shift};
use crate::export::OtlpBatchProcessor;
use crate::otlp::{SpanView, put_span_view};

/// At most this many attributes per span, events per span, links per span
/// and attributes per event or link (the SDK's default limits); the rest
/// are counted as dropped.
pub const LIMIT: usize = 128;

/// The export pipeline a [`LeanTracerProvider`] ends its spans into.
pub type Pipeline = ChaosProcessor<OtlpBatchProcessor>;

/// Creates [`LeanTracer`]s; one per service, installed as the global
/// provider by [`crate::init`].
#[derive(Clone, Debug)]
pub struct LeanTracerProvider {
    shared: Arc<ProviderShared>,
}

struct ProviderShared {
    sampler: Box<dyn ShouldSample>,
    pipeline: Pipeline,
    ids: RandomIdGenerator,
    shut_down: AtomicBool,
}

impl std::fmt::Debug for ProviderShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderShared")
            .field("pipeline", &self.pipeline)
            .field("shut_down", &self.shut_down)
            .finish_non_exhaustive()
    }
}

impl LeanTracerProvider {
    /// A provider deciding with `sampler` and ending spans into `pipeline`,
    /// which is told the service's `resource`.
    pub fn new(
        sampler: Box<dyn ShouldSample>,
        mut pipeline: Pipeline,
        resource: &Resource,
    ) -> Self {
        pipeline.set_resource(resource);
        Self {
            shared: Arc::new(ProviderShared {
                sampler,
                pipeline,
                ids: RandomIdGenerator::default(),
                shut_down: AtomicBool::new(false),
            }),
        }
    }

    /// Sends what is queued and waits for the answer.
    ///
    /// # Errors
    /// When the export thread does not answer in time or has stopped.
    pub fn force_flush(&self) -> OTelSdkResult {
        self.shared.pipeline.force_flush()
    }

    /// Stops exporting: spans that end afterwards are not exported (nor
    /// counted), the queue is sent, the export thread stops.
    ///
    /// # Errors
    /// When called twice, or the last export does not finish in `timeout`.
    pub fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.shared.shut_down.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.shared.pipeline.shutdown_with_timeout(timeout)
    }
}

impl opentelemetry::trace::TracerProvider for LeanTracerProvider {
    type Tracer = LeanTracer;

    fn tracer_with_scope(&self, scope: InstrumentationScope) -> LeanTracer {
        LeanTracer {
            shared: Arc::new(TracerShared {
                provider: self.shared.clone(),
                scope,
            }),
        }
    }
}

/// Starts [`LeanSpan`]s of one instrumentation scope.
#[derive(Clone, Debug)]
pub struct LeanTracer {
    shared: Arc<TracerShared>,
}

#[derive(Debug)]
struct TracerShared {
    provider: Arc<ProviderShared>,
    scope: InstrumentationScope,
}

/// What [`LeanTracer::decide`] settled for a new span.
struct Decision {
    span_context: SpanContext,
    /// The parent's span id and whether it is remote; `None` for a root.
    parent: Option<(SpanId, bool)>,
    recording: bool,
}

impl LeanTracer {
    /// Ids, sampling decision and span context of a span named `name`
    /// under `parent`, as the SDK's tracer settles them.
    fn decide(
        &self,
        parent: &Context,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> Decision {
        let provider = &self.shared.provider;
        if parent.is_telemetry_suppressed() || provider.shut_down.load(Ordering::Acquire) {
            return Decision {
                span_context: SpanContext::empty_context(),
                parent: None,
                recording: false,
            };
        }
        let span_id = provider.ids.new_span_id();
        let parent_span = parent.span();
        let psc = parent_span.span_context();
        let (trace_id, flags, parent_ids) = if psc.is_valid() {
            (
                psc.trace_id(),
                psc.trace_flags(),
                Some((psc.span_id(), psc.is_remote())),
            )
        } else {
            (provider.ids.new_trace_id(), TraceFlags::default(), None)
        };
        let result =
            provider
                .sampler
                .should_sample(Some(parent), trace_id, name, kind, attributes, links);
        let (flags, recording) = match result.decision {
            SamplingDecision::RecordAndSample => (flags.with_sampled(true), true),
            SamplingDecision::RecordOnly => (flags.with_sampled(false), true),
            SamplingDecision::Drop => (TraceFlags::default(), false),
        };
        Decision {
            span_context: SpanContext::new(trace_id, span_id, flags, false, result.trace_state),
            parent: parent_ids,
            recording,
        }
    }

    /// Starts a span under `parent` and returns the context holding it;
    /// `attributes` runs only when the span is recorded. A span that is
    /// not recorded is put in the context as its span context alone.
    pub fn start_in(
        &self,
        parent: &Context,
        name: Cow<'static, str>,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Context {
        let decision = self.decide(parent, &name, &kind, &[], &[]);
        if !decision.recording {
            return parent.with_remote_span_context(decision.span_context);
        }
        let (attributes, dropped) = limited(attributes());
        let mut span = self.recording_span(decision, name, kind, SystemTime::now(), attributes);
        if let Some(recording) = span.recording.as_mut() {
            recording.dropped_attributes = dropped;
        }
        parent.with_span(span)
    }

    fn recording_span(
        &self,
        decision: Decision,
        name: Cow<'static, str>,
        kind: SpanKind,
        start: SystemTime,
        attributes: Vec<KeyValue>,
    ) -> LeanSpan {
        let (parent_span_id, parent_is_remote) =
            decision.parent.unwrap_or((SpanId::INVALID, false));
        LeanSpan {
            span_context: decision.span_context,
            recording: Some(Recording {
                tracer: self.shared.clone(),
                parent_span_id,
                parent_is_remote,
                name,
                kind,
                start,
                attributes,
                dropped_attributes: 0,
                events: Vec::new(),
                dropped_events: 0,
                links: Vec::new(),
                dropped_links: 0,
                status: Status::Unset,
            }),
        }
    }
}

impl opentelemetry::trace::Tracer for LeanTracer {
    type Span = LeanSpan;

    fn build_with_context(&self, mut builder: SpanBuilder, parent: &Context) -> LeanSpan {
        let kind = builder.span_kind.take().unwrap_or(SpanKind::Internal);
        let links = builder.links.take().unwrap_or_default();
        let attributes = builder.attributes.take().unwrap_or_default();
        let decision = self.decide(parent, &builder.name, &kind, &attributes, &links);
        if !decision.recording {
            return LeanSpan {
                span_context: decision.span_context,
                recording: None,
            };
        }
        let start = builder.start_time.unwrap_or_else(SystemTime::now);
        let mut span = self.recording_span(decision, builder.name, kind, start, Vec::new());
        use opentelemetry::trace::Span as _;
        span.set_attributes(attributes);
        for link in links {
            span.add_link(link.span_context, link.attributes);
        }
        for event in builder.events.unwrap_or_default() {
            span.add_event_with_timestamp(event.name, event.timestamp, event.attributes);
        }
        span
    }
}

/// A span of a [`LeanTracer`]: its context and, while it is recorded and
/// has not ended, what it recorded.
#[derive(Debug)]
pub struct LeanSpan {
    span_context: SpanContext,
    recording: Option<Recording>,
}

#[derive(Debug)]
struct Recording {
    tracer: Arc<TracerShared>,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    dropped_attributes: u32,
    events: Vec<Event>,
    dropped_events: u32,
    links: Vec<Link>,
    dropped_links: u32,
    status: Status,
}

impl Recording {
    /// Applies the telemetry faults and queues the span for export.
    fn end(mut self, span_context: &SpanContext, end: SystemTime) {
        let provider = &self.tracer.provider;
        if provider.shut_down.load(Ordering::Acquire) {
            return;
        }
        let pipeline = &provider.pipeline;
        let Some(skew_ms) = pipeline.at_end() else {
            return;
        };
        let (mut start, mut end) = (self.start, end);
        if skew_ms != 0 {
            start = shift(start, skew_ms);
            end = shift(end, skew_ms);
            for event in &mut self.events {
                event.timestamp = shift(event.timestamp, skew_ms);
            }
        }
        let view = SpanView {
            span_context,
            parent_span_id: self.parent_span_id,
            parent_span_is_remote: self.parent_is_remote,
            name: &self.name,
            kind: &self.kind,
            start_time: start,
            end_time: end,
            attributes: &self.attributes,
            dropped_attributes_count: self.dropped_attributes,
            events: &self.events,
            dropped_events_count: self.dropped_events,
            links: &self.links,
            dropped_links_count: self.dropped_links,
            status: &self.status,
        };
        pipeline.inner().queue(&self.tracer.scope, |buf| {
            put_span_view(buf, &view);
        });
        // The recording is freed here, on the thread that built it.
    }
}

/// At most [`LIMIT`] of `attributes`, and how many were cut.
fn limited(mut attributes: Vec<KeyValue>) -> (Vec<KeyValue>, u32) {
    let dropped = attributes.len().saturating_sub(LIMIT);
    attributes.truncate(LIMIT);
    (attributes, dropped as u32)
}

impl opentelemetry::trace::Span for LeanSpan {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        let Some(recording) = self.recording.as_mut() else {
            return;
        };
        if recording.events.len() < LIMIT {
            let (attributes, dropped) = limited(attributes);
            recording
                .events
                .push(Event::new(name, timestamp, attributes, dropped));
        } else {
            recording.dropped_events += 1;
        }
    }

    fn span_context(&self) -> &SpanContext {
        &self.span_context
    }

    fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        let Some(recording) = self.recording.as_mut() else {
            return;
        };
        if recording.attributes.len() < LIMIT {
            recording.attributes.push(attribute);
        } else {
            recording.dropped_attributes += 1;
        }
    }

    fn set_status(&mut self, status: Status) {
        if let Some(recording) = self.recording.as_mut()
            // Ok > Error > Unset: a status only moves up.
            && status > recording.status
        {
            recording.status = status;
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if let Some(recording) = self.recording.as_mut() {
            recording.name = new_name.into();
        }
    }

    fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        let Some(recording) = self.recording.as_mut() else {
            return;
        };
        if recording.links.len() < LIMIT {
            let (attributes, dropped) = limited(attributes);
            recording
                .links
                .push(Link::new(span_context, attributes, dropped));
        } else {
            recording.dropped_links += 1;
        }
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        if let Some(recording) = self.recording.take() {
            recording.end(&self.span_context, timestamp);
        }
    }
}

impl Drop for LeanSpan {
    fn drop(&mut self) {
        if let Some(recording) = self.recording.take() {
            recording.end(&self.span_context, SystemTime::now());
        }
    }
}
