//! The stored form of a span, about a third of the memory of prost's
//! `Span` for the lab's spans.
//!
//! A prost `Span` is ~270 bytes before any of its heap allocations, and
//! each attribute is a 64-byte `KeyValue` plus a heap string for its key and
//! one for a string value. A [`StoredSpan`] keeps:
//! - ids, times, kind, status code and flags inline (fixed-size ids; an all
//!   zero parent means none, as the pipeline already treats it);
//! - its name, attribute keys and short string values as [`Sym`]s of a
//!   process-wide, bounded [`Interner`] when there is room there (the lab
//!   sends a few hundred distinct keys, names and values), else as a byte
//!   range of the span's one `text` allocation;
//! - its attributes in one boxed slice of 32-byte [`Attr`]s (ints, doubles,
//!   bools inline; bytes, arrays, key-value lists and the rest boxed);
//! - what spans rarely carry (events, links, trace state, a status message,
//!   dropped counts) in one `Option<Box<Rare>>`, so a typical span pays 8
//!   bytes for all of it.
//!
//! Nothing is lost: [`StoredSpan::to_proto`] gives back the span as
//! received (less its trace id, which the store keeps as the key), and the
//! OTLP/JSON encoder reads a stored span directly.

use foldhash::{HashMap, HashMapExt};
use std::sync::{Mutex, MutexGuard, OnceLock};

use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

/// An interned string: a thin pointer to a string the [`Interner`] keeps
/// for the life of the process.
#[derive(Clone, Copy)]
pub(crate) struct Sym(&'static String);

impl Sym {
    pub(crate) fn as_str(self) -> &'static str {
        self.0.as_str()
    }
}

impl std::fmt::Debug for Sym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Longest string interned; longer ones (query texts with literals, stack
/// traces) are rarely repeated exactly and stay with their span.
pub(crate) const MAX_INTERNED_LEN: usize = 128;

/// Most bytes the process-wide interner holds (strings, their records and
/// its table), about 16,000 strings of the lab's sizes. Once full, new
/// strings are stored with their spans: a client sending a million distinct
/// keys costs the store's byte bound, not the interner.
pub(crate) const INTERNER_MAX_BYTES: usize = 2 * 1024 * 1024;

/// Strings shared by every stored span: names, attribute keys and short
/// string values. Entries are never removed, so the interner is bounded
/// instead (strings up to [`MAX_INTERNED_LEN`] bytes, [`INTERNER_MAX_BYTES`]
/// in all): a fixed cost of the process, outside the store's byte bound,
/// which therefore counts interned strings as free.
pub(crate) struct Interner {
    /// Keyed by the string's bytes, so a decoder finds a string it has
    /// seen before without checking that it is UTF-8 again.
    map: HashMap<&'static [u8], Sym>,
    bytes: usize,
    max_bytes: usize,
}

impl Interner {
    /// An interner holding at most `max_bytes` (see [`Interner::entry_bytes`]).
    pub(crate) fn new(max_bytes: usize) -> Self {
        Interner {
            map: HashMap::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The process-wide interner the receivers use.
    pub(crate) fn global() -> MutexGuard<'static, Interner> {
        static GLOBAL: OnceLock<Mutex<Interner>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Mutex::new(Interner::new(INTERNER_MAX_BYTES)))
            // A panic elsewhere cannot leave the map half-updated in a way
            // that matters: an entry is inserted in one call.
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// What one entry costs: the string (with allocator rounding), its
    /// `String` record and a slot of the table with spare capacity.
    fn entry_bytes(len: usize) -> usize {
        len.next_multiple_of(16) + 16 + size_of::<String>() + 2 * (size_of::<(&str, Sym)>() + 1)
    }

    /// The shared copy of `s`, or `None` when `s` is longer than
    /// [`MAX_INTERNED_LEN`] or the interner is full.
    pub(crate) fn get(&mut self, s: &str) -> Option<Sym> {
        if let Some(sym) = self.find(s.as_bytes()) {
            return Some(sym);
        }
        if s.len() > MAX_INTERNED_LEN {
            return None;
        }
        let cost = Self::entry_bytes(s.len());
        if self.bytes + cost > self.max_bytes {
            return None;
        }
        let kept: &'static String = Box::leak(Box::new(s.to_owned()));
        self.map.insert(kept.as_bytes(), Sym(kept));
        self.bytes += cost;
        Some(Sym(kept))
    }

    /// The interned string whose UTF-8 encoding is `b`, if there is one.
    pub(crate) fn find(&self, b: &[u8]) -> Option<Sym> {
        if b.len() > MAX_INTERNED_LEN {
            return None;
        }
        self.map.get(b).copied()
    }

    /// Bytes held, as [`Interner::entry_bytes`] counts them.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A string of a stored span: interned, or a byte range of the span's text.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Text {
    Sym(Sym),
    Own(u32, u32),
}

/// A scalar attribute value that is not a string, as a decoder read it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScalarValue {
    Int(i64),
    Double(f64),
    Bool(bool),
}

/// An attribute value. Strings as [`Text`] (flattened, so the value stays
/// 16 bytes), the other scalars inline, the rest boxed.
#[derive(Debug)]
enum Value {
    Sym(Sym),
    Own(u32, u32),
    Int(i64),
    Double(f64),
    Bool(bool),
    Other(Box<OtherValue>),
}

/// A value that is not a string or scalar (bytes, array, key-value list,
/// string-table index, an empty `AnyValue`), an absent one (`value` unset in
/// the `KeyValue`), or any value of a `KeyValue` carrying the profiling
/// signal's `key_strindex`.
#[derive(Debug)]
struct OtherValue {
    value: Option<AnyValue>,
    key_strindex: i32,
}

#[derive(Debug)]
struct Attr {
    key: Text,
    value: Value,
}

/// The fields a typical span leaves empty.
#[derive(Debug, Default)]
pub(crate) struct Rare {
    pub trace_state: String,
    pub status_message: String,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
    pub dropped_attributes_count: u32,
    pub dropped_events_count: u32,
    pub dropped_links_count: u32,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.trace_state.is_empty()
            && self.status_message.is_empty()
            && self.events.is_empty()
            && self.links.is_empty()
            && self.dropped_attributes_count == 0
            && self.dropped_events_count == 0
            && self.dropped_links_count == 0
    }
}

/// An attribute value as read from a stored span.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ValueRef<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Bytes, arrays, key-value lists, string-table indexes, empty values.
    Other(&'a AnyValue),
}

impl ValueRef<'_> {
    /// The value as OTLP.
    pub(crate) fn to_any_value(self) -> AnyValue {
        let value = match self {
            ValueRef::Str(s) => Av::StringValue(s.to_owned()),
            ValueRef::Int(i) => Av::IntValue(i),
            ValueRef::Double(d) => Av::DoubleValue(d),
            ValueRef::Bool(b) => Av::BoolValue(b),
            ValueRef::Other(v) => return v.clone(),
        };
        AnyValue { value: Some(value) }
    }

    /// As [`crate::model::any_value_to_string`].
    pub(crate) fn to_text(self) -> String {
        match self {
            ValueRef::Str(s) => s.to_owned(),
            ValueRef::Int(i) => i.to_string(),
            ValueRef::Double(d) => d.to_string(),
            ValueRef::Bool(b) => b.to_string(),
            ValueRef::Other(v) => crate::model::any_value_to_string(v),
        }
    }
}

/// One stored span (see the module docs). Its trace id is the store's key.
#[derive(Debug)]
pub(crate) struct StoredSpan {
    pub span_id: [u8; 8],
    /// All zero for a span without a parent.
    pub parent_span_id: [u8; 8],
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    name: Text,
    attrs: Box<[Attr]>,
    /// The span's strings that are not interned, back to back.
    text: Box<str>,
    pub kind: i32,
    pub flags: u32,
    status_code: i32,
    /// Whether the span had a `status` (an unset one is sent as none or as
    /// an empty message; the protobuf answer keeps which).
    has_status: bool,
    rare: Option<Box<Rare>>,
}

/// Copies a span or parent id into 8 bytes (the pipeline has checked the
/// length; a short one is zero-padded, a long one cut).
fn id8(b: &[u8]) -> [u8; 8] {
    let mut id = [0u8; 8];
    let n = b.len().min(8);
    id[..n].copy_from_slice(&b[..n]);
    id
}

/// Builds stored spans one after another (its buffers are reused): strings
/// go to the interner when it takes them, else to the span's text.
pub(crate) struct SpanBuilder<'i> {
    interner: &'i mut Interner,
    text: String,
    name: Text,
    attrs: Vec<Attr>,
    rare: Rare,
    pub kind: i32,
    pub flags: u32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status_code: i32,
    pub has_status: bool,
}

impl<'i> SpanBuilder<'i> {
    pub(crate) fn new(interner: &'i mut Interner) -> Self {
        SpanBuilder {
            interner,
            text: String::new(),
            name: Text::Own(0, 0),
            attrs: Vec::new(),
            rare: Rare::default(),
            kind: 0,
            flags: 0,
            start_time_unix_nano: 0,
            end_time_unix_nano: 0,
            status_code: 0,
            has_status: false,
        }
    }

    fn own(&mut self, s: &str) -> (u32, u32) {
        let start = self.text.len();
        self.text.push_str(s);
        // Bodies are at most 16 MiB, so a span's text fits in u32.
        (start as u32, s.len() as u32)
    }

    fn text(&mut self, s: &str) -> Text {
        match self.interner.get(s) {
            Some(sym) => Text::Sym(sym),
            None => {
                let (a, b) = self.own(s);
                Text::Own(a, b)
            }
        }
    }

    /// `b` as text: a string interned already is found by its bytes;
    /// anything else must be UTF-8.
    fn text_bytes(&mut self, b: &[u8]) -> Result<Text, std::str::Utf8Error> {
        match self.interner.find(b) {
            Some(sym) => Ok(Text::Sym(sym)),
            None => Ok(self.text(std::str::from_utf8(b)?)),
        }
    }

    /// As [`SpanBuilder::set_name`], from the name's encoding.
    ///
    /// # Errors
    /// When the name is not UTF-8 (nothing is set).
    pub(crate) fn set_name_bytes(&mut self, name: &[u8]) -> Result<(), std::str::Utf8Error> {
        self.name = self.text_bytes(name)?;
        Ok(())
    }

    /// The key of an attribute from its encoding.
    ///
    /// # Errors
    /// When it is not UTF-8.
    pub(crate) fn key_bytes(&mut self, key: &[u8]) -> Result<Text, std::str::Utf8Error> {
        self.text_bytes(key)
    }

    /// As [`SpanBuilder::push_str_attr`], the value from its encoding.
    ///
    /// # Errors
    /// When the value is not UTF-8 (nothing is added).
    pub(crate) fn push_str_attr_bytes(
        &mut self,
        key: Text,
        value: &[u8],
    ) -> Result<(), std::str::Utf8Error> {
        let value = self.text_bytes(value)?;
        self.push_text_attr(key, value);
        Ok(())
    }

    /// An int, double or bool attribute under a key already read.
    pub(crate) fn push_scalar_attr(&mut self, key: Text, value: ScalarValue) {
        let value = match value {
            ScalarValue::Int(i) => Value::Int(i),
            ScalarValue::Double(d) => Value::Double(d),
            ScalarValue::Bool(b) => Value::Bool(b),
        };
        self.attrs.push(Attr { key, value });
    }

    /// The fields a typical span leaves empty.
    pub(crate) fn rare(&mut self) -> &mut Rare {
        &mut self.rare
    }

    pub(crate) fn set_name(&mut self, name: &str) {
        self.name = self.text(name);
    }

    pub(crate) fn push_str_attr(&mut self, key: &str, value: &str) {
        let key = self.text(key);
        let value = self.text(value);
        self.push_text_attr(key, value);
    }

    fn push_text_attr(&mut self, key: Text, value: Text) {
        let value = match value {
            Text::Sym(sym) => Value::Sym(sym),
            Text::Own(a, b) => Value::Own(a, b),
        };
        self.attrs.push(Attr { key, value });
    }

    pub(crate) fn push_int_attr(&mut self, key: &str, value: i64) {
        let key = self.text(key);
        self.push_scalar_attr(key, ScalarValue::Int(value));
    }

    pub(crate) fn push_double_attr(&mut self, key: &str, value: f64) {
        let key = self.text(key);
        self.push_scalar_attr(key, ScalarValue::Double(value));
    }

    pub(crate) fn push_bool_attr(&mut self, key: &str, value: bool) {
        let key = self.text(key);
        self.push_scalar_attr(key, ScalarValue::Bool(value));
    }

    /// Any attribute.
    pub(crate) fn push_attr(&mut self, kv: KeyValue) {
        match kv.value {
            _ if kv.key_strindex != 0 => {
                let key = self.text(&kv.key);
                self.attrs.push(Attr {
                    key,
                    value: Value::Other(Box::new(OtherValue {
                        value: kv.value,
                        key_strindex: kv.key_strindex,
                    })),
                });
            }
            Some(AnyValue {
                value: Some(Av::StringValue(s)),
            }) => self.push_str_attr(&kv.key, &s),
            Some(AnyValue {
                value: Some(Av::IntValue(i)),
            }) => self.push_int_attr(&kv.key, i),
            Some(AnyValue {
                value: Some(Av::DoubleValue(d)),
            }) => self.push_double_attr(&kv.key, d),
            Some(AnyValue {
                value: Some(Av::BoolValue(b)),
            }) => self.push_bool_attr(&kv.key, b),
            other => {
                let key = self.text(&kv.key);
                self.attrs.push(Attr {
                    key,
                    value: Value::Other(Box::new(OtherValue {
                        value: other,
                        key_strindex: 0,
                    })),
                });
            }
        }
    }

    /// The span built so far, with these ids (copied into 8 bytes, zero
    /// padded); the builder is empty again after.
    pub(crate) fn finish(&mut self, span_id: &[u8], parent_span_id: &[u8]) -> StoredSpan {
        let mut rare = std::mem::take(&mut self.rare);
        let rare = (!rare.is_empty()).then(|| {
            rare.events.shrink_to_fit();
            rare.links.shrink_to_fit();
            Box::new(rare)
        });
        let span = StoredSpan {
            span_id: id8(span_id),
            parent_span_id: id8(parent_span_id),
            start_time_unix_nano: self.start_time_unix_nano,
            end_time_unix_nano: self.end_time_unix_nano,
            name: self.name,
            // Exact-size: one allocation of the right size each.
            attrs: self.attrs.drain(..).collect(),
            text: Box::from(self.text.as_str()),
            kind: self.kind,
            flags: self.flags,
            status_code: self.status_code,
            has_status: self.has_status,
            rare,
        };
        self.text.clear();
        self.name = Text::Own(0, 0);
        self.kind = 0;
        self.flags = 0;
        self.start_time_unix_nano = 0;
        self.end_time_unix_nano = 0;
        self.status_code = 0;
        self.has_status = false;
        span
    }

    /// The stored form of a prost span.
    pub(crate) fn build_from(&mut self, span: Span) -> StoredSpan {
        self.set_name(&span.name);
        self.attrs.reserve(span.attributes.len());
        for kv in span.attributes {
            self.push_attr(kv);
        }
        if let Some(Status { message, code }) = span.status {
            self.has_status = true;
            self.status_code = code;
            self.rare.status_message = message;
        }
        self.rare.trace_state = span.trace_state;
        self.rare.events = span.events;
        self.rare.links = span.links;
        self.rare.dropped_attributes_count = span.dropped_attributes_count;
        self.rare.dropped_events_count = span.dropped_events_count;
        self.rare.dropped_links_count = span.dropped_links_count;
        self.kind = span.kind;
        self.flags = span.flags;
        self.start_time_unix_nano = span.start_time_unix_nano;
        self.end_time_unix_nano = span.end_time_unix_nano;
        self.finish(&span.span_id, &span.parent_span_id)
    }
}

impl StoredSpan {
    /// The stored form of `span`, interning its strings in `interner`.
    pub(crate) fn from_proto(span: Span, interner: &mut Interner) -> StoredSpan {
        SpanBuilder::new(interner).build_from(span)
    }

    fn str_of(&self, t: Text) -> &str {
        match t {
            Text::Sym(s) => s.as_str(),
            Text::Own(a, b) => self.range(a, b),
        }
    }

    fn range(&self, start: u32, len: u32) -> &str {
        let (start, len) = (start as usize, len as usize);
        // Built by `SpanBuilder`, so always in range and on char
        // boundaries; `get` keeps a mistake from panicking.
        self.text.get(start..start + len).unwrap_or("")
    }

    pub(crate) fn name(&self) -> &str {
        self.str_of(self.name)
    }

    /// Whether the span has a parent.
    pub(crate) fn has_parent(&self) -> bool {
        self.parent_span_id != [0; 8]
    }

    /// The parent id, empty for none (as OTLP sends it).
    pub(crate) fn parent_id_bytes(&self) -> &[u8] {
        if self.has_parent() {
            &self.parent_span_id
        } else {
            &[]
        }
    }

    /// The status code as sent (0, unset, when there was no status).
    pub(crate) fn status_code_raw(&self) -> i32 {
        self.status_code
    }

    pub(crate) fn status_message(&self) -> &str {
        self.rare.as_ref().map_or("", |r| &r.status_message)
    }

    pub(crate) fn trace_state(&self) -> &str {
        self.rare.as_ref().map_or("", |r| &r.trace_state)
    }

    pub(crate) fn events(&self) -> &[Event] {
        self.rare.as_ref().map_or(&[], |r| &r.events)
    }

    pub(crate) fn links(&self) -> &[Link] {
        self.rare.as_ref().map_or(&[], |r| &r.links)
    }

    pub(crate) fn dropped_attributes_count(&self) -> u32 {
        self.rare.as_ref().map_or(0, |r| r.dropped_attributes_count)
    }

    pub(crate) fn dropped_events_count(&self) -> u32 {
        self.rare.as_ref().map_or(0, |r| r.dropped_events_count)
    }

    pub(crate) fn dropped_links_count(&self) -> u32 {
        self.rare.as_ref().map_or(0, |r| r.dropped_links_count)
    }

    fn value_of<'s>(&'s self, v: &'s Value) -> Option<ValueRef<'s>> {
        Some(match v {
            Value::Sym(s) => ValueRef::Str(s.as_str()),
            Value::Own(a, b) => ValueRef::Str(self.range(*a, *b)),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Double(d) => ValueRef::Double(*d),
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Other(o) => return o.value.as_ref().map(ValueRef::Other),
        })
    }

    /// The attributes in the order received: key, and value (`None` when
    /// the `KeyValue` had none).
    pub(crate) fn attrs(&self) -> impl ExactSizeIterator<Item = (&str, Option<ValueRef<'_>>)> {
        self.attrs
            .iter()
            .map(|a| (self.str_of(a.key), self.value_of(&a.value)))
    }

    /// Whether the span has attributes.
    pub(crate) fn has_attrs(&self) -> bool {
        !self.attrs.is_empty()
    }

    /// The value of the first attribute named `key`, as
    /// [`crate::model::find_attr`] finds it (`None` when that attribute has
    /// no value).
    pub(crate) fn attr(&self, key: &str) -> Option<ValueRef<'_>> {
        let a = self.attrs.iter().find(|a| self.str_of(a.key) == key)?;
        self.value_of(&a.value)
    }

    /// The attributes as OTLP `KeyValue`s.
    pub(crate) fn proto_attrs(&self) -> Vec<KeyValue> {
        self.attrs
            .iter()
            .map(|a| {
                let key = self.str_of(a.key).to_owned();
                match &a.value {
                    Value::Other(o) => KeyValue {
                        key,
                        value: o.value.clone(),
                        key_strindex: o.key_strindex,
                    },
                    v => KeyValue {
                        key,
                        value: self.value_of(v).map(ValueRef::to_any_value),
                        ..Default::default()
                    },
                }
            })
            .collect()
    }

    /// The span as OTLP, with an empty trace id.
    pub(crate) fn to_proto(&self) -> Span {
        let rare = self.rare.as_deref();
        Span {
            trace_id: Vec::new(),
            span_id: self.span_id.to_vec(),
            trace_state: self.trace_state().to_owned(),
            parent_span_id: self.parent_id_bytes().to_vec(),
            flags: self.flags,
            name: self.name().to_owned(),
            kind: self.kind,
            start_time_unix_nano: self.start_time_unix_nano,
            end_time_unix_nano: self.end_time_unix_nano,
            attributes: self.proto_attrs(),
            dropped_attributes_count: self.dropped_attributes_count(),
            events: rare.map_or_else(Vec::new, |r| r.events.clone()),
            dropped_events_count: self.dropped_events_count(),
            links: rare.map_or_else(Vec::new, |r| r.links.clone()),
            dropped_links_count: self.dropped_links_count(),
            status: self.has_status.then(|| Status {
                message: self.status_message().to_owned(),
                code: self.status_code,
            }),
        }
    }

    /// Estimated memory held by this span: the struct, its attribute slice,
    /// its text and everything boxed (by capacity, since that is what is
    /// allocated). Interned strings are the interner's (a bounded, process-wide
    /// cost) and count nothing here.
    ///
    /// An estimate, not an allocator measurement (allocator rounding and
    /// fragmentation are not counted), but it grows with every byte a client
    /// can make the collector keep, which is what a byte bound needs.
    pub(crate) fn heap_bytes(&self) -> usize {
        use crate::model::{events_links_bytes, value_heap_bytes};
        let others: usize = self
            .attrs
            .iter()
            .map(|a| match &a.value {
                Value::Other(o) => {
                    size_of::<OtherValue>() + o.value.as_ref().map_or(0, value_heap_bytes)
                }
                _ => 0,
            })
            .sum();
        let rare = self.rare.as_ref().map_or(0, |r| {
            size_of::<Rare>()
                + r.trace_state.capacity()
                + r.status_message.capacity()
                + events_links_bytes(&r.events, &r.links)
        });
        size_of::<StoredSpan>()
            + self.attrs.len() * size_of::<Attr>()
            + self.text.len()
            + others
            + rare
    }
}

impl From<Span> for StoredSpan {
    /// Through the process-wide interner (one lock per span: receivers
    /// convert a whole request under one lock instead).
    fn from(span: Span) -> Self {
        StoredSpan::from_proto(span, &mut Interner::global())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: Option<Av>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.map(|v| AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    /// A span using every field, every value type and both absent and empty
    /// values.
    fn full_span() -> Span {
        let long = "x".repeat(MAX_INTERNED_LEN + 1);
        Span {
            trace_id: Vec::new(),
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            trace_state: "a=b".into(),
            parent_span_id: vec![9; 8],
            flags: 0x301,
            name: "GET /ünïcode".into(),
            kind: 2,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            attributes: vec![
                kv("s", Some(Av::StringValue("short".into()))),
                kv("long", Some(Av::StringValue(long.clone()))),
                kv(&long, Some(Av::IntValue(-3))),
                kv("d", Some(Av::DoubleValue(1.5))),
                kv("b", Some(Av::BoolValue(true))),
                kv("bytes", Some(Av::BytesValue(vec![0, 255]))),
                kv(
                    "arr",
                    Some(Av::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Av::IntValue(1)),
                        }],
                    })),
                ),
                kv(
                    "kv",
                    Some(Av::KvlistValue(KeyValueList {
                        values: vec![kv("in", Some(Av::StringValue("side".into())))],
                    })),
                ),
                kv("absent", None),
                KeyValue {
                    key: "empty".into(),
                    value: Some(AnyValue { value: None }),
                    ..Default::default()
                },
                KeyValue {
                    key: String::new(),
                    value: Some(AnyValue {
                        value: Some(Av::StringValueStrindex(4)),
                    }),
                    key_strindex: 7,
                },
            ],
            dropped_attributes_count: 1,
            events: vec![Event {
                time_unix_nano: 15,
                name: "e".into(),
                attributes: vec![kv("ek", Some(Av::IntValue(1)))],
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: vec![Link {
                trace_id: vec![4; 16],
                span_id: vec![5; 8],
                trace_state: "c=d".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
                flags: 1,
            }],
            dropped_links_count: 4,
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
        }
    }

    #[test]
    fn round_trips_every_field() {
        let mut interner = Interner::new(INTERNER_MAX_BYTES);
        let span = full_span();
        let stored = StoredSpan::from_proto(span.clone(), &mut interner);
        assert_eq!(stored.to_proto(), span);
        assert_eq!(
            stored.attr("s").map(ValueRef::to_text).as_deref(),
            Some("short")
        );
        assert!(stored.attr("absent").is_none());
        assert!(stored.attr("missing").is_none());
        assert_eq!(stored.name(), "GET /ünïcode");
    }

    #[test]
    fn round_trips_a_plain_span_and_no_status_versus_an_empty_one() {
        let mut interner = Interner::new(INTERNER_MAX_BYTES);
        for status in [None, Some(Status::default())] {
            let span = Span {
                span_id: vec![1; 8],
                name: "n".into(),
                status,
                ..Default::default()
            };
            let stored = StoredSpan::from_proto(span.clone(), &mut interner);
            assert!(stored.rare.is_none());
            assert!(!stored.has_parent());
            assert_eq!(stored.to_proto(), span);
        }
    }

    #[test]
    fn a_full_interner_stores_strings_with_the_span() {
        // Room for about one entry: the first string is interned, the rest
        // are not, and every value still reads back.
        let mut interner = Interner::new(Interner::entry_bytes(8));
        let span = full_span();
        let stored = StoredSpan::from_proto(span.clone(), &mut interner);
        assert!(interner.bytes() <= Interner::entry_bytes(8));
        assert_eq!(interner.map.len(), 1);
        assert!(stored.text.len() > "short".len() + MAX_INTERNED_LEN);
        assert_eq!(stored.to_proto(), span);
        // The estimate counts the strings the span holds itself.
        let mut roomy = Interner::new(INTERNER_MAX_BYTES);
        let shared = StoredSpan::from_proto(span, &mut roomy);
        assert!(stored.heap_bytes() > shared.heap_bytes());
    }

    #[test]
    fn interns_each_string_once_and_refuses_long_ones() {
        let mut interner = Interner::new(INTERNER_MAX_BYTES);
        let a = interner.get("http.route").unwrap();
        let b = interner.get("http.route").unwrap();
        assert!(std::ptr::eq(a.0, b.0));
        let used = interner.bytes();
        assert!(interner.get(&"y".repeat(MAX_INTERNED_LEN + 1)).is_none());
        assert_eq!(interner.bytes(), used);
        // Many distinct strings stop at the bound.
        for i in 0..100_000 {
            interner.get(&format!("key-{i}"));
        }
        assert!(interner.bytes() <= INTERNER_MAX_BYTES);
        assert!(interner.map.len() < 100_000);
    }
}
