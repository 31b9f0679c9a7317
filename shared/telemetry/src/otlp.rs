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
use prost::encoding::{WireType, encoded_len_varint, key_len};

/// `Span.flags`: the `is_remote` bit below is meaningful.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// `Span.flags`: the parent (or a link's span) is remote.
const FLAG_IS_REMOTE: u32 = 0x200;

// ---- field helpers ----
//
// A span is written in one pass: a nested message's length is not computed
// beforehand but reserved (one byte, two for a span), filled in once its
// body is written, and the body moved in the rare case its length needs
// another number of bytes. The bytes are the canonical encoding (shortest
// varints, fields in number order), the same a generated encoder writes.

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// Appends `value` as a varint: one byte for most keys, lengths and
/// enums, the rest written on the stack and appended at once.
#[inline]
fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    if value < 0x80 {
        buf.push(value as u8);
        return;
    }
    let mut bytes = [0u8; 10];
    let mut n = 0;
    while value >= 0x80 {
        bytes[n] = value as u8 | 0x80;
        value >>= 7;
        n += 1;
    }
    bytes[n] = value as u8;
    buf.extend_from_slice(&bytes[..=n]);
}

#[inline]
fn put_key(buf: &mut Vec<u8>, tag: u32, wire_type: u32) {
    put_varint(buf, u64::from(tag << 3 | wire_type));
}

/// The size of a length-delimited field `tag` with a `len`-byte body.
fn len_delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_len_prefix(buf: &mut Vec<u8>, tag: u32, len: usize) {
    put_key(buf, tag, LEN);
    put_varint(buf, len as u64);
}

/// Field `tag` as a length-delimited message whose body `body` appends;
/// `reserved` bytes are kept for the length, the body moves when the
/// length takes another number of bytes.
#[inline]
fn put_message(buf: &mut Vec<u8>, tag: u32, reserved: usize, body: impl FnOnce(&mut Vec<u8>)) {
    put_key(buf, tag, LEN);
    let at = buf.len();
    buf.resize(at + reserved, 0);
    body(buf);
    let len = buf.len() - at - reserved;
    let needed = encoded_len_varint(len as u64);
    if needed != reserved {
        let body_at = at + reserved;
        if needed > reserved {
            buf.resize(buf.len() + needed - reserved, 0);
        }
        buf.copy_within(body_at..body_at + len, at + needed);
        buf.truncate(at + needed + len);
    }
    let mut length = len as u64;
    for byte in &mut buf[at..at + needed - 1] {
        *byte = length as u8 | 0x80;
        length >>= 7;
    }
    buf[at + needed - 1] = length as u8;
}

/// A `string`/`bytes` field, left out when empty (proto3).
fn opt_bytes_len(tag: u32, bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        len_delimited_len(tag, bytes.len())
    }
}

#[inline]
fn put_opt_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_prefix(buf, tag, bytes.len());
        buf.extend_from_slice(bytes);
    }
}

/// A `uint32`/`int64`/enum field, left out when zero.
#[inline]
fn put_opt_varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        put_key(buf, tag, VARINT);
        put_varint(buf, value);
    }
}

/// A `fixed64` field, left out when zero.
#[inline]
fn put_opt_fixed64(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        put_key(buf, tag, FIXED64);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// A `fixed32` field, left out when zero.
#[inline]
fn put_opt_fixed32(buf: &mut Vec<u8>, tag: u32, value: u32) {
    if value != 0 {
        put_key(buf, tag, FIXED32);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// Keys, lengths and small fixed-size values gathered on the stack and
/// appended at once: the fields between two strings cost one append
/// instead of one per byte group. Holds [`Head::CAPACITY`] bytes; every
/// user below stays under it (at most four varints of 10 bytes plus a few
/// keys, or the span's ids and times).
struct Head {
    bytes: [u8; Head::CAPACITY],
    len: usize,
}

impl Head {
    const CAPACITY: usize = 64;

    #[inline]
    fn new() -> Self {
        Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        }
    }

    #[inline]
    fn byte(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    #[inline]
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte(value as u8 | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    #[inline]
    fn key(&mut self, tag: u32, wire_type: u32) {
        self.varint(u64::from(tag << 3 | wire_type));
    }

    #[inline]
    fn slice(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Field `tag`'s key and length, for a body of `len` bytes.
    #[inline]
    fn len_prefix(&mut self, tag: u32, len: usize) {
        self.key(tag, LEN);
        self.varint(len as u64);
    }

    #[inline]
    fn fixed64(&mut self, tag: u32, value: u64) {
        if value != 0 {
            self.key(tag, FIXED64);
            self.slice(&value.to_le_bytes());
        }
    }

    #[inline]
    fn opt_varint(&mut self, tag: u32, value: u64) {
        if value != 0 {
            self.key(tag, VARINT);
            self.varint(value);
        }
    }

    /// Appends what was gathered to `buf` and starts again.
    #[inline]
    fn flush(&mut self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.bytes[..self.len]);
        self.len = 0;
    }
}

/// Nanoseconds since the Unix epoch; 0 for a time before it (as the SDK's
/// conversion does).
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---- common.proto: AnyValue, ArrayValue, KeyValue, InstrumentationScope ----

/// An `AnyValue` that is not an array (an array's element, or a value).
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
                put_key(buf, 2, VARINT);
                put_varint(buf, u64::from(b));
            }
            Scalar::Int(i) => {
                put_key(buf, 3, VARINT);
                put_varint(buf, i as u64);
            }
            Scalar::Double(d) => {
                put_key(buf, 4, FIXED64);
                buf.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Scalar::Str(s) => {
                put_len_prefix(buf, 1, s.len());
                buf.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// Field `tag` holding this `AnyValue`.
    fn put_field(&self, buf: &mut Vec<u8>, tag: u32) {
        put_len_prefix(buf, tag, self.len());
        self.put(buf);
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

/// Field `tag` holding `value` as an `AnyValue`.
fn put_any_value(buf: &mut Vec<u8>, tag: u32, value: &Value) {
    match value {
        Value::Bool(b) => Scalar::Bool(*b).put_field(buf, tag),
        Value::I64(i) => Scalar::Int(*i).put_field(buf, tag),
        Value::F64(d) => Scalar::Double(*d).put_field(buf, tag),
        Value::String(s) => Scalar::Str(s.as_str()).put_field(buf, tag),
        // AnyValue.array_value (5): an ArrayValue, every element as field 1.
        Value::Array(a) => put_message(buf, tag, 1, |buf| {
            put_message(buf, 5, 1, |buf| {
                for_each_element(a, |element| element.put_field(buf, 1));
            });
        }),
        other => Scalar::Str(&other.as_str()).put_field(buf, tag),
    }
}

/// Repeated `KeyValue` field `tag`: `key` (1) and `value` (2, always
/// present).
fn put_attributes<'a>(
    buf: &mut Vec<u8>,
    tag: u32,
    attributes: impl IntoIterator<Item = &'a KeyValue>,
) {
    let mut head = Head::new();
    for kv in attributes {
        let key = kv.key.as_str().as_bytes();
        let scalar = match &kv.value {
            Value::Bool(b) => Scalar::Bool(*b),
            Value::I64(i) => Scalar::Int(*i),
            Value::F64(d) => Scalar::Double(*d),
            Value::String(s) => Scalar::Str(s.as_str()),
            // Arrays (and kinds added to the API later): their lengths are
            // found as they are written.
            other => {
                put_message(buf, tag, 1, |buf| {
                    put_opt_bytes(buf, 1, key);
                    put_any_value(buf, 2, other);
                });
                continue;
            }
        };
        // A scalar's sizes are known up front: the `KeyValue`'s key and
        // length, its key field, then its value's key, length and body.
        let value_len = scalar.len();
        let body = opt_bytes_len(1, key) + len_delimited_len(2, value_len);
        head.len_prefix(tag, body);
        if !key.is_empty() {
            head.len_prefix(1, key.len());
            head.flush(buf);
            buf.extend_from_slice(key);
        }
        head.len_prefix(2, value_len);
        match scalar {
            Scalar::Bool(b) => {
                head.key(2, VARINT);
                head.byte(u8::from(b));
            }
            Scalar::Int(i) => {
                head.key(3, VARINT);
                head.varint(i as u64);
            }
            Scalar::Double(d) => {
                head.key(4, FIXED64);
                head.slice(&d.to_bits().to_le_bytes());
            }
            Scalar::Str(s) => {
                head.len_prefix(1, s.len());
                head.flush(buf);
                buf.extend_from_slice(s.as_bytes());
            }
        }
        head.flush(buf);
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
    let attributes: Vec<KeyValue> = resource
        .iter()
        .map(|(key, value)| KeyValue::new(key.clone(), value.clone()))
        .collect();
    let mut buf = Vec::new();
    put_attributes(&mut buf, 1, &attributes);
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

/// `flags` of a span or link: the W3C trace flags plus whether the parent
/// (for a link: the linked span) is remote.
fn span_flags(trace_flags: u8, remote: bool) -> u32 {
    let mut flags = u32::from(trace_flags) | FLAG_HAS_IS_REMOTE;
    if remote {
        flags |= FLAG_IS_REMOTE;
    }
    flags
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

/// [`put_span`] for any [`SpanView`], in one pass over the span.
pub fn put_span_view(buf: &mut Vec<u8>, span: &SpanView<'_>) -> usize {
    let sc = span.span_context;
    let before = buf.len();
    // A span with a few attributes takes more than 127 bytes: two bytes
    // for its length.
    put_message(buf, 2, 2, |buf| {
        let mut head = Head::new();
        head.len_prefix(1, 16);
        head.slice(&sc.trace_id().to_bytes());
        head.len_prefix(2, 8);
        head.slice(&sc.span_id().to_bytes());
        // Usually empty: then `header()` allocates nothing.
        let trace_state = sc.trace_state().header();
        if !trace_state.is_empty() {
            head.len_prefix(3, trace_state.len());
            head.flush(buf);
            buf.extend_from_slice(trace_state.as_bytes());
        }
        if span.parent_span_id != SpanId::INVALID {
            head.len_prefix(4, 8);
            head.slice(&span.parent_span_id.to_bytes());
        }
        if !span.name.is_empty() {
            head.len_prefix(5, span.name.len());
            head.flush(buf);
            buf.extend_from_slice(span.name.as_bytes());
        }
        head.opt_varint(6, span_kind(span.kind));
        head.fixed64(7, unix_nanos(span.start_time));
        head.fixed64(8, unix_nanos(span.end_time));
        head.flush(buf);
        put_attributes(buf, 9, span.attributes);
        put_opt_varint(buf, 10, u64::from(span.dropped_attributes_count));
        for event in span.events {
            put_message(buf, 11, 1, |buf| {
                put_opt_fixed64(buf, 1, unix_nanos(event.timestamp));
                put_opt_bytes(buf, 2, event.name.as_bytes());
                put_attributes(buf, 3, &event.attributes);
                put_opt_varint(buf, 4, u64::from(event.dropped_attributes_count));
            });
        }
        put_opt_varint(buf, 12, u64::from(span.dropped_events_count));
        for link in span.links {
            let sc = &link.span_context;
            put_message(buf, 13, 1, |buf| {
                put_opt_bytes(buf, 1, &sc.trace_id().to_bytes());
                put_opt_bytes(buf, 2, &sc.span_id().to_bytes());
                put_opt_bytes(buf, 3, sc.trace_state().header().as_bytes());
                put_attributes(buf, 4, &link.attributes);
                put_opt_varint(buf, 5, u64::from(link.dropped_attributes_count));
                put_opt_fixed32(buf, 6, span_flags(sc.trace_flags().to_u8(), sc.is_remote()));
            });
        }
        put_opt_varint(buf, 14, u64::from(span.dropped_links_count));
        // The status is always written, empty or not.
        let (message, code) = status_parts(span.status);
        put_message(buf, 15, 1, |buf| {
            put_opt_bytes(buf, 2, message.as_bytes());
            put_opt_varint(buf, 3, code);
        });
        put_opt_fixed32(
            buf,
            16,
            span_flags(sc.trace_flags().to_u8(), span.parent_span_is_remote),
        );
    });
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

    /// Empties the batch, keeping its scopes and the room its buffers
    /// have, so that it can be filled again without allocating.
    pub fn clear(&mut self) {
        for scope in &mut self.scopes {
            scope.spans.clear();
        }
        self.spans = 0;
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
        let mut buf = Vec::new();
        self.request_into(&mut buf, resource, resource_schema_url);
        buf
    }

    /// [`Batch::request`] written into `buf` (emptied first), whose room is
    /// reused. Scopes without spans (left by [`Batch::clear`]) are left out.
    pub fn request_into(&self, buf: &mut Vec<u8>, resource: &[u8], resource_schema_url: &str) {
        buf.clear();
        let scope_len = |s: &ScopeSpans| {
            len_delimited_len(1, s.encoded_scope.len())
                + s.spans.len()
                + opt_bytes_len(3, s.scope.schema_url().unwrap_or("").as_bytes())
        };
        let scopes = || self.scopes.iter().filter(|s| !s.spans.is_empty());
        let resource_spans_len = len_delimited_len(1, resource.len())
            + scopes()
                .map(|s| len_delimited_len(2, scope_len(s)))
                .sum::<usize>()
            + opt_bytes_len(3, resource_schema_url.as_bytes());
        buf.reserve(len_delimited_len(1, resource_spans_len));
        // ExportTraceServiceRequest.resource_spans (1)
        put_len_prefix(buf, 1, resource_spans_len);
        // ResourceSpans.resource (1), always present
        put_len_prefix(buf, 1, resource.len());
        buf.extend_from_slice(resource);
        for s in scopes() {
            // ResourceSpans.scope_spans (2)
            put_len_prefix(buf, 2, scope_len(s));
            // ScopeSpans.scope (1), ScopeSpans.spans (2), ScopeSpans.schema_url (3)
            put_len_prefix(buf, 1, s.encoded_scope.len());
            buf.extend_from_slice(&s.encoded_scope);
            buf.extend_from_slice(&s.spans);
            put_opt_bytes(buf, 3, s.scope.schema_url().unwrap_or("").as_bytes());
        }
        // ResourceSpans.schema_url (3)
        put_opt_bytes(buf, 3, resource_schema_url.as_bytes());
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
