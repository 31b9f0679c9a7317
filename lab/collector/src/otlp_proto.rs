//! OTLP/HTTP protobuf bodies decoded straight into stored spans.
//!
//! prost would build every span as a `Span` first: a heap allocation per
//! id, name, attribute key and string value, all freed again a moment later
//! when the span is converted to a [`StoredSpan`]. On the lab's batches that
//! allocation and copying was most of the receiver's CPU. This walker reads
//! the protobuf wire format of `ExportTraceServiceRequest` → `ResourceSpans`
//! → `ScopeSpans` → `Span` itself and writes each span's fields where they
//! are stored (attribute keys and short strings go to the interner without
//! an intermediate `String`).
//!
//! Only the hot path is hand-read: a span and its attributes whose values are
//! strings, ints, doubles or bools. Everything else is handed to prost on
//! its own bytes (resources, scopes, events, links, an attribute with any
//! other value or an unusual encoding), so the decoded span is the one
//! prost would give; a differential test holds that. Unknown fields are
//! skipped by the wire rules, as prost skips them. Malformed input (a
//! truncated field, a bad varint, a wire type that does not fit the field,
//! a string that is not UTF-8) is an error naming the problem, never a
//! panic.

use std::fmt;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use prost::Message;

use crate::model::{ResourceInfo, ScopeInfo};
use crate::pipeline::{Decoded, DecodedGroup, Records};
use crate::span::{Interner, ScalarValue, SpanBuilder, StoredSpan};

/// Why a body is not a valid `ExportTraceServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<prost::DecodeError> for DecodeError {
    fn from(e: prost::DecodeError) -> Self {
        DecodeError(e.to_string())
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// Deepest group nesting skipped (prost's recursion limit).
const MAX_GROUP_DEPTH: u32 = 100;

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        // Most varints on the wire (keys, lengths, small ints) are one byte.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        self.varint_long()
    }

    fn varint_long(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return err("truncated varint");
            };
            self.buf = rest;
            // The tenth byte may only hold the top bit of a u64.
            if i == 9 && b > 1 {
                return err("invalid varint");
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        err("invalid varint")
    }

    /// The next field's number and wire type.
    #[inline(always)]
    fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        // Fields 1 to 15 of the four wire types in use: one byte.
        if let Some((&b, rest)) = self.buf.split_first()
            && (8..0x80).contains(&b)
            && b & 7 <= FIXED32
        {
            self.buf = rest;
            return Ok((u32::from(b >> 3), b & 7));
        }
        self.key_long()
    }

    fn key_long(&mut self) -> Result<(u32, u8), DecodeError> {
        let key = self.varint()?;
        let Ok(key) = u32::try_from(key) else {
            return err(format!("invalid key value: {key}"));
        };
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return err(format!("invalid wire type value: {wire}"));
        }
        let tag = key >> 3;
        if tag == 0 {
            return err("invalid tag value: 0");
        }
        Ok((tag, wire))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return err("buffer underflow: a field is longer than the bytes left");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.take(len)
    }

    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn fixed32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }

    /// Skips a field of an unknown number.
    fn skip(&mut self, tag: u32, wire: u8) -> Result<(), DecodeError> {
        self.skip_at(tag, wire, 0)
    }

    fn skip_at(&mut self, tag: u32, wire: u8, depth: u32) -> Result<(), DecodeError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.take(4).map(drop),
            START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return err("recursion limit reached");
                }
                loop {
                    if self.is_empty() {
                        return err("truncated group");
                    }
                    let (t, w) = self.key()?;
                    if w == END_GROUP {
                        if t != tag {
                            return err("unexpected end group tag");
                        }
                        return Ok(());
                    }
                    self.skip_at(t, w, depth + 1)?;
                }
            }
            _ => err("unexpected end group tag"),
        }
    }
}

/// Checks a field's wire type.
fn expect(what: &str, wire: u8, want: u8) -> Result<(), DecodeError> {
    if wire == want {
        Ok(())
    } else {
        err(format!(
            "{what}: invalid wire type {wire} (expected {want})"
        ))
    }
}

fn utf8<'a>(what: &str, b: &'a [u8]) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(b).map_err(|_| not_utf8(what))
}

fn not_utf8(what: &str) -> DecodeError {
    DecodeError(format!(
        "{what}: invalid string value: data is not UTF-8 encoded"
    ))
}

/// Decodes a protobuf `ExportTraceServiceRequest` body; resources and
/// scopes equal to recent ones share them (`records`), strings go to
/// `interner` when it takes them.
///
/// # Errors
/// When the body is not a valid encoding of the request; the message says
/// what is wrong.
pub(crate) fn decode_request(
    body: &[u8],
    records: &Records,
    interner: &mut Interner,
) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::default();
    let mut b = SpanBuilder::new(interner);
    let mut r = Reader::new(body);
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        if tag == 1 {
            expect("ExportTraceServiceRequest.resource_spans", wire, LEN)?;
            resource_spans(r.bytes()?, records, &mut b, &mut out)?;
        } else {
            r.skip(tag, wire)?;
        }
    }
    Ok(out)
}

/// The raw bytes of a message field that may appear several times (then
/// prost merges the occurrences).
#[derive(Default)]
enum Parts<'a> {
    #[default]
    None,
    One(&'a [u8]),
    Many(Vec<&'a [u8]>),
}

impl<'a> Parts<'a> {
    fn push(&mut self, b: &'a [u8]) {
        *self = match std::mem::take(self) {
            Parts::None => Parts::One(b),
            Parts::One(a) => Parts::Many(vec![a, b]),
            Parts::Many(mut v) => {
                v.push(b);
                Parts::Many(v)
            }
        };
    }

    fn merge<M: Message + Default>(&self) -> Result<M, DecodeError> {
        let mut m = M::default();
        match self {
            Parts::None => {}
            Parts::One(b) => m.merge(*b)?,
            Parts::Many(v) => {
                for b in v {
                    m.merge(*b)?;
                }
            }
        }
        Ok(m)
    }

    /// Its bytes when it appeared once (or an empty message when never),
    /// the key a record is shared under.
    fn single(&self) -> Option<&'a [u8]> {
        match self {
            Parts::None => Some(&[]),
            Parts::One(b) => Some(b),
            Parts::Many(_) => None,
        }
    }
}

/// The shape `ResourceSpans` and `ScopeSpans` share: a head message (field
/// 1: the resource or the scope), repeated children (field 2) and a schema
/// url (field 3). The head and the url may follow the children, so all are
/// collected before anything is built.
struct Group<'a> {
    head: Parts<'a>,
    children: Vec<&'a [u8]>,
    schema_url: &'a str,
}

/// Reads a [`Group`]; `fields` names fields 1, 2 and 3 for errors.
fn group<'a>(buf: &'a [u8], fields: [&str; 3]) -> Result<Group<'a>, DecodeError> {
    let [head_name, children_name, url_name] = fields;
    let mut g = Group {
        head: Parts::None,
        children: Vec::new(),
        schema_url: "",
    };
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                expect(head_name, wire, LEN)?;
                g.head.push(r.bytes()?);
            }
            2 => {
                expect(children_name, wire, LEN)?;
                g.children.push(r.bytes()?);
            }
            3 => {
                expect(url_name, wire, LEN)?;
                g.schema_url = utf8(url_name, r.bytes()?)?;
            }
            _ => r.skip(tag, wire)?,
        }
    }
    Ok(g)
}

fn resource_spans(
    buf: &[u8],
    records: &Records,
    b: &mut SpanBuilder<'_>,
    out: &mut Decoded,
) -> Result<(), DecodeError> {
    let Group {
        head: resource,
        children: scopes,
        schema_url,
    } = group(
        buf,
        [
            "ResourceSpans.resource",
            "ResourceSpans.scope_spans",
            "ResourceSpans.schema_url",
        ],
    )?;
    let build = || -> Result<ResourceInfo, DecodeError> {
        Ok(ResourceInfo::new(
            resource.merge::<Resource>()?,
            schema_url.to_owned(),
        ))
    };
    let resource = match resource.single() {
        Some(key) => records.resource(key, schema_url, build)?,
        None => Arc::new(build()?),
    };
    for s in scopes {
        scope_spans(s, &resource, records, b, out)?;
    }
    Ok(())
}

fn scope_spans(
    buf: &[u8],
    resource: &Arc<ResourceInfo>,
    records: &Records,
    b: &mut SpanBuilder<'_>,
    out: &mut Decoded,
) -> Result<(), DecodeError> {
    let Group {
        head: scope,
        children: spans,
        schema_url,
    } = group(
        buf,
        [
            "ScopeSpans.scope",
            "ScopeSpans.spans",
            "ScopeSpans.schema_url",
        ],
    )?;
    let build = || -> Result<ScopeInfo, DecodeError> {
        Ok(ScopeInfo {
            scope: scope.merge::<InstrumentationScope>()?,
            schema_url: schema_url.to_owned(),
            shared: false,
        })
    };
    let scope = match scope.single() {
        Some(key) => records.scope(key, schema_url, build)?,
        None => Arc::new(build()?),
    };
    let mut group = DecodedGroup::new(resource.clone(), scope);
    group.spans.reserve_exact(spans.len());
    for s in spans {
        let (ids, span) = span(s, b)?;
        group.add(ids, span);
    }
    out.groups.push(group);
    Ok(())
}

/// The ids of a decoded span as received (lengths unchecked).
#[derive(Default)]
pub(crate) struct RawIds<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
}

fn span<'a>(
    buf: &'a [u8],
    b: &mut SpanBuilder<'_>,
) -> Result<(RawIds<'a>, StoredSpan), DecodeError> {
    let mut ids = RawIds::default();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                expect("Span.trace_id", wire, LEN)?;
                ids.trace_id = r.bytes()?;
            }
            2 => {
                expect("Span.span_id", wire, LEN)?;
                ids.span_id = r.bytes()?;
            }
            3 => {
                expect("Span.trace_state", wire, LEN)?;
                b.rare().trace_state = utf8("Span.trace_state", r.bytes()?)?.to_owned();
            }
            4 => {
                expect("Span.parent_span_id", wire, LEN)?;
                ids.parent_span_id = r.bytes()?;
            }
            5 => {
                expect("Span.name", wire, LEN)?;
                b.set_name_bytes(r.bytes()?)
                    .map_err(|_| not_utf8("Span.name"))?;
            }
            6 => {
                expect("Span.kind", wire, VARINT)?;
                b.kind = r.varint()? as i32;
            }
            7 => {
                expect("Span.start_time_unix_nano", wire, FIXED64)?;
                b.start_time_unix_nano = r.fixed64()?;
            }
            8 => {
                expect("Span.end_time_unix_nano", wire, FIXED64)?;
                b.end_time_unix_nano = r.fixed64()?;
            }
            9 => {
                expect("Span.attributes", wire, LEN)?;
                attribute(r.bytes()?, b)?;
            }
            10 => {
                expect("Span.dropped_attributes_count", wire, VARINT)?;
                b.rare().dropped_attributes_count = r.varint()? as u32;
            }
            11 => {
                expect("Span.events", wire, LEN)?;
                let e = Event::decode(r.bytes()?)?;
                b.rare().events.push(e);
            }
            12 => {
                expect("Span.dropped_events_count", wire, VARINT)?;
                b.rare().dropped_events_count = r.varint()? as u32;
            }
            13 => {
                expect("Span.links", wire, LEN)?;
                let l = Link::decode(r.bytes()?)?;
                b.rare().links.push(l);
            }
            14 => {
                expect("Span.dropped_links_count", wire, VARINT)?;
                b.rare().dropped_links_count = r.varint()? as u32;
            }
            15 => {
                expect("Span.status", wire, LEN)?;
                status(r.bytes()?, b)?;
            }
            16 => {
                expect("Span.flags", wire, FIXED32)?;
                b.flags = r.fixed32()?;
            }
            _ => r.skip(tag, wire)?,
        }
    }
    let span = b.finish(ids.span_id, ids.parent_span_id);
    Ok((ids, span))
}

/// A `Status`, merged into what an earlier occurrence set (prost's rule
/// for a message field sent twice).
fn status(buf: &[u8], b: &mut SpanBuilder<'_>) -> Result<(), DecodeError> {
    b.has_status = true;
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        match tag {
            2 => {
                expect("Status.message", wire, LEN)?;
                b.rare().status_message = utf8("Status.message", r.bytes()?)?.to_owned();
            }
            3 => {
                expect("Status.code", wire, VARINT)?;
                b.status_code = r.varint()? as i32;
            }
            _ => r.skip(tag, wire)?,
        }
    }
    Ok(())
}

/// A scalar attribute value read by hand (strings still encoded: the
/// interner may know them without a UTF-8 check).
enum Scalar<'a> {
    Str(&'a [u8]),
    Other(ScalarValue),
}

/// A key (encoded), and its value when a plain scalar.
type Simple<'a> = (&'a [u8], Option<Scalar<'a>>);

/// One attribute: by hand when it is a key and one string, int, double or
/// bool value, each sent once; through prost otherwise.
fn attribute(buf: &[u8], b: &mut SpanBuilder<'_>) -> Result<(), DecodeError> {
    let Some((key, Some(value))) = simple_attribute(buf)? else {
        b.push_attr(KeyValue::decode(buf)?);
        return Ok(());
    };
    let key = b.key_bytes(key).map_err(|_| not_utf8("KeyValue.key"))?;
    match value {
        Scalar::Str(s) => b
            .push_str_attr_bytes(key, s)
            .map_err(|_| not_utf8("AnyValue.string_value")),
        Scalar::Other(v) => {
            b.push_scalar_attr(key, v);
            Ok(())
        }
    }
}

/// The key and value of a `KeyValue` in the common shape; `Ok(None)` when
/// it has another shape (prost decodes it then), `Some((key, None))` when
/// its value is not a plain scalar. Strings are not checked here.
fn simple_attribute(buf: &[u8]) -> Result<Option<Simple<'_>>, DecodeError> {
    let mut key = None;
    let mut value = None;
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        match (tag, wire) {
            (1, LEN) if key.is_none() => key = Some(r.bytes()?),
            (2, LEN) if value.is_none() => value = Some(r.bytes()?),
            _ => return Ok(None),
        }
    }
    let (Some(key), Some(value)) = (key, value) else {
        return Ok(None);
    };
    let mut r = Reader::new(value);
    if r.is_empty() {
        return Ok(Some((key, None)));
    }
    let (tag, wire) = r.key()?;
    let scalar = match (tag, wire) {
        (1, LEN) => Scalar::Str(r.bytes()?),
        (2, VARINT) => Scalar::Other(ScalarValue::Bool(r.varint()? != 0)),
        (3, VARINT) => Scalar::Other(ScalarValue::Int(r.varint()? as i64)),
        (4, FIXED64) => Scalar::Other(ScalarValue::Double(f64::from_bits(r.fixed64()?))),
        _ => return Ok(Some((key, None))),
    };
    if !r.is_empty() {
        return Ok(Some((key, None)));
    }
    Ok(Some((key, Some(scalar))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::INTERNER_MAX_BYTES;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use proptest::prelude::*;

    type Group = (
        Resource,
        String,
        InstrumentationScope,
        String,
        Vec<([u8; 16], Span)>,
        u64,
    );

    /// A decoded request in a comparable form.
    fn groups(d: &Decoded) -> Vec<Group> {
        d.groups
            .iter()
            .map(|g| {
                (
                    g.resource.resource.clone(),
                    g.resource.schema_url.clone(),
                    g.scope.scope.clone(),
                    g.scope.schema_url.clone(),
                    g.spans.iter().map(|(t, s)| (*t, s.to_proto())).collect(),
                    g.invalid,
                )
            })
            .collect()
    }

    fn ours(body: &[u8]) -> Result<Vec<Group>, DecodeError> {
        let mut interner = Interner::new(INTERNER_MAX_BYTES);
        decode_request(body, &Records::default(), &mut interner).map(|d| groups(&d))
    }

    fn prosts(body: &[u8]) -> Result<Vec<Group>, prost::DecodeError> {
        let req = ExportTraceServiceRequest::decode(body)?;
        let mut interner = Interner::new(INTERNER_MAX_BYTES);
        Ok(groups(&Decoded::from_proto(
            req,
            &Records::default(),
            &mut interner,
        )))
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z.]{1,12}",
            "\\PC{0,20}",
            Just("x".repeat(200)),
        ]
    }

    fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            8 => proptest::collection::vec(any::<u8>(), len),
            1 => Just(vec![0; len]),
            1 => proptest::collection::vec(any::<u8>(), 0..20),
        ]
    }

    fn value() -> impl Strategy<Value = Option<Av>> {
        let leaf = prop_oneof![
            text().prop_map(Av::StringValue),
            any::<bool>().prop_map(Av::BoolValue),
            any::<i64>().prop_map(Av::IntValue),
            any::<f64>().prop_map(Av::DoubleValue),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(Av::BytesValue),
            any::<i32>().prop_map(Av::StringValueStrindex),
        ];
        let nested = leaf.prop_recursive(3, 12, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| {
                    Av::ArrayValue(ArrayValue {
                        values: v.into_iter().map(|v| AnyValue { value: Some(v) }).collect(),
                    })
                }),
                proptest::collection::vec(("[a-z]{1,4}", inner), 0..3).prop_map(|v| {
                    Av::KvlistValue(KeyValueList {
                        values: v
                            .into_iter()
                            .map(|(k, v)| KeyValue {
                                key: k,
                                value: Some(AnyValue { value: Some(v) }),
                                ..Default::default()
                            })
                            .collect(),
                    })
                }),
            ]
        });
        proptest::option::weighted(0.95, nested)
    }

    fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
        let kv = (
            text(),
            proptest::option::weighted(0.9, value()),
            prop_oneof![9 => Just(0), 1 => any::<i32>()],
        )
            .prop_map(|(key, value, key_strindex)| KeyValue {
                key,
                value: value.map(|value| AnyValue { value }),
                key_strindex,
            });
        proptest::collection::vec(kv, 0..6)
    }

    fn span() -> impl Strategy<Value = Span> {
        let event =
            (any::<u64>(), text(), attrs(), any::<u32>()).prop_map(|(t, name, attributes, d)| {
                Event {
                    time_unix_nano: t,
                    name,
                    attributes,
                    dropped_attributes_count: d % 3,
                }
            });
        let link = (id(16), id(8), text(), attrs(), any::<u32>()).prop_map(
            |(t, s, ts, attributes, flags)| Link {
                trace_id: t,
                span_id: s,
                trace_state: ts,
                attributes,
                dropped_attributes_count: 0,
                flags,
            },
        );
        (
            (
                id(16),
                id(8),
                prop_oneof![Just(Vec::new()), id(8)],
                text(),
                text(),
            ),
            (
                any::<i32>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                attrs(),
            ),
            (
                proptest::collection::vec(event, 0..2),
                proptest::collection::vec(link, 0..2),
                proptest::option::of((text(), any::<i32>())),
                (any::<u8>(), any::<u8>(), any::<u8>()),
            ),
        )
            .prop_map(
                |(
                    (trace_id, span_id, parent_span_id, trace_state, name),
                    (kind, start, end, flags, attributes),
                    (events, links, status, dropped),
                )| Span {
                    trace_id,
                    span_id,
                    trace_state,
                    parent_span_id,
                    flags,
                    name,
                    kind: kind % 8,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    dropped_attributes_count: u32::from(dropped.0 % 3),
                    events,
                    dropped_events_count: u32::from(dropped.1 % 3),
                    links,
                    dropped_links_count: u32::from(dropped.2 % 3),
                    status: status.map(|(message, code)| Status {
                        message,
                        code: code % 4,
                    }),
                },
            )
    }

    fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
        let scope = (
            proptest::option::of((text(), text(), attrs())),
            text(),
            proptest::collection::vec(span(), 0..4),
        )
            .prop_map(|(scope, schema_url, spans)| ScopeSpans {
                scope: scope.map(|(name, version, attributes)| InstrumentationScope {
                    name,
                    version,
                    attributes,
                    dropped_attributes_count: 0,
                }),
                spans,
                schema_url,
            });
        let resource = (
            proptest::option::of(attrs()),
            text(),
            proptest::collection::vec(scope, 0..3),
        )
            .prop_map(|(attributes, schema_url, scope_spans)| ResourceSpans {
                resource: attributes.map(|attributes| Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans,
                schema_url,
            });
        proptest::collection::vec(resource, 0..3)
            .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any request prost encodes decodes to the same spans as prost
        /// decodes it to.
        #[test]
        fn agrees_with_prost_on_any_request(req in request()) {
            let body = req.encode_to_vec();
            let ours = ours(&body).expect("a valid body decodes");
            let theirs = prosts(&body).expect("prost decodes its own encoding");
            prop_assert_eq!(ours, theirs);
        }

        /// A valid body cut short or with a byte changed is an error for
        /// both decoders or for neither, and never a panic.
        #[test]
        fn agrees_with_prost_on_damaged_bodies(req in request(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
            let body = req.encode_to_vec();
            if body.is_empty() {
                return Ok(());
            }
            let short = &body[..cut.index(body.len())];
            let mut changed = body.clone();
            changed[flip.0.index(body.len())] ^= flip.1.max(1);
            for damaged in [short, &changed[..]] {
                match (ours(damaged), prosts(damaged)) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                    (Err(_), Err(_)) => {}
                    (a, b) => prop_assert!(false, "ours {:?}, prost's {:?}", a.map(|_| ()), b.map(|_| ())),
                }
            }
        }
    }

    /// Field `tag` with wire type `wire`, then `payload` as is.
    fn field(tag: u32, wire: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wire)), &mut out);
        out.extend_from_slice(payload);
        out
    }

    fn len_field(tag: u32, payload: &[u8]) -> Vec<u8> {
        let mut len = Vec::new();
        prost::encoding::encode_varint(payload.len() as u64, &mut len);
        len.extend_from_slice(payload);
        field(tag, LEN, &len)
    }

    fn wrap(span: &[u8]) -> Vec<u8> {
        len_field(1, &len_field(2, &len_field(2, span)))
    }

    fn plain_span() -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GET /".into(),
            attributes: vec![KeyValue {
                key: "k".into(),
                value: Some(AnyValue {
                    value: Some(Av::StringValue("v".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn skips_unknown_fields_of_every_wire_type() {
        let span = plain_span().encode_to_vec();
        let mut with_unknown = span.clone();
        with_unknown.extend(field(100, VARINT, &[0x96, 0x01]));
        with_unknown.extend(field(101, FIXED64, &[7; 8]));
        with_unknown.extend(len_field(102, b"anything"));
        with_unknown.extend(field(103, FIXED32, &[7; 4]));
        // A group holding a varint and a nested group.
        with_unknown.extend(field(104, START_GROUP, &[]));
        with_unknown.extend(field(1, VARINT, &[5]));
        with_unknown.extend(field(2, START_GROUP, &[]));
        with_unknown.extend(field(2, END_GROUP, &[]));
        with_unknown.extend(field(104, END_GROUP, &[]));
        let expected = ours(&wrap(&span)).unwrap();
        assert_eq!(expected[0].4.len(), 1);
        assert_eq!(ours(&wrap(&with_unknown)).unwrap(), expected);
        assert_eq!(prosts(&wrap(&with_unknown)).unwrap(), expected);
    }

    #[test]
    fn malformed_bodies_are_errors_naming_the_problem() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x0a, 0x05, 0x01], "buffer underflow"),
            (vec![0x0a, 0xff], "truncated varint"),
            (vec![0x80; 11], "invalid varint"),
            (field(0, VARINT, &[1]), "invalid tag value: 0"),
            (vec![0x0f], "invalid wire type value: 7"),
            (field(1, VARINT, &[1]), "resource_spans: invalid wire type"),
            (
                wrap(&field(5, VARINT, &[1])),
                "Span.name: invalid wire type",
            ),
            (wrap(&len_field(5, &[0xff, 0xfe])), "not UTF-8"),
            (wrap(&field(7, FIXED64, &[1, 2, 3])), "buffer underflow"),
            (field(9, START_GROUP, &[]), "truncated group"),
            (field(9, END_GROUP, &[]), "unexpected end group tag"),
            (
                [field(9, START_GROUP, &[]), field(8, END_GROUP, &[])].concat(),
                "unexpected end group tag",
            ),
        ];
        for (body, want) in cases {
            let e = ours(&body).expect_err(want);
            assert!(e.to_string().contains(want), "{e} (wanted {want})");
            assert!(prosts(&body).is_err(), "prost accepts {body:?}");
        }
    }

    #[test]
    fn equal_resources_and_scopes_are_shared_across_requests() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Av::StringValue("gateway".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "s".into(),
                        ..Default::default()
                    }),
                    spans: vec![plain_span()],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let body = req.encode_to_vec();
        let records = Records::default();
        let mut interner = Interner::new(INTERNER_MAX_BYTES);
        let a = decode_request(&body, &records, &mut interner).unwrap();
        let b = decode_request(&body, &records, &mut interner).unwrap();
        assert!(Arc::ptr_eq(&a.groups[0].resource, &b.groups[0].resource));
        assert!(Arc::ptr_eq(&a.groups[0].scope, &b.groups[0].scope));
        assert_eq!(a.groups[0].resource.service, "gateway");
        assert!(a.groups[0].resource.shared && a.groups[0].scope.shared);
        // The prost path shares the same records.
        let c = Decoded::from_proto(req, &records, &mut interner);
        assert!(Arc::ptr_eq(&a.groups[0].resource, &c.groups[0].resource));
        // Another schema url is another resource.
        let mut other = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        other.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.0".into();
        let d = decode_request(&other.encode_to_vec(), &records, &mut interner).unwrap();
        assert!(!Arc::ptr_eq(&a.groups[0].resource, &d.groups[0].resource));
    }
}
