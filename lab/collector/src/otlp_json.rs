//! OTLP/JSON in both directions.
//!
//! Decoding uses opentelemetry-proto's serde support, which follows the OTLP
//! spec for ids (hex) and 64-bit integers (string or number), but reads enum
//! fields only as integers. Real senders also use the proto3 JSON enum names
//! (`"SPAN_KIND_SERVER"`, `"STATUS_CODE_ERROR"`: Tempo's own output, the
//! OTel collector's debug output replayed) and some older ones base64 ids,
//! so the JSON is normalised first.
//!
//! Encoding writes what Tempo's HTTP API returns: base64 ids, enum names,
//! int64 values as strings, default values omitted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::model::{ResourceGroup, ScopeGroup, TraceData, TraceId};
use crate::span::{StoredSpan, ValueRef};

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
///
/// # Errors
/// When the body is not JSON or not of the request's shape; the message says
/// where.
pub(crate) fn decode_request(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    if !v.is_object() {
        return Err("invalid OTLP/JSON: the body must be a JSON object".into());
    }
    normalise(&mut v);
    serde_json::from_value(v)
        .map_err(|e| format!("invalid OTLP/JSON ExportTraceServiceRequest: {e}"))
}

fn normalise(v: &mut Value) {
    let Some(resource_spans) = v.get_mut("resourceSpans").and_then(Value::as_array_mut) else {
        return;
    };
    for rs in resource_spans {
        let Some(scope_spans) = rs.get_mut("scopeSpans").and_then(Value::as_array_mut) else {
            continue;
        };
        for ss in scope_spans {
            let Some(spans) = ss.get_mut("spans").and_then(Value::as_array_mut) else {
                continue;
            };
            for span in spans {
                let Some(obj) = span.as_object_mut() else {
                    continue;
                };
                // serde(default) covers a missing field, not an explicit null.
                obj.retain(|_, v| !v.is_null());
                if let Some(kind) = obj.get_mut("kind") {
                    enum_name_to_int(kind, |s| {
                        SpanKind::from_str_name(s)
                            .or_else(|| {
                                SpanKind::from_str_name(&format!(
                                    "SPAN_KIND_{}",
                                    s.to_ascii_uppercase()
                                ))
                            })
                            .map(|k| k as i32)
                    });
                }
                if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
                    status.retain(|_, v| !v.is_null());
                    if let Some(code) = status.get_mut("code") {
                        enum_name_to_int(code, |s| {
                            StatusCode::from_str_name(s)
                                .or_else(|| {
                                    StatusCode::from_str_name(&format!(
                                        "STATUS_CODE_{}",
                                        s.to_ascii_uppercase()
                                    ))
                                })
                                .map(|c| c as i32)
                        });
                    }
                }
                for (key, len) in [("traceId", 16), ("spanId", 8), ("parentSpanId", 8)] {
                    if let Some(id) = obj.get_mut(key) {
                        base64_id_to_hex(id, len);
                    }
                }
                if let Some(links) = obj.get_mut("links").and_then(Value::as_array_mut) {
                    for link in links.iter_mut().filter_map(Value::as_object_mut) {
                        for (key, len) in [("traceId", 16), ("spanId", 8)] {
                            if let Some(id) = link.get_mut(key) {
                                base64_id_to_hex(id, len);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Replaces an enum given by name with its number; leaves unknown names so
/// the typed decode reports them.
fn enum_name_to_int(v: &mut Value, lookup: impl Fn(&str) -> Option<i32>) {
    if let Value::String(s) = v {
        if let Some(n) = lookup(s) {
            *v = Value::from(n);
        } else if let Ok(n) = s.parse::<i32>() {
            *v = Value::from(n);
        }
    }
}

/// OTLP/JSON ids are hex; protobuf's generic JSON mapping (and so some
/// senders) uses base64. The lengths never collide (16 bytes: 32 hex vs 24
/// base64 chars), so accept both.
fn base64_id_to_hex(v: &mut Value, len: usize) {
    if let Value::String(s) = v
        && s.len() != len * 2
        && !s.is_empty()
        && let Ok(bytes) = B64.decode(s.as_bytes())
        && bytes.len() == len
    {
        *s = hex::encode(bytes);
    }
}

/// Serialises a trace (its id, which stored spans do not keep, and its
/// spans) as Tempo does: a list of `ResourceSpans` in OTLP/JSON with base64
/// ids.
pub(crate) struct TempoBatches<'a>(pub &'a TraceId, pub &'a TraceData);

impl Serialize for TempoBatches<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.groups.len()))?;
        for g in &self.1.groups {
            seq.serialize_element(&TempoResourceSpans(self.0, g))?;
        }
        seq.end()
    }
}

struct TempoResourceSpans<'a>(&'a TraceId, &'a ResourceGroup);

impl Serialize for TempoResourceSpans<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let g = self.1;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("resource", &JsonResource(&g.resource.resource))?;
        m.serialize_entry("scopeSpans", &ScopeList(self.0, &g.scopes))?;
        if !g.resource.schema_url.is_empty() {
            m.serialize_entry("schemaUrl", &g.resource.schema_url)?;
        }
        m.end()
    }
}

struct ScopeList<'a>(&'a TraceId, &'a [ScopeGroup]);

impl Serialize for ScopeList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for sg in self.1 {
            seq.serialize_element(&JsonScopeSpans(self.0, sg))?;
        }
        seq.end()
    }
}

struct JsonScopeSpans<'a>(&'a TraceId, &'a ScopeGroup);

impl Serialize for JsonScopeSpans<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("scope", &JsonScope(&self.1.scope.scope))?;
        m.serialize_entry("spans", &SpanList(self.0, &self.1.spans))?;
        if !self.1.scope.schema_url.is_empty() {
            m.serialize_entry("schemaUrl", &self.1.scope.schema_url)?;
        }
        m.end()
    }
}

struct JsonResource<'a>(&'a Resource);

impl Serialize for JsonResource<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("attributes", &Attrs(&self.0.attributes))?;
        if self.0.dropped_attributes_count > 0 {
            m.serialize_entry("droppedAttributesCount", &self.0.dropped_attributes_count)?;
        }
        m.end()
    }
}

struct JsonScope<'a>(&'a InstrumentationScope);

impl Serialize for JsonScope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sc = self.0;
        let mut m = s.serialize_map(None)?;
        if !sc.name.is_empty() {
            m.serialize_entry("name", &sc.name)?;
        }
        if !sc.version.is_empty() {
            m.serialize_entry("version", &sc.version)?;
        }
        if !sc.attributes.is_empty() {
            m.serialize_entry("attributes", &Attrs(&sc.attributes))?;
        }
        m.end()
    }
}

struct SpanList<'a>(&'a TraceId, &'a [StoredSpan]);

impl Serialize for SpanList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for span in self.1 {
            seq.serialize_element(&JsonSpan(self.0, span))?;
        }
        seq.end()
    }
}

struct JsonSpan<'a>(&'a TraceId, &'a StoredSpan);

impl Serialize for JsonSpan<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sp = self.1;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("traceId", &B64.encode(self.0))?;
        m.serialize_entry("spanId", &B64.encode(sp.span_id))?;
        if !sp.trace_state().is_empty() {
            m.serialize_entry("traceState", sp.trace_state())?;
        }
        if sp.has_parent() {
            m.serialize_entry("parentSpanId", &B64.encode(sp.parent_span_id))?;
        }
        if sp.flags != 0 {
            m.serialize_entry("flags", &sp.flags)?;
        }
        m.serialize_entry("name", sp.name())?;
        if let Ok(kind) = SpanKind::try_from(sp.kind)
            && kind != SpanKind::Unspecified
        {
            m.serialize_entry("kind", kind.as_str_name())?;
        }
        m.serialize_entry("startTimeUnixNano", &sp.start_time_unix_nano.to_string())?;
        m.serialize_entry("endTimeUnixNano", &sp.end_time_unix_nano.to_string())?;
        if sp.has_attrs() {
            m.serialize_entry("attributes", &SpanAttrs(sp))?;
        }
        if sp.dropped_attributes_count() > 0 {
            m.serialize_entry("droppedAttributesCount", &sp.dropped_attributes_count())?;
        }
        if !sp.events().is_empty() {
            m.serialize_entry("events", &Events(sp.events()))?;
        }
        if sp.dropped_events_count() > 0 {
            m.serialize_entry("droppedEventsCount", &sp.dropped_events_count())?;
        }
        if !sp.links().is_empty() {
            m.serialize_entry("links", &Links(sp.links()))?;
        }
        if sp.dropped_links_count() > 0 {
            m.serialize_entry("droppedLinksCount", &sp.dropped_links_count())?;
        }
        // Tempo always writes `status`, leaving out an UNSET code and an
        // empty message (`"status": {}`).
        m.serialize_entry("status", &JsonStatus(sp))?;
        m.end()
    }
}

struct JsonStatus<'a>(&'a StoredSpan);

impl Serialize for JsonStatus<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let message = self.0.status_message();
        if !message.is_empty() {
            m.serialize_entry("message", message)?;
        }
        let code = self.0.status_code_raw();
        match StatusCode::try_from(code) {
            Ok(StatusCode::Unset) => {}
            Ok(named) => m.serialize_entry("code", named.as_str_name())?,
            Err(_) => m.serialize_entry("code", &code)?,
        }
        m.end()
    }
}

/// A stored span's attributes as OTLP/JSON `KeyValue`s.
struct SpanAttrs<'a>(&'a StoredSpan);

impl Serialize for SpanAttrs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let attrs = self.0.attrs();
        let mut seq = s.serialize_seq(Some(attrs.len()))?;
        for (key, value) in attrs {
            seq.serialize_element(&SpanKeyValue(key, value))?;
        }
        seq.end()
    }
}

struct SpanKeyValue<'a>(&'a str, Option<ValueRef<'a>>);

impl Serialize for SpanKeyValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("key", self.0)?;
        match self.1 {
            None => m.serialize_entry("value", &serde_json::Map::new())?,
            Some(v) => m.serialize_entry("value", &SpanValue(v))?,
        }
        m.end()
    }
}

/// A stored span's attribute value, written as [`JsonAnyValue`] writes it.
struct SpanValue<'a>(ValueRef<'a>);

impl Serialize for SpanValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let ValueRef::Other(v) = self.0 {
            return JsonAnyValue(v).serialize(s);
        }
        let mut m = s.serialize_map(Some(1))?;
        match self.0 {
            ValueRef::Str(v) => m.serialize_entry("stringValue", v)?,
            ValueRef::Bool(v) => m.serialize_entry("boolValue", &v)?,
            ValueRef::Int(v) => m.serialize_entry("intValue", &v.to_string())?,
            ValueRef::Double(v) => m.serialize_entry("doubleValue", &v)?,
            ValueRef::Other(_) => {}
        }
        m.end()
    }
}

struct Events<'a>(&'a [Event]);

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for e in self.0 {
            seq.serialize_element(&JsonEvent(e))?;
        }
        seq.end()
    }
}

struct JsonEvent<'a>(&'a Event);

impl Serialize for JsonEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("timeUnixNano", &e.time_unix_nano.to_string())?;
        m.serialize_entry("name", &e.name)?;
        if !e.attributes.is_empty() {
            m.serialize_entry("attributes", &Attrs(&e.attributes))?;
        }
        if e.dropped_attributes_count > 0 {
            m.serialize_entry("droppedAttributesCount", &e.dropped_attributes_count)?;
        }
        m.end()
    }
}

struct Links<'a>(&'a [Link]);

impl Serialize for Links<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for l in self.0 {
            seq.serialize_element(&JsonLink(l))?;
        }
        seq.end()
    }
}

struct JsonLink<'a>(&'a Link);

impl Serialize for JsonLink<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("traceId", &B64.encode(&l.trace_id))?;
        m.serialize_entry("spanId", &B64.encode(&l.span_id))?;
        if !l.trace_state.is_empty() {
            m.serialize_entry("traceState", &l.trace_state)?;
        }
        if !l.attributes.is_empty() {
            m.serialize_entry("attributes", &Attrs(&l.attributes))?;
        }
        if l.flags != 0 {
            m.serialize_entry("flags", &l.flags)?;
        }
        m.end()
    }
}

/// A list of OTLP/JSON `KeyValue`s.
pub(crate) struct Attrs<'a>(pub &'a [KeyValue]);

impl Serialize for Attrs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for kv in self.0 {
            seq.serialize_element(&JsonKeyValue(kv))?;
        }
        seq.end()
    }
}

struct JsonKeyValue<'a>(&'a KeyValue);

impl Serialize for JsonKeyValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("key", &self.0.key)?;
        match &self.0.value {
            Some(v) => m.serialize_entry("value", &JsonAnyValue(v))?,
            None => m.serialize_entry("value", &serde_json::Map::new())?,
        }
        m.end()
    }
}

/// One OTLP/JSON `AnyValue` (int64 as a string, bytes as base64).
pub(crate) struct JsonAnyValue<'a>(pub &'a AnyValue);

impl Serialize for JsonAnyValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        match &self.0.value {
            Some(Av::StringValue(v)) => m.serialize_entry("stringValue", v)?,
            Some(Av::BoolValue(v)) => m.serialize_entry("boolValue", v)?,
            Some(Av::IntValue(v)) => m.serialize_entry("intValue", &v.to_string())?,
            Some(Av::DoubleValue(v)) => m.serialize_entry("doubleValue", v)?,
            Some(Av::BytesValue(v)) => m.serialize_entry("bytesValue", &B64.encode(v))?,
            Some(Av::ArrayValue(a)) => {
                m.serialize_entry("arrayValue", &ValuesWrapper(ValuesKind::Array(&a.values)))?
            }
            Some(Av::KvlistValue(kv)) => {
                m.serialize_entry("kvlistValue", &ValuesWrapper(ValuesKind::Kv(&kv.values)))?
            }
            Some(Av::StringValueStrindex(i)) => m.serialize_entry("stringValueStrindex", i)?,
            None => {}
        }
        m.end()
    }
}

enum ValuesKind<'a> {
    Array(&'a [AnyValue]),
    Kv(&'a [KeyValue]),
}

struct ValuesWrapper<'a>(ValuesKind<'a>);

impl Serialize for ValuesWrapper<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        match &self.0 {
            ValuesKind::Array(values) => {
                let list: Vec<JsonAnyValue<'_>> = values.iter().map(JsonAnyValue).collect();
                m.serialize_entry("values", &list)?;
            }
            ValuesKind::Kv(values) => m.serialize_entry("values", &Attrs(values))?,
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_spec_json_with_enum_names_and_string_ints() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"gateway"}}]},
          "scopeSpans":[{"scope":{"name":"s"},"spans":[
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"",
             "name":"a","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
             "attributes":[{"key":"n","value":{"intValue":"42"}},{"key":"m","value":{"intValue":7}},{"key":"d","value":{"doubleValue":1}}],
             "status":{"code":"STATUS_CODE_ERROR","message":"x"},"traceState":null},
            {"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"7uGbfsPBsXQ=","name":"b","kind":3,"status":{"code":2}}
          ]}]}]}"#;
        let req = decode_request(body).unwrap();
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].kind, SpanKind::Server as i32);
        assert_eq!(
            spans[0].status.as_ref().unwrap().code,
            StatusCode::Error as i32
        );
        assert_eq!(spans[0].end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(
            spans[0].attributes[0].value.as_ref().unwrap().value,
            Some(Av::IntValue(42))
        );
        assert_eq!(
            spans[0].attributes[1].value.as_ref().unwrap().value,
            Some(Av::IntValue(7))
        );
        // The base64 ids of the second span are the same bytes as the hex ones.
        assert_eq!(spans[1].trace_id, spans[0].trace_id);
        assert_eq!(spans[1].span_id, spans[0].span_id);
        assert_eq!(spans[1].kind, SpanKind::Client as i32);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for body in [
            &b"not json"[..],
            b"[]",
            b"{\"resourceSpans\":5}",
            b"{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"zz\"}]}]}]}",
        ] {
            assert!(
                decode_request(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(decode_request(b"{}").unwrap().resource_spans.is_empty());
    }
}
