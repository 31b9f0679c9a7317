//! Finished spans written straight into OTLP protobuf bytes.
//!
//! The OTLP exporter of the SDK turns every span into the generated
//! `opentelemetry-proto` structs (owned copies of every string, one
//! allocation per attribute) and then encodes those. Here a span is
//! encoded once, from a borrowed [`SpanView`] of the crate's own span
//! ([`crate::tracer`]) or of the SDK's [`SpanData`], into the byte layout of an
//! `opentelemetry.proto.trace.v1.Span` (field numbers from
//! `opentelemetry/proto/trace/v1/trace.proto`), and an export request is
//! assembled from those bytes with one copy ([`Batch::request`]).
//!
//! The fields are the ones the SDK's own conversion fills, with the same
//! values (the tests decode what is written here with
//! `opentelemetry-proto`'s types and compare it with that conversion):
//! empty strings, zero counters and an invalid parent id are left out as
//! proto3 does; an attribute value is always written (it is a `oneof`, so
//! `false`, `0` and `""` are values); the span's status is always written.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// `Span.flags`: the `is_remote` bit below is meaningful.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// `Span.flags`: the parent (or a link's span) is remote.
const FLAG_IS_REMOTE: u32 = 0x200;

// ---- field helpers: `*_len` is the encoded size of what `put_*` writes ----

fn len_delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_len_prefix(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A `string`/`bytes` field, left out when empty (proto3).
fn opt_bytes_len(tag: u32, bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        len_delimited_len(tag, bytes.len())
    }
}

fn put_opt_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_prefix(buf, tag, bytes.len());
        buf.extend_from_slice(bytes);
    }
}

/// A `uint32`/`int64`/enum field, left out when zero.
fn opt_varint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn put_opt_varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

/// A `fixed64` field, left out when zero.
fn opt_fixed64_len(tag: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(tag) + 8 }
}

fn put_opt_fixed64(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// A `fixed32` field, left out when zero.
fn opt_fixed32_len(tag: u32, value: u32) -> usize {
    if value == 0 { 0 } else { key_len(tag) + 4 }
}

fn put_opt_fixed32(buf: &mut Vec<u8>, tag: u32, value: u32) {
    if value != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// Nanoseconds since the Unix epoch; 0 for a time before it (as the SDK's
/// conversion does).
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---- common.proto: AnyValue, ArrayValue, KeyValue, InstrumentationScope ----

/// One element of an `ArrayValue` (field 1 of `ArrayValue`, an `AnyValue`).
enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(&'a str),
}

impl Scalar<'_> {
    /// The `AnyValue` body: its one `oneof` field, always written.
    fn len(&self) -> usize {
        match *self {
            Scalar::Bool(_) => key_len(2) + 1,
            Scalar::Int(i) => key_len(3) + encoded_len_varint(i as u64),
            Scalar::Double(_) => key_len(4) + 8,
            Scalar::Str(s) => len_delimited_len(1, s.len()),
        }
    }

    fn put(&self, buf: &mut Vec<u8>) {
        match *self {
            Scalar::Bool(b) => {
                encode_key(2, WireType::Varint, buf);
                encode_varint(u64::from(b), buf);
            }
            Scalar::Int(i) => {
                encode_key(3, WireType::Varint, buf);
                encode_varint(i as u64, buf);
            }
            Scalar::Double(d) => {
                encode_key(4, WireType::SixtyFourBit, buf);
                buf.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Scalar::Str(s) => {
                put_len_prefix(buf, 1, s.len());
                buf.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// Calls `f` with every element of `array` as a [`Scalar`].
fn for_each_element(array: &Array, mut f: impl FnMut(Scalar<'_>)) {
    match array {
        Array::Bool(v) => v.iter().for_each(|&b| f(Scalar::Bool(b))),
        Array::I64(v) => v.iter().for_each(|&i| f(Scalar::Int(i))),
        Array::F64(v) => v.iter().for_each(|&d| f(Scalar::Double(d))),
        Array::String(v) => v.iter().for_each(|s| f(Scalar::Str(s.as_str()))),
        // A kind of array added to the API later: its text, so it is not lost.
        other => f(Scalar::Str(&other.to_string())),
    }
}

/// The `ArrayValue` body: every element as field 1.
fn array_len(array: &Array) -> usize {
    let mut len = 0;
    for_each_element(array, |s| len += len_delimited_len(1, s.len()));
    len
}

fn put_array(buf: &mut Vec<u8>, array: &Array) {
    for_each_element(array, |s| {
        put_len_prefix(buf, 1, s.len());
        s.put(buf);
    });
}

/// The `AnyValue` body of `value`.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(b) => Scalar::Bool(*b).len(),
        Value::I64(i) => Scalar::Int(*i).len(),
        Value::F64(d) => Scalar::Double(*d).len(),
        Value::String(s) => Scalar::Str(s.as_str()).len(),
        Value::Array(a) => len_delimited_len(5, array_len(a)),
        other => Scalar::Str(&other.as_str()).len(),
    }
}

fn put_any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => Scalar::Bool(*b).put(buf),
        Value::I64(i) => Scalar::Int(*i).put(buf),
        Value::F64(d) => Scalar::Double(*d).put(buf),
        Value::String(s) => Scalar::Str(s.as_str()).put(buf),
        Value::Array(a) => {
            put_len_prefix(buf, 5, array_len(a));
            put_array(buf, a);
        }
        other => Scalar::Str(&other.as_str()).put(buf),
    }
}

/// The `KeyValue` body: `key` (1) and `value` (2, always present).
fn key_value_len(kv: &KeyValue) -> usize {
    opt_bytes_len(1, kv.key.as_str().as_bytes()) + len_delimited_len(2, any_value_len(&kv.value))
}

fn put_key_value(buf: &mut Vec<u8>, kv: &KeyValue) {
    put_opt_bytes(buf, 1, kv.key.as_str().as_bytes());
    put_len_prefix(buf, 2, any_value_len(&kv.value));
    put_any_value(buf, &kv.value);
}

/// Repeated `KeyValue` field `tag`.
fn attributes_len<'a>(tag: u32, attributes: impl IntoIterator<Item = &'a KeyValue>) -> usize {
    attributes
        .into_iter()
        .map(|kv| len_delimited_len(tag, key_value_len(kv)))
        .sum()
}

fn put_attributes<'a>(
    buf: &mut Vec<u8>,
    tag: u32,
    attributes: impl IntoIterator<Item = &'a KeyValue>,
) {
    for kv in attributes {
        put_len_prefix(buf, tag, key_value_len(kv));
        put_key_value(buf, kv);
    }
}

/// An `InstrumentationScope` message body: name (1), version (2),
/// attributes (3).
pub fn encode_scope(scope: &InstrumentationScope) -> Vec<u8> {
    let mut buf = Vec::new();
    put_opt_bytes(&mut buf, 1, scope.name().as_bytes());
    put_opt_bytes(&mut buf, 2, scope.version().unwrap_or("").as_bytes());
    put_attributes(&mut buf, 3, scope.attributes());
    buf
}

/// A `Resource` message body: its attributes (1).
pub fn encode_resource(resource: &Resource) -> Vec<u8> {
    let mut buf = Vec::new();
    for (key, value) in resource.iter() {
        let kv = KeyValue::new(key.clone(), value.clone());
        put_len_prefix(&mut buf, 1, key_value_len(&kv));
        put_key_value(&mut buf, &kv);
    }
    buf
}

// ---- trace.proto: Span, Span.Event, Span.Link, Status ----

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Status`: message (2) and code (3; Unset 0, Ok 1, Error 2).
fn status_parts(status: &Status) -> (&str, u64) {
    match status {
        Status::Unset => ("", 0),
        Status::Ok => ("", 1),
        Status::Error { description } => (description.as_ref(), 2),
    }
}

fn status_len(status: &Status) -> usize {
    let (message, code) = status_parts(status);
    opt_bytes_len(2, message.as_bytes()) + opt_varint_len(3, code)
}

fn event_len(event: &Event) -> usize {
    opt_fixed64_len(1, unix_nanos(event.timestamp))
        + opt_bytes_len(2, event.name.as_bytes())
        + attributes_len(3, &event.attributes)
        + opt_varint_len(4, u64::from(event.dropped_attributes_count))
}

fn put_event(buf: &mut Vec<u8>, event: &Event) {
    put_opt_fixed64(buf, 1, unix_nanos(event.timestamp));
    put_opt_bytes(buf, 2, event.name.as_bytes());
    put_attributes(buf, 3, &event.attributes);
    put_opt_varint(buf, 4, u64::from(event.dropped_attributes_count));
}

/// `flags` of a span or link: the W3C trace flags plus whether the parent
/// (for a link: the linked span) is remote.
fn span_flags(trace_flags: u8, remote: bool) -> u32 {
    let mut flags = u32::from(trace_flags) | FLAG_HAS_IS_REMOTE;
    if remote {
        flags |= FLAG_IS_REMOTE;
    }
    flags
}

fn link_len(link: &Link, trace_state: &str) -> usize {
    let sc = &link.span_context;
    len_delimited_len(1, 16)
        + len_delimited_len(2, 8)
        + opt_bytes_len(3, trace_state.as_bytes())
        + attributes_len(4, &link.attributes)
        + opt_varint_len(5, u64::from(link.dropped_attributes_count))
        + opt_fixed32_len(6, span_flags(sc.trace_flags().to_u8(), sc.is_remote()))
}

fn put_link(buf: &mut Vec<u8>, link: &Link, trace_state: &str) {
    let sc = &link.span_context;
    put_opt_bytes(buf, 1, &sc.trace_id().to_bytes());
    put_opt_bytes(buf, 2, &sc.span_id().to_bytes());
    put_opt_bytes(buf, 3, trace_state.as_bytes());
    put_attributes(buf, 4, &link.attributes);
    put_opt_varint(buf, 5, u64::from(link.dropped_attributes_count));
    put_opt_fixed32(buf, 6, span_flags(sc.trace_flags().to_u8(), sc.is_remote()));
}

/// A finished span, borrowed from wherever it was recorded: the SDK's
/// [`SpanData`] ([`SpanView::of`]) or the crate's own span
/// ([`crate::tracer`]).
#[derive(Debug, Clone, Copy)]
pub struct SpanView<'a> {
    pub span_context: &'a SpanContext,
    /// [`SpanId::INVALID`] for a root span.
    pub parent_span_id: SpanId,
    pub parent_span_is_remote: bool,
    pub name: &'a str,
    pub kind: &'a SpanKind,
    pub start_time: SystemTime,
    pub end_time: SystemTime,
    pub attributes: &'a [KeyValue],
    pub dropped_attributes_count: u32,
    pub events: &'a [Event],
    pub dropped_events_count: u32,
    pub links: &'a [Link],
    pub dropped_links_count: u32,
    pub status: &'a Status,
}

impl<'a> SpanView<'a> {
    /// The view of an SDK span.
    pub fn of(span: &'a SpanData) -> Self {
        Self {
            span_context: &span.span_context,
            parent_span_id: span.parent_span_id,
            parent_span_is_remote: span.parent_span_is_remote,
            name: &span.name,
            kind: &span.span_kind,
            start_time: span.start_time,
            end_time: span.end_time,
            attributes: &span.attributes,
            dropped_attributes_count: span.dropped_attributes_count,
            events: &span.events.events,
            dropped_events_count: span.events.dropped_count,
            links: &span.links.links,
            dropped_links_count: span.links.dropped_count,
            status: &span.status,
        }
    }
}

/// Appends `span` to `buf` as one `ScopeSpans.spans` entry (field 2: key,
/// length, `Span` body); returns how many bytes it took.
pub fn put_span(buf: &mut Vec<u8>, span: &SpanData) -> usize {
    put_span_view(buf, &SpanView::of(span))
}

/// [`put_span`] for any [`SpanView`].
pub fn put_span_view(buf: &mut Vec<u8>, span: &SpanView<'_>) -> usize {
    let sc = span.span_context;
    // Usually empty: then `header()` allocates nothing.
    let trace_state = sc.trace_state().header();
    // Usually no links: then this allocates nothing.
    let link_states: Vec<String> = span
        .links
        .iter()
        .map(|l| l.span_context.trace_state().header())
        .collect();
    let parent: &[u8] = &span.parent_span_id.to_bytes();
    let parent: &[u8] = if span.parent_span_id == SpanId::INVALID {
        &[]
    } else {
        parent
    };
    let flags = span_flags(sc.trace_flags().to_u8(), span.parent_span_is_remote);
    let (start, end) = (unix_nanos(span.start_time), unix_nanos(span.end_time));
    let events_len: usize = span
        .events
        .iter()
        .map(|e| len_delimited_len(11, event_len(e)))
        .sum();
    let links_len: usize = span
        .links
        .iter()
        .zip(&link_states)
        .map(|(l, s)| len_delimited_len(13, link_len(l, s)))
        .sum();
    let body = len_delimited_len(1, 16)
        + len_delimited_len(2, 8)
        + opt_bytes_len(3, trace_state.as_bytes())
        + opt_bytes_len(4, parent)
        + opt_bytes_len(5, span.name.as_bytes())
        + opt_varint_len(6, span_kind(span.kind))
        + opt_fixed64_len(7, start)
        + opt_fixed64_len(8, end)
        + attributes_len(9, span.attributes)
        + opt_varint_len(10, u64::from(span.dropped_attributes_count))
        + events_len
        + opt_varint_len(12, u64::from(span.dropped_events_count))
        + links_len
        + opt_varint_len(14, u64::from(span.dropped_links_count))
        + len_delimited_len(15, status_len(span.status))
        + opt_fixed32_len(16, flags);

    let before = buf.len();
    buf.reserve(len_delimited_len(2, body));
    put_len_prefix(buf, 2, body);
    put_opt_bytes(buf, 1, &sc.trace_id().to_bytes());
    put_opt_bytes(buf, 2, &sc.span_id().to_bytes());
    put_opt_bytes(buf, 3, trace_state.as_bytes());
    put_opt_bytes(buf, 4, parent);
    put_opt_bytes(buf, 5, span.name.as_bytes());
    put_opt_varint(buf, 6, span_kind(span.kind));
    put_opt_fixed64(buf, 7, start);
    put_opt_fixed64(buf, 8, end);
    put_attributes(buf, 9, span.attributes);
    put_opt_varint(buf, 10, u64::from(span.dropped_attributes_count));
    for event in span.events {
        put_len_prefix(buf, 11, event_len(event));
        put_event(buf, event);
    }
    put_opt_varint(buf, 12, u64::from(span.dropped_events_count));
    for (link, state) in span.links.iter().zip(&link_states) {
        put_len_prefix(buf, 13, link_len(link, state));
        put_link(buf, link, state);
    }
    put_opt_varint(buf, 14, u64::from(span.dropped_links_count));
    put_len_prefix(buf, 15, status_len(span.status));
    let (message, code) = status_parts(span.status);
    put_opt_bytes(buf, 2, message.as_bytes());
    put_opt_varint(buf, 3, code);
    put_opt_fixed32(buf, 16, flags);
    debug_assert_eq!(buf.len() - before, len_delimited_len(2, body));
    buf.len() - before
}

// ---- collector/trace/v1: the export request ----

/// The spans of one instrumentation scope, encoded, waiting for export.
#[derive(Debug)]
struct ScopeSpans {
    scope: InstrumentationScope,
    /// The `InstrumentationScope` body.
    encoded_scope: Vec<u8>,
    /// `ScopeSpans.spans` entries, back to back (see [`put_span`]).
    spans: Vec<u8>,
}

/// Spans of one resource waiting for export, grouped by scope, already in
/// wire form. One `Batch` becomes one `ExportTraceServiceRequest` with one
/// `ResourceSpans`.
#[derive(Debug, Default)]
pub struct Batch {
    scopes: Vec<ScopeSpans>,
    spans: usize,
}

impl Batch {
    /// Encodes `span` into the batch, beside the spans of its scope.
    pub fn push(&mut self, span: &SpanData) {
        let i = self.scope_index(&span.instrumentation_scope);
        put_span(&mut self.scopes[i].spans, span);
        self.spans += 1;
    }

    /// Adds one span encoded by [`put_span`] (`encoded`) of `scope`: what
    /// [`Batch::push`] does, with the encoding done beforehand (outside
    /// whatever lock guards the batch).
    pub fn push_encoded(&mut self, scope: &InstrumentationScope, encoded: &[u8]) {
        let i = self.scope_index(scope);
        self.scopes[i].spans.extend_from_slice(encoded);
        self.spans += 1;
    }

    fn scope_index(&mut self, scope: &InstrumentationScope) -> usize {
        match self.scopes.iter().position(|s| s.scope == *scope) {
            Some(i) => i,
            None => {
                self.scopes.push(ScopeSpans {
                    encoded_scope: encode_scope(scope),
                    scope: scope.clone(),
                    spans: Vec::new(),
                });
                self.scopes.len() - 1
            }
        }
    }

    /// Spans in the batch.
    pub fn len(&self) -> usize {
        self.spans
    }

    /// Whether the batch holds no span.
    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }

    /// Takes the spans out, leaving the scopes (and their encoded form)
    /// for the next batch.
    pub fn take(&mut self) -> Batch {
        let scopes = self
            .scopes
            .iter_mut()
            .filter(|s| !s.spans.is_empty())
            .map(|s| {
                // The next batch is likely as big as this one.
                let next = Vec::with_capacity(s.spans.len());
                ScopeSpans {
                    scope: s.scope.clone(),
                    encoded_scope: s.encoded_scope.clone(),
                    spans: std::mem::replace(&mut s.spans, next),
                }
            })
            .collect();
        let spans = std::mem::take(&mut self.spans);
        Batch { scopes, spans }
    }

    /// The `ExportTraceServiceRequest` of this batch for the resource whose
    /// `Resource` body is `resource` (see [`encode_resource`]) and schema
    /// URL is `resource_schema_url`.
    pub fn request(&self, resource: &[u8], resource_schema_url: &str) -> Vec<u8> {
        let scope_len = |s: &ScopeSpans| {
            len_delimited_len(1, s.encoded_scope.len())
                + s.spans.len()
                + opt_bytes_len(3, s.scope.schema_url().unwrap_or("").as_bytes())
        };
        let resource_spans_len = len_delimited_len(1, resource.len())
            + self
                .scopes
                .iter()
                .map(|s| len_delimited_len(2, scope_len(s)))
                .sum::<usize>()
            + opt_bytes_len(3, resource_schema_url.as_bytes());
        let mut buf = Vec::with_capacity(len_delimited_len(1, resource_spans_len));
        // ExportTraceServiceRequest.resource_spans (1)
        put_len_prefix(&mut buf, 1, resource_spans_len);
        // ResourceSpans.resource (1), always present
        put_len_prefix(&mut buf, 1, resource.len());
        buf.extend_from_slice(resource);
        for s in &self.scopes {
            // ResourceSpans.scope_spans (2)
            put_len_prefix(&mut buf, 2, scope_len(s));
            // ScopeSpans.scope (1), ScopeSpans.spans (2), ScopeSpans.schema_url (3)
            put_len_prefix(&mut buf, 1, s.encoded_scope.len());
            buf.extend_from_slice(&s.encoded_scope);
            buf.extend_from_slice(&s.spans);
            put_opt_bytes(&mut buf, 3, s.scope.schema_url().unwrap_or("").as_bytes());
        }
        // ResourceSpans.schema_url (3)
        put_opt_bytes(&mut buf, 3, resource_schema_url.as_bytes());
        buf
    }
}

/// How many spans the collector refused, from an
/// `ExportTraceServiceResponse` body (`partial_success` (1) →
/// `rejected_spans` (1)); 0 when it says nothing, `None` when the body is
/// not one.
pub fn rejected_spans(mut body: &[u8]) -> Option<u64> {
    use prost::encoding::{DecodeContext, decode_key, decode_varint, skip_field};
    let mut rejected = 0;
    while !body.is_empty() {
        let (tag, wire_type) = decode_key(&mut body).ok()?;
        if tag == 1 && wire_type == WireType::LengthDelimited {
            let len = decode_varint(&mut body).ok()? as usize;
            let mut partial = body.get(..len)?;
            body = &body[len..];
            while !partial.is_empty() {
                let (tag, wire_type) = decode_key(&mut partial).ok()?;
                if tag == 1 && wire_type == WireType::Varint {
                    rejected = decode_varint(&mut partial).ok()?;
                } else {
                    skip_field(wire_type, tag, &mut partial, DecodeContext::default()).ok()?;
                }
            }
        } else {
            skip_field(wire_type, tag, &mut body, DecodeContext::default()).ok()?;
        }
    }
    Some(rejected)
}
