//! In-memory shape of one trace: spans grouped by (resource, scope), the same
//! grouping OTLP uses on the wire, so the Tempo responses can be rebuilt
//! without losing the resource or instrumentation scope of any span. The
//! spans themselves are [`StoredSpan`]s (see [`crate::span`]).

use std::sync::Arc;

use foldhash::HashSet;
use foldhash::HashSetExt;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

use crate::span::StoredSpan;

/// A 16-byte W3C trace id.
pub(crate) type TraceId = [u8; 16];

/// Resource of a span group, shared (`Arc`) by every trace that got spans from
/// the same export request, or from any request sending it when the
/// pipeline's [`crate::pipeline::Records`] keep it.
#[derive(Debug)]
pub(crate) struct ResourceInfo {
    pub resource: Resource,
    pub schema_url: String,
    /// `service.name` of the resource, or `""`.
    pub service: String,
    /// Whether `service.name` is a string or absent (the span index keys
    /// those by `service`; any other type is a candidate for every service).
    pub service_is_text: bool,
    /// Kept by the pipeline's records, which count its bytes once: traces
    /// referring to it are charged for their reference only.
    pub shared: bool,
}

impl ResourceInfo {
    pub(crate) fn new(resource: Resource, schema_url: String) -> Self {
        let name = find_attr(&resource.attributes, "service.name");
        let service = name.map(any_value_to_string).unwrap_or_default();
        let service_is_text = matches!(
            name.and_then(|v| v.value.as_ref()),
            None | Some(Value::StringValue(_))
        );
        ResourceInfo {
            resource,
            schema_url,
            service,
            service_is_text,
            shared: false,
        }
    }

    /// Equal in value (the service name first: it tells most apart).
    fn same(&self, other: &ResourceInfo) -> bool {
        self.service == other.service
            && self.schema_url == other.schema_url
            && self.resource == other.resource
    }
}

/// Instrumentation scope of a span group.
#[derive(Debug)]
pub(crate) struct ScopeInfo {
    pub scope: InstrumentationScope,
    pub schema_url: String,
    /// As [`ResourceInfo::shared`].
    pub shared: bool,
}

impl PartialEq for ScopeInfo {
    /// The same scope, shared or not.
    fn eq(&self, other: &Self) -> bool {
        self.scope == other.scope && self.schema_url == other.schema_url
    }
}

#[derive(Debug)]
pub(crate) struct ScopeGroup {
    pub scope: Arc<ScopeInfo>,
    pub spans: Vec<StoredSpan>,
}

#[derive(Debug)]
pub(crate) struct ResourceGroup {
    pub resource: Arc<ResourceInfo>,
    pub scopes: Vec<ScopeGroup>,
}

/// All spans of one trace received so far.
#[derive(Debug)]
pub(crate) struct TraceData {
    pub groups: Vec<ResourceGroup>,
    pub span_count: usize,
    /// Earliest span start (ns since epoch); `u64::MAX` while empty.
    pub start_ns: u64,
    /// Latest span end (ns since epoch).
    pub end_ns: u64,
    /// Whether any span has status ERROR (tail sampling and search use it).
    pub has_error: bool,
    /// Estimated heap bytes held by this trace (see [`span_bytes`]); the
    /// store's byte bound sums these.
    pub bytes: usize,
    /// Span ids, for de-duplication, once the trace holds more than
    /// [`LINEAR_ID_CHECK`] spans; a smaller trace is searched span by span
    /// (most traces are small, and this way they need no set at all).
    span_ids: Option<Box<HashSet<[u8; 8]>>>,
}

impl Default for TraceData {
    fn default() -> Self {
        TraceData {
            groups: Vec::new(),
            span_count: 0,
            start_ns: u64::MAX,
            end_ns: 0,
            has_error: false,
            bytes: TRACE_OVERHEAD_BYTES,
            span_ids: None,
        }
    }
}

impl TraceData {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds one span under the given resource and scope. Returns false (and
    /// stores nothing) when a span with the same id is already in the trace:
    /// exporters retry, and a retried batch must not duplicate spans.
    pub(crate) fn push(
        &mut self,
        resource: &Arc<ResourceInfo>,
        scope: &Arc<ScopeInfo>,
        span: impl Into<StoredSpan>,
    ) -> bool {
        self.push_get(resource, scope, span.into()).is_some()
    }

    /// [`TraceData::push`], returning the stored span.
    pub(crate) fn push_get(
        &mut self,
        resource: &Arc<ResourceInfo>,
        scope: &Arc<ScopeInfo>,
        span: StoredSpan,
    ) -> Option<&StoredSpan> {
        if !self.remember_id(span.span_id) {
            return None;
        }
        self.start_ns = self.start_ns.min(span.start_time_unix_nano);
        self.end_ns = self
            .end_ns
            .max(span.end_time_unix_nano.max(span.start_time_unix_nano));
        if status_code(&span) == StatusCode::Error {
            self.has_error = true;
        }
        self.span_count += 1;
        self.bytes += span_bytes(&span) + SPAN_INDEX_BYTES;

        // Look for an existing group: pointer equality is the common case
        // (the same request, or a record the pipeline keeps), value
        // equality catches a later request from the same process.
        let group = match self
            .groups
            .iter()
            .position(|g| Arc::ptr_eq(&g.resource, resource))
            .or_else(|| self.groups.iter().position(|g| g.resource.same(resource)))
        {
            Some(i) => &mut self.groups[i],
            None => {
                // Counted once per trace that refers to it, although traces
                // of one request share it: an over- rather than an
                // under-estimate, and eviction frees what it counted.
                // A shared record is counted once, by the records.
                self.bytes += size_of::<ResourceGroup>()
                    + if resource.shared {
                        0
                    } else {
                        resource_bytes(resource)
                    };
                reserve_small(&mut self.groups);
                self.groups.push(ResourceGroup {
                    resource: resource.clone(),
                    scopes: Vec::new(),
                });
                self.groups.last_mut().expect("just pushed")
            }
        };
        let scope_group = match group
            .scopes
            .iter()
            .position(|s| Arc::ptr_eq(&s.scope, scope))
            .or_else(|| group.scopes.iter().position(|s| *s.scope == **scope))
        {
            Some(i) => &mut group.scopes[i],
            None => {
                self.bytes +=
                    size_of::<ScopeGroup>() + if scope.shared { 0 } else { scope_bytes(scope) };
                reserve_small(&mut group.scopes);
                group.scopes.push(ScopeGroup {
                    scope: scope.clone(),
                    spans: Vec::new(),
                });
                group.scopes.last_mut().expect("just pushed")
            }
        };
        // A group often holds one or two spans (a service's share of a
        // trace): grow small groups one slot at a time, and count the spare
        // slots a larger one carries.
        let spans = &mut scope_group.spans;
        let spare_before = spans.capacity() - spans.len();
        reserve_small(spans);
        spans.push(span);
        let spare_after = spans.capacity() - spans.len();
        // The slot the span took is counted in `span_bytes`.
        self.bytes = (self.bytes + spare_after * size_of::<StoredSpan>())
            .saturating_sub(spare_before * size_of::<StoredSpan>());
        scope_group.spans.last()
    }

    /// Whether the trace holds a span with this id.
    pub(crate) fn has_span(&self, id: [u8; 8]) -> bool {
        match &self.span_ids {
            Some(set) => set.contains(&id),
            None => self.spans().any(|(_, s)| s.span_id == id),
        }
    }

    /// Whether `id` is new to this trace (then it is remembered).
    fn remember_id(&mut self, id: [u8; 8]) -> bool {
        if let Some(set) = &mut self.span_ids {
            let new = set.insert(id);
            if new {
                self.bytes += SPAN_ID_ENTRY_BYTES;
            }
            return new;
        }
        if self.has_span(id) {
            return false;
        }
        if self.span_count >= LINEAR_ID_CHECK {
            let mut set = HashSet::with_capacity(2 * (self.span_count + 1));
            set.extend(self.spans().map(|(_, s)| s.span_id));
            set.insert(id);
            self.bytes += size_of::<HashSet<[u8; 8]>>() + set.len() * SPAN_ID_ENTRY_BYTES;
            self.span_ids = Some(Box::new(set));
        }
        true
    }

    /// Moves every span of `other` into `self` (dropping duplicates). Returns
    /// how many spans were added.
    pub(crate) fn merge(&mut self, other: TraceData) -> usize {
        self.merge_each(other, |_, _| {})
    }

    /// [`TraceData::merge`], calling `added` on each span it keeps.
    pub(crate) fn merge_each(
        &mut self,
        other: TraceData,
        mut added: impl FnMut(&ResourceInfo, &StoredSpan),
    ) -> usize {
        let mut n = 0;
        for group in other.groups {
            for scope in group.scopes {
                for span in scope.spans {
                    if let Some(span) = self.push_get(&group.resource, &scope.scope, span) {
                        added(&group.resource, span);
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Duration from the earliest start to the latest end, in nanoseconds.
    pub(crate) fn duration_ns(&self) -> u64 {
        if self.span_count == 0 {
            0
        } else {
            self.end_ns.saturating_sub(self.start_ns)
        }
    }

    /// Iterates over every span together with its resource.
    pub(crate) fn spans(&self) -> impl Iterator<Item = (&ResourceInfo, &StoredSpan)> {
        self.groups.iter().flat_map(|g| {
            g.scopes
                .iter()
                .flat_map(move |s| s.spans.iter().map(move |span| (&*g.resource, span)))
        })
    }

    /// The root span (no parent); the earliest one if there are several.
    pub(crate) fn root(&self) -> Option<(&ResourceInfo, &StoredSpan)> {
        self.spans()
            .filter(|(_, s)| !s.has_parent())
            .min_by_key(|(_, s)| s.start_time_unix_nano)
    }

    /// Rebuilds OTLP `ResourceSpans` (for protobuf responses); `id` is the
    /// trace's id, which stored spans do not keep.
    pub(crate) fn to_resource_spans(&self, id: &TraceId) -> Vec<ResourceSpans> {
        self.groups
            .iter()
            .map(|g| ResourceSpans {
                resource: Some(g.resource.resource.clone()),
                schema_url: g.resource.schema_url.clone(),
                scope_spans: g
                    .scopes
                    .iter()
                    .map(|s| ScopeSpans {
                        scope: Some(s.scope.scope.clone()),
                        schema_url: s.scope.schema_url.clone(),
                        spans: s
                            .spans
                            .iter()
                            .map(|span| {
                                let mut span = span.to_proto();
                                span.trace_id = id.to_vec();
                                span
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Before a push: a full vector of fewer than 8 elements grows by one slot
/// only (by default it would jump to 4), so the many small groups of a
/// trace carry no spare capacity; larger ones double as usual.
fn reserve_small<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() && v.len() < 8 {
        v.reserve_exact(1);
    }
}

/// Fixed cost of one stored trace besides its spans: the trace record, its
/// slot in the store's map, eviction queue and time index (with their spare
/// capacity).
const TRACE_OVERHEAD_BYTES: usize = 320;

/// Most the store's span-level index spends on one span: an entry (8 bytes)
/// in at most five posting lists (service, name, status, kind, duration),
/// doubled for the lists' spare capacity. An entry is shared by the spans of
/// a trace with the same property, so this over- rather than
/// under-estimates; the tail sampler's buffer, which has no index, is
/// charged the same so a trace costs the same in both.
const SPAN_INDEX_BYTES: usize = 5 * 8 * 2;

/// Cost of remembering one span id for de-duplication (a hash set entry
/// with its control byte and spare capacity), once a trace has a set.
const SPAN_ID_ENTRY_BYTES: usize = 16;

/// Most spans a trace holds while its span ids are checked by searching
/// its spans; past that it keeps a set of them.
const LINEAR_ID_CHECK: usize = 32;

/// Estimated memory held by one stored span: see
/// [`StoredSpan::heap_bytes`].
pub(crate) fn span_bytes(span: &StoredSpan) -> usize {
    span.heap_bytes()
}

pub(crate) fn resource_bytes(r: &ResourceInfo) -> usize {
    size_of::<ResourceInfo>()
        + attrs_bytes(&r.resource.attributes)
        + r.resource.entity_refs.capacity() * size_of::<EntityRef>()
        + r.resource
            .entity_refs
            .iter()
            .map(|e| {
                e.schema_url.capacity()
                    + e.r#type.capacity()
                    + strings_bytes(&e.id_keys)
                    + strings_bytes(&e.description_keys)
            })
            .sum::<usize>()
        + r.schema_url.capacity()
        + r.service.capacity()
}

fn strings_bytes(v: &Vec<String>) -> usize {
    v.capacity() * size_of::<String>() + v.iter().map(String::capacity).sum::<usize>()
}

pub(crate) fn scope_bytes(s: &ScopeInfo) -> usize {
    size_of::<ScopeInfo>()
        + s.scope.name.capacity()
        + s.scope.version.capacity()
        + attrs_bytes(&s.scope.attributes)
        + s.schema_url.capacity()
}

/// Heap bytes of a span's events and links (by capacity), as
/// [`attrs_bytes`] counts attributes.
pub(crate) fn events_links_bytes(
    events: &Vec<opentelemetry_proto::tonic::trace::v1::span::Event>,
    links: &Vec<opentelemetry_proto::tonic::trace::v1::span::Link>,
) -> usize {
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    events.capacity() * size_of::<Event>()
        + events
            .iter()
            .map(|e| e.name.capacity() + attrs_bytes(&e.attributes))
            .sum::<usize>()
        + links.capacity() * size_of::<Link>()
        + links
            .iter()
            .map(|l| {
                l.trace_id.capacity()
                    + l.span_id.capacity()
                    + l.trace_state.capacity()
                    + attrs_bytes(&l.attributes)
            })
            .sum::<usize>()
}

pub(crate) fn attrs_bytes(attrs: &Vec<KeyValue>) -> usize {
    attrs.capacity() * size_of::<KeyValue>()
        + attrs
            .iter()
            .map(|kv| kv.key.capacity() + kv.value.as_ref().map_or(0, value_heap_bytes))
            .sum::<usize>()
}

/// Heap bytes of an attribute value. Recursive, but only as deep as the
/// value's nesting, which the decoders bound (prost and serde_json both stop
/// at about 100 levels).
pub(crate) fn value_heap_bytes(v: &AnyValue) -> usize {
    match &v.value {
        Some(Value::StringValue(s)) => s.capacity(),
        Some(Value::BytesValue(b)) => b.capacity(),
        Some(Value::ArrayValue(a)) => {
            a.values.capacity() * size_of::<AnyValue>()
                + a.values.iter().map(value_heap_bytes).sum::<usize>()
        }
        Some(Value::KvlistValue(kv)) => attrs_bytes(&kv.values),
        _ => 0,
    }
}

pub(crate) fn status_code(span: &StoredSpan) -> StatusCode {
    StatusCode::try_from(span.status_code_raw()).unwrap_or(StatusCode::Unset)
}

pub(crate) fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// Renders an attribute value as a plain string (for tag search and tag values).
pub(crate) fn any_value_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex::encode(b),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(any_value_to_string).collect();
            format!("[{}]", items.join(","))
        }
        Some(Value::KvlistValue(kv)) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|kv| {
                    let v = kv
                        .value
                        .as_ref()
                        .map(any_value_to_string)
                        .unwrap_or_default();
                    format!("{}={}", kv.key, v)
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Some(Value::StringValueStrindex(i)) => i.to_string(),
        None => String::new(),
    }
}

/// Parses a trace id as Tempo does: 1 to 32 hex digits, left-padded with
/// zeros (so 64-bit ids from older tracers still resolve).
pub(crate) fn parse_trace_id(s: &str) -> Option<TraceId> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0>32}");
    let mut id = [0u8; 16];
    hex::decode_to_slice(padded, &mut id).ok()?;
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn span(id: u16) -> Span {
        let mut span_id = vec![0; 8];
        span_id[6..].copy_from_slice(&id.to_be_bytes());
        span_id[0] = 1;
        Span {
            span_id,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            ..Default::default()
        }
    }

    #[test]
    fn repeated_span_ids_are_dropped_before_and_after_the_trace_keeps_a_set() {
        let res = Arc::new(ResourceInfo::new(Resource::default(), String::new()));
        let scope = Arc::new(ScopeInfo {
            scope: Default::default(),
            schema_url: String::new(),
            shared: false,
        });
        let mut trace = TraceData::new();
        let mut bytes_without_set = TRACE_OVERHEAD_BYTES;
        for id in 0..LINEAR_ID_CHECK as u16 {
            assert!(trace.push(&res, &scope, span(id)));
            assert!(!trace.push(&res, &scope, span(id / 2)), "{id}");
        }
        assert!(trace.span_ids.is_none());
        // Without a set, a span costs what it holds and its index entries.
        for (_, s) in trace.spans() {
            bytes_without_set += span_bytes(s) + SPAN_INDEX_BYTES;
        }
        let groups = size_of::<ResourceGroup>()
            + resource_bytes(&res)
            + size_of::<ScopeGroup>()
            + scope_bytes(&scope);
        let spans = &trace.groups[0].scopes[0].spans;
        let spare = (spans.capacity() - spans.len()) * size_of::<crate::span::StoredSpan>();
        assert_eq!(trace.bytes, bytes_without_set + groups + spare);
        // The next span brings the set, charged for every id it holds.
        let slot = size_of::<crate::span::StoredSpan>();
        let spare_slots = |t: &TraceData| {
            let spans = &t.groups[0].scopes[0].spans;
            (spans.capacity() - spans.len()) * slot
        };
        let (before, spare_before) = (trace.bytes, spare_slots(&trace));
        assert!(trace.push(&res, &scope, span(1000)));
        let set = trace
            .span_ids
            .as_ref()
            .expect("a set past the linear check");
        assert_eq!(set.len(), LINEAR_ID_CHECK + 1);
        let last = trace.groups[0].scopes[0].spans.last().expect("pushed");
        assert_eq!(
            trace.bytes + spare_before,
            before
                + span_bytes(last)
                + SPAN_INDEX_BYTES
                + spare_slots(&trace)
                + size_of::<HashSet<[u8; 8]>>()
                + (LINEAR_ID_CHECK + 1) * SPAN_ID_ENTRY_BYTES
        );
        for id in [0, 7, 31, 1000] {
            assert!(!trace.push(&res, &scope, span(id)), "{id}");
            assert!(trace.has_span(span(id).span_id.try_into().unwrap()));
        }
        assert!(trace.push(&res, &scope, span(1001)));
        assert_eq!(trace.span_count, LINEAR_ID_CHECK + 2);
        assert!(!trace.has_span(span(2000).span_id.try_into().unwrap()));
    }
}
